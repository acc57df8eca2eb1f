//! Writing checkpoints: which rows to store (base or delta), a snapshot of
//! them, and the durable write on a background thread.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{bail, Context};
use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};

use super::chain::Checkpoint;
use super::manifest::{LinkKind, Manifest, CHECKPOINT_FORMAT_VERSION, HEAD_FILE, HEAD_OPTIM_FILE, LATEST_FILE, MANIFEST_FILE, ROWS_FILE, TRAINER_FILE};
use super::{checkpoints_dir, folder_name, TrainerState};
use crate::config::CheckpointConfig;
use crate::durable;
use crate::io::{gather_rows, state_bytes, table_tensor_dtype, write_safetensors_to, HashingWriter, RowPick, TensorData, TensorOut};
use crate::model::{EmbeddingTable, HeadWeights, TableRecipe};
use crate::optim::TableOptimizer;
use crate::train::resident::ResidentRows;
use crate::train::rowset::RowSet;

/// What checkpointing cost a run (this session).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointStats {
    pub written: u64,
    pub bases: u64,
    pub deltas: u64,
    /// Bytes of all checkpoint files written.
    pub bytes: u64,
    /// Seconds the training loop stood still for checkpoints (snapshots, and
    /// waiting for a previous write still in flight).
    pub seconds_in_loop: f64,
    /// Seconds spent on the final checkpoint (snapshot, write and fsync).
    pub seconds_final: f64,
}

/// The newest link of the chain being extended.
struct Tip {
    name: String,
    depth: u32,
    base_bytes: u64,
    delta_bytes: u64,
}

/// Tracks which rows changed and writes checkpoints of a run.
pub struct Checkpointer {
    root: PathBuf,
    keep: usize,
    max_chain: u32,
    compact_ratio: f64,
    background: bool,
    recipe: TableRecipe,
    /// The rows the trainer holds, when it holds only some (its ids are local ids).
    resident: Option<Arc<ResidentRows>>,
    optimizer_config: serde_json::Value,
    /// Rows changed since the run began: what a base stores.
    touched: RowSet,
    /// Rows changed since the last checkpoint: what a delta stores.
    dirty: RowSet,
    tip: Option<Tip>,
    /// Step of the newest complete (or in-flight) checkpoint.
    last_step: Option<u64>,
    in_flight: Option<JoinHandle<anyhow::Result<Written>>>,
    stats: CheckpointStats,
}

impl Drop for Checkpointer {
    /// A run that stops on an error still completes the checkpoint in flight.
    fn drop(&mut self) {
        if let Err(e) = self.wait() {
            eprintln!("warning: {e:#}");
        }
    }
}

struct Written {
    kind: LinkKind,
    bytes: u64,
}

impl Checkpointer {
    /// Starts checkpointing into `<run_dir>/checkpoints`, continuing the chain
    /// of `resumed` if given. The caller holds the run's lock: any staging
    /// leftovers there belong to a dead process and are removed.
    /// With `resident`, the trainer holds only those rows of the table (row
    /// ids given to this checkpointer are local ids); files store global ids.
    pub fn new(
        run_dir: &Path,
        config: &CheckpointConfig,
        recipe: TableRecipe,
        resident: Option<Arc<ResidentRows>>,
        optimizer_config: serde_json::Value,
        resumed: Option<&Checkpoint>,
    ) -> anyhow::Result<Self> {
        let root = checkpoints_dir(run_dir);
        std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        remove_leftovers(&root);
        let local_rows = resident.as_ref().map_or(recipe.rows, |r| r.len());
        let mut touched = RowSet::new(local_rows);
        let mut tip = None;
        if let Some(c) = resumed {
            match (c.stored_rows()?, &resident) {
                (Some(rows), None) => touched.insert(&rows),
                // The chain was checked against the resident rows when it was restored.
                (Some(rows), Some(r)) => touched.insert(&rows.iter().filter_map(|&g| r.local(g)).collect::<Vec<_>>()),
                (None, _) => touched.insert_all(),
            }
            let (base_bytes, delta_bytes) = c.chain_bytes();
            let (name, depth) = c.tip();
            tip = Some(Tip { name: name.to_string(), depth, base_bytes, delta_bytes });
        }
        Ok(Checkpointer {
            root,
            keep: config.keep.max(1),
            max_chain: config.max_chain,
            compact_ratio: config.compact_ratio,
            background: config.background,
            recipe,
            resident,
            optimizer_config,
            touched,
            dirty: RowSet::new(local_rows),
            tip,
            last_step: resumed.map(|c| c.state.step),
            in_flight: None,
            stats: CheckpointStats::default(),
        })
    }

    /// Records the rows a step changed (the sorted unique rows of its gradient).
    pub fn record_rows(&mut self, rows: &[u32]) {
        self.touched.insert(rows);
        self.dirty.insert(rows);
    }

    /// Records that every row changed (a dense optimizer's step).
    pub fn record_all_rows(&mut self) {
        self.touched.insert_all();
        self.dirty.insert_all();
    }

    pub fn stats(&self) -> &CheckpointStats {
        &self.stats
    }

    /// Saves a checkpoint of the state at `state.step`, unless one of that
    /// step is already complete (a checkpoint is never rewritten). With
    /// `background` (and not `final_save`), the rows are copied and written on
    /// a thread while training continues (wait for it with
    /// [`Checkpointer::finish`]); otherwise the rows are written straight
    /// from `table` and `optimizer`, and the call returns once the checkpoint
    /// is durable.
    pub fn save(
        &mut self,
        state: &TrainerState,
        table: &EmbeddingTable,
        head: &HeadWeights,
        optimizer: &dyn TableOptimizer,
        head_record: Vec<u8>,
        final_save: bool,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        // At most one in flight: a previous write must finish (and its error surfaces) first.
        self.wait()?;
        if self.last_step != Some(state.step) {
            // Training goes on during a background write, so it needs its own
            // copy of the rows; a final or foreground write reads them from
            // the live table and state (a base of every row would otherwise
            // double the run's peak memory at its end).
            let copy = self.background && !final_save;
            let snapshot = self.snapshot(state, table, head, optimizer, head_record, copy)?;
            self.dirty.clear();
            self.last_step = Some(state.step);
            let (root, keep) = (self.root.clone(), self.keep);
            if copy {
                let snapshot = snapshot.into_owned();
                let handle = std::thread::Builder::new().name("checkpoint".into()).spawn(move || snapshot.write(&root, keep)).context("starting the checkpoint thread")?;
                self.in_flight = Some(handle);
            } else {
                let written = snapshot.write(&root, keep)?;
                self.count(written);
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        if final_save {
            self.stats.seconds_final += seconds
        } else {
            self.stats.seconds_in_loop += seconds
        }
        Ok(())
    }

    /// Waits for the final checkpoint (counted as final-checkpoint time).
    pub fn finish(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let result = self.wait();
        self.stats.seconds_final += started.elapsed().as_secs_f64();
        result
    }

    /// Waits for the checkpoint in flight, if any; returns its error.
    pub fn wait(&mut self) -> anyhow::Result<()> {
        if let Some(handle) = self.in_flight.take() {
            let written = handle.join().map_err(|_| anyhow::anyhow!("the checkpoint thread panicked"))??;
            self.count(written);
        }
        Ok(())
    }

    fn count(&mut self, w: Written) {
        self.stats.written += 1;
        self.stats.bytes += w.bytes;
        match w.kind {
            LinkKind::Base => self.stats.bases += 1,
            LinkKind::Delta => self.stats.deltas += 1,
        }
        if let Some(tip) = &mut self.tip {
            match w.kind {
                LinkKind::Base => tip.base_bytes = w.bytes,
                LinkKind::Delta => tip.delta_bytes += w.bytes,
            }
        }
    }

    /// Copies what the next checkpoint stores: a delta of the dirty rows while
    /// the chain is short and its deltas lighter than its base, else a new base.
    /// With `copy`, the rows are gathered into the snapshot; without, it
    /// borrows the table's and state's arrays and picks the rows as it writes.
    fn snapshot<'a>(
        &mut self,
        state: &TrainerState,
        table: &'a EmbeddingTable,
        head: &HeadWeights,
        optimizer: &'a dyn TableOptimizer,
        head_record: Vec<u8>,
        copy: bool,
    ) -> anyhow::Result<Snapshot<'a>> {
        // Rows the trainer holds (all of the table's, or its resident rows).
        let rows = table.rows();
        let dim = table.dim();
        let arrays = optimizer.state();
        let per_row_bytes: usize = arrays.iter().filter(|(n, _)| optimizer.per_row_state().contains(n)).map(|(_, d)| d.bytes() / rows.max(1)).sum();
        let row_bytes = (table.row_bytes() + per_row_bytes) as u64;
        let delta_bytes = self.dirty.len(rows) as u64 * row_bytes;
        let as_delta = self.tip.as_ref().filter(|t| t.depth < self.max_chain && (t.delta_bytes + delta_bytes) as f64 <= t.base_bytes as f64 * self.compact_ratio);
        let (kind, parent, depth, ids) = match as_delta {
            Some(t) => (LinkKind::Delta, Some(t.name.clone()), t.depth + 1, self.dirty.sorted()),
            None => (LinkKind::Base, None, 0, self.touched.sorted()),
        };
        let name = folder_name(state.step);
        if kind == LinkKind::Base {
            self.tip = Some(Tip { name: name.clone(), depth: 0, base_bytes: 0, delta_bytes: 0 });
        } else if let Some(t) = &mut self.tip {
            t.name = name.clone();
            t.depth = depth;
        }

        // Resident rows: "every row" means every resident row, named by its global id.
        let ids = match (&self.resident, ids) {
            (Some(_), None) => Some((0..rows as u32).collect::<Vec<_>>()),
            (_, ids) => ids,
        };
        let mut tensors = Vec::new();
        let stored = ids.as_ref().map_or(rows, |ids| ids.len());
        if let Some(ids) = &ids {
            let global = match &self.resident {
                Some(r) => r.globalize(ids),
                None => ids.clone(),
            };
            tensors.push(StoredTensor::owned("ids", Dtype::U32, vec![ids.len()], bytemuck::cast_slice(&global).to_vec()));
        }
        // The stored rows of a per-row array: gathered now, or picked while writing.
        let rows_of = |name: String, dtype: Dtype, width: usize, bytes: &'a [u8], row_size: usize| StoredTensor {
            name,
            dtype,
            shape: vec![stored, width],
            bytes: match (copy, ids.as_deref()) {
                (true, Some(ids)) => Cow::Owned(gather_rows(bytes, row_size, ids)),
                (true, None) => Cow::Owned(bytes.to_vec()),
                (false, _) => Cow::Borrowed(bytes),
            },
            picked_row_bytes: (!copy && ids.is_some()).then_some(row_size),
        };
        // Rows in the table's own dtype: a half table's checkpoint is half the bytes.
        tensors.push(rows_of("table".into(), table_tensor_dtype(table.dtype()), dim, table.view().as_bytes(), table.row_bytes()));
        for (array, data) in arrays {
            let (dtype, bytes) = state_bytes(data);
            if optimizer.per_row_state().contains(&array) {
                if !data.len().is_multiple_of(rows.max(1)) {
                    bail!("optimizer state {array:?} has {} values, not a multiple of the table's {rows} rows", data.len());
                }
                tensors.push(rows_of(format!("state.{array}"), dtype, data.len() / rows.max(1), bytes, bytes.len() / rows.max(1)));
            } else {
                tensors.push(StoredTensor::owned(format!("global.{array}"), dtype, vec![data.len()], bytes.to_vec()));
            }
        }
        let mut head_tensors = Vec::new();
        for (i, l) in head.layers.iter().enumerate() {
            head_tensors.push(StoredTensor::owned(format!("head.{i}.weight"), Dtype::F32, vec![l.input, l.output], bytemuck::cast_slice(&l.weight).to_vec()));
            head_tensors.push(StoredTensor::owned(format!("head.{i}.bias"), Dtype::F32, vec![l.output], bytemuck::cast_slice(&l.bias).to_vec()));
        }
        let manifest = Manifest {
            format_version: CHECKPOINT_FORMAT_VERSION,
            sparseburn_version: env!("CARGO_PKG_VERSION").into(),
            step: state.step,
            kind,
            parent,
            depth,
            table: self.recipe,
            table_optimizer: optimizer.name().into(),
            table_optimizer_config: self.optimizer_config.clone(),
            rows_stored: stored as u64,
            all_rows: ids.is_none(),
            bytes: 0,
            checksum: "blake3".into(),
            files: BTreeMap::new(),
        };
        let picked = if copy { None } else { ids };
        Ok(Snapshot { name, picked, rows: tensors, head: head_tensors, head_record, trainer: state.clone(), manifest })
    }
}

/// One tensor of a snapshot: its bytes copied, or borrowed from the live
/// table or state with the stored rows picked as it is written.
struct StoredTensor<'a> {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Cow<'a, [u8]>,
    /// Borrowed per-row arrays: the row size; the rows are [`Snapshot::picked`].
    picked_row_bytes: Option<usize>,
}

impl StoredTensor<'_> {
    fn owned(name: impl Into<String>, dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) -> StoredTensor<'static> {
        StoredTensor { name: name.into(), dtype, shape, bytes: Cow::Owned(bytes), picked_row_bytes: None }
    }
}

/// Everything one checkpoint folder holds: owned (written while training goes on) or borrowing the live rows.
struct Snapshot<'a> {
    name: String,
    /// The local rows stored, when the rows are picked from borrowed arrays.
    picked: Option<Vec<u32>>,
    rows: Vec<StoredTensor<'a>>,
    head: Vec<StoredTensor<'a>>,
    head_record: Vec<u8>,
    trainer: TrainerState,
    manifest: Manifest,
}

impl Snapshot<'_> {
    /// A copied snapshot as one that owns everything (a thread can write it).
    fn into_owned(self) -> Snapshot<'static> {
        let own = |t: StoredTensor<'_>| {
            debug_assert!(t.picked_row_bytes.is_none(), "a copied snapshot picks no rows");
            StoredTensor::owned(t.name, t.dtype, t.shape, t.bytes.into_owned())
        };
        Snapshot {
            name: self.name,
            picked: None,
            rows: self.rows.into_iter().map(own).collect(),
            head: self.head.into_iter().map(own).collect(),
            head_record: self.head_record,
            trainer: self.trainer,
            manifest: self.manifest,
        }
    }

    fn views<'s>(&'s self, tensors: &'s [StoredTensor<'_>]) -> Vec<TensorOut<'s>> {
        tensors
            .iter()
            .map(|t| TensorOut {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                data: match t.picked_row_bytes.zip(self.picked.as_deref()) {
                    Some((row_bytes, ids)) => TensorData::Picked(&t.bytes, RowPick { ids, row_bytes }),
                    None => TensorData::Bytes(&t.bytes),
                },
            })
            .collect()
    }
    /// Writes the folder durably, points `LATEST` at it, then prunes.
    fn write(mut self, root: &Path, keep: usize) -> anyhow::Result<Written> {
        let staging = root.join(format!(".tmp-{}-{}", self.name, std::process::id()));
        if staging.exists() {
            durable::remove_dir_all(&staging)?;
        }
        durable::create_dir(&staging)?;
        let mut files = BTreeMap::new();
        let mut bytes = 0u64;
        let mut put = |file: &str, write: &dyn Fn(&mut dyn Write) -> std::io::Result<()>| -> anyhow::Result<()> {
            let mut hash = String::new();
            durable::write_file(&staging.join(file), |w| {
                let mut h = HashingWriter::new(w);
                write(&mut h)?;
                h.flush()?;
                hash = h.hex();
                Ok(())
            })?;
            bytes += std::fs::metadata(staging.join(file)).map(|m| m.len()).unwrap_or(0);
            files.insert(file.to_string(), hash);
            Ok(())
        };
        let meta = HashMap::from([("format".to_string(), "sparseburn-checkpoint".to_string())]);
        put(ROWS_FILE, &|w| write_safetensors_to(&mut WriteRef(w), &self.views(&self.rows), &meta))?;
        put(HEAD_FILE, &|w| write_safetensors_to(&mut WriteRef(w), &self.views(&self.head), &HashMap::new()))?;
        put(HEAD_OPTIM_FILE, &|w| w.write_all(&self.head_record))?;
        let trainer = serde_json::to_vec_pretty(&self.trainer)?;
        put(TRAINER_FILE, &|w| w.write_all(&trainer))?;
        self.manifest.files = files;
        self.manifest.bytes = bytes;
        let manifest = serde_json::to_vec_pretty(&self.manifest)?;
        durable::write_file(&staging.join(MANIFEST_FILE), |w| w.write_all(&manifest))?;
        bytes += manifest.len() as u64;
        durable::sync_dir(&staging)?;

        let dest = root.join(&self.name);
        if dest.exists() {
            // An older folder of this step (e.g. one that failed to verify):
            // swap in one step so the name never points at nothing, then drop the old one.
            durable::exchange(&staging, &dest)?;
            durable::remove_dir_all(&staging)?;
        } else {
            durable::rename(&staging, &dest)?;
        }
        durable::sync_dir(root)?;
        durable::replace_file(&root.join(LATEST_FILE), self.name.as_bytes())?;
        prune(root, &self.name, keep)?;
        Ok(Written { kind: self.manifest.kind, bytes })
    }
}

/// `&mut dyn Write` as a sized writer.
struct WriteRef<'a>(&'a mut dyn Write);
impl Write for WriteRef<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Removes checkpoints beyond the newest `keep`, except any that a kept one
/// builds on (its chain) and the one `LATEST` names.
fn prune(root: &Path, latest: &str, keep: usize) -> anyhow::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .with_context(|| format!("cannot list {}", root.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    names.sort_unstable_by(|a, b| b.cmp(a));
    let mut needed = BTreeSet::new();
    let mut keep_chain = |start: &str| {
        let mut at = Some(start.to_string());
        while let Some(name) = at {
            if !needed.insert(name.clone()) {
                break;
            }
            // A folder whose manifest cannot be read ends its chain.
            at = Manifest::read(&root.join(&name)).ok().and_then(|m| m.parent);
        }
    };
    keep_chain(latest);
    names.iter().take(keep).for_each(|n| keep_chain(n));
    for name in names.iter().filter(|n| !needed.contains(*n)) {
        durable::remove_dir_all(&root.join(name))?;
    }
    Ok(())
}

/// Removes staging folders and temporary files a killed process left.
fn remove_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(".tmp") {
            continue;
        }
        let path = e.path();
        eprintln!("removing {}, left by an interrupted checkpoint", path.display());
        let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
    }
}
