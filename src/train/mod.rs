//! Training: the loop, evaluation, checkpoints and the run directory.

pub mod checkpoint;
pub mod eval;
pub mod fingerprint;
pub mod prepare;
pub mod resident;
pub mod run_dir;
mod rowset;
mod schedule;
mod trainer;

pub use eval::{evaluate, EvalMetrics};
pub use schedule::lr_factor;
pub use trainer::{install_ctrl_c_handler, train, RunOutcome, StepTimeStats, StepTimings, TrainOptions};
