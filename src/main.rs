//! The `sparseburn` command line: a thin layer over the library. Argument
//! parsing, log output, Ctrl-C and the progress display live here ([`cli`]).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sparseburn::cancel::CancelToken;
use sparseburn::config::Config;
use sparseburn::train::{self, Observer, TrainOptions};

#[derive(Parser)]
#[command(name = "sparseburn", version, about = "Train text classifiers with huge sparse embedding tables")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the experiment described by a TOML config (or resume a run).
    Train {
        /// Experiment config, e.g. configs/quickstart.toml (not needed with --resume).
        config: Option<PathBuf>,
        /// Override a config key, e.g. --set optimizer.table.lr=0.01 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Continue this run directory from its latest checkpoint.
        #[arg(long, value_name = "RUN_DIR")]
        resume: Option<PathBuf>,
        /// Train exactly in this directory instead of <logging.dir>/<experiment>/<arm>-<n>.
        #[arg(long, value_name = "DIR")]
        run_dir: Option<PathBuf>,
        /// Seconds between progress lines when stderr is not a terminal (a terminal shows a bar).
        #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
        progress_every: f64,
    },
    /// Run A/B arms × seeds and write a side-by-side report.
    Compare(sparseburn::compare::CompareArgs),
    /// Grid or random search over any config keys; a report sorted by a metric.
    Sweep(SweepArgs),
    /// Export a trained run as a self-contained model bundle.
    Export(sparseburn::export::ExportArgs),
    /// Fast-predict loop: one JSON result per input line on stdin.
    Predict(sparseburn::serve::PredictArgs),
    /// Serve a model over TF Serving-compatible REST, hot-reloading new versions.
    Serve(sparseburn::serve::ServeArgs),
    /// Benchmarks: optimizer step, end-to-end training, prediction.
    Bench(sparseburn::bench::BenchArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train { config, overrides, resume, run_dir, progress_every } => {
            if !(progress_every.is_finite() && progress_every > 0.0) {
                anyhow::bail!("--progress-every must be a positive number of seconds, got {progress_every}");
            }
            let (config, resume_overrides) = match (&config, &resume) {
                (Some(path), Some(dir)) => {
                    anyhow::bail!("give either a config file ({}) or --resume {}, not both: a resumed run continues with its saved config", path.display(), dir.display())
                }
                (Some(path), None) => (Config::load(path, &overrides)?, Vec::new()),
                (None, Some(dir)) => (train::run_dir::read_config(dir)?, overrides),
                (None, None) => anyhow::bail!("give a config file, or --resume RUN_DIR"),
            };
            if config.logging.quiet {
                cli::quiet_logging();
            }
            let cancel = CancelToken::new();
            cli::cancel_on_ctrl_c(&cancel, "writing a final checkpoint");
            let observers: Vec<Box<dyn Observer>> =
                if config.logging.quiet { Vec::new() } else { vec![Box::new(cli::progress::Progress::new(Duration::from_secs_f64(progress_every)))] };
            let options = TrainOptions { resume, run_dir, resume_overrides, cancel, ..Default::default() };
            let outcome = train::train_with(&config, &options, observers)?;
            if outcome.distributed.as_ref().is_some_and(|d| d.rank > 0) {
                return Ok(()); // rank 0 of a distributed run reports it and exports it
            }
            let e = &outcome.final_eval;
            println!(
                "final eval: accuracy {:.4}, top-{} {:.4}, loss {:.4} ({} examples, {} steps, {:.0} examples/s)",
                e.accuracy, e.k, e.top_k_accuracy, e.loss, e.examples, outcome.steps, outcome.examples_per_second
            );
            println!("run directory: {}", outcome.run_dir.display());
            if let (Some(base), false) = (&config.export.dir, outcome.interrupted) {
                let bundle = sparseburn::export::export_next_version(&outcome.run_dir, base)?;
                println!("exported: {}", bundle.display());
            }
            if outcome.interrupted {
                println!("interrupted: resume with `sparseburn train --resume {}`", outcome.run_dir.display());
            }
            Ok(())
        }
        Command::Compare(args) => {
            let cancel = CancelToken::new();
            cli::cancel_on_ctrl_c(&cancel, "finishing the report with the runs done so far");
            sparseburn::compare::run(args, &cancel)
        }
        Command::Sweep(args) => {
            let cancel = CancelToken::new();
            cli::cancel_on_ctrl_c(&cancel, "finishing the report with the trials done so far");
            sparseburn::sweep::run(&args.spec()?, &cancel).map(drop)
        }
        Command::Export(args) => sparseburn::export::run(args),
        Command::Predict(args) => sparseburn::serve::predict(args),
        Command::Serve(args) => sparseburn::serve::serve(args),
        Command::Bench(args) => sparseburn::bench::run(args),
    }
}

/// `sparseburn sweep configs/quickstart_sweep.toml`
#[derive(clap::Args)]
struct SweepArgs {
    /// An experiment config with a [sweep] table (or any config, with --grid).
    config: PathBuf,
    /// Sweep this key over these values, e.g. --grid optimizer.table.lr=0.01,0.05 (repeatable; replaces [sweep.params]).
    #[arg(long, value_name = "KEY=V1,V2,...")]
    grid: Vec<String>,
    /// Override a key for every trial, or of the [sweep] table (e.g. --set sweep.trials=4); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Runs at a time: "auto" (within the cores and the memory plan) or a number.
    #[arg(long, value_name = "N|auto")]
    parallel: Option<sparseburn::sweep::Parallel>,
    /// Keep a finished trial whose saved config equals the planned one (e.g. after Ctrl-C).
    #[arg(long)]
    reuse: bool,
    /// Check the config and print the trials; train nothing.
    #[arg(long)]
    dry_run: bool,
    /// Exit with success even when some trials failed.
    #[arg(long)]
    allow_failures: bool,
    /// Train every trial inside this process, one at a time.
    #[arg(long)]
    in_process: bool,
}

impl SweepArgs {
    fn spec(self) -> anyhow::Result<sparseburn::sweep::SweepSpec> {
        let exe = match self.in_process {
            true => None,
            false => Some(std::env::current_exe().map_err(|e| anyhow::anyhow!("cannot find the sparseburn binary to run each trial (use --in-process): {e}"))?),
        };
        let command = std::iter::once("sparseburn".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
        Ok(sparseburn::sweep::SweepSpec {
            config: self.config,
            overrides: self.overrides,
            grid: self.grid,
            parallel: self.parallel,
            exe,
            reuse: self.reuse,
            dry_run: self.dry_run,
            allow_failures: self.allow_failures,
            command,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
