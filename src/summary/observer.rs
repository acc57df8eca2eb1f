//! The TensorBoard writer as a training observer.

use std::path::Path;

use super::RunSummary;
use crate::train::observer::{Observer, RunStart, StepEvent};
use crate::train::run_dir::EvalRecord;
use crate::train::RunOutcome;

/// Writes a run's scalars, histograms, graph, hparams and config into its event file.
pub struct TensorBoardObserver {
    /// Taken when the run ends (tensorboard-rs completes its file only when the writer is dropped).
    summary: Option<RunSummary>,
}

impl TensorBoardObserver {
    /// Opens the event file in `run_dir`; `log_dir` is the folder TensorBoard reads (`logging.dir`).
    pub fn create(run_dir: &Path, log_dir: &Path) -> anyhow::Result<Self> {
        Ok(TensorBoardObserver { summary: Some(RunSummary::create(run_dir, log_dir)?) })
    }
}

impl Observer for TensorBoardObserver {
    fn on_start(&mut self, start: &RunStart) {
        let Some(s) = self.summary.as_mut().filter(|_| start.first_session) else { return };
        s.graph(start.graph);
        s.hparams(start.hparams, &["eval/accuracy", "eval/loss", "eval/top_k_accuracy"]);
        s.text("config", &format!("```toml\n{}\n```", start.config.to_toml()), start.first_step);
    }

    fn on_step(&mut self, e: &StepEvent) {
        let Some(s) = &mut self.summary else { return };
        if !e.logged {
            return;
        }
        let (r, t) = (e.record, e.timings);
        for (tag, v) in [
            ("train/loss", r.loss as f64),
            ("train/accuracy", r.accuracy as f64),
            ("train/lr_table", r.lr_table),
            ("train/lr_head", r.lr_head),
            ("perf/examples_per_second", r.examples_per_second),
            ("perf/rows_touched", r.rows_touched as f64),
            ("perf/unique_id_ratio", r.unique_ratio),
            ("perf/table_bytes", e.table_bytes as f64),
            ("perf/optimizer_state_bytes", e.optimizer_state_bytes as f64),
            ("time_ms/data", t.data_ms),
            ("time_ms/bag_forward", t.bag_forward_ms),
            ("time_ms/head_forward", t.head_forward_ms),
            ("time_ms/head_backward", t.head_backward_ms),
            ("time_ms/bag_backward", t.bag_backward_ms),
            ("time_ms/table_optimizer", t.table_optimizer_ms),
            ("time_ms/head_optimizer", t.head_optimizer_ms),
        ] {
            s.scalar(tag, v as f32, r.step);
        }
        for (tag, values) in e.histograms {
            s.histogram(tag, values, r.step);
        }
    }

    fn on_eval(&mut self, m: &EvalRecord) {
        let Some(s) = &mut self.summary else { return };
        s.scalar("eval/loss", m.loss as f32, m.step);
        s.scalar("eval/accuracy", m.accuracy as f32, m.step);
        s.scalar("eval/top_k_accuracy", m.top_k_accuracy as f32, m.step);
        s.flush();
    }

    /// `close` marks the HParams session a success; a plain drop marks it a failure.
    fn on_finish(&mut self, result: Result<&RunOutcome, &anyhow::Error>) {
        if let Some(s) = self.summary.take() {
            match result {
                Ok(_) => s.close(),
                Err(_) => drop(s),
            }
        }
    }
}
