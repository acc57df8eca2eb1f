//! Watching a run from outside the loop: the events a training run reports.
//!
//! The CLI's progress display and the TensorBoard writer are observers; a
//! program training through [`super::Trainer`] adds its own with
//! [`super::Trainer::observe`]. Observers cannot fail or stop a run (use a
//! [`crate::cancel::CancelToken`] to stop one); they are called on the
//! training thread, so they should return quickly.

use std::path::Path;

use super::run_dir::{EvalRecord, TrainRecord};
use super::{RunOutcome, StepTimings};
use crate::config::Config;
use crate::summary::{GraphSpec, HParamValue};

/// Once per session (a resumed run is a new session), before its first step.
pub struct RunStart<'a> {
    /// The run directory, or `None` for a run without one (it trains in a
    /// temporary folder that is deleted at the end).
    pub run_dir: Option<&'a Path>,
    pub config: &'a Config,
    /// Steps the whole run takes.
    pub total_steps: u64,
    /// Steps done before this session (0 unless resumed).
    pub first_step: u64,
    /// False when resuming: the graph and hparams were recorded by the first session.
    pub first_session: bool,
    /// The model as a dataflow graph (table, pooling, head, optimizers, devices).
    pub graph: &'a GraphSpec,
    /// The run's hyperparameters, keys spelled as in the config.
    pub hparams: &'a [(String, HParamValue)],
}

/// After every optimizer step.
pub struct StepEvent<'a> {
    pub record: &'a TrainRecord,
    pub total_steps: u64,
    /// Whether this step is one of the `logging.scalar_every` steps that go to `metrics.jsonl`.
    pub logged: bool,
    /// Mean milliseconds per step of each phase, this session.
    pub timings: &'a StepTimings,
    pub table_bytes: u64,
    pub optimizer_state_bytes: u64,
    /// `(tag, values)` on `logging.histogram_every` steps when TensorBoard is on; else empty.
    pub histograms: &'a [(String, Vec<f32>)],
}

/// Receives a run's events. Every method has an empty default.
pub trait Observer: Send {
    fn on_start(&mut self, _start: &RunStart) {}
    fn on_step(&mut self, _step: &StepEvent) {}
    fn on_eval(&mut self, _eval: &EvalRecord) {}
    /// After `on_start`, once: `Ok` when the run ended (`outcome.interrupted`
    /// says whether it was cancelled), `Err` when it failed. A run refused
    /// before it starts (bad data, memory plan) reports only to its caller.
    fn on_finish(&mut self, _result: Result<&RunOutcome, &anyhow::Error>) {}
}
