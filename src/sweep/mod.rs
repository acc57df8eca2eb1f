//! Hyperparameter sweeps: grid or random search over any config keys.
//!
//! `sparseburn sweep configs/quickstart_sweep.toml` reads an experiment config
//! with a `[sweep]` table ([`spec`]; or any config plus `--grid key=a,b,c`),
//! resolves every trial's config, trains them N at a time within the cores and
//! the memory plan ([`parallel`]), each in its own child process and run
//! directory `<logging.dir>/<experiment>/sweep/trial-NNN/` (so each is its own
//! TensorBoard HParams session), and writes `sweep.md`, `sweep.json`,
//! `sweep.csv` and a plot of the metric against each key ([`report`], [`plot`])
//! beside them, best trial first.
//!
//! `compare` stays the tool for A/B tests of optimizers (paired seeds,
//! statistics); a sweep is for tuning everything else.

pub mod parallel;
pub mod plot;
pub mod report;
pub mod space;
pub mod spec;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;

use crate::cancel::CancelToken;
use crate::compare::runner::RunFailure;
use crate::compare::{runner, RunResult, Runner};
pub use report::Report;
pub use spec::{parse_grid, plan, Goal, Method, Parallel, Plan, Trial};

/// What `sparseburn sweep` was asked to do, in plain types.
#[derive(Clone, Debug, Default)]
pub struct SweepSpec {
    /// The sweep file, or any experiment config when `grid` is given.
    pub config: PathBuf,
    /// `--set KEY=VALUE` for every trial (`sweep.*` keys change the `[sweep]` table).
    pub overrides: Vec<String>,
    /// `--grid KEY=V1,V2,…`: a grid over exactly these keys, replacing `[sweep.params]`.
    pub grid: Vec<String>,
    /// Runs at a time, over `sweep.parallel`.
    pub parallel: Option<Parallel>,
    /// Train each trial with `EXE train` in a child process; `None`: in this
    /// process, one at a time.
    pub exe: Option<PathBuf>,
    /// Keep a finished trial whose saved config equals the planned one (e.g. after Ctrl-C).
    pub reuse: bool,
    /// Print the trials; train nothing.
    pub dry_run: bool,
    /// Exit with success even when some trials failed.
    pub allow_failures: bool,
    /// The command line, for the report.
    pub command: String,
}

fn print_plan(plan: &Plan, decision: &parallel::Decision) {
    let method = match plan.method {
        Method::Grid => "grid".to_string(),
        Method::Random => format!("random, seed {}", plan.seed),
    };
    eprintln!(
        "sweep {}: {} trial{} ({method}) over {} into {}/, {} at a time ({})",
        plan.name,
        plan.trials.len(),
        if plan.trials.len() == 1 { "" } else { "s" },
        plan.keys().join(", "),
        plan.dir.display(),
        decision.workers,
        decision.why
    );
    if let Some(t) = decision.threads_per_run {
        eprintln!("  train.threads = {t} for each trial (train.threads = 0 would give every parallel run all cores)");
    }
    for t in &plan.trials {
        eprintln!("  {}: {}", t.name, report::describe(plan, &t.values));
    }
    if plan.params.iter().all(|p| p.key.starts_with("optimizer.")) {
        eprintln!("hint: only optimizer.* keys are swept: `sparseburn compare` pairs such arms over seeds and reports the differences with confidence intervals");
    }
}

/// Trial directories under `plan.dir` that this plan did not make (left by an earlier sweep).
fn stale_trials(plan: &Plan) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(&plan.dir) else { return Vec::new() };
    let mut stale: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("trial-") && !plan.trials.iter().any(|t| t.name == name)
        })
        .map(|e| e.path())
        .collect();
    stale.sort();
    stale
}

/// Trains every trial of `plan` `decision.workers` at a time, then writes the
/// report and the plot into `plan.dir`.
pub fn execute(plan: &Plan, runner: &Runner, decision: &parallel::Decision, spec: &SweepSpec, cancel: &CancelToken) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&plan.dir).with_context(|| format!("cannot create {} (set logging.dir)", plan.dir.display()))?;
    let copy = format!("# {}\n# copied from {}\n{}", spec.command, plan.source.display(), std::fs::read_to_string(&plan.source).unwrap_or_default());
    crate::io::write_atomic(&plan.dir.join("sweep.toml"), |w| std::io::Write::write_all(w, copy.as_bytes()))?;
    for stale in stale_trials(plan) {
        eprintln!("note: {} is not part of this sweep (an earlier one?); TensorBoard on {} shows it too", stale.display(), plan.dir.display());
    }
    let configs: Vec<crate::config::Config> = plan
        .trials
        .iter()
        .map(|t| {
            let mut c = t.config.clone();
            if let Some(n) = decision.threads_per_run.filter(|_| c.train.threads == 0) {
                c.train.threads = n;
            }
            c
        })
        .collect();
    let done = AtomicUsize::new(0);
    let n = plan.trials.len();
    let results = crate::jobs::run(n, decision.workers, cancel, |i| {
        let t = &plan.trials[i];
        let result = runner::run_one(runner, &t.name, &configs[i], &plan.run_dir(t), spec.reuse, cancel);
        let interrupted = result.outcome.as_ref().err() == Some(&RunFailure::Interrupted);
        let k = done.fetch_add(1, Ordering::SeqCst) + 1;
        let what = match &result.outcome {
            Ok(o) => format!("accuracy {:.4}, loss {:.4}, {:.1} s{}", o.final_eval.accuracy, o.final_eval.loss, result.wall_seconds, if result.reused { " (reused)" } else { "" }),
            Err(e) => format!("FAILED: {e}"),
        };
        eprintln!("[{k}/{n}] {} ({}): {what}", t.name, report::describe(plan, &t.values));
        (result, interrupted)
    });
    let interrupted = cancel.is_cancelled();
    let results: Vec<RunResult> =
        results.into_iter().zip(&plan.trials).map(|(r, t)| r.unwrap_or_else(|| RunResult::not_run(t.name.clone(), t.config.experiment.seed, plan.run_dir(t)))).collect();
    let report = report::build(plan, &results, &spec.command, decision.workers, interrupted);
    let plots = match plot::write(&report, &plan.dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warning: plot not written: {e:#}");
            Vec::new()
        }
    };
    report::write(&report, &plan.dir, &plots)?;
    Ok(report)
}

/// The `sparseburn sweep` command: plans, trains, reports. `Ok(None)` for a dry
/// run. Cancelling `cancel` (the CLI does on Ctrl-C) starts no new trial and
/// still writes the report of the finished ones.
pub fn run(spec: &SweepSpec, cancel: &CancelToken) -> anyhow::Result<Option<Report>> {
    let plan = spec::plan(&spec.config, &spec.overrides, &spec.grid, spec.parallel)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut decision = parallel::decide(&plan, cores, crate::sys::available_memory_bytes())?;
    let runner = match &spec.exe {
        Some(exe) => Runner::Subprocess { exe: exe.clone() },
        None => {
            // Runs in one process share its global state (Ctrl-C flag, huge-page setting): one at a time.
            decision.workers = 1;
            decision.threads_per_run = None;
            decision.why = format!("{}; in this process: one at a time", decision.why);
            Runner::InProcess
        }
    };
    print_plan(&plan, &decision);
    if spec.dry_run {
        return Ok(None);
    }
    let report = execute(&plan, &runner, &decision, spec, cancel)?;
    println!("{}", report::text(&report, 10));
    println!("report: {}/sweep.md (and .json, .csv; plot {}.png, .svg)", plan.dir.display(), plot::FILE);
    println!("tensorboard --logdir {}", plan.dir.display());
    if report.interrupted {
        anyhow::bail!("interrupted: the report covers the trials that finished (run again with --reuse to keep them and train the rest)");
    }
    let failed = report.failed();
    if failed > 0 && !spec.allow_failures {
        anyhow::bail!("{failed} of {} trials failed (see the report; --allow-failures to exit 0 anyway)", report.trials.len());
    }
    Ok(Some(report))
}
