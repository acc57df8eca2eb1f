//! Training: the loop, evaluation, checkpoints, the run directory, and
//! training across processes ([`distributed`]).
//!
//! From code, train with [`Trainer`] (data from files or memory, observers,
//! a cancel token, the model returned in memory); [`train`] is what the CLI
//! runs (data files, run directory, resume).

pub mod checkpoint;
pub mod distributed;
pub mod eval;
pub mod fingerprint;
pub mod model;
pub mod observer;
pub mod prepare;
pub mod resident;
mod rowset;
pub mod run_dir;
mod schedule;
mod session;
mod table_file;
mod table_home;
mod trainer;

pub use eval::{evaluate, metrics_of, score_examples, EvalMetrics, ExampleScore};
pub use model::TrainedModel;
pub use observer::{Observer, RunStart, StepEvent};
pub use prepare::{DataSource, Examples};
pub use schedule::lr_factor;
pub use session::{Trained, Trainer};
pub use trainer::{train, train_with, RunOutcome, StepTimeStats, StepTimings, TrainOptions};
