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
        Command::Export(args) => sparseburn::export::run(args),
        Command::Predict(args) => sparseburn::serve::predict(args),
        Command::Serve(args) => sparseburn::serve::serve(args),
        Command::Bench(args) => sparseburn::bench::run(args),
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
