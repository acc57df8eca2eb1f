//! `sparseburn bench train CONFIG`: end-to-end training through
//! `sparseburn::train::train` for a fixed number of steps, reporting the
//! throughput, the trainer's per-phase step split, peak RSS against the
//! table + optimizer-state bytes, and the final accuracy.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::MachineInfo;
use crate::config::Config;
use crate::train::{train, RunOutcome, TrainOptions};

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TrainBenchArgs {
    /// Experiment config (TOML).
    pub config: PathBuf,
    /// Train exactly this many steps (epochs are extended if needed; 0 = the config's own length).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 500))]
    pub steps: u64,
    /// Config overrides, `key.path=value` (repeatable).
    #[cfg_attr(feature = "cli", arg(long = "set"))]
    pub set: Vec<String>,
    /// Keep the run (with its final checkpoint) here instead of a temporary folder.
    #[cfg_attr(feature = "cli", arg(long))]
    pub run_dir: Option<PathBuf>,
    /// Also write the results here as JSON.
    #[cfg_attr(feature = "cli", arg(long))]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct TrainBenchReport {
    pub machine: MachineInfo,
    pub args: TrainBenchArgs,
    pub threads: usize,
    pub batch_size: usize,
    /// Mean of the trainer's per-phase step times (what `examples_per_second` divides by).
    pub step_ms: f64,
    /// Examples per second of training-loop wall time (phases + logging,
    /// without evaluation and checkpoints): the stricter figure.
    pub wall_examples_per_second: f64,
    pub wall_tokens_per_second: f64,
    /// Whole `train()` call: data preparation, table init, loop, evaluations, final checkpoint.
    pub total_wall_s: f64,
    /// Time spent writing the final checkpoint (from its files' timestamps), if known.
    pub final_checkpoint_s: Option<f64>,
    pub table_and_state_bytes: u64,
    /// Peak RSS ÷ (table + optimizer state bytes).
    pub peak_rss_ratio: f64,
    /// Share of the machine's CPU used by other processes during the run.
    pub other_processes_cpu: Option<f64>,
    pub outcome: RunOutcome,
}

/// Seconds between the first checkpoint file's creation and the manifest's
/// last write, for the newest checkpoint of `run_dir`.
fn checkpoint_seconds(run_dir: &Path) -> Option<f64> {
    let root = run_dir.join("checkpoints");
    let latest = std::fs::read_to_string(root.join("LATEST")).ok()?;
    let dir = root.join(latest.trim());
    let mut first: Option<SystemTime> = None;
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        let created = e.metadata().ok()?.created().ok()?;
        first = Some(first.map_or(created, |f| f.min(created)));
    }
    let last = std::fs::metadata(dir.join("MANIFEST.json")).ok()?.modified().ok()?;
    last.duration_since(first?).ok().map(|d| d.as_secs_f64())
}

pub fn run(args: TrainBenchArgs) -> anyhow::Result<()> {
    let mut config = Config::load(&args.config, &args.set)?;
    if args.steps > 0 {
        config.train.max_steps = args.steps;
        // Enough epochs that the step count, not the epochs, ends the run.
        config.train.epochs = config.train.epochs.max(args.steps as usize);
    }
    let tmp;
    let run_dir = match &args.run_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("sparseburn-bench-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let machine = MachineInfo::current();
    let threads = if config.train.threads == 0 { machine.cores } else { config.train.threads };
    let cpu_start = super::CpuSnapshot::now();
    let t = Instant::now();
    let outcome = train(&config, &TrainOptions { run_dir: Some(run_dir.clone()), ..Default::default() })?;
    let total_wall_s = t.elapsed().as_secs_f64();

    let st = &outcome.step_timings;
    let step_ms = st.data_ms + st.bag_forward_ms + st.head_forward_ms + st.head_backward_ms + st.bag_backward_ms + st.table_optimizer_ms + st.head_optimizer_ms;
    let examples = outcome.examples_per_second * step_ms / 1e3 * outcome.steps as f64;
    let tokens = outcome.tokens_per_second * step_ms / 1e3 * outcome.steps as f64;
    let table_and_state = outcome.table_bytes + outcome.optimizer_state_bytes;
    let report = TrainBenchReport {
        machine: MachineInfo { threads_used: threads, ..machine },
        args: args.clone(),
        threads,
        batch_size: config.train.batch_size,
        step_ms,
        wall_examples_per_second: examples / outcome.train_seconds.max(1e-9),
        wall_tokens_per_second: tokens / outcome.train_seconds.max(1e-9),
        total_wall_s,
        final_checkpoint_s: checkpoint_seconds(&run_dir),
        table_and_state_bytes: table_and_state,
        peak_rss_ratio: outcome.peak_rss_bytes as f64 / table_and_state.max(1) as f64,
        other_processes_cpu: cpu_start.and_then(|c| c.others_since()),
        outcome,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        super::write_json(path, &report)?;
    }
    Ok(())
}

fn print_report(r: &TrainBenchReport) {
    let o = &r.outcome;
    let s = &o.step_timings;
    println!();
    println!("bench train: {} ({} steps, batch {}, {} threads, {})", r.args.config.display(), o.steps, r.batch_size, r.threads, o.table_optimizer);
    println!(
        "  table {} rows: {:.2} GB + {:.2} GB optimizer state; mean rows touched per step {:.0}",
        o.table_rows,
        o.table_bytes as f64 / 1e9,
        o.optimizer_state_bytes as f64 / 1e9,
        o.mean_rows_touched
    );
    println!(
        "  throughput: {:.0} examples/s, {:.0} tokens/s (step phases); {:.0} examples/s, {:.0} tokens/s (loop wall time)",
        o.examples_per_second, o.tokens_per_second, r.wall_examples_per_second, r.wall_tokens_per_second
    );
    println!(
        "  step {:.3} ms = data {:.3} + bag fwd {:.3} + head fwd {:.3} + head bwd {:.3} + bag bwd {:.3} + table opt {:.3} + head opt {:.3}",
        r.step_ms, s.data_ms, s.bag_forward_ms, s.head_forward_ms, s.head_backward_ms, s.bag_backward_ms, s.table_optimizer_ms, s.head_optimizer_ms
    );
    println!("  whole step: first {:.3} ms, then median {:.3} ms, p90 {:.3} ms", o.step_time.first_ms, o.step_time.median_ms, o.step_time.p90_ms);
    println!("  peak RSS {:.2} GB = {:.3} × (table + state {:.2} GB)", o.peak_rss_bytes as f64 / 1e9, r.peak_rss_ratio, r.table_and_state_bytes as f64 / 1e9);
    println!(
        "  wall: loop {:.2} s, whole run {:.2} s (data prep, init, evaluation{})",
        o.train_seconds,
        r.total_wall_s,
        r.final_checkpoint_s.map(|c| format!(", final checkpoint {c:.2} s")).unwrap_or_default()
    );
    if let Some(o) = r.other_processes_cpu {
        println!("  other processes used {:.0}% of the machine's CPU during the run", o * 100.0);
    }
    println!("  accuracy: final {:.4} (top-{} {:.4}), best {:.4}", o.final_eval.accuracy, o.final_eval.k, o.final_eval.top_k_accuracy, o.best_eval.accuracy);
}
