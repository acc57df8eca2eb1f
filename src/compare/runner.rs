//! Running one arm × seed: in a child process (the default) or in this process.
//!
//! A child process (`sparseburn train CONFIG --run-dir DIR`) gives each run its
//! own peak RSS (the child's VmHWM, from its summary.json) and isolates
//! failures: a panic, an abort or an out-of-memory kill ends that run only.
//! In-process runs share one address space, so their peak RSS is the
//! process-wide high-water mark so far, and a crash ends the comparison.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cancel::CancelToken;
use crate::config::Config;
use crate::train::run_dir::{self, MetricsRecord};
use crate::train::{self, RunOutcome, TrainOptions};

/// How runs are started.
#[derive(Clone, Debug)]
pub enum Runner {
    /// `EXE train CONFIG --run-dir DIR`, output captured to `DIR/train.log`.
    Subprocess { exe: PathBuf },
    /// `train::train` in this process.
    InProcess,
}

pub const LOG_FILE: &str = "train.log";

/// Why a run has no outcome.
#[derive(Clone, Debug, PartialEq)]
pub enum RunFailure {
    /// Cancelled (Ctrl-C) before its end.
    Interrupted,
    /// Never started: the comparison was cancelled first.
    NotRun,
    /// An error, a non-finite loss, a panic or a crash; the message says which.
    Failed(String),
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunFailure::Interrupted => f.write_str("interrupted (Ctrl-C) before the end"),
            RunFailure::NotRun => f.write_str("not run: the comparison was interrupted"),
            RunFailure::Failed(why) => f.write_str(why),
        }
    }
}

/// One `kind: "eval"` line of metrics.jsonl.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: u64,
    pub accuracy: f64,
    pub loss: f64,
    pub train_seconds: f64,
}

/// The per-step facts that depend only on the batch (and, at step 1, on the initial weights).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainPoint {
    pub step: u64,
    /// Distinct table rows in the batch: a function of the batch alone.
    pub rows_touched: u64,
    /// rows_touched / ids in the batch: also a function of the batch alone.
    pub unique_ratio: f64,
    /// The batch loss, computed before that step's update (at step 1: from the initial weights).
    pub loss: f64,
}

/// What became of one run.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub arm: String,
    pub seed: u64,
    pub dir: PathBuf,
    pub outcome: Result<RunOutcome, RunFailure>,
    /// Seconds from start to end of the run, process start-up, data preparation and evaluations included.
    pub wall_seconds: f64,
    /// Whether an earlier identical run was reused (`--reuse`).
    pub reused: bool,
    pub evals: Vec<EvalPoint>,
    pub train: Vec<TrainPoint>,
}

impl RunResult {
    /// A run that never started because the batch (comparison or sweep) was cancelled first.
    pub fn not_run(arm: String, seed: u64, dir: PathBuf) -> Self {
        RunResult { arm, seed, dir, outcome: Err(RunFailure::NotRun), wall_seconds: f64::NAN, reused: false, evals: Vec::new(), train: Vec::new() }
    }
}

/// Reads the eval and train records of a run's metrics.jsonl (missing file: none).
pub fn read_metrics(dir: &Path) -> anyhow::Result<(Vec<EvalPoint>, Vec<TrainPoint>)> {
    let (mut evals, mut trains) = (Vec::new(), Vec::new());
    for record in run_dir::read_metrics(dir)? {
        match record {
            MetricsRecord::Eval(e) => evals.push(EvalPoint { step: e.step, accuracy: e.accuracy, loss: e.loss, train_seconds: e.train_seconds }),
            MetricsRecord::Train(t) => trains.push(TrainPoint { step: t.step, rows_touched: t.rows_touched, unique_ratio: t.unique_ratio, loss: t.loss as f64 }),
        }
    }
    Ok((evals, trains))
}

/// A finished, identical earlier run in `dir`: same resolved config and a summary.
fn reusable(dir: &Path, config: &Config) -> Option<RunOutcome> {
    let saved = train::run_dir::read_config(dir).ok()?;
    let outcome = run_dir::read_summary(dir).ok()?;
    (saved == *config && !outcome.interrupted).then_some(outcome)
}

/// The last lines of a child's log that explain its failure.
fn failure_reason(log: &str) -> String {
    if let Some(line) = log.lines().rev().find(|l| l.starts_with("error: ")) {
        return line.trim_start_matches("error: ").to_string();
    }
    if let Some(i) = log.find("panicked at") {
        let rest: String = log[i..].lines().take(2).collect::<Vec<_>>().join(" ");
        return rest;
    }
    let tail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    tail[tail.len().saturating_sub(3)..].join(" | ")
}

#[cfg(unix)]
fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => {
            let name = match s {
                6 => " (SIGABRT)",
                9 => " (SIGKILL, e.g. out of memory)",
                11 => " (SIGSEGV)",
                2 => " (SIGINT)",
                15 => " (SIGTERM)",
                _ => "",
            };
            format!("killed by signal {s}{name}")
        }
        _ => format!("{status}"),
    }
}

#[cfg(not(unix))]
fn describe_status(status: std::process::ExitStatus) -> String {
    format!("{status}")
}

/// Trains `config` in `dir` (emptied first) and collects what it left there.
pub fn run_one(runner: &Runner, arm: &str, config: &Config, dir: &Path, reuse: bool, cancel: &CancelToken) -> RunResult {
    let seed = config.experiment.seed;
    let start = Instant::now();
    let mut reused = false;
    let outcome = match reuse.then(|| reusable(dir, config)).flatten() {
        Some(o) => {
            reused = true;
            Ok(o)
        }
        None => train_fresh(runner, config, dir, cancel),
    };
    let wall_seconds = if reused { wall_seconds_of(dir).unwrap_or(f64::NAN) } else { start.elapsed().as_secs_f64() };
    if !reused {
        let _ = std::fs::write(dir.join(WALL_FILE), format!("{wall_seconds}\n"));
    }
    let (evals, train, outcome) = match read_metrics(dir) {
        Ok((e, t)) => (e, t, outcome),
        Err(e) => (Vec::new(), Vec::new(), outcome.and(Err(RunFailure::Failed(format!("{e:#}"))))),
    };
    RunResult { arm: arm.to_string(), seed, dir: dir.to_path_buf(), outcome, wall_seconds, reused, evals, train }
}

/// The wall time of a run, kept beside it so that a reused run reports it too.
const WALL_FILE: &str = "wall_seconds.txt";

fn wall_seconds_of(dir: &Path) -> Option<f64> {
    std::fs::read_to_string(dir.join(WALL_FILE)).ok()?.trim().parse().ok()
}

fn train_fresh(runner: &Runner, config: &Config, dir: &Path, cancel: &CancelToken) -> Result<RunOutcome, RunFailure> {
    let failed = RunFailure::Failed;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| failed(format!("cannot clear {}: {e}", dir.display())))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
    let outcome = match runner {
        Runner::Subprocess { exe } => train_child(exe, config, dir).map_err(failed),
        Runner::InProcess => {
            let options = TrainOptions { run_dir: Some(dir.to_path_buf()), cancel: cancel.clone(), ..Default::default() };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train::train(config, &options))) {
                Ok(Ok(o)) => Ok(o),
                Ok(Err(e)) => Err(failed(format!("{e:#}"))),
                Err(panic) => {
                    let msg = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                    Err(failed(format!("panicked: {}", msg.unwrap_or_else(|| "(no message)".into()))))
                }
            }
        }
    }?;
    if outcome.interrupted {
        return Err(RunFailure::Interrupted);
    }
    Ok(outcome)
}

fn train_child(exe: &Path, config: &Config, dir: &Path) -> Result<RunOutcome, String> {
    // The resolved config goes where the trainer keeps it anyway (it rewrites the same text).
    let config_path = dir.join(train::run_dir::CONFIG_FILE);
    std::fs::write(&config_path, config.to_toml()).map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    let log_path = dir.join(LOG_FILE);
    let log = std::fs::File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let status = Command::new(exe)
        .arg("train")
        .arg(&config_path)
        .arg("--run-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        let reason = failure_reason(&text);
        let status = describe_status(status);
        return Err(if reason.is_empty() { status } else { format!("{reason} ({status})") });
    }
    run_dir::read_summary(dir).map_err(|e| format!("{e:#}"))
}
