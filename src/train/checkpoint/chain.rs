//! Reading checkpoints back: a checkpoint is its chain base → deltas, each
//! link verified, replayed over a table regenerated from its recipe.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use safetensors::tensor::Dtype;

use super::manifest::{LinkKind, Manifest, HEAD_FILE, HEAD_OPTIM_FILE, LATEST_FILE, ROWS_FILE, TRAINER_FILE};
use super::{checkpoints_dir, TrainerState};
use crate::io::{table_tensor_dtype, SafetensorsFile};
use crate::model::{DenseLayer, EmbeddingTable, HeadWeights, TableRecipe};
use crate::optim::{StateError, StateSource, TableOptimizer, TableOptimizerConfig};
use crate::train::resident::ResidentRows;

/// A checkpoint whose whole chain was verified against its manifests.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: TrainerState,
    pub table_optimizer: String,
    /// Base first, this checkpoint last.
    links: Vec<(PathBuf, Manifest)>,
}

/// The newest complete checkpoint of a run: the one `LATEST` names when its
/// whole chain verifies, else (with a warning naming why) the newest folder
/// whose chain does.
pub fn latest(run_dir: &Path) -> anyhow::Result<PathBuf> {
    Checkpoint::open_latest(run_dir).map(|c| c.dir)
}

impl Checkpoint {
    /// Opens `dir`, checking the format version and every file's checksum of
    /// every link of its chain.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let mut links = Vec::new();
        let mut at = dir.to_path_buf();
        loop {
            let manifest = Manifest::read(&at)?;
            manifest.verify_files(&at)?;
            let parent = manifest.parent.clone();
            if manifest.kind == LinkKind::Base {
                links.push((at, manifest));
                break;
            }
            let Some(parent) = parent else { bail!("{}: a delta without a parent", at.join("MANIFEST.json").display()) };
            let parent_dir = at.parent().unwrap_or(Path::new(".")).join(&parent);
            if !parent_dir.is_dir() || manifest.depth == 0 {
                bail!("{}: a delta on {}, which is missing", at.join("MANIFEST.json").display(), parent_dir.display());
            }
            links.push((at, manifest));
            at = parent_dir;
        }
        links.reverse();
        let (base_dir, base) = &links[0];
        for (d, m) in &links[1..] {
            if m.table != base.table || m.table_optimizer != base.table_optimizer {
                bail!("{}: table or optimizer differs from its base {}", d.display(), base_dir.display());
            }
        }
        let trainer_path = dir.join(TRAINER_FILE);
        let text = std::fs::read_to_string(&trainer_path).with_context(|| format!("cannot read {}", trainer_path.display()))?;
        let state = serde_json::from_str(&text).with_context(|| format!("{}: corrupt trainer state", trainer_path.display()))?;
        Ok(Checkpoint { dir: dir.to_path_buf(), state, table_optimizer: base.table_optimizer.clone(), links })
    }

    /// See [`latest`].
    pub fn open_latest(run_dir: &Path) -> anyhow::Result<Self> {
        let root = checkpoints_dir(run_dir);
        let pointer = root.join(LATEST_FILE);
        let named = std::fs::read_to_string(&pointer).ok().map(|s| s.trim().to_string());
        let mut why = match &named {
            Some(name) if is_checkpoint_name(name) => match Checkpoint::open(&root.join(name)) {
                Ok(c) => return Ok(c),
                Err(e) => format!("{} names {name}, which cannot be used: {e:#}", pointer.display()),
            },
            Some(name) => format!("{} is corrupt ({name:?} is not a checkpoint name)", pointer.display()),
            None => format!("{} is missing", pointer.display()),
        };
        let mut names: Vec<String> =
            std::fs::read_dir(&root).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| is_checkpoint_name(n)).collect()).unwrap_or_default();
        names.sort_unstable_by(|a, b| b.cmp(a));
        for name in names.iter().filter(|n| Some(*n) != named.as_ref()) {
            match Checkpoint::open(&root.join(name)) {
                Ok(c) => {
                    eprintln!("warning: {why}; falling back to {}", c.dir.display());
                    return Ok(c);
                }
                Err(e) => why = format!("{why}; {name} cannot be used either: {e:#}"),
            }
        }
        bail!("{}: no complete checkpoint found ({why})", run_dir.display())
    }

    pub fn recipe(&self) -> TableRecipe {
        self.links[0].1.table
    }

    /// Every link of the chain (its folder and manifest), base first.
    pub(super) fn links(&self) -> &[(PathBuf, Manifest)] {
        &self.links
    }

    /// The step of every link, base first.
    pub fn chain_steps(&self) -> Vec<u64> {
        self.links.iter().map(|(_, m)| m.step).collect()
    }

    /// Bytes of the base and of the deltas after it.
    pub(super) fn chain_bytes(&self) -> (u64, u64) {
        (self.links[0].1.bytes, self.links[1..].iter().map(|(_, m)| m.bytes).sum())
    }

    pub(super) fn tip(&self) -> (&str, u32) {
        let (d, m) = self.links.last().expect("a chain has a base");
        (d.file_name().and_then(|n| n.to_str()).unwrap_or(""), m.depth)
    }

    /// The rows the chain stores (ascending), or `None` when it stores every row.
    pub fn stored_rows(&self) -> anyhow::Result<Option<Vec<u32>>> {
        let mut all = Vec::new();
        for (dir, m) in &self.links {
            if m.all_rows {
                return Ok(None);
            }
            let (ids, _) = SafetensorsFile::open(&dir.join(ROWS_FILE))?.u32("ids")?;
            all.extend(ids);
        }
        all.sort_unstable();
        all.dedup();
        Ok(Some(all))
    }

    /// Writes the chain's rows into `table` (created from [`Checkpoint::recipe`]),
    /// base first, marking them materialised; other rows keep their initial value.
    /// With `resident`, `table` holds only those rows of the checkpoint's table
    /// (a trainer's resident rows), in their local order.
    pub fn restore_table(&self, table: &mut EmbeddingTable, resident: Option<&ResidentRows>) -> anyhow::Result<()> {
        let recipe = self.recipe();
        let local_rows = resident.map_or(recipe.rows, |r| r.len());
        let full_rows = resident.map_or(recipe.rows, |r| r.table_rows());
        if (table.rows(), table.dim(), full_rows) != (local_rows, recipe.dim, recipe.rows) {
            bail!("{}: checkpoint table is {}×{}, the data and config give {}×{}", self.dir.display(), recipe.rows, recipe.dim, full_rows, table.dim());
        }
        if table.dtype() != recipe.dtype {
            bail!("{}: checkpoint stores {} rows, but model.table_dtype is {}", self.dir.display(), recipe.dtype.name(), table.dtype().name());
        }
        let dim = recipe.dim;
        for (dir, m) in &self.links {
            let file = SafetensorsFile::open(&dir.join(ROWS_FILE))?;
            let (bytes, shape) = file.raw("table", table_tensor_dtype(recipe.dtype))?;
            if shape != [m.rows_stored as usize, dim] {
                bail!("{}: table rows have shape {shape:?}, expected [{}, {dim}]", dir.join(ROWS_FILE).display(), m.rows_stored);
            }
            let rows = LinkRows::of(&file, dir, m, recipe.rows, resident)?;
            rows.copy_into(bytes, dim * recipe.dtype.size(), table.as_bytes_mut());
            match rows {
                LinkRows::Ids(ids) => table.mark_materialized(&ids),
                LinkRows::All | LinkRows::Pick(_) => table.mark_materialized(&(0..local_rows as u32).collect::<Vec<_>>()),
            }
        }
        Ok(())
    }

    /// The table's weights and the head: every row materialised, and any decay
    /// that lazy weight decay still owes applied, so these are the weights a
    /// dense optimizer would have (what export and evaluation should see).
    pub fn model(&self) -> anyhow::Result<(EmbeddingTable, HeadWeights)> {
        let r = self.recipe();
        let mut table = EmbeddingTable::eager(r);
        self.restore_table(&mut table, None)?;
        if self.owes_decay()? {
            // Half rows round this pass keyed by the checkpoint's step, as the trainer does at the end.
            table.set_update_step(self.state.step);
            self.table_optimizer()?.apply_pending_decay(&mut table);
        }
        Ok((table, self.head()?))
    }

    /// The table optimizer the run used, rebuilt from the manifest, with this checkpoint's state.
    pub fn table_optimizer(&self) -> anyhow::Result<Box<dyn TableOptimizer>> {
        let config: TableOptimizerConfig = serde_json::from_value(self.links[0].1.table_optimizer_config.clone())
            .with_context(|| format!("{}: table optimizer config", self.dir.join("MANIFEST.json").display()))?;
        let r = self.recipe();
        let mut optimizer = config.init(r.rows, r.dim);
        self.load_table_optimizer(optimizer.as_mut(), None)?;
        Ok(optimizer)
    }

    /// Whether the optimizer state holds per-row decay marks (lazy weight decay).
    fn owes_decay(&self) -> anyhow::Result<bool> {
        let (dir, _) = self.links.last().expect("a chain has a base");
        Ok(SafetensorsFile::open(&dir.join(ROWS_FILE))?.has(super::table_source::LOG_DECAY))
    }

    pub fn head(&self) -> anyhow::Result<HeadWeights> {
        let path = self.dir.join(HEAD_FILE);
        let file = SafetensorsFile::open(&path)?;
        let mut layers = Vec::new();
        while file.has(&format!("head.{}.weight", layers.len())) {
            let (weight, shape) = file.f32(&format!("head.{}.weight", layers.len()))?;
            let [input, output] = shape[..] else { bail!("{}: head weight must be 2-D", path.display()) };
            let (bias, _) = file.f32(&format!("head.{}.bias", layers.len()))?;
            layers.push(DenseLayer { input, output, weight, bias });
        }
        if layers.is_empty() {
            bail!("{}: no head layers", path.display());
        }
        Ok(HeadWeights { layers })
    }

    /// Loads the chain's optimizer state into `optimizer`, which must be
    /// freshly initialised (rows the chain does not store stay zero). With
    /// `resident`, the optimizer holds only those rows, as in [`Checkpoint::restore_table`].
    pub fn load_table_optimizer(&self, optimizer: &mut dyn TableOptimizer, resident: Option<&ResidentRows>) -> anyhow::Result<()> {
        if optimizer.name() != self.table_optimizer {
            bail!("{}: checkpoint was trained with {}, the config asks for {}", self.dir.display(), self.table_optimizer, optimizer.name());
        }
        let full_rows = self.recipe().rows;
        let mut links = Vec::new();
        for (dir, m) in &self.links {
            let file = SafetensorsFile::open(&dir.join(ROWS_FILE))?;
            let rows = LinkRows::of(&file, dir, m, full_rows, resident)?;
            links.push((file, rows));
        }
        let rows = resident.map_or(full_rows, |r| r.len());
        let source = ChainState { links, rows, per_row: optimizer.per_row_state() };
        optimizer.load_state(&source).with_context(|| format!("{}", self.dir.join(ROWS_FILE).display()))
    }

    pub fn head_optimizer_record(&self) -> anyhow::Result<Vec<u8>> {
        let path = self.dir.join(HEAD_OPTIM_FILE);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    }
}

fn is_checkpoint_name(name: &str) -> bool {
    name.strip_prefix("step-").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A link's `ids`, checked: as many as the manifest says, ascending, in range.
pub(super) fn stored_ids(file: &SafetensorsFile, dir: &Path, m: &Manifest, rows: usize) -> anyhow::Result<Vec<u32>> {
    let (ids, _) = file.u32("ids")?;
    let ok = ids.len() as u64 == m.rows_stored && ids.windows(2).all(|w| w[0] < w[1]) && ids.last().is_none_or(|&r| (r as usize) < rows);
    if !ok {
        bail!("{}: ids must be {} ascending rows below {rows}", dir.join(ROWS_FILE).display(), m.rows_stored);
    }
    Ok(ids)
}

/// Where a link's stored rows go in the table being restored.
enum LinkRows<'r> {
    /// The link stores every row of the table, which is restored whole.
    All,
    /// Stored row `k` goes to row `ids[k]` (local ids when restoring resident rows).
    Ids(Vec<u32>),
    /// The link stores every row; the table being restored holds only these (global ids, ascending).
    Pick(&'r [u32]),
}

impl<'r> LinkRows<'r> {
    fn of(file: &SafetensorsFile, dir: &Path, m: &Manifest, full_rows: usize, resident: Option<&'r ResidentRows>) -> anyhow::Result<Self> {
        Ok(match (m.all_rows, resident) {
            (true, None) => LinkRows::All,
            (true, Some(r)) => LinkRows::Pick(r.global_ids()),
            (false, None) => LinkRows::Ids(stored_ids(file, dir, m, full_rows)?),
            (false, Some(r)) => {
                let mut ids = stored_ids(file, dir, m, full_rows)?;
                for id in &mut ids {
                    *id = r.local(*id).with_context(|| format!("{}: stores row {id}, which the data no longer reaches (did the data change?)", dir.join(ROWS_FILE).display()))?;
                }
                LinkRows::Ids(ids)
            }
        })
    }

    /// Whether `bytes` holds this link's rows of `row_bytes` each, for a table of `rows` rows.
    fn fits(&self, bytes: usize, row_bytes: usize, rows: usize) -> bool {
        match self {
            LinkRows::All => bytes == rows * row_bytes,
            LinkRows::Ids(ids) => bytes == ids.len() * row_bytes,
            LinkRows::Pick(global) => global.last().is_none_or(|&g| (g as usize + 1) * row_bytes <= bytes),
        }
    }

    /// Writes the stored rows in `bytes` to their rows of `into` (rows of `row_bytes`):
    /// the inverse of the writer's gather.
    fn copy_into(&self, bytes: &[u8], row_bytes: usize, into: &mut [u8]) {
        match self {
            LinkRows::All => into.copy_from_slice(bytes),
            LinkRows::Ids(ids) => {
                for (k, &r) in ids.iter().enumerate() {
                    let r = r as usize;
                    into[r * row_bytes..(r + 1) * row_bytes].copy_from_slice(&bytes[k * row_bytes..(k + 1) * row_bytes]);
                }
            }
            LinkRows::Pick(global) => {
                for (local, &g) in global.iter().enumerate() {
                    let g = g as usize;
                    into[local * row_bytes..(local + 1) * row_bytes].copy_from_slice(&bytes[g * row_bytes..(g + 1) * row_bytes]);
                }
            }
        }
    }
}

/// The optimizer state of a chain, as a [`StateSource`]: per-row arrays are
/// the links' rows scattered in order, global arrays the newest link's.
struct ChainState<'r> {
    links: Vec<(SafetensorsFile, LinkRows<'r>)>,
    rows: usize,
    per_row: &'static [&'static str],
}

impl ChainState<'_> {
    fn read<T: bytemuck::Pod>(&self, name: &str, dtype: Dtype, into: &mut [T]) -> Result<(), StateError> {
        if !self.per_row.contains(&name) {
            let (newest, _) = self.links.last().expect("a chain has a base");
            return newest.read_into(&format!("global.{name}"), dtype, into);
        }
        if self.rows == 0 || !into.len().is_multiple_of(self.rows) {
            return Err(StateError::WrongLength { name: name.into(), expected: self.rows, found: into.len() });
        }
        let width = into.len() / self.rows;
        let row_bytes = width * std::mem::size_of::<T>();
        let key = format!("state.{name}");
        for (file, rows) in &self.links {
            let (bytes, _) = file.raw(&key, dtype).map_err(|_| StateError::Missing(key.clone()))?;
            if !rows.fits(bytes.len(), row_bytes, self.rows) {
                return Err(StateError::WrongLength { name: key, expected: into.len(), found: bytes.len() / std::mem::size_of::<T>() });
            }
            rows.copy_into(bytes, row_bytes, bytemuck::cast_slice_mut(into));
        }
        Ok(())
    }
}

impl StateSource for ChainState<'_> {
    fn read_f32(&self, name: &str, into: &mut [f32]) -> Result<(), StateError> {
        self.read(name, Dtype::F32, into)
    }
    fn read_u32(&self, name: &str, into: &mut [u32]) -> Result<(), StateError> {
        self.read(name, Dtype::U32, into)
    }
    fn read_f64(&self, name: &str, into: &mut [f64]) -> Result<(), StateError> {
        self.read(name, Dtype::F64, into)
    }
    fn read_u64(&self, name: &str, into: &mut [u64]) -> Result<(), StateError> {
        self.read(name, Dtype::U64, into)
    }
}
