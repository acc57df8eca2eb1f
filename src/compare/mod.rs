//! A/B optimizer comparisons: arms × seeds on identical data order, then a
//! report with statistics and plots.
//!
//! `sparseburn compare configs/lazy_vs_dense.toml` reads a compare config
//! ([`spec`]), trains every arm for every seed into
//! `<logging.dir>/<compare.name>/<arm>/seed-<k>/` (each run in its own child
//! process by default, see [`runner`]), and writes `report.md`, `report.json`,
//! `report.csv` and the plots (`*.svg`, `*.png`) beside them.
//!
//! Within one seed every arm sees the same batches in the same order and
//! starts from the same weights: the batch order depends only on
//! `(experiment.seed, epoch)` and the initial weights only on
//! `experiment.seed`, and arms may differ only in `optimizer.*`. The report
//! checks it from the runs' own metrics (see [`report::SeedCheck`]).

pub mod plot;
pub mod report;
pub mod runner;
pub mod spec;
pub mod stats;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;

pub use report::Report;
pub use runner::{RunFailure, RunResult, Runner};

use crate::cancel::CancelToken;
pub use spec::{plan, Arm, Plan};

/// `sparseburn compare configs/lazy_vs_dense.toml`
#[derive(Debug)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct CompareArgs {
    /// Compare config, e.g. configs/lazy_vs_dense.toml.
    pub config: PathBuf,
    /// Override a key for every arm (e.g. --set train.epochs=2), or of the
    /// compare section (e.g. --set compare.seeds=[1,2]); repeatable.
    #[cfg_attr(feature = "cli", arg(long = "set", value_name = "KEY=VALUE"))]
    pub overrides: Vec<String>,
    /// Runs at a time. More than 1 makes runs share the CPU, so their timings
    /// are no longer those of a lone run.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1, value_name = "N"))]
    pub jobs: usize,
    /// Train every run inside this process instead of one child process per
    /// run (peak RSS is then process-wide, and a crash ends the comparison).
    #[cfg_attr(feature = "cli", arg(long))]
    pub in_process: bool,
    /// Keep a finished run whose saved config equals the planned one instead
    /// of training it again (e.g. to redo the report, or after an interruption).
    #[cfg_attr(feature = "cli", arg(long))]
    pub reuse: bool,
    /// Check the config and print the runs it would make; train nothing.
    #[cfg_attr(feature = "cli", arg(long))]
    pub dry_run: bool,
    /// Exit with success even when some runs failed (they are reported either way).
    #[cfg_attr(feature = "cli", arg(long))]
    pub allow_failures: bool,
    /// The sparseburn binary that trains each run (default: this one).
    #[cfg_attr(feature = "cli", arg(long, value_name = "PATH", hide = true))]
    pub exe: Option<PathBuf>,
}

/// How [`execute`] runs the plan.
#[derive(Clone, Debug)]
pub struct Options {
    pub runner: Runner,
    pub jobs: usize,
    pub reuse: bool,
    /// The command line, for the report.
    pub command: String,
    /// Print a line per finished run to stderr.
    pub progress: bool,
    /// Cancelled (e.g. by Ctrl-C): no new run starts, in-process runs stop
    /// at their next step, and the report covers what finished.
    pub cancel: CancelToken,
}

/// Trains every run of `plan`, then writes the report and plots into `plan.dir`.
pub fn execute(plan: &Plan, options: &Options) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&plan.dir).with_context(|| format!("cannot create {} (set logging.dir)", plan.dir.display()))?;
    let spec_copy = format!("# {}\n# copied from {}\n{}", options.command, plan.source.display(), std::fs::read_to_string(&plan.source).unwrap_or_default());
    crate::io::write_atomic(&plan.dir.join("compare.toml"), |w| std::io::Write::write_all(w, spec_copy.as_bytes()))?;

    // Seed-major order: all arms of seed 1, then of seed 2, … so that a slow
    // drift of the machine affects every arm alike.
    let jobs: Vec<(usize, usize)> = (0..plan.seeds.len()).flat_map(|s| (0..plan.arms.len()).map(move |a| (a, s))).collect();
    let done = AtomicUsize::new(0);
    let workers = options.jobs.clamp(1, jobs.len());
    let results = crate::jobs::run(jobs.len(), workers, &options.cancel, |i| {
        let (a, s) = jobs[i];
        let arm = &plan.arms[a];
        let seed = plan.seeds[s];
        let result = runner::run_one(&options.runner, &arm.name, &arm.configs[s], &plan.run_dir(&arm.name, seed), options.reuse, &options.cancel);
        let interrupted = result.outcome.as_ref().err() == Some(&RunFailure::Interrupted);
        let n = done.fetch_add(1, Ordering::SeqCst) + 1;
        if options.progress {
            let what = match &result.outcome {
                Ok(o) => format!(
                    "final accuracy {:.4}, loss {:.4}, {} steps, {:.1} s{}",
                    o.final_eval.accuracy,
                    o.final_eval.loss,
                    o.steps,
                    result.wall_seconds,
                    if result.reused { " (reused)" } else { "" }
                ),
                Err(e) => format!("FAILED: {e}"),
            };
            log::info!("[{n}/{}] {} seed {seed}: {what}", jobs.len(), arm.name);
        }
        (result, interrupted)
    });
    let interrupted = options.cancel.is_cancelled();
    let results: Vec<RunResult> = results
        .into_iter()
        .zip(&jobs)
        .map(|(r, &(a, s))| {
            r.unwrap_or_else(|| {
                let (arm, seed) = (&plan.arms[a].name, plan.seeds[s]);
                RunResult::not_run(arm.clone(), seed, plan.run_dir(arm, seed))
            })
        })
        .collect();
    let ctx = report::Context {
        command: options.command.clone(),
        runner: match options.runner {
            Runner::Subprocess { .. } => "subprocess".into(),
            Runner::InProcess => "in-process".into(),
        },
        jobs: workers,
        interrupted,
    };
    if options.progress {
        for stale in stale_runs(plan) {
            log::warn!("{} is not part of this comparison (an earlier one?); TensorBoard on {} shows it too", stale.display(), plan.dir.display());
        }
    }
    let report = report::build(plan, &results, &ctx);
    let plots = match plot::write(&report, &plan.dir) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("plots not written: {e:#}");
            Vec::new()
        }
    };
    report::write(&report, &plan.dir, &plots)?;
    Ok(report)
}

/// Run directories under `plan.dir` that this plan did not make (left by an earlier comparison).
fn stale_runs(plan: &Plan) -> Vec<PathBuf> {
    let mut stale = Vec::new();
    let Ok(arms) = std::fs::read_dir(&plan.dir) else { return stale };
    for arm in arms.flatten().filter(|e| e.path().is_dir()) {
        let name = arm.file_name().to_string_lossy().into_owned();
        let Ok(seeds) = std::fs::read_dir(arm.path()) else { continue };
        for seed in seeds.flatten() {
            let dir_name = seed.file_name().to_string_lossy().into_owned();
            let Some(k) = dir_name.strip_prefix("seed-").and_then(|k| k.parse::<u64>().ok()) else { continue };
            if !(plan.arms.iter().any(|a| a.name == name) && plan.seeds.contains(&k)) {
                stale.push(seed.path());
            }
        }
    }
    stale.sort();
    stale
}

fn print_plan(plan: &Plan, runner: &str, jobs: usize) {
    log::info!(
        "compare {}: {} arm{} × {} seed{} = {} runs into {}/ ({runner}, {jobs} at a time)",
        plan.name,
        plan.arms.len(),
        if plan.arms.len() == 1 { "" } else { "s" },
        plan.seeds.len(),
        if plan.seeds.len() == 1 { "" } else { "s" },
        plan.runs(),
        plan.dir.display()
    );
    for arm in &plan.arms {
        let set: Vec<String> = arm.set.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let c = &arm.configs[0];
        log::info!(
            "  {}{}: {} [{}], table lr {}, {} epochs",
            arm.name,
            if arm.name == plan.baseline { " (baseline)" } else { "" },
            c.optimizer.table.name(),
            set.join(", "),
            c.optimizer.table.lr(),
            c.train.epochs
        );
    }
}

/// The `sparseburn compare` command; `cancel` is the CLI's Ctrl-C (children
/// get the terminal's Ctrl-C themselves: they checkpoint and stop).
pub fn run(args: CompareArgs, cancel: &CancelToken) -> anyhow::Result<()> {
    let plan = spec::plan(&args.config, &args.overrides)?;
    let runner = if args.in_process {
        Runner::InProcess
    } else {
        let exe = match &args.exe {
            Some(e) => e.clone(),
            None => std::env::current_exe().context("cannot find the sparseburn binary to run each arm (use --in-process)")?,
        };
        Runner::Subprocess { exe }
    };
    let runner_name = if args.in_process { "in this process" } else { "one process per run" };
    print_plan(&plan, runner_name, args.jobs.max(1));
    if args.dry_run {
        return Ok(());
    }
    let command = std::iter::once("sparseburn".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
    let options = Options { runner, jobs: args.jobs.max(1), reuse: args.reuse, command, progress: true, cancel: cancel.clone() };
    let report = execute(&plan, &options)?;
    println!("{}", report::text(&report));
    println!("report: {}/report.md (and .json, .csv; plots *.png, *.svg)", plan.dir.display());
    println!("tensorboard --logdir {}", plan.dir.display());
    if report.interrupted {
        anyhow::bail!("interrupted: the report covers the runs that finished");
    }
    let failed = report.failed_runs();
    if failed > 0 && !args.allow_failures {
        anyhow::bail!("{failed} of {} runs failed (see the report; --allow-failures to exit 0 anyway)", report.runs.len());
    }
    Ok(())
}
