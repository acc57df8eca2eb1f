//! The run directory: `<logging.dir>/<experiment>/<arm>-<n>/`, holding the
//! resolved config, labels, vocabulary, metrics, checkpoints and TensorBoard files.
//!
//! This module is the run directory's contract: the file names, and one serde
//! type per record of `metrics.jsonl` ([`MetricsRecord`]) and for
//! `summary.json` ([`Summary`]). The trainer writes them and `compare` reads
//! them back through the same types.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::data::{Labels, Vocab};
use crate::io::write_atomic;

pub const CONFIG_FILE: &str = "config.toml";
pub const LABELS_FILE: &str = "labels.txt";
pub const VOCAB_FILE: &str = "vocab.txt";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LOCK_FILE: &str = ".lock";
/// The run's outcome, written when it ends (also when interrupted).
pub const SUMMARY_FILE: &str = "summary.json";

/// What `summary.json` holds: the outcome a run returned.
pub type Summary = super::RunOutcome;

/// One line of `metrics.jsonl`, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetricsRecord {
    Train(TrainRecord),
    Eval(EvalRecord),
}

impl MetricsRecord {
    pub fn step(&self) -> u64 {
        match self {
            MetricsRecord::Train(r) => r.step,
            MetricsRecord::Eval(r) => r.step,
        }
    }
}

/// A training step (every `logging.scalar_every` steps).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// Steps done, this one included.
    pub step: u64,
    /// Epoch in progress after the step (0-based).
    pub epoch: u64,
    /// The batch's mean loss, computed before this step's update.
    pub loss: f32,
    /// The batch's accuracy, before the update.
    pub accuracy: f32,
    pub lr_table: f64,
    pub lr_head: f64,
    /// Examples per second of training time so far (evaluation excluded).
    pub examples_per_second: f64,
    /// Distinct table rows in the batch.
    pub rows_touched: u64,
    /// rows_touched / row ids in the batch.
    pub unique_ratio: f64,
    pub train_seconds: f64,
}

/// An evaluation on the test set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    pub accuracy: f64,
    pub top_k_accuracy: f64,
    pub k: usize,
    pub train_seconds: f64,
}

/// Writes `summary.json` (through a temporary file).
pub fn write_summary(dir: &Path, summary: &Summary) -> anyhow::Result<()> {
    write_atomic(&dir.join(SUMMARY_FILE), |w| serde_json::to_writer_pretty(w, summary).map_err(std::io::Error::other))
}

/// Reads `summary.json`.
pub fn read_summary(dir: &Path) -> anyhow::Result<Summary> {
    let path = dir.join(SUMMARY_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a run summary", path.display()))
}

/// Every record of a run's `metrics.jsonl` (no file: none). A torn last line
/// (a run killed mid-write) is skipped; any other bad line is an error naming it.
pub fn read_metrics(dir: &Path) -> anyhow::Result<Vec<MetricsRecord>> {
    let path = dir.join(METRICS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<MetricsRecord>(line) {
            Ok(r) => records.push(r),
            Err(_) if i + 1 == lines.len() => break,
            Err(e) => anyhow::bail!("{}: line {}: not a metrics record: {e}", path.display(), i + 1),
        }
    }
    Ok(records)
}

/// An exclusive lock on a run directory, held while a process trains in it:
/// a second `train` or `--resume` of the same directory would otherwise
/// delete the first one's staging folders and interleave its logs.
pub struct RunLock {
    _file: std::fs::File,
}

/// Locks `dir` for this process (the lock file holds its PID), or says which process holds it.
pub fn lock(dir: &Path) -> anyhow::Result<RunLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).and_then(|_| write!(file, "{}", std::process::id())).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(RunLock { _file: file })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "{}: the run directory is in use by process {} (another `sparseburn train` is training or resuming it); wait for it to finish or stop it",
                dir.display(),
                holder.trim()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// Creates a fresh `<arm>-<n>` folder (the first free n; `create_dir` is atomic,
/// so concurrent runs never share one).
pub fn create(config: &Config) -> anyhow::Result<PathBuf> {
    let parent = config.logging.dir.join(&config.experiment.name);
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create run directory under {} (set logging.dir)", parent.display()))?;
    for n in 1.. {
        let dir = parent.join(format!("{}-{n}", config.experiment.arm));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    unreachable!()
}

/// Writes the resolved config, labels and vocabulary into the run directory.
pub fn write_run_files(dir: &Path, config: &Config, labels: &Labels, vocab: &Vocab) -> anyhow::Result<()> {
    write_atomic(&dir.join(CONFIG_FILE), |w| w.write_all(config.to_toml().as_bytes()))?;
    write_atomic(&dir.join(LABELS_FILE), |w| labels.names().iter().try_for_each(|l| writeln!(w, "{l}")))?;
    write_atomic(&dir.join(VOCAB_FILE), |w| vocab.write(w))?;
    Ok(())
}

/// The resolved config saved in a run directory.
pub fn read_config(dir: &Path) -> anyhow::Result<Config> {
    Config::load(&dir.join(CONFIG_FILE), &[])
}

pub fn read_labels(dir: &Path) -> anyhow::Result<Labels> {
    let path = dir.join(LABELS_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Labels::new(text.lines().map(str::to_string).collect()))
}

/// Appends one JSON line per record to `metrics.jsonl`.
pub struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens the log, dropping records past `keep_until_step` (a resumed run rewrites them).
    pub fn open(dir: &Path, keep_until_step: Option<u64>) -> anyhow::Result<Self> {
        let path = dir.join(METRICS_FILE);
        if let Some(step) = keep_until_step {
            let old = std::fs::read_to_string(&path).unwrap_or_default();
            let kept: String = old.lines().filter(|l| serde_json::from_str::<MetricsRecord>(l).is_ok_and(|r| r.step() <= step)).map(|l| format!("{l}\n")).collect();
            write_atomic(&path, |w| w.write_all(kept.as_bytes()))?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(MetricsLog { file })
    }

    pub fn write(&mut self, record: &MetricsRecord) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        self.file.write_all(&line).context("writing metrics.jsonl")
    }
}
