//! Experiment configuration: one TOML file per experiment, `--set key=value`
//! overrides, validation with errors that name the file and the key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::data::{DataFormat, TokenizerConfig, VocabConfig};
use crate::model::{Pooling, TableDtype, TableInit};
use crate::optim::TableOptimizerConfig;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub experiment: ExperimentConfig,
    pub data: DataConfig,
    pub tokenizer: TokenizerConfig,
    pub vocab: VocabConfig,
    pub model: ModelConfig,
    pub optimizer: OptimizerConfig,
    pub train: TrainConfig,
    pub logging: LoggingConfig,
    pub checkpoint: CheckpointConfig,
    pub export: ExportConfig,
    pub memory: MemoryConfig,
    pub placement: PlacementConfig,
    /// Training across processes (`mpirun`); absent from saved configs when "none".
    #[serde(skip_serializing_if = "DistributedConfig::is_none")]
    pub distributed: DistributedConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    pub name: String,
    /// Name of this run within the experiment (an A/B arm).
    pub arm: String,
    pub seed: u64,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig { name: "experiment".into(), arm: "run".into(), seed: 42 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    pub train: PathBuf,
    /// Test file; without one, `test_fraction` of the training file is held out.
    pub test: Option<PathBuf>,
    /// Fraction held out per label when there is no test file.
    pub test_fraction: f64,
    /// Seed of the held-out split, separate from the training seed so every seed sees one test set.
    pub split_seed: u64,
    pub format: DataFormat,
    /// Fail on the first bad line instead of skipping it.
    pub strict: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { train: PathBuf::new(), test: None, test_fraction: 0.2, split_seed: 0, format: DataFormat::Tsv, strict: false }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub dim: usize,
    pub pooling: Pooling,
    /// Hidden layer widths of the head; empty = linear classifier.
    pub hidden: Vec<usize>,
    pub init: TableInit,
    /// Where the table's rows and its optimizer's state live: "memory", or
    /// "mmap" (a file at `table_path`, for tables larger than RAM).
    pub table_storage: TableStorage,
    /// The table file for `table_storage = "mmap"` (relative to the current
    /// directory). Refused if it holds anything but this run's own table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_path: Option<PathBuf>,
    /// What the table's rows are stored in: "f32", "bf16" or "f16" (computed
    /// in f32 and written back with stochastic rounding).
    #[serde(skip_serializing_if = "TableDtype::is_f32")]
    pub table_dtype: TableDtype,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            dim: 64,
            pooling: Pooling::Mean,
            hidden: Vec::new(),
            init: TableInit::default(),
            table_storage: Default::default(),
            table_path: None,
            table_dtype: TableDtype::F32,
        }
    }
}

/// Where the table's rows and its optimizer's state live (`model.table_storage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableStorage {
    /// Anonymous host memory.
    #[default]
    Memory,
    /// A file at `model.table_path`, mapped: the kernel keeps hot rows in the
    /// page cache and writes the rest back, so a table larger than RAM trains.
    Mmap,
}

impl TableStorage {
    pub fn name(self) -> &'static str {
        match self {
            TableStorage::Memory => "memory",
            TableStorage::Mmap => "mmap",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Shorthand that sets both `table.lr` and `head.lr` (e.g. `--set optimizer.lr=0.01`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    pub table: TableOptimizerConfig,
    pub head: HeadOptimizerConfig,
}

/// Burn's Adam for the head. ε defaults to 1e-8 like the table's (Burn's own default is 1e-5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadOptimizerConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
}

impl Default for HeadOptimizerConfig {
    fn default() -> Self {
        HeadOptimizerConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 0.0 }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    #[default]
    Constant,
    /// Linear decay from lr to 0 over the run.
    Linear,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Stop after this many steps (0 = run all epochs).
    pub max_steps: u64,
    pub schedule: Schedule,
    /// Linear warm-up from 0 over this many steps.
    pub warmup_steps: u64,
    /// Evaluate every N steps (0 = only at the end of each epoch).
    pub eval_every: u64,
    /// k of the top-k accuracy.
    pub top_k: usize,
    /// Worker threads (0 = all cores).
    pub threads: usize,
    /// Label smoothing ε in [0, 1): the training loss is the cross-entropy
    /// against `(1 - ε)·onehot + ε/classes` (0 = plain cross-entropy).
    /// Evaluation always reports the plain cross-entropy.
    pub label_smoothing: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig { epochs: 5, batch_size: 64, max_steps: 0, schedule: Schedule::Constant, warmup_steps: 0, eval_every: 0, top_k: 3, threads: 0, label_smoothing: 0.0 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// Runs go to `<dir>/<experiment>/<arm>-<n>/`.
    pub dir: PathBuf,
    /// No progress bar (for CI and logs).
    pub quiet: bool,
    pub tensorboard: bool,
    /// Write histograms every N steps (0 = never).
    pub histogram_every: u64,
    /// Log scalars every N steps.
    pub scalar_every: u64,
    /// Words exported to TensorBoard's projector at the end (0 = none).
    pub projector_words: usize,
    /// Print every op/parameter and its device at start (TF's log_device_placement).
    pub log_device_placement: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig { dir: PathBuf::from("runs"), quiet: false, tensorboard: true, histogram_every: 100, scalar_every: 1, projector_words: 500, log_device_placement: false }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write a checkpoint every N steps (0 = only at the end).
    pub every: u64,
    /// Checkpoints kept (oldest removed first), each with the chain it builds on.
    pub keep: usize,
    /// Links a chain may grow to (a base, then deltas holding only the rows
    /// changed since the previous checkpoint) before a new base is written;
    /// a new base is also written once the deltas outweigh the base.
    /// 0 = every checkpoint is a base.
    pub max_chain: u32,
    /// A new base is written once the chain's deltas add up to more than this
    /// many times the base's bytes (restoring reads at most about 1 + this × the base).
    pub compact_ratio: f64,
    /// Write checkpoints on a background thread from a copy of their rows, so
    /// training continues meanwhile (the final one is written from the rows
    /// themselves and waited for).
    pub background: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { every: 0, keep: 2, max_chain: 8, compact_ratio: 1.0, background: true }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// Model base (e.g. `models/sotu`): at the end of `sparseburn train` the run is
    /// exported as the next numbered version under it, where `serve` picks it up.
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Refuse to start when the host part (table, its optimizer state, data) would exceed this many GB.
    pub host_max_gb: Option<f64>,
    /// Refuse to start when the dense device's part (head, its Adam state, activations) would exceed this many GB.
    pub gpu_max_gb: Option<f64>,
    /// Like `gpu_max_gb`, as a fraction of the GPU's total memory (TF's per_process_memory_fraction).
    pub gpu_fraction: Option<f64>,
    /// Back the table and its optimizer state with transparent huge pages:
    /// "auto" (default), "on" or "off". Huge pages make random row access
    /// faster, but a row touched first maps and zeroes a whole 2 MiB page.
    /// "auto" turns them on when the training data's rows would touch at least
    /// half of the table's 4 KiB pages anyway (Debian sections: 1.6 vs 2.2 ms
    /// median step), and off when they are sparse in a large table (10M rows,
    /// 50k touched: 0.9 GB resident and 0.19 s to the first step, instead of
    /// 7.6 GB and 7.4 s). BENCHMARKS.md has the measurements.
    pub huge_pages: HugePages,
    /// Which table rows a trainer holds in memory: "reached" (default) or "all".
    /// With a lazy table optimizer, rows no training or test example reaches
    /// never change, so "reached" holds only the others (with their optimizer
    /// state) and regenerates the rest from the seed in checkpoints and export:
    /// memory and start-up follow the rows the data reaches, not the table
    /// (Debian sections: 0.6M of 2.04M rows). "all" holds every row, for
    /// comparison; the weights trained are identical. Dense optimizers hold all.
    pub table_rows: TableRows,
    /// Where the encoded training and test examples (their row ids) live
    /// while training: "ram", "disk" (an unlinked file in the run directory,
    /// read a batch at a time through the OS page cache, so the process holds
    /// one batch's ids, not the dataset's), or
    /// "auto" (default): "disk" for `distributed.mode = "row_sharded"`,
    /// where every rank holds every example and per-rank memory is the
    /// point (Debian sections: 31 MB of each rank's ids), else "ram".
    pub examples: ExamplesHome,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExamplesHome {
    #[default]
    Auto,
    Ram,
    Disk,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableRows {
    #[default]
    Reached,
    All,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HugePages {
    #[default]
    Auto,
    On,
    Off,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementConfig {
    /// Where the embedding table and its optimizer state live: "cpu" (host
    /// memory, default), "burn-cpu" (the device table on Burn's CPU backend)
    /// or "cuda:N" (the device table on a GPU); the last two need
    /// `dense` on the same device and `optimizer.table.kind = "lazy_adam"`.
    pub embedding: String,
    /// Where the dense head runs: "cpu" or "cuda:N" (needs `--features cuda`).
    pub dense: String,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig { embedding: "cpu".into(), dense: "cpu".into() }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributedConfig {
    /// "none" (one process), "replicated" (data parallel: every rank holds the
    /// whole table) or "row_sharded" (rank r holds rows `id % W == r` and their
    /// optimizer state). The others need an MPI launch and `--features mpi`
    /// (see `crate::distributed`).
    pub mode: DistributedMode,
}

impl DistributedConfig {
    fn is_none(&self) -> bool {
        self.mode == DistributedMode::None
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistributedMode {
    #[default]
    None,
    Replicated,
    RowSharded,
}

impl DistributedMode {
    pub fn name(self) -> &'static str {
        match self {
            DistributedMode::None => "none",
            DistributedMode::Replicated => "replicated",
            DistributedMode::RowSharded => "row_sharded",
        }
    }
}

/// Where a config value came from: a file name, or a function of the key
/// (a `--set` flag for the keys it set, the file for the rest).
trait Origin {
    fn of(&self, key: &str) -> String;
}
impl Origin for &str {
    fn of(&self, _key: &str) -> String {
        self.to_string()
    }
}
impl Origin for &dyn Fn(&str) -> String {
    fn of(&self, key: &str) -> String {
        self(key)
    }
}

/// A config error that names where it came from.
fn at(source: impl Origin, key: &str, msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{}: `{key}`: {msg}", source.of(key))
}

impl Config {
    /// Whether training keeps the encoded examples on disk (`memory.examples`).
    pub fn examples_on_disk(&self) -> bool {
        match self.memory.examples {
            ExamplesHome::Ram => false,
            ExamplesHome::Disk => true,
            ExamplesHome::Auto => self.distributed.mode == DistributedMode::RowSharded,
        }
    }

    /// Reads `path`, applies `overrides` (`key.path=value`), and validates.
    pub fn load(path: &Path, overrides: &[String]) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Config::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// Parses TOML `text` (named `source` in errors). Relative data paths are
    /// taken relative to the current directory (so configs in `configs/` name
    /// files from the project root, as the shipped ones do).
    pub fn from_toml(text: &str, source: &str, overrides: &[String]) -> anyhow::Result<Config> {
        let mut value: toml::Table = toml::from_str(text).map_err(|e| anyhow::anyhow!("{source}: invalid TOML: {e}"))?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        // A key set by `--set` is blamed on the flag, not on the file.
        let origin = |key: &str| override_for(overrides, key).map_or_else(|| source.to_string(), |o| format!("--set {o}"));
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
            let key = e.path().to_string();
            at(origin(&key).as_str(), &key, e.into_inner())
        })?;
        let mut config = config;
        if let Some(lr) = config.optimizer.lr.take() {
            config.optimizer.table.set_lr(lr);
            config.optimizer.head.lr = lr;
        }
        config.validate_from(&origin as &dyn Fn(&str) -> String)?;
        Ok(config)
    }

    /// Checks values serde cannot: ranges, and that data files exist.
    pub fn validate(&self, source: &str) -> anyhow::Result<()> {
        self.validate_from(&|_| source.to_string())
    }

    /// [`Config::validate`] without the `data` file checks: for training on
    /// examples given in memory, where `data.train`/`data.test` are unused.
    pub fn validate_settings(&self, source: &str) -> anyhow::Result<()> {
        let origin = |_: &str| source.to_string();
        self.validate_names(&origin)?;
        self.validate_values(&origin)
    }

    /// [`Config::validate`], with errors about `key` blamed on `origin(key)` (the file or a `--set`).
    fn validate_from(&self, origin: &dyn Fn(&str) -> String) -> anyhow::Result<()> {
        self.validate_names(origin)?;
        self.validate_data_files(origin)?;
        self.validate_values(origin)
    }

    fn validate_names(&self, source: &dyn Fn(&str) -> String) -> anyhow::Result<()> {
        check_name(&self.experiment.name).map_err(|m| at(source, "experiment.name", m))?;
        check_name(&self.experiment.arm).map_err(|m| at(source, "experiment.arm", m))?;
        if self.train.threads > MAX_THREADS {
            bail!(at(source, "train.threads", format!("{} is too many (at most {MAX_THREADS}; 0 = all cores)", self.train.threads)));
        }
        Ok(())
    }

    fn validate_data_files(&self, source: &dyn Fn(&str) -> String) -> anyhow::Result<()> {
        if self.data.train.as_os_str().is_empty() {
            bail!(at(source, "data.train", "missing: the training data file is required"));
        }
        if !self.data.train.is_file() {
            bail!(at(source, "data.train", format!("file not found: {}", self.data.train.display())));
        }
        if let Some(test) = &self.data.test {
            if !test.is_file() {
                bail!(at(source, "data.test", format!("file not found: {}", test.display())));
            }
        } else if !(self.data.test_fraction > 0.0 && self.data.test_fraction < 1.0) {
            bail!(at(source, "data.test_fraction", format!("must be in (0, 1) when data.test is not set, got {}", self.data.test_fraction)));
        }
        Ok(())
    }

    fn validate_values(&self, source: &dyn Fn(&str) -> String) -> anyhow::Result<()> {
        let positive = |key: &str, v: f64| if v.is_finite() && v > 0.0 { Ok(()) } else { Err(at(source, key, format!("must be a positive number, got {v}"))) };
        let unit = |key: &str, v: f64| if (0.0..1.0).contains(&v) { Ok(()) } else { Err(at(source, key, format!("must be in [0, 1), got {v}"))) };
        match (self.model.table_storage, &self.model.table_path) {
            (TableStorage::Mmap, None) => bail!(at(source, "model.table_path", "required with model.table_storage = \"mmap\" (the file that holds the table)")),
            (TableStorage::Mmap, Some(p)) if p.as_os_str().is_empty() || p.is_dir() => {
                bail!(at(source, "model.table_path", format!("must name a file, got {:?}", p.display().to_string())))
            }
            (TableStorage::Memory, Some(_)) => bail!(at(source, "model.table_path", "is only used with model.table_storage = \"mmap\" (it is \"memory\")")),
            _ => {}
        }
        if self.train.batch_size == 0 {
            bail!(at(source, "train.batch_size", "must be at least 1, got 0"));
        }
        if self.train.epochs == 0 && self.train.max_steps == 0 {
            bail!(at(source, "train.epochs", "must be at least 1 (or set train.max_steps)"));
        }
        if self.train.top_k == 0 {
            bail!(at(source, "train.top_k", "must be at least 1"));
        }
        if self.model.dim == 0 {
            bail!(at(source, "model.dim", "must be at least 1"));
        }
        if self.model.hidden.contains(&0) {
            bail!(at(source, "model.hidden", "layer widths must be at least 1"));
        }
        if self.vocab.ngrams == 0 {
            bail!(at(source, "vocab.ngrams", "must be at least 1"));
        }
        let v = &self.vocab;
        if v.minn > v.maxn || (v.minn == 0) != (v.maxn == 0) {
            // Blame the key that was set when the other is 0; minn when both are set.
            let key = if v.minn > v.maxn || v.maxn == 0 { "vocab.minn" } else { "vocab.maxn" };
            bail!(at(source, key, format!("character n-grams need 1 <= vocab.minn <= vocab.maxn (or both 0 = off), got minn = {}, maxn = {}", v.minn, v.maxn)));
        }
        if v.maxn > MAX_CHAR_NGRAM {
            bail!(at(source, "vocab.maxn", format!("{} is too long (at most {MAX_CHAR_NGRAM} characters)", v.maxn)));
        }
        if v.maxn > 0 && v.buckets == 0 {
            bail!(at(source, "vocab.maxn", "character n-grams are hashed into buckets: set vocab.buckets > 0 (or vocab.minn = vocab.maxn = 0)"));
        }
        if !(0.0..1.0).contains(&self.train.label_smoothing) {
            bail!(at(source, "train.label_smoothing", format!("must be in [0, 1), got {}", self.train.label_smoothing)));
        }
        if self.vocab.buckets > u32::MAX as u64 / 2 {
            bail!(at(source, "vocab.buckets", format!("{} is too many: row ids are u32", self.vocab.buckets)));
        }
        if !(self.checkpoint.compact_ratio >= 0.0 && self.checkpoint.compact_ratio.is_finite()) {
            bail!(at(source, "checkpoint.compact_ratio", format!("must be a number >= 0, got {}", self.checkpoint.compact_ratio)));
        }
        if !self.model.table_dtype.is_f32() && !self.optimizer.table.updates_only_grad_rows() {
            bail!(at(
                source,
                "model.table_dtype",
                format!("{} rows need a lazy table optimizer (rows rounded on every step); {} updates every row", self.model.table_dtype.name(), self.optimizer.table.name())
            ));
        }
        // Each table optimizer checks its own keys.
        self.optimizer.table.validate().map_err(|e| at(source, &format!("optimizer.table.{}", e.key), e.message))?;
        let h = &self.optimizer.head;
        positive("optimizer.head.lr", h.lr)?;
        positive("optimizer.head.epsilon", h.epsilon)?;
        unit("optimizer.head.beta1", h.beta1)?;
        unit("optimizer.head.beta2", h.beta2)?;
        if h.weight_decay < 0.0 {
            bail!(at(source, "optimizer.head.weight_decay", "must be >= 0"));
        }
        let table = crate::device::parse_table_placement(&self.placement.embedding).map_err(|e| at(source, "placement.embedding", e))?;
        let dense = crate::device::parse_dense_device(&self.placement.dense).map_err(|e| at(source, "placement.dense", e))?;
        if let Some(needs) = table.dense_device() {
            if dense != needs {
                bail!(at(
                    source,
                    "placement.dense",
                    format!("placement.embedding = \"{table}\" keeps the pooled bags on the head's device: set placement.dense = \"{needs}\" (got \"{dense}\")")
                ));
            }
            if !matches!(self.optimizer.table, crate::optim::TableOptimizerConfig::LazyAdam(_)) {
                let kind = self.optimizer.table.name();
                bail!(at(source, "optimizer.table.kind", format!("placement.embedding = \"{table}\" (the device table) supports only kind = \"lazy_adam\", got \"{kind}\"")));
            }
            if self.model.table_dtype != TableDtype::F32 {
                bail!(at(source, "model.table_dtype", format!("the device table (placement.embedding = \"{table}\") stores f32 rows, got \"{}\"", self.model.table_dtype.name())));
            }
            if self.model.table_storage == TableStorage::Mmap {
                bail!(at(source, "model.table_storage", format!("\"mmap\" keeps the table in a host file; placement.embedding = \"{table}\" keeps it on a device: choose one")));
            }
        }
        if self.distributed.mode != DistributedMode::None {
            // The exchange moves f32 rows of host tables (src/train/distributed).
            let mode = self.distributed.mode.name();
            if self.model.table_dtype != TableDtype::F32 {
                bail!(at(source, "model.table_dtype", format!("distributed.mode = \"{mode}\" exchanges f32 rows; got \"{}\"", self.model.table_dtype.name())));
            }
            if table != crate::device::TablePlacement::Host {
                bail!(at(source, "placement.embedding", format!("distributed.mode = \"{mode}\" needs the host table (\"cpu\"), got \"{table}\"")));
            }
        }
        if let Some(gb) = self.memory.host_max_gb {
            positive("memory.host_max_gb", gb)?;
        }
        if let Some(gb) = self.memory.gpu_max_gb {
            positive("memory.gpu_max_gb", gb)?;
        }
        if let Some(f) = self.memory.gpu_fraction
            && !(f > 0.0 && f <= 1.0)
        {
            bail!(at(source, "memory.gpu_fraction", format!("must be in (0, 1], got {f}")));
        }
        Ok(())
    }

    /// Gives one run of several (an A/B arm's seed, a sweep trial) a table
    /// file of its own, `<stem>-<run>.<ext>` beside `model.table_path`: a table
    /// file belongs to one run, and a second run would be refused it (or, run
    /// at the same time, would need it too). Memory storage is unchanged.
    pub fn give_own_table_file(&mut self, run: &str) {
        if let (TableStorage::Mmap, Some(path)) = (self.model.table_storage, &self.model.table_path) {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
            self.model.table_path = Some(path.with_file_name(format!("{stem}-{run}{ext}")));
        }
    }

    /// The config as TOML, as saved in the run directory.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises to TOML")
    }
}

/// The longest character n-gram `vocab.maxn` accepts.
pub const MAX_CHAR_NGRAM: usize = 64;

/// The most worker threads `train.threads` accepts.
pub const MAX_THREADS: usize = 4096;

/// `experiment.name` and `.arm` become folder names under `logging.dir`:
/// one plain component each, so a run can never land outside it.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(format!("{name:?} must be a plain folder name (no path separators, not \".\" or \"..\")"));
    }
    Ok(())
}

/// The last `--set` that assigned `key`, a section above it, or a key inside it.
fn override_for<'a>(overrides: &'a [String], key: &str) -> Option<&'a str> {
    let within = |outer: &str, inner: &str| inner == outer || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('.'));
    overrides.iter().rev().map(String::as_str).find(|o| {
        let set = o.split_once('=').map_or(*o, |(k, _)| k).trim();
        !key.is_empty() && (within(set, key) || within(key, set))
    })
}

/// Applies `a.b.c=value` to the table. The value is parsed as TOML (so
/// `0.01`, `true`, `[1, 2]`, `"x"` keep their types); anything that does not
/// parse is taken as a string. Types are then checked like the file's.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> anyhow::Result<()> {
    let (key, raw) = assignment.split_once('=').with_context(|| format!("--set {assignment:?}: expected KEY=VALUE, e.g. optimizer.table.lr=0.01"))?;
    let (key, raw) = (key.trim(), raw.trim());
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}")).ok().and_then(|mut t| t.remove("v")).unwrap_or_else(|| toml::Value::String(raw.to_string()));
    set_path(table, key, value, &format!("--set {assignment:?}"))
}

/// Sets `a.b.c` in `table`, creating sections on the way; `what` prefixes errors.
pub fn set_path(table: &mut toml::Table, key: &str, value: toml::Value, what: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("{what}: bad key {key:?}");
    }
    let mut node = table;
    for part in &parts[..parts.len() - 1] {
        let entry = node.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().with_context(|| format!("{what}: `{part}` in `{key}` is not a section"))?;
    }
    node.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}
