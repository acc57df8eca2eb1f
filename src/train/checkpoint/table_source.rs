//! A checkpoint's table as export sees it (every row at its trained value,
//! with the decay lazy weight decay still owes applied), produced a range of
//! rows at a time: exporting a table then needs memory for one range, not for
//! the table, its optimizer state or, for a row-sharded run, its shards.
//!
//! A range is generated from the table's recipe, then each link of each chain
//! writes the rows it stores over it (base first, so a later link wins), and
//! the owed decay is applied with each row's mark from the link that stored it
//! last, exactly as [`Checkpoint::model`] does for the whole table.

use std::ops::Range;
use std::path::PathBuf;

use anyhow::{bail, Context};
use safetensors::tensor::Dtype;

use super::chain::{stored_ids, Checkpoint};
use super::manifest::ROWS_FILE;
use crate::io::{table_tensor_dtype, SafetensorsFile, TensorStream};
use crate::model::table::INIT_CHUNK_ROWS;
use crate::model::{EmbeddingTable, TableRecipe};
use crate::optim::owed_factor;

/// Bytes of rows put together per range when streaming (see [`TableSource::stream`]).
const STREAM_CHUNK_BYTES: usize = 16 << 20;

/// Per-row decay marks in a checkpoint (see `optim::decay`).
const ROW_MARKS: &str = "state.row_log_decay";
/// The running sum of log decay factors the marks are measured against.
pub(super) const LOG_DECAY: &str = "global.log_decay";

pub struct TableSource {
    recipe: TableRecipe,
    step: u64,
    /// Σ ln(1 − lr·wd) at the checkpoint, when the optimizer decays lazily.
    log_decay: Option<f64>,
    /// The links of every chain added, each chain base first; chains store disjoint rows.
    links: Vec<Link>,
}

struct Link {
    path: PathBuf,
    file: SafetensorsFile,
    /// The rows stored (ascending), `None` when the link stores every row.
    ids: Option<Vec<u32>>,
}

impl TableSource {
    /// The table of checkpoint `ckpt`.
    pub fn new(ckpt: &Checkpoint) -> anyhow::Result<Self> {
        let mut source = TableSource { recipe: ckpt.recipe(), step: ckpt.state.step, log_decay: None, links: Vec::new() };
        source.log_decay = source.add_links(ckpt)?;
        Ok(source)
    }

    /// Adds the rows another chain stores: a row-sharded rank's shard of the
    /// same checkpoint, whose rows no other chain stores.
    pub fn add_chain(&mut self, shard: &Checkpoint) -> anyhow::Result<()> {
        if shard.recipe() != self.recipe || shard.state.step != self.step {
            bail!("{}: table or step differs from the checkpoint it is a shard of (step {} against {})", shard.dir.display(), shard.state.step, self.step);
        }
        let log_decay = self.add_links(shard)?;
        if log_decay.map(f64::to_bits) != self.log_decay.map(f64::to_bits) {
            bail!("{}: owed weight decay {log_decay:?} differs from the other shards' {:?}", shard.dir.display(), self.log_decay);
        }
        Ok(())
    }

    /// Opens and checks every link of `ckpt`; returns its chain's owed decay sum.
    fn add_links(&mut self, ckpt: &Checkpoint) -> anyhow::Result<Option<f64>> {
        let (rows, dim, dtype) = (self.recipe.rows, self.recipe.dim, table_tensor_dtype(self.recipe.dtype));
        let mut log_decay = None;
        for (dir, m) in ckpt.links() {
            let path = dir.join(ROWS_FILE);
            let file = SafetensorsFile::open(&path)?;
            let ids = if m.all_rows { None } else { Some(stored_ids(&file, dir, m, rows)?) };
            let stored = ids.as_ref().map_or(rows, Vec::len);
            let (_, shape) = file.raw("table", dtype)?;
            if shape != [stored, dim] {
                bail!("{}: table rows have shape {shape:?}, expected [{stored}, {dim}]", path.display());
            }
            log_decay = match file.has(LOG_DECAY) {
                true => {
                    let (bytes, _) = file.raw(LOG_DECAY, Dtype::F64)?;
                    let (marks, _) = file.raw(ROW_MARKS, Dtype::F64)?;
                    if bytes.len() != 8 || marks.len() != stored * 8 {
                        bail!("{}: {LOG_DECAY} must be one f64 and {ROW_MARKS} one per stored row ({stored})", path.display());
                    }
                    Some(f64::from_le_bytes(bytes.try_into().expect("8 bytes")))
                }
                false => None,
            };
            self.links.push(Link { path, file, ids });
        }
        // The newest link's sum is the chain's (a delta carries the whole sum).
        Ok(log_decay)
    }

    pub fn recipe(&self) -> TableRecipe {
        self.recipe
    }

    /// Rows `range` of the table, as a table of `range.len()` rows.
    pub fn read(&self, range: Range<usize>) -> anyhow::Result<EmbeddingTable> {
        let TableRecipe { rows, dim, dtype, .. } = self.recipe;
        if range.start > range.end || range.end > rows {
            bail!("rows {range:?} are outside the table's {rows}");
        }
        let mut table = EmbeddingTable::eager_rows(self.recipe, range.clone());
        let mut marks = self.log_decay.map(|_| vec![0f64; range.len()]);
        let row_bytes = dim * dtype.size();
        for link in &self.links {
            // Stored rows `k` in `first..last` are this range's rows, in order.
            let (first, last) = match &link.ids {
                None => (range.start, range.end),
                Some(ids) => (ids.partition_point(|&i| (i as usize) < range.start), ids.partition_point(|&i| (i as usize) < range.end)),
            };
            let local = |k: usize| link.ids.as_ref().map_or(k, |ids| ids[k] as usize) - range.start;
            let (bytes, _) = link.file.raw("table", table_tensor_dtype(dtype))?;
            let stored = &bytes[first * row_bytes..last * row_bytes];
            let into = table.as_bytes_mut();
            for (k, row) in (first..last).zip(stored.chunks_exact(row_bytes)) {
                let r = local(k);
                into[r * row_bytes..(r + 1) * row_bytes].copy_from_slice(row);
            }
            link.file.release(stored);
            if let Some(marks) = &mut marks {
                let (bytes, _) = link.file.raw(ROW_MARKS, Dtype::F64).with_context(|| format!("{}: decay marks", link.path.display()))?;
                let stored = &bytes[first * 8..last * 8];
                for (k, mark) in (first..last).zip(stored.chunks_exact(8)) {
                    marks[local(k)] = f64::from_le_bytes(mark.try_into().expect("8 bytes"));
                }
                link.file.release(stored);
            }
        }
        if let (Some(log_decay), Some(marks)) = (self.log_decay, marks) {
            // The rounding `LazyDecay::apply_pending` gives the whole table.
            table.set_update_step(self.step);
            table.update_rows_numbered_from(range.start, |r, w| {
                let factor = owed_factor(log_decay, marks[r]);
                w.iter_mut().for_each(|x| *x *= factor);
            });
        }
        Ok(table)
    }
}

/// The whole table as the bytes of a `[rows, dim]` tensor in its dtype, one
/// range of rows at a time.
pub struct TableStream<'a> {
    source: &'a TableSource,
    chunk_rows: usize,
}

impl TableSource {
    /// The table, streamed in ranges of about 16 MiB.
    pub fn stream(&self) -> TableStream<'_> {
        let row_bytes = (self.recipe.dim * self.recipe.dtype.size()).max(1);
        // Whole generation chunks, so that every range is generated at eager speed.
        TableStream { source: self, chunk_rows: (STREAM_CHUNK_BYTES / row_bytes).next_multiple_of(INIT_CHUNK_ROWS).max(INIT_CHUNK_ROWS) }
    }
}

impl TensorStream for TableStream<'_> {
    fn len(&self) -> usize {
        let r = self.source.recipe;
        r.rows * r.dim * r.dtype.size()
    }

    fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let rows = self.source.recipe.rows;
        for start in (0..rows).step_by(self.chunk_rows) {
            let table = self.source.read(start..(start + self.chunk_rows).min(rows)).map_err(|e| std::io::Error::other(format!("{e:#}")))?;
            w.write_all(table.as_bytes())?;
        }
        Ok(())
    }
}
