//! `sparseburn bench optim`: one table-optimizer step (any registered kind:
//! lazy_adam, dense_adam, sgd, rowwise_adagrad, …) and the fused bag forward/backward on synthetic batches of Zipf ids,
//! for several table sizes, beside a STREAM triad measured in the same run.
//!
//! Each timed step is what training does: pool the batch from the table, turn
//! a fixed `d pooled` into a sparse gradient (sort + dedupe + sum), then step
//! the optimizer. The three phases are timed separately. All table sizes are
//! in memory at once (per optimizer), and the timed steps run in rounds over
//! the sizes, so that the ratios between sizes hold on a machine shared with
//! other work.
//!
//! With `--table-storage mmap` each table and each optimizer's state live in
//! files under `--table-path` (mapped as training maps `model.table_storage =
//! "mmap"`), rows are initialised lazily on first touch, and every step first
//! faults in the rows of its batch (timed apart: "fault-in"), so the step time
//! splits into page faults / disk reads and compute.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};
use rayon::prelude::*;
use serde::Serialize;

use super::stats::Summary;
use super::triad::{triad, TriadResult};
use super::MachineInfo;
use crate::mem::mapped::{self, TableFile};
use crate::mem::thp::ThpSnapshot;
use crate::memory::TableStorage;
use crate::model::{bag_backward, bag_forward, Bags, EmbeddingTable, Pooling, SparseGrad, TableDtype, TableInit, TableRecipe};
use crate::optim::{StateData, TableOptimizer, TableOptimizerConfig};

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct OptimArgs {
    /// Table sizes (rows), comma-separated.
    #[cfg_attr(feature = "cli", arg(long, value_delimiter = ',', default_value = "100000,1000000,10000000"))]
    pub rows: Vec<usize>,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 64))]
    pub dim: usize,
    /// Bags per batch.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 256))]
    pub batch: usize,
    /// Ids per bag.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 32))]
    pub bag: usize,
    /// Zipf exponent of the id distribution.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1.0))]
    pub zipf: f64,
    /// Timed steps per optimizer and size (the median is reported).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 20))]
    pub steps: usize,
    /// Untimed steps before each block of timed steps (caches, rayon's threads).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 2))]
    pub warmup: usize,
    /// Timed steps are split into this many rounds over the table sizes, so
    /// that load from other processes on a shared machine affects every size.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 4))]
    pub rounds: usize,
    /// Timed steps for dense_adam, which reads and writes the whole table every
    /// step (default: --steps).
    #[cfg_attr(feature = "cli", arg(long))]
    pub dense_steps: Option<usize>,
    /// Optimizers to run, comma-separated: any `kind` of `[optimizer.table]`.
    #[cfg_attr(feature = "cli", arg(long, value_delimiter = ',', default_value = "lazy_adam,dense_adam,sgd"))]
    pub optimizers: Vec<String>,
    /// Bias correction (global, per_row or none), for the kinds that have one.
    #[cfg_attr(feature = "cli", arg(long, default_value = "global"))]
    pub bias_correction: String,
    /// Decoupled weight decay (lazy rows catch up what they missed), for the kinds that have one.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0.0))]
    pub weight_decay: f64,
    /// Size of each triad array in GB (0 = skip the triad).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1.0))]
    pub triad_gb: f64,
    /// Triad repetitions per array offset (4 offsets).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 5))]
    pub triad_reps: usize,
    /// Draw Zipf ranks over this many ids (then scatter them over the table)
    /// instead of over every row: every table size then sees the same number
    /// of distinct rows, which isolates the cost of table size itself.
    #[cfg_attr(feature = "cli", arg(long))]
    pub zipf_support: Option<usize>,
    /// Use Zipf ranks as row ids, so the hot rows sit together at the start of
    /// the table. By default ranks are scattered over the table by a fixed
    /// bijection, as hashing scatters a real vocabulary.
    #[cfg_attr(feature = "cli", arg(long))]
    pub contiguous_ids: bool,
    /// Before every optimizer step, read this many MB of unrelated memory
    /// (0 = off), so each step starts with caches and TLB holding none of the
    /// table. With several times the last-level cache, every table size then
    /// pays memory latency for every row it touches, and what remains of the
    /// difference between sizes is the cost of table size itself.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
    pub evict_mb: usize,
    /// Where tables and optimizer state live: memory, or mmap (files under --table-path).
    #[cfg_attr(feature = "cli", arg(long, default_value = "memory"))]
    pub table_storage: String,
    /// Folder for the table files of --table-storage mmap (removed again at the end).
    #[cfg_attr(feature = "cli", arg(long))]
    pub table_path: Option<PathBuf>,
    /// What the table's rows are stored in: f32, bf16 or f16 (`model.table_dtype`).
    #[cfg_attr(feature = "cli", arg(long, default_value = "f32", value_parser = parse_table_dtype))]
    pub table_dtype: TableDtype,
    /// Threads (0 = all cores).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
    pub threads: usize,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1))]
    pub seed: u64,
    /// Also write the results here as JSON.
    #[cfg_attr(feature = "cli", arg(long))]
    pub json: Option<PathBuf>,
}

/// One optimizer on one table size.
#[derive(Clone, Debug, Serialize)]
pub struct OptimRun {
    pub rows: usize,
    pub optimizer: String,
    pub warmup_steps: usize,
    pub timed_steps: usize,
    /// Mean unique rows per batch (rows the lazy optimizers touch).
    pub touched_rows: f64,
    pub optimizer_step: Summary,
    pub bag_forward: Summary,
    pub bag_backward: Summary,
    /// Rows updated per second: touched rows for lazy optimizers, every row for dense.
    pub rows_per_s: f64,
    /// Bytes the update reads and writes per step (see `update_bytes`).
    pub bytes_per_step: f64,
    /// `bytes_per_step` / median step time.
    pub gb_per_s: f64,
    /// `gb_per_s` / triad bandwidth.
    pub triad_fraction: Option<f64>,
    /// Seconds to allocate and pre-fault the optimizer state.
    pub state_init_s: f64,
    /// "memory" or "mmap".
    pub table_storage: String,
    /// Table + optimizer state bytes (the memory plan's figure for them): in
    /// memory, or in the files of a mapped run.
    pub plan_bytes: u64,
    /// With mmap: faulting in the batch's rows (table and per-row state) before the step.
    pub fault_in: Option<Summary>,
    /// Page faults per timed step (fault-in and step), from /proc/self/stat.
    pub major_faults_per_step: f64,
    pub minor_faults_per_step: f64,
    /// Bytes read from disk per timed step (/proc/self/io read_bytes).
    pub read_bytes_per_step: f64,
    /// Resident set size after this optimizer's timed steps on all sizes.
    pub rss_bytes: u64,
    /// Bytes of the table's rows, and seconds to allocate and initialise (in memory) or map them.
    pub table_bytes: u64,
    pub table_init_s: f64,
    /// What allocating and initialising the table did for huge pages: bytes
    /// of it the kernel backed with 2 MiB pages, and the system's huge-page
    /// faults, fallbacks to 4 KiB pages and compaction stalls meanwhile.
    pub table_thp: Option<ThpSnapshot>,
    /// The same for allocating the optimizer state (its pages are mostly
    /// faulted later, in the warm-up steps).
    pub state_thp: Option<ThpSnapshot>,
    /// The process's AnonHugePages after this optimizer's timed steps on all sizes.
    pub anon_huge_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OptimReport {
    pub machine: MachineInfo,
    pub args: OptimArgs,
    /// The better of the triads run before and after the optimizers.
    pub triad: Option<TriadResult>,
    pub triad_runs: Vec<TriadResult>,
    pub runs: Vec<OptimRun>,
    pub targets: Vec<Target>,
    /// Share of the machine's CPU used by other processes during the run
    /// (this machine is shared: figures taken under load are slower).
    pub other_processes_cpu: Option<f64>,
    /// Peak resident set size of the process (VmHWM), and what the memory
    /// plan says must be resident: every table and, for the optimizer with the
    /// most, its state on every size (only one optimizer's state exists at a
    /// time); nothing of them with mmap.
    pub peak_rss_bytes: u64,
    pub plan_resident_bytes: u64,
    pub plan_disk_bytes: u64,
}

/// A figure set against its target (issue 7).
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub value: f64,
    pub target: String,
    pub met: bool,
}

/// The config of one `--optimizers` entry: the kind's defaults with lr, and
/// `--bias-correction` / `--weight-decay` where the kind has those keys.
#[cfg(feature = "cli")]
fn parse_table_dtype(s: &str) -> Result<TableDtype, String> {
    TableDtype::parse(s)
}

fn optimizer_config(name: &str, args: &OptimArgs, lr: f32) -> anyhow::Result<TableOptimizerConfig> {
    let mut config = TableOptimizerConfig::named(name).map_err(|e| anyhow::anyhow!("--optimizers: {e}"))?;
    if !args.table_dtype.is_f32() && !config.updates_only_grad_rows() {
        bail!("--optimizers: {name} updates every row; --table-dtype {} needs a lazy optimizer", args.table_dtype.name());
    }
    config.set_lr(lr as f64);
    for (key, value) in [("bias_correction", toml::Value::from(args.bias_correction.as_str())), ("weight_decay", toml::Value::from(args.weight_decay))] {
        if config.has_key(key) {
            config.set(key, value).map_err(|e| anyhow::anyhow!("--{}: {e}", key.replace('_', "-")))?;
        }
    }
    Ok(config)
}

/// Bytes one step reads and writes, counting each array once per row it
/// visits: the gradient row is read, and the table row and every per-row
/// state array (Adam's m and v, an accumulator, step counts, decay marks) are
/// read and written. A lazy optimizer visits the touched rows, a dense one
/// every row (reading g only for the touched ones).
fn update_bytes(optimizer: &dyn TableOptimizer, rows: usize, touched: f64, dim: usize, table_row: usize) -> f64 {
    let (row, table_row) = ((dim * 4) as f64, table_row as f64);
    let per_row = optimizer.per_row_state();
    let state_row: f64 = optimizer.state().iter().filter(|(name, _)| per_row.contains(name)).map(|(_, d)| d.bytes() as f64 / rows as f64).sum();
    let visit = 2.0 * (table_row + state_row);
    if optimizer.updates_only_grad_rows() {
        touched * (row + visit)
    } else {
        rows as f64 * visit + touched * row
    }
}

/// Knuth's multiplicative constant: a prime, so `rank·P mod rows` is a
/// bijection for every table size not divisible by it.
const SCATTER: u64 = 2_654_435_761;

/// `n` batches of `batch` bags × `bag` Zipf-distributed ids over `rows` rows.
fn zipf_batches(args: &OptimArgs, rows: usize, n: usize) -> anyhow::Result<Vec<Vec<u32>>> {
    let support = args.zipf_support.unwrap_or(rows).min(rows);
    let zipf = Zipf::new(support as f64, args.zipf)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let scatter = !args.contiguous_ids && !(rows as u64).is_multiple_of(SCATTER);
    Ok((0..n)
        .map(|_| {
            (0..args.batch * args.bag)
                .map(|_| {
                    let rank = zipf.sample(&mut rng) as u64 - 1;
                    (if scatter { rank * SCATTER % rows as u64 } else { rank }) as u32
                })
                .collect()
        })
        .collect())
}

const DISTINCT_BATCHES: usize = 64;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

pub fn run(args: OptimArgs) -> anyhow::Result<()> {
    let (report, files) = super::with_threads(args.threads, || bench(&args))??;
    print_report(&report);
    if let Some(path) = &args.json {
        super::write_json(path, &report)?;
    }
    // Last: freeing written blocks can take minutes (see BenchFiles).
    drop(files);
    Ok(())
}

/// One table size under test: its batches, table and scratch buffers.
struct Size {
    rows: usize,
    batches: Vec<Vec<u32>>,
    /// Each batch's distinct ids, sorted (what a step faults in and materialises).
    unique: Vec<Vec<u32>>,
    /// Table and state are in mapped files: fault the batch's rows in first, timed apart.
    mapped: bool,
    table: EmbeddingTable,
    table_init_s: f64,
    table_thp: Option<ThpSnapshot>,
    pooled: Vec<f32>,
    grad: SparseGrad,
    /// Batches used so far (they are cycled).
    next: usize,
}

/// Timings of one optimizer on one size.
#[derive(Default)]
struct Samples {
    fault_in: Vec<f64>,
    fwd: Vec<f64>,
    bwd: Vec<f64>,
    opt: Vec<f64>,
    touched: usize,
    faults: Faults,
}

/// Page faults and disk reads of this process so far.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    minor: u64,
    major: u64,
    read_bytes: u64,
}

impl Faults {
    /// From /proc/self/stat (fields 10 and 12: minflt, majflt, every thread) and /proc/self/io.
    fn now() -> Faults {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse().ok()).unwrap_or(0);
        let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
        let read_bytes = io.lines().find_map(|l| l.strip_prefix("read_bytes:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        Faults { minor: field(10), major: field(12), read_bytes }
    }

    fn add_since(&mut self, start: Faults) {
        let now = Faults::now();
        self.minor += now.minor.saturating_sub(start.minor);
        self.major += now.major.saturating_sub(start.major);
        self.read_bytes += now.read_bytes.saturating_sub(start.read_bytes);
    }
}

/// Reads the first and last element of each row in `ids` (`width` elements
/// per row), in parallel, so that the pages of the rows a step is about to
/// update are mapped, several page faults (disk reads) in flight at once. A
/// row already mapped costs a cache miss, not a system call. Write faults on
/// clean pages (first write, or after write-back) remain in the step.
fn fault_in<T: Copy + Send + Sync>(values: &[T], width: usize, ids: &[u32]) {
    if width == 0 {
        return;
    }
    ids.par_chunks(256).for_each(|chunk| {
        for &r in chunk {
            let row = &values[r as usize * width..(r as usize + 1) * width];
            std::hint::black_box((row[0], row[width - 1]));
        }
    });
}

impl Size {
    /// One training-shaped step: pool, backward to a sparse gradient, optimizer step.
    fn step(&mut self, optimizer: &mut dyn TableOptimizer, offsets: &[usize], d_pooled: &[f32], lr: f32, evict: &[u64], samples: Option<&mut Samples>) {
        let dim = self.table.dim();
        let i = self.next % self.batches.len();
        let bags = Bags::new(&self.batches[i], offsets);
        self.next += 1;
        let faults = Faults::now();
        let t = Instant::now();
        // A lazy table (mmap) generates rows on first use, as training does.
        self.table.materialize(&self.unique[i]);
        if self.mapped {
            let ids = &self.unique[i];
            fault_in(self.table.as_bytes(), self.table.row_bytes(), ids);
            let rows = self.rows;
            let per_row = optimizer.per_row_state();
            for (name, data) in optimizer.state() {
                if per_row.contains(&name) {
                    match data {
                        StateData::F32(x) => fault_in(x, x.len() / rows, ids),
                        StateData::U32(x) => fault_in(x, x.len() / rows, ids),
                        StateData::F64(x) => fault_in(x, x.len() / rows, ids),
                        StateData::U64(x) => fault_in(x, x.len() / rows, ids),
                    }
                }
            }
        }
        let fault_ms = ms(t);
        let t = Instant::now();
        bag_forward(self.table.view(), dim, bags, Pooling::Mean, &mut self.pooled);
        let f = ms(t);
        let t = Instant::now();
        bag_backward(bags, Pooling::Mean, d_pooled, &mut self.grad);
        let b = ms(t);
        evict_caches(evict);
        let t = Instant::now();
        optimizer.step(&mut self.table, &self.grad, lr);
        let o = ms(t);
        std::hint::black_box(&self.pooled);
        if let Some(s) = samples {
            s.faults.add_since(faults);
            s.fault_in.push(fault_ms);
            s.fwd.push(f);
            s.bwd.push(b);
            s.opt.push(o);
            s.touched += self.grad.len();
        }
    }
}

/// Reads `buf` in parallel, pushing everything else out of the caches and
/// the TLB. Reading, not writing, leaves clean lines behind, so the timed
/// step that follows pays no write-backs for this buffer.
fn evict_caches(buf: &[u64]) {
    let sum: u64 = buf.par_chunks(1 << 16).map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x))).sum();
    std::hint::black_box(sum);
}

/// The report, and the table files to remove once it is out.
fn bench(args: &OptimArgs) -> anyhow::Result<(OptimReport, Option<BenchFiles>)> {
    let lr = 1e-3f32;
    let configs: Vec<TableOptimizerConfig> = args.optimizers.iter().map(|n| optimizer_config(n, args, lr)).collect::<anyhow::Result<_>>()?;
    if args.steps == 0 || args.batch == 0 || args.bag == 0 || args.rounds == 0 {
        bail!("--steps, --rounds, --batch and --bag must be positive");
    }
    let storage = match args.table_storage.as_str() {
        "memory" => TableStorage::Memory,
        "mmap" => TableStorage::Mmap,
        other => bail!("--table-storage: {other:?} is not memory or mmap"),
    };
    let mapped = storage == TableStorage::Mmap;
    let files = match (&args.table_path, mapped) {
        (Some(dir), true) => Some(BenchFiles { dir: dir.clone(), created: Vec::new() }),
        (None, true) => bail!("--table-path is required with --table-storage mmap (a folder for the table files)"),
        (Some(_), false) => bail!("--table-path is only used with --table-storage mmap"),
        (None, false) => None,
    };
    let mut files = files;
    let machine = MachineInfo::current();
    log::info!("machine: {} ({} cores, {} threads used, {:.1} GB)", machine.cpu, machine.cores, machine.threads_used, machine.memory_gb);
    let cpu_start = super::CpuSnapshot::now();

    // The triad before any table exists (and again after they are freed), so its
    // arrays never share memory with them. The better of the two is the yardstick.
    let run_triad = || {
        (args.triad_gb > 0.0).then(|| {
            let r = triad(args.triad_gb, args.triad_reps);
            log::info!("triad: {:.2} GB/s (best of {}; median {:.2})", r.gb_per_s, r.reps, r.median_gb_per_s);
            r
        })
    };
    let triad_before = run_triad();

    let dim = args.dim;
    let offsets: Vec<usize> = (0..=args.batch).map(|b| b * args.bag).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x5eed);
    let d_pooled: Vec<f32> = (0..args.batch * dim).map(|_| rng.random_range(-1e-2..1e-2)).collect();
    let mut sizes = Vec::new();
    for &rows in &args.rows {
        let thp = ThpSnapshot::now();
        let t = Instant::now();
        let recipe = TableRecipe { rows, dim, init: TableInit::default(), seed: args.seed, dtype: args.table_dtype };
        let table = match &mut files {
            // Lazily initialised, as training does: start-up writes nothing to disk.
            Some(f) => f.place(&format!("{rows}.table"), (rows * dim * args.table_dtype.size()) as u64, || EmbeddingTable::lazy(recipe))?,
            None => EmbeddingTable::eager(recipe),
        };
        let table_init_s = t.elapsed().as_secs_f64();
        log::info!(
            "{rows} rows × {dim} {}: table {:.2} GB {} in {table_init_s:.2} s",
            args.table_dtype.name(),
            table.bytes() as f64 / 1e9,
            if mapped { "mapped" } else { "initialised" },
        );
        let table_thp = ThpSnapshot::gained_since(thp);
        if let Some(d) = table_thp {
            log::info!(
                "  huge pages: {:.2} of {:.2} GB ({:.0}%); system-wide meanwhile {} huge-page faults, {} fallbacks to 4 KiB, {} compaction stalls",
                d.anon_huge_bytes as f64 / 1e9,
                table.bytes() as f64 / 1e9,
                100.0 * d.anon_huge_bytes as f64 / table.bytes().max(1) as f64,
                d.fault_alloc,
                d.fault_fallback,
                d.compact_stall
            );
        }
        // Distinct batches, cycled: more than the caches could learn.
        let batches = zipf_batches(args, rows, DISTINCT_BATCHES)?;
        let unique = batches
            .iter()
            .map(|b| {
                let mut u = b.clone();
                u.sort_unstable();
                u.dedup();
                u
            })
            .collect();
        sizes.push(Size { rows, batches, unique, mapped, table, table_init_s, table_thp, pooled: vec![0.0f32; args.batch * dim], grad: SparseGrad::new(dim), next: 0 });
    }

    // Non-zero contents, so that no page is the shared zero page.
    let evict: Vec<u64> = (0..args.evict_mb * (1 << 20) / 8).map(|i| i as u64 | 1).collect();
    let mut runs = Vec::new();
    for config in &configs {
        let mut optimizers = Vec::new();
        let mut init_s = Vec::new();
        let mut state_thp = Vec::new();
        for size in &sizes {
            let thp = ThpSnapshot::now();
            let t = Instant::now();
            optimizers.push(match &mut files {
                Some(f) => f.place(&format!("{}.{}.state", size.rows, config.name()), config.state_bytes(size.rows, dim), || config.init(size.rows, dim))?,
                None => config.init(size.rows, dim),
            });
            init_s.push(t.elapsed().as_secs_f64());
            state_thp.push(ThpSnapshot::gained_since(thp));
        }
        let dense = optimizers.first().is_some_and(|o| !o.updates_only_grad_rows());
        let timed = if dense { args.dense_steps.unwrap_or(args.steps).max(1) } else { args.steps };
        let mut samples: Vec<Samples> = sizes.iter().map(|_| Samples::default()).collect();
        // Rounds over the sizes, each a block of warm-up steps then timed
        // steps: the load of a shared machine then falls on every size alike,
        // while each timed step still follows steps on its own table.
        for round in 0..args.rounds {
            let block = timed * (round + 1) / args.rounds - timed * round / args.rounds;
            for ((size, optimizer), samples) in sizes.iter_mut().zip(&mut optimizers).zip(&mut samples) {
                for _ in 0..args.warmup {
                    size.step(optimizer.as_mut(), &offsets, &d_pooled, lr, &evict, None);
                }
                for _ in 0..block {
                    size.step(optimizer.as_mut(), &offsets, &d_pooled, lr, &evict, Some(samples));
                }
            }
        }
        let rss_bytes = crate::sys::rss_bytes().unwrap_or(0);
        let anon_huge_bytes = ThpSnapshot::now().map(|t| t.anon_huge_bytes);
        for ((((size, s), state_init_s), optimizer), state_thp) in sizes.iter().zip(samples).zip(init_s).zip(&optimizers).zip(state_thp) {
            let touched = s.touched as f64 / timed as f64;
            let step = Summary::of(&s.opt);
            let bytes = update_bytes(optimizer.as_ref(), size.rows, touched, dim, size.table.row_bytes());
            let gb_per_s = bytes / (step.median_ms / 1e3) / 1e9;
            let updated = if dense { size.rows as f64 } else { touched };
            log::info!("  {:>10} rows {:<20} {:>9.3} ms/step (median of {timed}), {:.0} rows touched, {:.2} GB/s", size.rows, config.name(), step.median_ms, touched, gb_per_s);
            runs.push(OptimRun {
                rows: size.rows,
                optimizer: config.name().into(),
                warmup_steps: args.warmup * args.rounds,
                timed_steps: timed,
                touched_rows: touched,
                optimizer_step: step,
                bag_forward: Summary::of(&s.fwd),
                bag_backward: Summary::of(&s.bwd),
                rows_per_s: updated / (step.median_ms / 1e3),
                bytes_per_step: bytes,
                gb_per_s,
                triad_fraction: None,
                state_init_s,
                table_storage: storage.name().into(),
                plan_bytes: (size.rows * dim * args.table_dtype.size()) as u64 + config.state_bytes(size.rows, dim),
                fault_in: mapped.then(|| Summary::of(&s.fault_in)),
                major_faults_per_step: s.faults.major as f64 / timed as f64,
                minor_faults_per_step: s.faults.minor as f64 / timed as f64,
                read_bytes_per_step: s.faults.read_bytes as f64 / timed as f64,
                rss_bytes,
                table_bytes: size.table.bytes() as u64,
                table_init_s: size.table_init_s,
                table_thp: size.table_thp,
                state_thp,
                anon_huge_bytes,
            });
        }
    }
    drop(sizes);
    let tables: u64 = args.rows.iter().map(|&r| (r * dim * args.table_dtype.size()) as u64).sum();
    let states = configs.iter().map(|c| args.rows.iter().map(|&r| c.state_bytes(r, dim)).sum::<u64>()).max().unwrap_or(0);
    let (plan_resident_bytes, plan_disk_bytes) = if mapped { (0, tables + states) } else { (tables + states, 0) };
    let triad_after = run_triad();
    let triad = match (triad_before, triad_after) {
        (Some(a), Some(b)) => Some(if b.gb_per_s > a.gb_per_s { b } else { a }),
        (a, b) => a.or(b),
    };
    for r in &mut runs {
        r.triad_fraction = triad.map(|t| r.gb_per_s / t.gb_per_s);
    }
    let targets = targets(&runs, triad.as_ref());
    let other_processes_cpu = cpu_start.and_then(|c| c.others_since());
    let report = OptimReport {
        machine,
        args: args.clone(),
        triad,
        triad_runs: [triad_before, triad_after].into_iter().flatten().collect(),
        runs,
        targets,
        other_processes_cpu,
        peak_rss_bytes: crate::sys::peak_rss_bytes().unwrap_or(0),
        plan_resident_bytes,
        plan_disk_bytes,
    };
    Ok((report, files))
}

/// Owner named in the headers of the bench's table files: a later bench may
/// replace files an interrupted one left behind, never anyone else's.
const BENCH_OWNER: &str = "sparseburn bench optim";

/// The table files of `--table-storage mmap`, removed when dropped.
struct BenchFiles {
    dir: PathBuf,
    created: Vec<PathBuf>,
}

impl BenchFiles {
    /// Runs `build` with its arrays in a new file `name` (`bytes` of arrays reserved).
    fn place<R>(&mut self, name: &str, bytes: u64, build: impl FnOnce() -> R) -> anyhow::Result<R> {
        let path = self.dir.join(format!("bench-{name}"));
        // Room for page-aligning a few arrays (state may be several).
        let file = TableFile::create(&path, BENCH_OWNER, mapped::file_bytes(&[bytes]) + 8 * 4096, "--table-path")?;
        self.created.push(path);
        let (r, _file) = mapped::place_in(file, build)?;
        Ok(r)
    }
}

impl Drop for BenchFiles {
    /// Removes the files. On a filesystem mounted with `discard` (this VM's
    /// root), freeing the blocks written during the run waits for the device:
    /// about 16 MB/s here, so the removal is logged and done after the report.
    fn drop(&mut self) {
        let bytes: u64 = self.created.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
        if !self.created.is_empty() {
            log::info!("removing {} table files ({:.2} GB) from {}", self.created.len(), bytes as f64 / 1e9, self.dir.display());
        }
        for p in &self.created {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn find<'a>(runs: &'a [OptimRun], optimizer: &str, rows: usize) -> Option<&'a OptimRun> {
    runs.iter().find(|r| r.optimizer == optimizer && r.rows == rows)
}

/// The issue-7 ratios that this run's figures can answer.
fn targets(runs: &[OptimRun], triad: Option<&TriadResult>) -> Vec<Target> {
    let mut out = Vec::new();
    if triad.is_some() {
        for r in runs.iter().filter(|r| r.optimizer == "lazy_adam") {
            let f = r.triad_fraction.unwrap_or(0.0);
            out.push(Target { name: format!("lazy_adam GB/s ÷ triad GB/s at {} rows", r.rows), value: f, target: "≥ 0.5".into(), met: f >= 0.5 });
        }
    }
    let lazy: Vec<&OptimRun> = runs.iter().filter(|r| r.optimizer == "lazy_adam").collect();
    if let (Some(small), Some(big)) = (lazy.iter().min_by_key(|r| r.rows), lazy.iter().max_by_key(|r| r.rows))
        && big.rows > small.rows
    {
        let ratio = big.optimizer_step.median_ms / small.optimizer_step.median_ms;
        out.push(Target { name: format!("lazy_adam ms/step at {} rows ÷ at {} rows", big.rows, small.rows), value: ratio, target: "≤ 1.2".into(), met: ratio <= 1.2 });
        // Zipf over more rows touches more distinct rows per batch: the same
        // ratio per touched row shows what table size alone costs.
        let per_row = (big.optimizer_step.median_ms / big.touched_rows) / (small.optimizer_step.median_ms / small.touched_rows);
        out.push(Target {
            name: format!("  same, per touched row ({:.0} vs {:.0} rows/step)", big.touched_rows, small.touched_rows),
            value: per_row,
            target: "(shown)".into(),
            met: true,
        });
    }
    for r in runs.iter().filter(|r| r.optimizer == "dense_adam") {
        if let Some(l) = find(runs, "lazy_adam", r.rows) {
            let ratio = r.optimizer_step.median_ms / l.optimizer_step.median_ms;
            let (target, met) = if r.rows == 1_000_000 { ("≥ 100".to_string(), ratio >= 100.0) } else { ("(shown)".to_string(), true) };
            out.push(Target { name: format!("dense_adam ÷ lazy_adam ms/step at {} rows", r.rows), value: ratio, target, met });
        }
    }
    out
}

fn print_report(r: &OptimReport) {
    let a = &r.args;
    println!();
    println!(
        "bench optim: {} threads, dim {}, {} bags × {} ids, Zipf({}) over {} {} ids; {} rounds of ({} warm-up + timed) steps per size",
        r.machine.threads_used,
        a.dim,
        a.batch,
        a.bag,
        a.zipf,
        a.zipf_support.map(|n| format!("{n}")).unwrap_or_else(|| "all".into()),
        if a.contiguous_ids { "contiguous" } else { "scattered" },
        a.rounds,
        a.warmup
    );
    if a.evict_mb > 0 {
        println!("cold caches: {} MB of other memory read before every optimizer step", a.evict_mb);
    }
    if let Some(o) = r.other_processes_cpu {
        println!("other processes used {:.0}% of the machine's CPU during this run", o * 100.0);
    }
    if let Some(t) = &r.triad {
        let all: Vec<String> = r.triad_runs.iter().map(|t| format!("{:.2}", t.gb_per_s)).collect();
        println!("triad (3 × {:.2} GB f64, best of {} reps; before/after the optimizers {} GB/s): {:.2} GB/s", t.bytes_per_array as f64 / 1e9, t.reps, all.join(" / "), t.gb_per_s);
    }
    println!(
        "{:>10} {:<20} {:>5} {:>10} {:>10} {:>8} {:>10} {:>9} {:>7} {:>7} {:>8} {:>8}",
        "rows", "optimizer", "steps", "ms/step", "p90 ms", "touched", "Mrows/s", "MB/step", "GB/s", "%triad", "fwd ms", "bwd ms"
    );
    for x in &r.runs {
        println!(
            "{:>10} {:<20} {:>5} {:>10.3} {:>10.3} {:>8.0} {:>10.2} {:>9.2} {:>7.2} {:>7} {:>8.3} {:>8.3}",
            x.rows,
            x.optimizer,
            x.timed_steps,
            x.optimizer_step.median_ms,
            x.optimizer_step.p90_ms,
            x.touched_rows,
            x.rows_per_s / 1e6,
            x.bytes_per_step / 1e6,
            x.gb_per_s,
            x.triad_fraction.map(|f| format!("{:.0}%", f * 100.0)).unwrap_or_else(|| "-".into()),
            x.bag_forward.median_ms,
            x.bag_backward.median_ms,
        );
    }
    println!(
        "memory: peak RSS {:.2} GB; plan {:.2} GB resident (tables and the largest optimizer state over all sizes){}",
        r.peak_rss_bytes as f64 / 1e9,
        r.plan_resident_bytes as f64 / 1e9,
        if r.plan_disk_bytes > 0 { format!(", {:.2} GB in mapped files", r.plan_disk_bytes as f64 / 1e9) } else { String::new() }
    );
    println!(
        "{:>10} {:<20} {:>7} {:>9} {:>12} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "rows", "optimizer", "storage", "plan GB", "fault-in ms", "step ms", "majflt/st", "minflt/st", "read MB/st", "RSS GB"
    );
    for x in &r.runs {
        let step = x.bag_forward.median_ms + x.bag_backward.median_ms + x.optimizer_step.median_ms;
        println!(
            "{:>10} {:<20} {:>7} {:>9.3} {:>12} {:>10.3} {:>10.1} {:>10.1} {:>10.2} {:>9.2}",
            x.rows,
            x.optimizer,
            x.table_storage,
            x.plan_bytes as f64 / 1e9,
            x.fault_in.map(|f| format!("{:.3}", f.median_ms)).unwrap_or_else(|| "-".into()),
            step,
            x.major_faults_per_step,
            x.minor_faults_per_step,
            x.read_bytes_per_step / 1e6,
            x.rss_bytes as f64 / 1e9
        );
    }
    if r.runs.iter().any(|x| x.table_thp.is_some()) {
        println!(
            "huge pages (AnonHugePages; faults, fallbacks and compaction stalls are system-wide while the table was allocated; the process's after the timed steps):\n{:>10} {:<20} {:>8} {:>14} {:>7} {:>9} {:>9} {:>9} {:>15}",
            "rows", "optimizer", "table GB", "table THP GB", "init s", "thp flt", "fallback", "stalls", "process THP GB"
        );
        for x in &r.runs {
            let t = x.table_thp.unwrap_or_default();
            println!(
                "{:>10} {:<20} {:>8.2} {:>8.2} ({:>3.0}%) {:>7.2} {:>9} {:>9} {:>9} {:>15}",
                x.rows,
                x.optimizer,
                x.table_bytes as f64 / 1e9,
                t.anon_huge_bytes as f64 / 1e9,
                100.0 * t.anon_huge_bytes as f64 / x.table_bytes.max(1) as f64,
                x.table_init_s,
                t.fault_alloc,
                t.fault_fallback,
                t.compact_stall,
                x.anon_huge_bytes.map(|b| format!("{:.2}", b as f64 / 1e9)).unwrap_or_else(|| "-".into())
            );
        }
    }
    if !r.targets.is_empty() {
        println!("targets:");
        for t in &r.targets {
            println!("  {:<55} {:>9.3}  target {:<8} {}", t.name, t.value, t.target, if t.met { "met" } else { "NOT met" });
        }
    }
}
