//! Checkpoints: everything needed to continue a run bit for bit.
//!
//! `<run>/checkpoints/step-NNNNNNNN/` holds
//! - `model.safetensors`: `table` `[rows, dim]` and `head.{i}.weight` `[in, out]`, `head.{i}.bias`;
//! - `table_optimizer.safetensors`: the table optimizer's named state arrays;
//! - `head_optimizer.bin`: Burn's Adam state for the head (Burn's binary recorder);
//! - `trainer.json`: step, data position and metrics so far;
//! - `MANIFEST.json`: format version and the SHA-256 of every file above.
//!
//! A checkpoint is written into a temporary folder and renamed into place, and
//! `LATEST` (also written atomically) names the newest: a crash at any point
//! leaves the previous checkpoint as the latest complete one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::io::{sha256_file, write_atomic, write_safetensors, SafetensorsFile, TensorOut};
use crate::model::{DenseLayer, EmbeddingTable, HeadWeights};
use crate::optim::TableOptimizer;

pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;
const MODEL_FILE: &str = "model.safetensors";
const TABLE_OPTIM_FILE: &str = "table_optimizer.safetensors";
const HEAD_OPTIM_FILE: &str = "head_optimizer.bin";
const TRAINER_FILE: &str = "trainer.json";
const MANIFEST_FILE: &str = "MANIFEST.json";
const LATEST_FILE: &str = "LATEST";

/// Where training stands: enough to continue exactly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Epoch in progress.
    pub epoch: u64,
    /// Batches of `epoch` already trained.
    pub batch_in_epoch: u64,
    /// Wall-clock seconds spent training so far (excluding evaluation).
    pub train_seconds: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format_version: u32,
    sparseburn_version: String,
    table_optimizer: String,
    files: BTreeMap<String, String>,
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes a checkpoint of the current state; returns its folder.
pub fn save(
    run_dir: &Path,
    state: &TrainerState,
    table: &EmbeddingTable,
    head: &HeadWeights,
    table_optimizer: &dyn TableOptimizer,
    head_optimizer_record: &[u8],
    keep: usize,
) -> anyhow::Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let name = format!("step-{:08}", state.step);
    let tmp = tempfile::Builder::new().prefix(".tmp-").tempdir_in(&root).with_context(|| format!("cannot create a folder in {}", root.display()))?;
    let dir = tmp.path();

    let mut tensors = vec![TensorOut::f32("table", vec![table.rows(), table.dim()], table.as_slice())];
    for (i, l) in head.layers.iter().enumerate() {
        tensors.push(TensorOut::f32(format!("head.{i}.weight"), vec![l.input, l.output], &l.weight));
        tensors.push(TensorOut::f32(format!("head.{i}.bias"), vec![l.output], &l.bias));
    }
    write_safetensors(&dir.join(MODEL_FILE), &tensors, HashMap::new())?;
    let state_tensors: Vec<_> = table_optimizer.state().into_iter().map(|(n, d)| TensorOut::state(n, d)).collect();
    let meta = HashMap::from([("optimizer".to_string(), table_optimizer.name().to_string())]);
    write_safetensors(&dir.join(TABLE_OPTIM_FILE), &state_tensors, meta)?;
    write_atomic(&dir.join(HEAD_OPTIM_FILE), |w| std::io::Write::write_all(w, head_optimizer_record))?;
    write_atomic(&dir.join(TRAINER_FILE), |w| serde_json::to_writer_pretty(w, state).map_err(std::io::Error::other))?;

    let mut files = BTreeMap::new();
    for f in [MODEL_FILE, TABLE_OPTIM_FILE, HEAD_OPTIM_FILE, TRAINER_FILE] {
        files.insert(f.to_string(), sha256_file(&dir.join(f))?);
    }
    let manifest = Manifest {
        format_version: CHECKPOINT_FORMAT_VERSION,
        sparseburn_version: env!("CARGO_PKG_VERSION").into(),
        table_optimizer: table_optimizer.name().into(),
        files,
    };
    write_atomic(&dir.join(MANIFEST_FILE), |w| serde_json::to_writer_pretty(w, &manifest).map_err(std::io::Error::other))?;

    let final_dir = root.join(&name);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).with_context(|| format!("cannot replace {}", final_dir.display()))?;
    }
    let tmp_path = tmp.keep();
    std::fs::rename(&tmp_path, &final_dir).with_context(|| format!("cannot rename checkpoint into {}", final_dir.display()))?;
    write_atomic(&root.join(LATEST_FILE), |w| std::io::Write::write_all(w, name.as_bytes()))?;
    prune(&root, &name, keep);
    Ok(final_dir)
}

/// Removes all but the newest `keep` checkpoints (never the latest) and stale temp folders.
fn prune(root: &Path, latest: &str, keep: usize) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    let mut steps: Vec<String> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("step-") {
            steps.push(name);
        } else if name.starts_with(".tmp-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    steps.sort();
    let excess = steps.len().saturating_sub(keep.max(1));
    for name in steps.into_iter().take(excess).filter(|n| n != latest) {
        let _ = std::fs::remove_dir_all(root.join(name));
    }
}

/// The latest complete checkpoint of a run.
pub fn latest(run_dir: &Path) -> anyhow::Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    let pointer = root.join(LATEST_FILE);
    let name = std::fs::read_to_string(&pointer).with_context(|| format!("{}: no checkpoint found (missing {})", run_dir.display(), pointer.display()))?;
    let dir = root.join(name.trim());
    if !dir.is_dir() {
        bail!("{}: names {}, which does not exist", pointer.display(), dir.display());
    }
    Ok(dir)
}

/// A checkpoint verified against its manifest.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: TrainerState,
    pub table_optimizer: String,
}

impl Checkpoint {
    /// Opens `dir`, checking the format version and every file's checksum.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&manifest_path).with_context(|| format!("cannot read {}", manifest_path.display()))?;
        let manifest: Manifest = serde_json::from_str(&text).with_context(|| format!("{}: corrupt manifest", manifest_path.display()))?;
        if manifest.format_version != CHECKPOINT_FORMAT_VERSION {
            bail!(
                "{}: checkpoint format version {} is not supported (this sparseburn {} reads version {})",
                dir.display(),
                manifest.format_version,
                env!("CARGO_PKG_VERSION"),
                CHECKPOINT_FORMAT_VERSION
            );
        }
        for (file, expected) in &manifest.files {
            let path = dir.join(file);
            let actual = sha256_file(&path)?;
            if &actual != expected {
                bail!("{}: checksum mismatch (file is corrupt or truncated): expected sha256 {expected}, found {actual}", path.display());
            }
        }
        let trainer_path = dir.join(TRAINER_FILE);
        let state = serde_json::from_str(&std::fs::read_to_string(&trainer_path)?).with_context(|| format!("{}: corrupt trainer state", trainer_path.display()))?;
        Ok(Checkpoint { dir: dir.to_path_buf(), state, table_optimizer: manifest.table_optimizer })
    }

    /// The table and head weights.
    pub fn model(&self) -> anyhow::Result<(EmbeddingTable, HeadWeights)> {
        let file = SafetensorsFile::open(&self.dir.join(MODEL_FILE))?;
        let (table, shape) = file.f32("table")?;
        let [rows, dim] = shape[..] else { bail!("{}: table must be 2-D, got {shape:?}", self.dir.display()) };
        let mut layers = Vec::new();
        while let Ok((weight, shape)) = file.f32(&format!("head.{}.weight", layers.len())) {
            let [input, output] = shape[..] else { bail!("{}: head weight must be 2-D", self.dir.display()) };
            let (bias, _) = file.f32(&format!("head.{}.bias", layers.len()))?;
            layers.push(DenseLayer { input, output, weight, bias });
        }
        if layers.is_empty() {
            bail!("{}: no head layers in {MODEL_FILE}", self.dir.display());
        }
        Ok((EmbeddingTable::from_vec(rows, dim, table), HeadWeights { layers }))
    }

    pub fn load_table_optimizer(&self, optimizer: &mut dyn TableOptimizer) -> anyhow::Result<()> {
        if optimizer.name() != self.table_optimizer {
            bail!("{}: checkpoint was trained with {}, the config asks for {}", self.dir.display(), self.table_optimizer, optimizer.name());
        }
        let path = self.dir.join(TABLE_OPTIM_FILE);
        let file = SafetensorsFile::open(&path)?;
        optimizer.load_state(&file).with_context(|| format!("{}", path.display()))
    }

    pub fn head_optimizer_record(&self) -> anyhow::Result<Vec<u8>> {
        let path = self.dir.join(HEAD_OPTIM_FILE);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    }
}
