//! Benchmarks behind `sparseburn bench`: figures printed to the terminal and,
//! with `--json`, written as JSON. These are measurements, not tests: they
//! never fail on a slow machine. Results and commands live in BENCHMARKS.md.

mod child;
mod dump;
mod e2e;
mod optim;
mod stats;
mod train;
mod triad;

pub use child::{measure, ChildMeasurement, ProcIo};
pub use dump::DumpArgs;
pub use e2e::E2eArgs;
pub use optim::OptimArgs;
pub use train::TrainBenchArgs;
pub use triad::{triad, TriadArgs, TriadResult};

/// `sparseburn bench <optim|train|triad|dump-ids|e2e> [args...]`
#[derive(Debug)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct BenchArgs {
    #[cfg_attr(feature = "cli", command(subcommand))]
    pub bench: BenchCommand,
}

#[derive(Debug)]
#[cfg_attr(feature = "cli", derive(clap::Subcommand))]
pub enum BenchCommand {
    /// Table optimizers (lazy_adam, dense_adam, sgd) and the fused bag
    /// forward/backward on Zipf batches, beside a STREAM triad.
    Optim(OptimArgs),
    /// End-to-end training for a fixed number of steps: examples/s, tokens/s,
    /// the step-time split, peak RSS and accuracy.
    Train(TrainBenchArgs),
    /// The STREAM-style triad alone (a = b + s·c), the machine's bandwidth yardstick.
    Triad(TriadArgs),
    /// Writes a config's encoded train/test row ids, offsets and labels as raw
    /// little-endian arrays, so another framework can train on identical inputs
    /// (see benches/torch_sparseadam.py).
    DumpIds(DumpArgs),
    /// A whole `sparseburn train` as a user waits for it, run as a child process:
    /// wall time, time to first step, loop and checkpoint time, bytes written,
    /// peak RSS and accuracy.
    E2e(E2eArgs),
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.bench {
        BenchCommand::Optim(a) => optim::run(a),
        BenchCommand::Train(a) => train::run(a),
        BenchCommand::Triad(a) => triad::run(a),
        BenchCommand::DumpIds(a) => dump::run(a),
        BenchCommand::E2e(a) => e2e::run(a),
    }
}

/// Runs `f` on a rayon pool of `threads` threads (0 = rayon's default, all cores).
fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    Ok(pool.install(f))
}

/// Writes `value` as pretty JSON to `path` (creating parent folders).
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(value)? + "\n";
    crate::io::write_atomic(path, |w| std::io::Write::write_all(w, text.as_bytes()))?;
    log::info!("wrote {}", path.display());
    Ok(())
}

/// A short description of the machine, recorded with every result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MachineInfo {
    pub cpu: String,
    pub cores: usize,
    pub threads_used: usize,
    pub memory_gb: f64,
}

impl MachineInfo {
    pub fn current() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string())).unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: u64 = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0);
        MachineInfo {
            cpu,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            threads_used: rayon::current_num_threads(),
            memory_gb: mem_kib as f64 * 1024.0 / 1e9,
        }
    }
}

/// CPU time used on the whole machine and by this process, in clock ticks,
/// to tell how much other processes competed with a benchmark (Linux only).
#[derive(Clone, Copy, Debug)]
pub struct CpuSnapshot {
    machine_busy: u64,
    machine_total: u64,
    own: u64,
}

impl CpuSnapshot {
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal ...
        let total: u64 = cpu.iter().take(8).sum();
        let idle = cpu.get(3)? + cpu.get(4).copied().unwrap_or(0);
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name: utime is the 12th, stime the 13th.
        let rest: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
        let own = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
        Some(CpuSnapshot { machine_busy: total - idle, machine_total: total, own })
    }

    /// Share of the machine's CPU time used by *other* processes since `self`
    /// (0 = the benchmark had the machine to itself, 1 = every core was busy
    /// with something else). Our own threads' time, spinning included, is excluded.
    pub fn others_since(&self) -> Option<f64> {
        self.others_since_excluding(0.0)
    }

    /// Like [`others_since`](Self::others_since), also excluding `ticks` of CPU
    /// time used by a child this process measured (its rusage, in clock ticks).
    pub fn others_since_excluding(&self, ticks: f64) -> Option<f64> {
        let now = CpuSnapshot::now()?;
        let total = now.machine_total.saturating_sub(self.machine_total).max(1) as f64;
        let busy = now.machine_busy.saturating_sub(self.machine_busy) as f64;
        let own = now.own.saturating_sub(self.own) as f64 + ticks;
        Some(((busy - own) / total).clamp(0.0, 1.0))
    }
}
