//! The training loop: bag forward → Burn head → loss → Burn Adam on the head
//! and a sparse step on the table. Generic over the head's backend, so the
//! dense part can run on the CPU or a GPU; the table stays in host memory or,
//! with `placement.embedding`, lives on the head's device (`table_home.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, Checkpoint, CheckpointStats, Checkpointer, TableSource, TrainerState};
use super::eval::EvalMetrics;
use super::model::TrainedModel;
use super::observer::{Observer, RunStart, StepEvent};
use super::prepare::{prepare_from, DataSource, Prepared};
use super::resident::ResidentRows;
use super::run_dir::{self, EvalRecord, MetricsLog, MetricsRecord, TrainRecord};
use super::schedule::lr_factor;
use super::table_home::TableHome;
use crate::cancel::CancelToken;
use crate::config::Config;
use crate::data::{Batch, BatchIter};
use crate::device::DenseDevice;
use crate::memory::MemoryPlan;
use crate::model::{Bags, EmbeddingTable, Head, HeadConfig, HeadWeights, TableRecipe};
use crate::optim::TableOptimizer;
use crate::summary::{GraphSpec, HParamValue, TensorBoardObserver};
use crate::sys;

#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Continue the run in this directory from its latest checkpoint.
    pub resume: Option<PathBuf>,
    /// Use exactly this run directory (A/B comparisons choose their own layout).
    pub run_dir: Option<PathBuf>,
    /// Stop after this global step as if interrupted (checkpoint, then return): for tests and tools.
    pub stop_after_step: Option<u64>,
    /// `KEY=VALUE` changes to a resumed run's saved config: only `train.epochs`
    /// and `train.max_steps`, to extend a run (anything else would change what
    /// the checkpoints mean).
    pub resume_overrides: Vec<String>,
    /// Cancelled (from another thread, or by the CLI's Ctrl-C handler): the
    /// loop stops after the current step, checkpoints and returns an
    /// outcome marked `interrupted`.
    pub cancel: CancelToken,
    /// The other ranks of a `[distributed]` run, in this process (threads);
    /// without one, such a run uses MPI (launched by `mpirun`, `--features mpi`).
    pub group: Option<crate::distributed::Group>,
}

/// The keys `--set` may change on `--resume`.
pub const RESUME_OVERRIDABLE: [&str; 2] = ["train.epochs", "train.max_steps"];

/// Mean milliseconds per step of each phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimings {
    pub data_ms: f64,
    pub bag_forward_ms: f64,
    pub head_forward_ms: f64,
    pub head_backward_ms: f64,
    pub bag_backward_ms: f64,
    pub table_optimizer_ms: f64,
    pub head_optimizer_ms: f64,
}

impl StepTimings {
    /// Each phase divided by `steps`: sums into means.
    fn per_step(&self, steps: u64) -> StepTimings {
        let n = steps.max(1) as f64;
        StepTimings {
            data_ms: self.data_ms / n,
            bag_forward_ms: self.bag_forward_ms / n,
            head_forward_ms: self.head_forward_ms / n,
            head_backward_ms: self.head_backward_ms / n,
            bag_backward_ms: self.bag_backward_ms / n,
            table_optimizer_ms: self.table_optimizer_ms / n,
            head_optimizer_ms: self.head_optimizer_ms / n,
        }
    }

    fn total_ms(&self) -> f64 {
        self.data_ms + self.bag_forward_ms + self.head_forward_ms + self.head_backward_ms + self.bag_backward_ms + self.table_optimizer_ms + self.head_optimizer_ms
    }
}

/// Distribution of whole-step times (data to head optimizer), in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimeStats {
    pub first_ms: f64,
    /// Median and 90th percentile of the steps after the first.
    pub median_ms: f64,
    pub p90_ms: f64,
}

impl StepTimeStats {
    fn of(steps_ms: &[f32]) -> Self {
        let Some((&first, rest)) = steps_ms.split_first() else { return Self::default() };
        if rest.is_empty() {
            return StepTimeStats { first_ms: first as f64, median_ms: first as f64, p90_ms: first as f64 };
        }
        let mut sorted = rest.to_vec();
        sorted.sort_by(f32::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64;
        StepTimeStats { first_ms: first as f64, median_ms: at(0.5), p90_ms: at(0.9) }
    }
}

/// What a finished run reports (also saved as `summary.json` in the run directory).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunOutcome {
    pub run_dir: PathBuf,
    pub table_optimizer: String,
    pub steps: u64,
    pub final_eval: EvalMetrics,
    pub best_eval: EvalMetrics,
    pub train_seconds: f64,
    pub examples_per_second: f64,
    pub tokens_per_second: f64,
    pub step_timings: StepTimings,
    /// Whole-step times of this session, the first apart: on a GPU it compiles
    /// and tunes kernels, which would otherwise hide in the means above.
    #[serde(default)]
    pub step_time: StepTimeStats,
    pub mean_rows_touched: f64,
    /// Rows of the whole table.
    pub table_rows: usize,
    /// Rows held in memory while training (the rows the data reaches, for a lazy optimizer).
    #[serde(default)]
    pub resident_rows: usize,
    pub table_bytes: u64,
    pub optimizer_state_bytes: u64,
    /// Bytes of encoded train and test examples held in memory (0 when
    /// `memory.examples` puts them on disk).
    #[serde(default)]
    pub examples_in_memory_bytes: u64,
    pub peak_rss_bytes: u64,
    pub interrupted: bool,
    /// Seconds from the start of `train` to the end of this session's first step.
    #[serde(default)]
    pub time_to_first_step_seconds: f64,
    /// What checkpoints cost this session.
    #[serde(default)]
    pub checkpoint: CheckpointStats,
    /// This rank's traffic, for a `[distributed]` run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed: Option<crate::distributed::DistributedStats>,
}

/// Burn's flex backend for a head on the CPU: 1.3× faster steps than ndarray
/// with a 1024×1024 head, equal with a linear one (BENCHMARKS.md, "Head backend").
type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;
#[cfg(feature = "cuda")]
type CudaBackend = burn::backend::Autodiff<burn::backend::Cuda>;

/// Trains the experiment described by `config` on its data files (or resumes
/// one) and returns its outcome. [`super::Trainer`] adds in-memory data and
/// returns the trained model.
pub fn train(config: &Config, options: &TrainOptions) -> anyhow::Result<RunOutcome> {
    train_with(config, options, Vec::new())
}

/// [`train`], reporting its events to `observers` (the CLI's progress display).
pub fn train_with(config: &Config, options: &TrainOptions, observers: Vec<Box<dyn Observer>>) -> anyhow::Result<RunOutcome> {
    train_observed(config, options, &DataSource::Files, observers, false, false).map(|(outcome, _)| outcome)
}

/// [`train`] with a data source and observers; returns the model too when `keep_model`.
pub(crate) fn train_observed(
    config: &Config,
    options: &TrainOptions,
    data: &DataSource,
    observers: Vec<Box<dyn Observer>>,
    keep_model: bool,
    temporary_dir: bool,
) -> anyhow::Result<(RunOutcome, Option<TrainedModel>)> {
    let dense = crate::device::parse_dense_device(&config.placement.dense).map_err(anyhow::Error::msg)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(config.train.threads).build().context("building the thread pool")?;
    let dist = crate::distributed::Distributed::connect(config, options)?;
    // Outlives the run: an error on this rank must end the job before MPI is finalised.
    let group = dist.collective();
    let session = Session { options, data, observers, keep_model, temporary_dir, dist };
    let result = pool.install(|| match dense {
        DenseDevice::Cpu => run::<CpuBackend>(config, session, Default::default(), dense),
        #[cfg(feature = "cuda")]
        DenseDevice::Cuda(n) => run::<CudaBackend>(config, session, burn::backend::cuda::CudaDevice::new(n), dense),
        #[cfg(not(feature = "cuda"))]
        DenseDevice::Cuda(_) => unreachable!("parse_dense_device rejects cuda without the feature"),
    });
    if let (Err(e), Some(group)) = (&result, &group) {
        group.abort(&format!("{e:#}"));
    }
    result
}

/// What one call asks of a run besides its config.
struct Session<'a> {
    options: &'a TrainOptions,
    data: &'a DataSource,
    observers: Vec<Box<dyn Observer>>,
    keep_model: bool,
    /// The run directory is a temporary folder, deleted after the run.
    temporary_dir: bool,
    dist: crate::distributed::Distributed,
}

fn head_optimizer_config(config: &Config) -> AdamConfig {
    let h = &config.optimizer.head;
    let adam = AdamConfig::new().with_beta_1(h.beta1 as f32).with_beta_2(h.beta2 as f32).with_epsilon(h.epsilon as f32);
    if h.weight_decay > 0.0 {
        adam.with_weight_decay(Some(WeightDecayConfig::new(h.weight_decay as f32)))
    } else {
        adam
    }
}

fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::new()
}

/// Everything a running experiment holds.
struct Run<B: AutodiffBackend> {
    config: Config,
    dir: PathBuf,
    device: B::Device,
    data: Prepared,
    /// The rows held: all of the table's, or only `resident` ones (local ids).
    table: EmbeddingTable,
    /// The whole table's shape and initial values.
    recipe: TableRecipe,
    resident: Option<Arc<ResidentRows>>,
    head: Head<B>,
    table_optimizer: Box<dyn TableOptimizer>,
    head_optimizer: OptimizerAdaptor<Adam, Head<B>, B>,
    /// Where the table is trained (host memory or a device table); `table` and
    /// `table_optimizer` are its host copy when it is a device table.
    home: TableHome<B::InnerBackend>,
    state: TrainerState,
    checkpointer: Checkpointer,
    /// Whether the table optimizer changes every row each step (checkpoints are then full).
    dense_table_updates: bool,
    /// When `train` started, and when this session's first step ended (seconds after).
    started: Instant,
    first_step_seconds: Option<f64>,
    /// Held until the run ends: a second process gets a clear error.
    _lock: run_dir::RunLock,
    observers: Vec<Box<dyn Observer>>,
    cancel: CancelToken,
    temporary_dir: bool,
    metrics: MetricsLog,
    best: Option<EvalMetrics>,
    /// The newest evaluation and the step it was taken at.
    last_eval: Option<(u64, EvalMetrics)>,
    timings: StepTimings,
    /// Whole-step times of this session (4 bytes a step).
    step_ms: Vec<f32>,
    rows_touched: u64,
    tokens: u64,
    examples: u64,
    steps_this_session: u64,
    /// This rank's part of a `[distributed]` run (identity calls without one).
    dist: crate::distributed::Distributed,
}

fn run<B: AutodiffBackend>(config: &Config, session: Session, device: B::Device, dense: DenseDevice) -> anyhow::Result<(RunOutcome, Option<TrainedModel>)> {
    let started = Instant::now();
    let Session { options, data: source, mut observers, keep_model, temporary_dir, dist } = session;
    // A distributed run's rank r > 0 works in its own folder inside rank 0's run directory, quietly.
    let (config, options) = dist.rank_setup(config, options)?;
    let (config, options) = (&config, &options);
    if dist.rank() > 0 {
        observers.clear();
    }
    if keep_model && options.resume.is_some() {
        bail!("a resumed run cannot return its model in memory: export it from the run directory");
    }
    let log = !config.logging.quiet;
    let (config, dir) = match &options.resume {
        Some(dir) => {
            for o in &options.resume_overrides {
                let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k).trim();
                if !RESUME_OVERRIDABLE.contains(&key) {
                    bail!("--set {o}: `{key}` cannot change on --resume (the run continues with its saved config); only {} can, to extend it", RESUME_OVERRIDABLE.join(" and "));
                }
            }
            (crate::config::Config::load(&dir.join(run_dir::CONFIG_FILE), &options.resume_overrides)?, dir.clone())
        }
        None => (
            config.clone(),
            match &options.run_dir {
                Some(d) => {
                    std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
                    d.clone()
                }
                None => run_dir::create(config)?,
            },
        ),
    };
    if dir.to_str().is_none() {
        bail!("{}: the run directory's path must be valid UTF-8 (TensorBoard, summaries and bundles record it as text)", dir.display());
    }
    // Before anything in the run directory is read or written.
    let lock = run_dir::lock(&dir)?;
    if options.resume.is_none() && has_checkpoints(&dir) {
        bail!("{}: holds the checkpoints of an earlier run; continue it with `sparseburn train --resume {}`, or choose another --run-dir", dir.display(), dir.display());
    }
    // A folder this call created is removed again if the run is refused before training.
    let created = options.resume.is_none() && options.run_dir.is_none();
    let checkpoint = match &options.resume {
        Some(dir) => Some(dist.open_checkpoint(dir)?),
        None => None,
    };
    let mut data = prepare_from(&config, source)?;
    // Preparation's transient buffers are freed; the table is allocated next.
    crate::mem::release_free_heap();
    if options.resume.is_some() {
        // Before anything in the run directory is rewritten: resuming on other data
        // would put labels on the wrong outputs and words on other rows.
        match super::fingerprint::DataFingerprint::read(&dir)? {
            Some(recorded) => recorded.compare(&data.fingerprint).map_err(|e| anyhow::anyhow!("{}: {e}; refusing to resume on changed data", dir.display()))?,
            None => log::warn!("{} has no data fingerprint (trained by an older sparseburn): data changes cannot be detected", dir.display()),
        }
    }
    if let Some(ckpt) = &checkpoint {
        let total = total_steps(&config, data.train.len());
        if ckpt.state.step >= total && dir.join(run_dir::SUMMARY_FILE).is_file() {
            // Nothing to train: report the finished run and change nothing.
            let outcome = run_dir::read_summary(&dir)?;
            // A warning, shown even with logging.quiet (which silences progress): the user asked for work that is not done.
            log::warn!("{}: already complete ({} of {total} steps); nothing to do (extend it with --set train.epochs=N)", dir.display(), ckpt.state.step);
            return Ok((outcome, None));
        }
    }
    if log {
        let s = &data.train.stats;
        log::info!(
            "data: {} train / {} test examples, {} labels, vocabulary {} + {} buckets = {} rows",
            data.train.len(),
            data.test.len(),
            data.labels.len(),
            data.featurizer.vocab().len(),
            config.vocab.buckets,
            data.featurizer.rows()
        );
        if s.bad > 0 {
            let sample: Vec<String> = s.bad_samples.iter().map(|(l, r)| format!("line {l}: {r}")).collect();
            log::warn!("data: skipped {} bad lines in {} ({})", s.bad, data.train_source, sample.join("; "));
        }
        if data.test.unknown_labels > 0 {
            log::warn!("data: {} test examples have labels never seen in training (counted as errors)", data.test.unknown_labels);
        }
    }
    run_dir::write_run_files(&dir, &config, &data.labels, data.featurizer.vocab())?;
    data.fingerprint.write(&dir)?;

    let rows = data.featurizer.rows();
    let dim = config.model.dim;
    // A lazy optimizer moves only the rows batches reach, and evaluation reads only
    // the test rows: hold just those (under local ids); the others keep their initial
    // values, which checkpoints and export regenerate from the table's recipe.
    let hold_reached = config.memory.table_rows == crate::config::TableRows::Reached;
    let resident = (hold_reached && config.optimizer.table.updates_only_grad_rows()).then(|| {
        let r = ResidentRows::reached_by(rows, &[&data.train.ids.all(), &data.test.ids.all()]);
        r.localize(Arc::get_mut(&mut data.train).expect("the training set is not shared yet").ids.heap_mut());
        r.localize(data.test.ids.heap_mut());
        Arc::new(r)
    });
    let held_rows = resident.as_ref().map_or(rows, |r| r.len());
    if log && resident.is_some() {
        log::info!("table: {held_rows} of {rows} rows held in memory (the rows the data reaches; the others keep their initial values)");
    }
    // Before the table and its optimizer state are allocated.
    let (huge_pages, page_share) = huge_pages_for(&config, &data.train.ids.all(), held_rows);
    crate::mem::set_huge_pages(huge_pages);
    if log {
        log::info!(
            "huge pages: {} (memory.huge_pages = {}; the training rows touch ~{:.0}% of the table's 4 KiB pages)",
            if huge_pages { "on" } else { "off" },
            format!("{:?}", config.memory.huge_pages).to_lowercase(),
            page_share * 100.0
        );
    }
    // row_sharded: this rank holds only its shard of the rows (and their state).
    let (resident, held_rows) = dist.plan(&config, data.train.len(), resident, rows, checkpoint.as_ref().map(|c| c.state.step))?;
    // Before the table is allocated: the ids' heap pages are returned first.
    let examples_on_disk = config.examples_on_disk();
    if examples_on_disk {
        Arc::get_mut(&mut data.train).expect("the training set is not shared yet").move_ids_to_disk(&dir)?;
        data.test.move_ids_to_disk(&dir)?;
        crate::mem::release_free_heap();
    }
    let head_config = HeadConfig { input: dim, hidden: config.model.hidden.clone(), classes: data.labels.len() };
    let ids_in_memory = if examples_on_disk { 0 } else { (data.train.ids.len() + data.test.ids.len()) as u64 };
    let plan = MemoryPlan::new(&config, held_rows, &head_config, ids_in_memory, dense);
    if let Err(e) = plan.check(&config, dense) {
        if created {
            drop(lock);
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Err(e);
    }
    if log {
        log::info!("memory plan:\n{}", plan.describe());
    }
    let mut head_optimizer = head_optimizer_config(&config).init::<B, Head<B>>();
    // Rows are generated from the recipe when first used: start-up costs
    // nothing per row, and rows no batch touches are never written.
    let recipe = TableRecipe { rows, dim, init: config.model.init, seed: config.experiment.seed, dtype: config.model.table_dtype };
    let held_ids = if resident.is_some() { "the resident rows (memory.table_rows = \"reached\"), in increasing global id" } else { "all rows, by id" };
    // The table first, then its state: in a table file, rows come first.
    let (mut table, mut table_optimizer) = super::table_file::place_table(&config, &dir, &plan, held_ids, || {
        let table = match &resident {
            // Every held row is read (train or test): generate them all now, in parallel.
            Some(r) => EmbeddingTable::from_recipe_rows(recipe, r.global_ids()),
            None => EmbeddingTable::lazy(recipe),
        };
        (table, config.optimizer.table.init(held_rows, dim))
    })?;
    let (head_weights, state) = match &checkpoint {
        Some(ckpt) => {
            ckpt.restore_table(&mut table, resident.as_deref())?;
            let head = ckpt.head()?;
            ckpt.load_table_optimizer(table_optimizer.as_mut(), resident.as_deref())?;
            let record = recorder().load(ckpt.head_optimizer_record()?, &device).with_context(|| format!("{}: head optimizer state", ckpt.dir.display()))?;
            head_optimizer = head_optimizer.load_record(record);
            (head, ckpt.state.clone())
        }
        None => (head_config.init_weights(config.experiment.seed), TrainerState::default()),
    };
    let dense_table_updates = !table_optimizer.updates_only_grad_rows();
    if dense_table_updates {
        table.materialize_all();
    }
    // Evaluation reads the test examples' rows: materialise them once.
    for ids in data.test.ids.chunks() {
        table.materialize(&ids);
    }
    let optimizer_config = serde_json::to_value(&config.optimizer.table).context("recording the table optimizer config")?;
    let checkpointer = Checkpointer::new(&dir, &config.checkpoint, recipe, resident.clone(), optimizer_config, checkpoint.as_ref())?;
    let head = Head::<B>::from_weights(&head_weights, &device);
    let home = TableHome::new(&config, &mut table, table_optimizer.as_ref(), &device)?;
    // A fresh run in a reused directory starts a fresh log; a resumed one drops records past its checkpoint.
    let metrics = MetricsLog::open(&dir, Some(checkpoint.as_ref().map_or(0, |c| c.state.step)))?;
    if config.logging.tensorboard {
        // First: it sees every event before the caller's observers.
        observers.insert(0, Box::new(TensorBoardObserver::create(&dir, &config.logging.dir)?));
    }

    let mut run = Run {
        config,
        dir,
        device,
        data,
        table,
        recipe,
        resident,
        head,
        table_optimizer,
        head_optimizer,
        home,
        state,
        checkpointer,
        dense_table_updates,
        started,
        first_step_seconds: None,
        _lock: lock,
        observers,
        cancel: options.cancel.clone(),
        temporary_dir,
        metrics,
        best: None,
        last_eval: None,
        timings: StepTimings::default(),
        step_ms: Vec::new(),
        rows_touched: 0,
        tokens: 0,
        examples: 0,
        steps_this_session: 0,
        dist,
    };
    run.start(dense, checkpoint.is_none());
    let outcome = run.train_loop(options.stop_after_step).and_then(|interrupted| run.finish(interrupted));
    // Every observer hears how the run ended, on every path.
    for o in &mut run.observers {
        o.on_finish(outcome.as_ref());
    }
    let outcome = outcome?;
    let model = keep_model.then(|| run.into_model()).transpose()?;
    Ok((outcome, model))
}

/// Whether the table and its state should use transparent huge pages, and the
/// share of the table's 4 KiB pages that the training data's distinct rows
/// touch (rows spread evenly over the table, as hash buckets are):
/// `1 − exp(−touched / pages)`. At half or more, nearly all memory becomes
/// resident anyway and huge pages only save TLB misses; below, they would
/// make memory and start-up follow the table instead of the rows touched.
fn huge_pages_for(config: &Config, train_ids: &[u32], rows: usize) -> (bool, f64) {
    let mut seen = super::rowset::RowSet::new(rows);
    seen.insert(train_ids);
    let touched = seen.len(rows);
    let pages = (rows as f64 * config.model.dim as f64 * config.model.table_dtype.size() as f64 / 4096.0).max(1.0);
    let share = 1.0 - (-(touched as f64) / pages).exp();
    let on = match config.memory.huge_pages {
        crate::config::HugePages::On => true,
        crate::config::HugePages::Off => false,
        crate::config::HugePages::Auto => share >= 0.5,
    };
    (on, share)
}

/// Whether `dir` holds any checkpoint folder (complete ones are renamed into place whole).
fn has_checkpoints(dir: &std::path::Path) -> bool {
    std::fs::read_dir(checkpoint::checkpoints_dir(dir)).is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("step-")))
}

/// Steps a run of `config` over `train_examples` examples takes.
fn total_steps(config: &Config, train_examples: usize) -> u64 {
    let per_epoch = BatchIter::batches_per_epoch(train_examples, config.train.batch_size) as u64;
    let all = per_epoch * config.train.epochs as u64;
    match config.train.max_steps {
        0 => all,
        m if config.train.epochs == 0 => m,
        m => m.min(all),
    }
}

impl<B: AutodiffBackend> Run<B> {
    fn total_steps(&self) -> u64 {
        total_steps(&self.config, self.data.train.len())
    }

    fn graph_spec(&self, dense: DenseDevice) -> GraphSpec {
        GraphSpec {
            table_rows: self.recipe.rows as u64,
            dim: self.table.dim(),
            pooling: self.config.model.pooling.name().into(),
            table_device: self.home.tf_device(),
            dense_device: dense.tf_name(),
            head_layers: self.head.layer_shapes(),
            num_labels: self.data.labels.len(),
            table_optimizer: self.table_optimizer.name().into(),
            head_optimizer: "adam".into(),
            batch_size: None,
        }
    }

    /// Tells the observers the run starts (graph, hparams and config go to
    /// TensorBoard once per run). `first_session`: false when resuming.
    fn start(&mut self, dense: DenseDevice, first_session: bool) {
        let spec = self.graph_spec(dense);
        if self.config.logging.log_device_placement {
            let mut text = String::from("device placement:");
            let (dtype, row_bytes) = (self.table.dtype().name(), self.table.row_bytes());
            text += &format!(
                "\n  embedding/table [{}, {}] {dtype}, {row_bytes} B/row (+ {} state): {} ({})",
                spec.table_rows,
                spec.dim,
                spec.table_optimizer,
                spec.table_device,
                self.home.describe()
            );
            if let (crate::memory::TableStorage::Mmap, Some(path)) = (self.config.model.table_storage, &self.config.model.table_path) {
                text += &format!(" (rows and state on disk: {}, mmap)", path.display());
            }
            text += &format!("\n  embedding/bag_pool ({}) and its sparse backward: {}", spec.pooling, spec.table_device);
            for (i, (a, b)) in spec.head_layers.iter().enumerate() {
                text += &format!("\n  head/linear_{i} weight [{a}, {b}], bias [{b}]: {}", spec.dense_device);
            }
            text += &format!("\n  loss/softmax_cross_entropy, optimizer/adam: {}", spec.dense_device);
            log::info!("{text}");
        }
        let c = &self.config;
        let t = &c.optimizer.table;
        // The table optimizer's own keys, spelled as in the config (`per_row`).
        let table_hparams = t.hparams().into_iter().map(|(key, value)| {
            let value = match value {
                crate::optim::HParam::Num(x) => HParamValue::Num(x),
                crate::optim::HParam::Str(s) => HParamValue::Str(s.into()),
            };
            (key.to_string(), value)
        });
        let hparams: Vec<(String, HParamValue)> = [("arm".into(), HParamValue::Str(c.experiment.arm.clone())), ("optimizer".into(), HParamValue::Str(t.name().into()))]
            .into_iter()
            .chain(table_hparams)
            .chain([
                ("head_lr".into(), HParamValue::Num(c.optimizer.head.lr)),
                ("dim".into(), HParamValue::Num(c.model.dim as f64)),
                ("table_storage".into(), HParamValue::Str(c.model.table_storage.name().into())),
                ("table_dtype".into(), HParamValue::Str(c.model.table_dtype.name().into())),
                ("buckets".into(), HParamValue::Num(c.vocab.buckets as f64)),
                ("ngrams".into(), HParamValue::Num(c.vocab.ngrams as f64)),
                ("pooling".into(), HParamValue::Str(c.model.pooling.name().into())),
                ("batch_size".into(), HParamValue::Num(c.train.batch_size as f64)),
                ("epochs".into(), HParamValue::Num(c.train.epochs as f64)),
                ("hidden".into(), HParamValue::Str(format!("{:?}", c.model.hidden))),
                ("split".into(), HParamValue::Str(c.tokenizer.split.name().into())),
                ("minn".into(), HParamValue::Num(c.vocab.minn as f64)),
                ("maxn".into(), HParamValue::Num(c.vocab.maxn as f64)),
                ("label_smoothing".into(), HParamValue::Num(c.train.label_smoothing)),
                ("seed".into(), HParamValue::Num(c.experiment.seed as f64)),
            ])
            .collect();
        let start = RunStart {
            run_dir: (!self.temporary_dir).then_some(self.dir.as_path()),
            config: &self.config,
            total_steps: self.total_steps(),
            first_step: self.state.step,
            first_session,
            graph: &spec,
            hparams: &hparams,
        };
        for o in &mut self.observers {
            o.on_start(&start);
        }
    }

    /// Returns whether the run was cancelled (or stopped at `stop_after_step`).
    fn train_loop(&mut self, stop_after_step: Option<u64>) -> anyhow::Result<bool> {
        let total = self.total_steps();
        let loss_fn = crate::model::loss::training_loss::<B>(self.config.train.label_smoothing, &self.device);
        let mut session_start = Instant::now();
        let seconds_before = self.state.train_seconds;
        let bs = self.config.train.batch_size;
        let per_epoch = BatchIter::batches_per_epoch(self.data.train.len(), bs);
        let eval_every = self.config.train.eval_every;
        while self.state.step < total {
            let epoch = self.state.epoch;
            let mut batches = BatchIter::new(self.data.train.clone(), bs, self.config.experiment.seed, epoch, self.state.batch_in_epoch as usize);
            while self.state.step < total {
                let t0 = Instant::now();
                let Some(batch) = batches.next() else {
                    // A checkpoint from before epochs rolled over inline: this epoch is done.
                    (self.state.epoch, self.state.batch_in_epoch) = (epoch + 1, 0);
                    break;
                };
                let t_data = t0.elapsed();
                let lr = lr_factor(self.config.train.schedule, self.config.train.warmup_steps, self.state.step, total);
                let (loss, accuracy) = self.step(&batch, &loss_fn, lr)?;
                self.first_step_seconds.get_or_insert_with(|| self.started.elapsed().as_secs_f64());
                self.timings.data_ms += t_data.as_secs_f64() * 1e3;
                self.step_ms.push((t0.elapsed().as_secs_f64() * 1e3) as f32);
                self.state.step += 1;
                self.state.batch_in_epoch += 1;
                self.steps_this_session += 1;
                self.rows_touched += self.home.touched_rows().len() as u64;
                self.tokens += batch.ids.len() as u64;
                self.examples += batch.len() as u64;
                self.state.train_seconds = seconds_before + session_start.elapsed().as_secs_f64();
                self.log_step(&batch, loss, accuracy, lr, total)?;

                // The epoch rolls over before evaluation and checkpoint, so a checkpoint
                // at this step already includes its evaluation and a resume never repeats it.
                let step = self.state.step;
                let epoch_done = self.state.batch_in_epoch as usize >= per_epoch;
                if epoch_done {
                    (self.state.epoch, self.state.batch_in_epoch) = (epoch + 1, 0);
                }
                // eval_every = 0: at the end of every epoch; else every eval_every steps and at the end.
                let evaluate_now = match eval_every {
                    0 => epoch_done,
                    n => step.is_multiple_of(n) || step >= total,
                };
                if evaluate_now {
                    let paused = Instant::now();
                    self.eval_and_log()?;
                    session_start += paused.elapsed(); // evaluation is not training time
                }
                if self.config.checkpoint.every > 0 && step.is_multiple_of(self.config.checkpoint.every) {
                    let paused = Instant::now();
                    self.checkpoint(false)?;
                    session_start += paused.elapsed();
                }
                if self.cancel.is_cancelled() || stop_after_step == Some(step) {
                    return Ok(true);
                }
                if epoch_done {
                    break;
                }
            }
        }
        Ok(false)
    }

    /// One optimisation step; returns the batch's mean loss and accuracy.
    fn step(&mut self, batch: &Batch, loss_fn: &burn::nn::loss::CrossEntropyLoss<B>, lr: f64) -> anyhow::Result<(f32, f32)> {
        // A distributed rank pools its share of the batch; the head then runs
        // on the whole batch's pooled bags on every rank (see `Distributed::gather_pooled`).
        let n = batch.len();
        let share = self.dist.local_batch(batch);
        let pooling = self.config.model.pooling;
        let mut clock = Instant::now();
        let mut lap = |slot: &mut f64| {
            *slot += clock.elapsed().as_secs_f64() * 1e3;
            clock = Instant::now();
        };

        let x = self.home.pool::<B>(&mut self.table, &mut self.dist, Bags::new(&share.ids, &share.offsets), pooling, &self.device)?;
        lap(&mut self.timings.bag_forward_ms);

        let logits = self.head.forward(x.clone());
        let targets: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
        let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [n]), &self.device);
        // Correct predictions are counted on the dense device and come back with the loss.
        let correct = logits.clone().argmax(1).squeeze_dim::<1>(1).equal(targets.clone()).int().sum().float();
        let loss = loss_fn.forward(logits, targets);
        let loss_and_correct = Tensor::cat(vec![loss.clone().detach(), correct], 0);
        lap(&mut self.timings.head_forward_ms);

        // Read nothing back before the backward pass: on a GPU each read waits
        // for the device, so the step waits once, for the loss and d_pooled together.
        let mut grads = loss.backward();
        let d_pooled = x.grad_remove(&mut grads).context("no gradient reached the pooled input")?;
        let read = loss_and_correct.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let (loss_value, correct) = (read[0], read[1]);
        if !loss_value.is_finite() {
            // A checkpoint still being written becomes the last good one first.
            let _ = self.checkpointer.wait();
            let last_good = match checkpoint::latest(&self.dir) {
                Ok(dir) => format!("the last good checkpoint is {}", dir.display()),
                Err(_) => "no checkpoint was written before it".to_string(),
            };
            bail!("loss became {loss_value} at step {} (epoch {}); stopping: {last_good}", self.state.step + 1, self.state.epoch + 1);
        }
        self.home.receive_grad(d_pooled)?;
        let head_grads = GradientsParams::from_grads(grads, &self.head);
        lap(&mut self.timings.head_backward_ms);

        self.home.backward(&mut self.table, &mut self.dist, Bags::new(&batch.ids, &batch.offsets), pooling)?;
        lap(&mut self.timings.bag_backward_ms);

        let table_lr = (self.config.optimizer.table.lr() * lr) as f32;
        // Half rows' stochastic rounding is keyed by the global step (resume repeats it).
        self.table.set_update_step(self.state.step);
        self.home.step(&mut self.table, self.table_optimizer.as_mut(), table_lr);
        if self.dense_table_updates {
            self.checkpointer.record_all_rows();
        } else {
            self.checkpointer.record_rows(self.home.touched_rows());
        }
        lap(&mut self.timings.table_optimizer_ms);

        let head = std::mem::replace(&mut self.head, Head::from_weights(&HeadWeights { layers: Vec::new() }, &self.device));
        self.head = self.head_optimizer.step(self.config.optimizer.head.lr * lr, head, head_grads);
        lap(&mut self.timings.head_optimizer_ms);
        Ok((loss_value, correct / n as f32))
    }

    fn log_step(&mut self, batch: &Batch, loss: f32, accuracy: f32, lr: f64, total_steps: u64) -> anyhow::Result<()> {
        let step = self.state.step;
        let rows_touched = self.home.touched_rows().len();
        let record = TrainRecord {
            step,
            epoch: self.state.epoch,
            loss,
            accuracy,
            lr_table: self.config.optimizer.table.lr() * lr,
            lr_head: self.config.optimizer.head.lr * lr,
            examples_per_second: self.examples as f64 / self.state.train_seconds.max(1e-9),
            rows_touched: rows_touched as u64,
            unique_ratio: rows_touched as f64 / batch.ids.len().max(1) as f64,
            train_seconds: self.state.train_seconds,
        };
        let logged = step.is_multiple_of(self.config.logging.scalar_every.max(1));
        let hist_every = self.config.logging.histogram_every;
        let mut histograms = Vec::new();
        if logged && self.config.logging.tensorboard && hist_every > 0 && step.is_multiple_of(hist_every) {
            let (row_norms, grad_norms) = self.home.touched_norms(&self.table);
            histograms.push(("embedding/touched_row_norms".to_string(), row_norms));
            histograms.push(("embedding/grad_row_norms".to_string(), grad_norms));
            for (i, l) in self.head.weights().layers.into_iter().enumerate() {
                histograms.push((format!("head/linear_{i}/weight"), l.weight));
                histograms.push((format!("head/linear_{i}/bias"), l.bias));
            }
        }
        let event = StepEvent {
            record: &record,
            total_steps,
            logged,
            timings: &self.timings.per_step(self.steps_this_session),
            table_bytes: self.table.bytes() as u64,
            optimizer_state_bytes: self.table_optimizer.state_bytes() as u64,
            histograms: &histograms,
        };
        for o in &mut self.observers {
            o.on_step(&event);
        }
        if logged {
            self.metrics.write(&MetricsRecord::Train(record))?;
        }
        Ok(())
    }

    fn eval_and_log(&mut self) -> anyhow::Result<EvalMetrics> {
        self.home.sync(&mut self.table, self.table_optimizer.as_mut())?;
        let head = self.head.weights();
        let m = self.dist.evaluate(&self.table, &head, self.config.model.pooling, &self.data.test, self.config.train.top_k)?;
        let record = EvalRecord {
            step: self.state.step,
            epoch: self.state.epoch,
            loss: m.loss,
            accuracy: m.accuracy,
            top_k_accuracy: m.top_k_accuracy,
            k: m.k,
            train_seconds: self.state.train_seconds,
        };
        for o in &mut self.observers {
            o.on_eval(&record);
        }
        self.metrics.write(&MetricsRecord::Eval(record))?;
        if self.best.as_ref().is_none_or(|b| m.accuracy > b.accuracy) {
            self.best = Some(m.clone());
        }
        self.last_eval = Some((self.state.step, m.clone()));
        Ok(m)
    }

    /// Saves a checkpoint: on a background thread with `checkpoint.background`,
    /// except the final one (see [`Checkpointer::save`]).
    fn checkpoint(&mut self, final_save: bool) -> anyhow::Result<PathBuf> {
        let record = recorder().record(self.head_optimizer.to_record(), ()).context("serialising the head optimizer")?;
        self.home.sync(&mut self.table, self.table_optimizer.as_mut())?;
        self.checkpointer.save(&self.state, &self.table, &self.head.weights(), self.table_optimizer.as_ref(), record, final_save)?;
        Ok(checkpoint::checkpoints_dir(&self.dir).join(format!("step-{:08}", self.state.step)))
    }

    fn finish(&mut self, interrupted: bool) -> anyhow::Result<RunOutcome> {
        // The final checkpoint is written straight from the live rows (no copy,
        // so a run's peak memory is its training memory) and is durable
        // before the summary reports the run finished.
        let ckpt = self.checkpoint(true)?;
        // The checkpoint keeps lazy weight decay's state (resume stays exact);
        // evaluation and the projector see the weights a dense optimizer would
        // have, as export does (Checkpoint::model applies the same decay).
        let owes_decay = self.table_optimizer.state().iter().any(|(name, _)| *name == "row_log_decay");
        if owes_decay {
            // Only the rows held are decayed (a lazy table's others keep owing it,
            // and are not written): evaluation reads the test rows, held since the
            // start, and the projector its words, materialised here first.
            if self.resident.is_none() {
                self.table.materialize(&(0..self.projector_word_count() as u32).collect::<Vec<_>>());
            }
            // Half rows round this pass keyed by the final step, as Checkpoint::model does.
            self.table.set_update_step(self.state.step);
            self.table_optimizer.apply_pending_decay(&mut self.table);
        }
        let final_eval = match &self.last_eval {
            // The loop has just evaluated these very weights (at the end of the last epoch).
            Some((step, m)) if *step == self.state.step && !owes_decay => m.clone(),
            _ => self.dist.evaluate(&self.table, &self.head.valid().weights(), self.config.model.pooling, &self.data.test, self.config.train.top_k)?,
        };
        // A row-sharded rank holds only its rows: no projector of the word vectors.
        if self.config.logging.tensorboard && self.dist.mode() != crate::config::DistributedMode::RowSharded {
            self.write_projector()?;
        }
        self.checkpointer.finish()?;
        let n = self.steps_this_session.max(1) as f64;
        let timings = self.timings.per_step(self.steps_this_session);
        let step_seconds = timings.total_ms() / 1e3;
        let per_step = |x: u64| x as f64 / n;
        let outcome = RunOutcome {
            run_dir: self.dir.clone(),
            table_optimizer: self.table_optimizer.name().into(),
            steps: self.state.step,
            best_eval: self.best.clone().unwrap_or_else(|| final_eval.clone()),
            final_eval,
            train_seconds: self.state.train_seconds,
            examples_per_second: per_step(self.examples) / step_seconds.max(1e-12),
            tokens_per_second: per_step(self.tokens) / step_seconds.max(1e-12),
            step_timings: timings,
            step_time: StepTimeStats::of(&self.step_ms),
            mean_rows_touched: per_step(self.rows_touched),
            table_rows: self.recipe.rows,
            resident_rows: self.table.rows(),
            table_bytes: self.table.bytes() as u64,
            optimizer_state_bytes: self.table_optimizer.state_bytes() as u64,
            examples_in_memory_bytes: self.data.train.heap_bytes() + self.data.test.heap_bytes(),
            peak_rss_bytes: sys::peak_rss_bytes().unwrap_or(0),
            interrupted,
            time_to_first_step_seconds: self.first_step_seconds.unwrap_or(0.0),
            checkpoint: self.checkpointer.stats().clone(),
            distributed: self.dist.stats(self.steps_this_session),
        };
        self.dist.finish()?;
        run_dir::write_summary(&self.dir, &outcome)?;
        if !self.config.logging.quiet {
            log::info!("checkpoint: {}", ckpt.display());
        }
        Ok(outcome)
    }

    /// The trained model, for predicting in memory.
    fn into_model(self) -> anyhow::Result<TrainedModel> {
        let table = if self.resident.is_some() {
            // Only the reached rows are held: the whole table (the others at their
            // initial values, with any decay they owe) is what export builds from
            // the final checkpoint, so build it the same way (without the
            // optimizer's whole state, which Checkpoint::model would load).
            let source = TableSource::new(&Checkpoint::open_latest(&self.dir)?)?;
            source.read(0..source.recipe().rows)?
        } else {
            let mut table = self.table;
            if !table.is_materialized() {
                table.materialize_all();
                // The rows just materialised owe their decay since step 0; the
                // others were decayed at the end of training and owe nothing
                // (a factor of exactly 1). Keyed by the final step, as Checkpoint::model.
                table.set_update_step(self.state.step);
                let mut optimizer = self.table_optimizer;
                optimizer.apply_pending_decay(&mut table);
            }
            table
        };
        Ok(TrainedModel::new(self.data.featurizer, self.data.labels, table, self.head.valid().weights(), self.config.model.pooling))
    }

    /// Words the TensorBoard projector shows: the most frequent, which are rows `0..n`.
    fn projector_word_count(&self) -> usize {
        self.config.logging.projector_words.min(self.data.featurizer.vocab().len())
    }

    fn write_projector(&mut self) -> anyhow::Result<()> {
        let n = self.projector_word_count();
        if n == 0 {
            return Ok(());
        }
        let words = &self.data.featurizer.vocab().words()[..n];
        let dim = self.table.dim();
        let Some(resident) = &self.resident else {
            let ids: Vec<u32> = (0..n as u32).collect();
            self.table.materialize(&ids);
            let mut vectors = vec![0f32; n * dim];
            vectors.chunks_mut(dim).enumerate().for_each(|(w, out)| self.table.row_into(w, out));
            return crate::summary::write_projector(&self.dir, words, &vectors, dim);
        };
        // Word w is table row w: held, or still at its initial value.
        let mut vectors = vec![0f32; n * dim];
        for (w, out) in vectors.chunks_mut(dim).enumerate() {
            match resident.local(w as u32) {
                Some(local) => self.table.row_into(local as usize, out),
                None => self.recipe.initial_row_stored(w, out),
            }
        }
        crate::summary::write_projector(&self.dir, words, &vectors, dim)
    }
}
