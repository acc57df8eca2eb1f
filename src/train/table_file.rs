//! Where the table and its optimizer state are allocated (`model.table_storage`):
//! anonymous memory, or regions of a mapped file at `model.table_path`.

use std::path::Path;

use anyhow::{bail, Context};

use crate::config::Config;
use crate::mem::mapped::{self, TableFile};
use crate::memory::{MemoryPlan, TableStorage};
use crate::model::EmbeddingTable;
use crate::optim::{StateData, TableOptimizer};

/// Runs `build` (which allocates the table, then the optimizer state) with its
/// arrays placed as `model.table_storage` says. For "mmap" the file is
/// created (or taken back from this run's own earlier session) and reserved
/// before any array is allocated; a file it cannot use is refused with the
/// numbers. `held_ids` says which ids the file's rows are (for its header).
pub(super) fn place_table(
    config: &Config,
    run_dir: &Path,
    plan: &MemoryPlan,
    held_ids: &str,
    build: impl FnOnce() -> (EmbeddingTable, Box<dyn TableOptimizer>),
) -> anyhow::Result<(EmbeddingTable, Box<dyn TableOptimizer>)> {
    let (TableStorage::Mmap, Some(path)) = (config.model.table_storage, &config.model.table_path) else {
        return Ok(build());
    };
    let owner = format!("run {}", std::fs::canonicalize(run_dir).with_context(|| format!("{}: run folder", run_dir.display()))?.display());
    // Slack for the page alignment of every state array beyond the first.
    let reserve = plan.table_file_bytes().unwrap_or(0).saturating_add(8 * 4096);
    let file = TableFile::create(path, &owner, reserve, "model.table_path")?;
    let ((table, optimizer), mut file) = mapped::place_in(file, build)?;
    // Every array must have landed in the file: one allocated elsewhere (e.g. on
    // another thread, outside place_in) would silently take host memory.
    if table.rows() > 0 && !file.name_region(table.as_slice().as_ptr().cast(), "table", &[table.rows() as u64, table.dim() as u64]) {
        bail!("model.table_path: the table was not allocated in {}", path.display());
    }
    let per_row = optimizer.per_row_state();
    for (name, data) in optimizer.state() {
        let (ptr, len): (*const u8, usize) = match data {
            StateData::F32(x) => (x.as_ptr().cast(), x.len()),
            StateData::U32(x) => (x.as_ptr().cast(), x.len()),
            StateData::F64(x) => (x.as_ptr().cast(), x.len()),
            StateData::U64(x) => (x.as_ptr().cast(), x.len()),
        };
        let rows = table.rows().max(1) as u64;
        // Global values (a step count) live in the optimizer itself, not in an array.
        if !file.name_region(ptr, &format!("state.{name}"), &[rows, len as u64 / rows]) && per_row.contains(&name) && len > 0 {
            bail!("model.table_path: the {} optimizer allocated its state {name:?} outside {}", optimizer.name(), path.display());
        }
    }
    file.set_note(&format!(
        "rows are {held_ids}; rows not yet materialised (a lazily initialised table) are zeros, their initial values being the checkpoint's recipe; f32 little-endian, row-major; the checkpoints, not this file, are the durable record"
    ));
    file.write_header()?;
    Ok((table, optimizer))
}
