//! The library's entry point for training from code: [`Trainer`].
//!
//! ```no_run
//! use sparseburn::config::Config;
//! use sparseburn::train::Trainer;
//!
//! let mut config = Config::default();
//! config.train.epochs = 3;
//! let train = vec![("sports", "the match ended in a draw"), ("politics", "the vote passed")];
//! let trainer = Trainer::from_examples(config, train, None::<Vec<(&str, &str)>>)?;
//! let cancel = trainer.cancel_token(); // cancel.cancel() from any thread stops the run
//! let trained = trainer.train()?;
//! println!("{:?}", trained.model.predict("a draw at the match", 1));
//! # anyhow::Ok(())
//! ```

use std::path::{Path, PathBuf};

use super::model::TrainedModel;
use super::observer::Observer;
use super::prepare::{DataSource, Examples};
use super::trainer::{train_observed, RunOutcome, TrainOptions};
use crate::cancel::CancelToken;
use crate::config::Config;

/// Where a run keeps its files.
#[derive(Clone, Debug)]
enum RunDir {
    /// `<logging.dir>/<experiment>/<arm>-<n>/`, as the CLI does.
    Auto,
    /// Exactly this folder.
    At(PathBuf),
    /// A temporary folder, deleted when the run ends (no checkpoints, metrics or TensorBoard files kept).
    None,
}

/// One training run, configured before it starts. Build it with
/// [`Trainer::new`] (data from the config's files) or
/// [`Trainer::from_examples`] (data in memory); both validate the config.
pub struct Trainer {
    config: Config,
    data: DataSource,
    run_dir: RunDir,
    observers: Vec<Box<dyn Observer>>,
    cancel: CancelToken,
    stop_after_step: Option<u64>,
}

/// What a finished (or cancelled) run gives back.
pub struct Trained {
    /// The summary also written as `summary.json`.
    pub outcome: RunOutcome,
    /// The trained model, to predict in memory without exporting.
    pub model: TrainedModel,
    /// The run directory (config, metrics, checkpoints, TensorBoard), or `None` when none was kept.
    pub run_dir: Option<PathBuf>,
}

impl Trainer {
    /// Trains on the config's `data.train` (and `data.test`) files, in a new
    /// run directory under `logging.dir`. Fails, naming the key, if the config
    /// is invalid or a data file is missing.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        config.validate("config")?;
        Ok(Self::with(config, DataSource::Files, RunDir::Auto))
    }

    /// Trains on `(label, text)` pairs given in memory (`data.train` and
    /// `data.test` are not read). Without `test` examples, `data.test_fraction`
    /// of each label's training examples is held out for evaluation, as with
    /// files. Keeps no run directory unless [`Trainer::run_dir`] asks for one.
    pub fn from_examples<L, T>(config: Config, train: impl IntoIterator<Item = (L, T)>, test: Option<impl IntoIterator<Item = (L, T)>>) -> anyhow::Result<Self>
    where
        L: Into<String>,
        T: Into<String>,
    {
        config.validate_settings("config")?;
        let collect = |examples: &mut dyn Iterator<Item = (L, T)>| examples.map(|(l, t)| (l.into(), t.into())).collect::<Vec<_>>();
        let train = collect(&mut train.into_iter());
        let test = test.map(|t| collect(&mut t.into_iter()));
        if test.is_none() && !(config.data.test_fraction > 0.0 && config.data.test_fraction < 1.0) {
            anyhow::bail!("config: `data.test_fraction`: must be in (0, 1) when no test examples are given, got {}", config.data.test_fraction);
        }
        Ok(Self::with(config, DataSource::Examples(Examples { train, test }), RunDir::None))
    }

    fn with(config: Config, data: DataSource, run_dir: RunDir) -> Self {
        Trainer { config, data, run_dir, observers: Vec::new(), cancel: CancelToken::new(), stop_after_step: None }
    }

    /// Keeps the run's files in exactly `dir` (created if needed; it must not
    /// hold another run's checkpoints).
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = RunDir::At(dir.into());
        self
    }

    /// Keeps no run directory: the run trains in a temporary folder that is
    /// deleted when it ends, without periodic checkpoints or TensorBoard files.
    pub fn no_run_dir(mut self) -> Self {
        self.run_dir = RunDir::None;
        self
    }

    /// Adds an observer of the run's events (progress, metrics, evaluations).
    pub fn observe(mut self, observer: impl Observer + 'static) -> Self {
        self.observers.push(Box::new(observer));
        self
    }

    /// A token that stops the run from any thread: it finishes the current
    /// step and returns a model and an outcome marked `interrupted`.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Uses `token` instead of the trainer's own (e.g. one token for many runs).
    pub fn with_cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = token;
        self
    }

    /// Stops after this global step as if cancelled.
    pub fn stop_after_step(mut self, step: u64) -> Self {
        self.stop_after_step = Some(step);
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Trains, and returns the model with the run's outcome.
    pub fn train(self) -> anyhow::Result<Trained> {
        let Trainer { mut config, data, run_dir, observers, cancel, stop_after_step } = self;
        let mut options = TrainOptions { cancel, stop_after_step, ..Default::default() };
        // Held until the run ends; dropping it deletes the folder.
        let mut temporary = None;
        match run_dir {
            RunDir::Auto => {}
            RunDir::At(dir) => options.run_dir = Some(dir),
            RunDir::None => {
                let dir = tempfile::Builder::new().prefix("sparseburn-run-").tempdir()?;
                options.run_dir = Some(dir.path().to_path_buf());
                // Nothing of the folder is kept: write no more than a run needs.
                config.checkpoint.every = 0;
                config.logging.tensorboard = false;
                temporary = Some(dir);
            }
        }
        let (outcome, model) = train_observed(&config, &options, &data, observers, true, temporary.is_some())?;
        let model = model.expect("train_observed returns the model when asked");
        let run_dir = temporary.is_none().then(|| outcome.run_dir.clone());
        Ok(Trained { outcome, model, run_dir })
    }
}

impl Trained {
    /// The run directory, if one was kept.
    pub fn run_dir(&self) -> Option<&Path> {
        self.run_dir.as_deref()
    }
}
