//! The `sparseburn` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sparseburn::config::Config;
use sparseburn::train::{self, TrainOptions};

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
        Command::Train { config, overrides, resume, run_dir } => {
            let (config, resume_overrides) = match (&config, &resume) {
                (Some(path), Some(dir)) => anyhow::bail!(
                    "give either a config file ({}) or --resume {}, not both: a resumed run continues with its saved config",
                    path.display(),
                    dir.display()
                ),
                (Some(path), None) => (Config::load(path, &overrides)?, Vec::new()),
                (None, Some(dir)) => (train::run_dir::read_config(dir)?, overrides),
                (None, None) => anyhow::bail!("give a config file, or --resume RUN_DIR"),
            };
            train::install_ctrl_c_handler();
            let outcome = train::train(&config, &TrainOptions { resume, run_dir, resume_overrides, ..Default::default() })?;
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
        Command::Compare(args) => sparseburn::compare::run(args),
        Command::Sweep(args) => sparseburn::sweep::run(&args.spec()?).map(drop),
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
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
