//! `sparseburn bench e2e CONFIG`: a whole `sparseburn train` as a user waits
//! for it. Each repetition runs `train` as a child process in a fresh run
//! folder and reports process wall time, time to first step, loop time,
//! checkpoint time (in the loop and at the end), bytes written, peak RSS and
//! final accuracy (issue 13's measurement).
//!
//! Figures from outside (wall, bytes, RSS, CPU) come from [`super::child`].
//! Figures from inside come from the run's `summary.json` when the trainer
//! records them ([`ChildSummary`]); until then they are estimated by watching
//! the run folder (`metrics.jsonl`'s first record, checkpoint staging folders)
//! and marked as observed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::child::{measure, ChildMeasurement};
use super::MachineInfo;
use crate::config::Config;

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct E2eArgs {
    /// Experiment config (TOML), as for `sparseburn train`.
    pub config: PathBuf,
    /// Config overrides, `key.path=value` (repeatable), passed on to `train`.
    #[cfg_attr(feature = "cli", arg(long = "set"))]
    pub set: Vec<String>,
    /// Also write the results here as JSON.
    #[cfg_attr(feature = "cli", arg(long))]
    pub json: Option<PathBuf>,
    /// Run `train` this many times, one after the other (medians are printed).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1))]
    pub repeat: usize,
    /// The sparseburn binary to run (default: this one), e.g. an older build.
    #[cfg_attr(feature = "cli", arg(long))]
    pub binary: Option<PathBuf>,
    /// Parent of the fresh run folders. Bytes written are only counted on a
    /// disk-backed file system (tmpfs never reaches the storage layer).
    #[cfg_attr(feature = "cli", arg(long, default_value = "runs"))]
    pub work_dir: PathBuf,
    /// Keep the run folders (default: each is removed once measured).
    #[cfg_attr(feature = "cli", arg(long))]
    pub keep: bool,
    /// How often the child's counters and run folder are sampled, in milliseconds.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 20))]
    pub poll_ms: u64,
}

/// What the trainer writes in `summary.json` that this bench reads. The last
/// three are not written by every build: `None` prints as "n/a" and the
/// observed estimates stand in.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ChildSummary {
    pub steps: Option<u64>,
    /// Loop wall time (evaluation and checkpoints excluded).
    pub train_seconds: Option<f64>,
    pub final_eval: Option<ChildEval>,
    pub step_time: Option<ChildStepTime>,
    pub interrupted: Option<bool>,
    /// Seconds from the start of training (config loaded) to the end of the first step.
    #[serde(alias = "time_to_first_step_seconds")]
    pub time_to_first_step_s: Option<f64>,
    /// What checkpoints cost (`seconds_in_loop`, `seconds_final`, `bytes`), as the trainer records it.
    pub checkpoint: Option<ChildCheckpoint>,
    /// Seconds the training loop was held up by checkpoints (all of them, the final one excluded).
    pub checkpoint_seconds_in_loop: Option<f64>,
    /// Seconds from the end of the loop until the final checkpoint was durable.
    pub checkpoint_seconds_final: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ChildCheckpoint {
    pub seconds_in_loop: Option<f64>,
    pub seconds_final: Option<f64>,
    pub bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ChildEval {
    pub accuracy: f64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ChildStepTime {
    pub first_ms: f64,
}

/// One `train` process.
#[derive(Clone, Debug, Serialize)]
pub struct E2eRun {
    pub process: ChildMeasurement,
    /// The child's own `summary.json` (absent if it failed before the end).
    pub summary: Option<ChildSummary>,
    /// Time to first step: the trainer's own figure, else the observed estimate.
    pub time_to_first_step_s: Option<f64>,
    pub loop_s: Option<f64>,
    pub checkpoint_in_loop_s: Option<f64>,
    pub checkpoint_final_s: Option<f64>,
    pub accuracy: Option<f64>,
    pub observed: Observed,
    /// Bytes of `checkpoints/` at exit (file sizes) and of the whole run folder.
    pub checkpoint_dir_bytes: u64,
    pub run_dir_bytes: u64,
}

/// What watching the run folder showed (each within ±`poll_ms`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Observed {
    /// First `metrics.jsonl` record's arrival minus its `train_seconds`, plus the
    /// first step's duration: when the first step ended.
    pub time_to_first_step_s: Option<f64>,
    /// `[start, end]` seconds (since spawn) of each period with a checkpoint staging
    /// folder (`checkpoints/.…`) present; the last is the final checkpoint.
    pub checkpoint_writes: Vec<[f64; 2]>,
}

impl Observed {
    fn checkpoint_in_loop_s(&self) -> f64 {
        let n = self.checkpoint_writes.len().saturating_sub(1);
        self.checkpoint_writes[..n].iter().map(|[a, b]| b - a).sum()
    }
    fn checkpoint_final_s(&self) -> Option<f64> {
        self.checkpoint_writes.last().map(|[a, b]| b - a)
    }
}

#[derive(Debug, Serialize)]
pub struct E2eReport {
    pub machine: MachineInfo,
    pub args: E2eArgs,
    pub binary: PathBuf,
    pub runs: Vec<E2eRun>,
    /// Medians over the runs of the main figures.
    pub median: Medians,
}

#[derive(Debug, Default, Serialize)]
pub struct Medians {
    pub wall_s: f64,
    pub write_bytes: f64,
    pub peak_rss_bytes: f64,
    pub other_processes_cpu: Option<f64>,
}

/// Watches a run folder while `train` runs in it.
struct Watcher {
    run_dir: PathBuf,
    first_record: Option<f64>,
    record_train_seconds: Option<f64>,
    staging_since: Option<f64>,
    writes: Vec<[f64; 2]>,
}

impl Watcher {
    fn new(run_dir: PathBuf) -> Self {
        Watcher { run_dir, first_record: None, record_train_seconds: None, staging_since: None, writes: Vec::new() }
    }

    fn poll(&mut self, at: f64) {
        if self.first_record.is_none()
            && let Some(seconds) = first_record_train_seconds(&self.run_dir.join(crate::train::run_dir::METRICS_FILE))
        {
            self.first_record = Some(at);
            self.record_train_seconds = Some(seconds);
        }
        let staging = std::fs::read_dir(self.run_dir.join("checkpoints")).map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with('.'))).unwrap_or(false);
        match (staging, self.staging_since) {
            (true, None) => self.staging_since = Some(at),
            (false, Some(since)) => {
                self.writes.push([since, at]);
                self.staging_since = None;
            }
            _ => {}
        }
    }

    fn finish(mut self, at: f64, first_step_ms: Option<f64>) -> Observed {
        if let Some(since) = self.staging_since.take() {
            self.writes.push([since, at]);
        }
        let time_to_first_step_s = match (self.first_record, self.record_train_seconds) {
            (Some(seen), Some(loop_s)) => Some(seen - loop_s + first_step_ms.unwrap_or(0.0) / 1e3),
            _ => None,
        };
        Observed { time_to_first_step_s, checkpoint_writes: self.writes }
    }
}

/// `train_seconds` of the first complete `"kind":"train"` record, if one was written yet.
fn first_record_train_seconds(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["kind"] == "train")
        .and_then(|v| v["train_seconds"].as_f64())
}

/// Total size of the files under `dir` (0 if it does not exist).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Runs `binary train CONFIG --set … --run-dir <fresh>` once and measures it.
fn run_once(args: &E2eArgs, binary: &Path, index: usize) -> anyhow::Result<E2eRun> {
    std::fs::create_dir_all(&args.work_dir).with_context(|| format!("cannot create {}", args.work_dir.display()))?;
    let work = tempfile::Builder::new().prefix(".bench-e2e-").tempdir_in(&args.work_dir).with_context(|| format!("cannot create a folder in {}", args.work_dir.display()))?;
    let run_dir = work.path().join("run");
    let log_path = work.path().join("train.log");
    let log = std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut command = Command::new(binary);
    command.arg("train").arg(&args.config);
    for s in &args.set {
        command.arg("--set").arg(s);
    }
    command.arg("--run-dir").arg(&run_dir).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);

    let mut watcher = Watcher::new(run_dir.clone());
    let process = measure(&mut command, Duration::from_millis(args.poll_ms.max(1)), |t| watcher.poll(t.as_secs_f64()))?;
    if !process.success() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        let how = process.exit_code.map_or_else(|| format!("signal {}", process.signal.unwrap_or(0)), |c| format!("exit code {c}"));
        bail!("run {index}: `{} train {}` failed ({how}); the end of its output:\n{}", binary.display(), args.config.display(), tail.join("\n"));
    }
    let summary_path = run_dir.join(crate::train::run_dir::SUMMARY_FILE);
    let summary: Option<ChildSummary> = match std::fs::read_to_string(&summary_path) {
        Ok(text) => Some(serde_json::from_str(&text).with_context(|| format!("{}: not a run summary", summary_path.display()))?),
        Err(_) => None,
    };
    let s = summary.clone().unwrap_or_default();
    let observed = watcher.finish(process.wall_s, s.step_time.as_ref().map(|t| t.first_ms));
    let run = E2eRun {
        time_to_first_step_s: s.time_to_first_step_s.or(observed.time_to_first_step_s),
        loop_s: s.train_seconds,
        checkpoint_in_loop_s: s.checkpoint_seconds_in_loop.or(s.checkpoint.as_ref().and_then(|c| c.seconds_in_loop)),
        checkpoint_final_s: s.checkpoint_seconds_final.or(s.checkpoint.as_ref().and_then(|c| c.seconds_final)),
        accuracy: s.final_eval.as_ref().map(|e| e.accuracy),
        checkpoint_dir_bytes: tree_bytes(&run_dir.join("checkpoints")),
        run_dir_bytes: tree_bytes(&run_dir),
        process,
        summary,
        observed,
    };
    if args.keep {
        let kept = work.keep();
        log::info!("kept {}", kept.display());
    }
    Ok(run)
}

pub fn run(args: E2eArgs) -> anyhow::Result<()> {
    // Refuse a bad config or override here, before any child starts.
    Config::load(&args.config, &args.set)?;
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("finding this program's path")?,
    };
    if !binary.is_file() {
        bail!("--binary {}: no such file", binary.display());
    }
    let mut runs = Vec::new();
    for i in 0..args.repeat {
        let run = run_once(&args, &binary, i + 1)?;
        print_run(i + 1, args.repeat, &run);
        runs.push(run);
    }
    let others: Vec<f64> = runs.iter().filter_map(|r| r.process.other_processes_cpu).collect();
    let median = Medians {
        wall_s: median(runs.iter().map(|r| r.process.wall_s).collect()),
        write_bytes: median(runs.iter().map(|r| r.process.io.write_bytes as f64).collect()),
        peak_rss_bytes: median(runs.iter().map(|r| r.process.peak_rss_bytes as f64).collect()),
        other_processes_cpu: (!others.is_empty()).then(|| median(others)),
    };
    let report = E2eReport { machine: MachineInfo::current(), args: args.clone(), binary, runs, median };
    if report.runs.len() > 1 {
        let m = &report.median;
        println!(
            "median of {}: wall {:.2} s, written {:.2} GB, peak RSS {:.2} GB{}",
            report.runs.len(),
            m.wall_s,
            m.write_bytes / 1e9,
            m.peak_rss_bytes / 1e9,
            m.other_processes_cpu.map(|o| format!(", other processes {:.0}% CPU", o * 100.0)).unwrap_or_default()
        );
    }
    if let Some(path) = &args.json {
        super::write_json(path, &report)?;
    }
    Ok(())
}

/// `1.23 s`, or `n/a`; an observed estimate is marked `~`.
fn seconds(reported: Option<f64>, observed: Option<f64>) -> String {
    match (reported, observed) {
        (Some(s), _) => format!("{s:.2} s"),
        (None, Some(o)) => format!("~{o:.2} s (observed)"),
        (None, None) => "n/a".into(),
    }
}

fn print_run(i: usize, n: usize, r: &E2eRun) {
    let p = &r.process;
    let o = &r.observed;
    println!("bench e2e run {i}/{n}:");
    println!("  process wall {:.2} s (user {:.2} s, system {:.2} s)", p.wall_s, p.user_s, p.system_s);
    println!("  time to first step {}", seconds(r.summary.as_ref().and_then(|s| s.time_to_first_step_s), o.time_to_first_step_s));
    println!("  loop {}", r.loop_s.map_or("n/a".into(), |s| format!("{s:.2} s")));
    let in_loop = (o.checkpoint_writes.len() > 1).then(|| o.checkpoint_in_loop_s());
    println!(
        "  checkpoints: in the loop {}, final {} ({} staging periods seen)",
        seconds(r.checkpoint_in_loop_s, in_loop),
        seconds(r.checkpoint_final_s, o.checkpoint_final_s()),
        o.checkpoint_writes.len()
    );
    println!(
        "  written {:.3} GB to storage ({:.3} GB through write calls); checkpoints/ {:.3} GB, run folder {:.3} GB at exit",
        p.io.write_bytes as f64 / 1e9,
        p.io.wchar as f64 / 1e9,
        r.checkpoint_dir_bytes as f64 / 1e9,
        r.run_dir_bytes as f64 / 1e9
    );
    println!("  peak RSS {:.2} GB", p.peak_rss_bytes as f64 / 1e9);
    println!("  final accuracy {}", r.accuracy.map_or("n/a".into(), |a| format!("{a:.4}")));
    if let Some(c) = p.other_processes_cpu {
        println!("  other processes used {:.0}% of the machine's CPU during the run", c * 100.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_record_skips_other_kinds_and_a_half_written_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, "{\"kind\":\"eval\",\"train_seconds\":9.0}\n{\"kind\":\"train\",\"train_sec").unwrap();
        assert_eq!(first_record_train_seconds(&path), None);
        std::fs::write(&path, "{\"kind\":\"eval\",\"train_seconds\":9.0}\n{\"kind\":\"train\",\"train_seconds\":0.25}\n").unwrap();
        assert_eq!(first_record_train_seconds(&path), Some(0.25));
    }

    #[test]
    fn watcher_splits_final_checkpoint_from_loop_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("checkpoints");
        let mut w = Watcher::new(dir.path().to_path_buf());
        w.poll(0.1);
        std::fs::create_dir_all(ck.join(".tmp-a")).unwrap();
        w.poll(1.0);
        w.poll(1.5);
        std::fs::remove_dir(ck.join(".tmp-a")).unwrap();
        w.poll(2.0);
        std::fs::create_dir_all(ck.join(".tmp-b")).unwrap();
        w.poll(3.0);
        let o = w.finish(3.25, None);
        assert_eq!(o.checkpoint_writes, vec![[1.0, 2.0], [3.0, 3.25]]);
        assert_eq!(o.checkpoint_in_loop_s(), 1.0);
        assert_eq!(o.checkpoint_final_s(), Some(0.25));
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
