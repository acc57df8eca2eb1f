//! Checkpoints: everything needed to continue a run bit for bit, at a cost
//! that follows the rows the run touched, not the size of the table.
//!
//! `<run>/checkpoints/step-NNNNNNNN/` holds
//! - `rows.safetensors`: the stored rows' `ids` `[n]` (u32, ascending; absent
//!   when every row is stored), their `table` rows `[n, dim]`, each per-row
//!   optimizer array as `state.<name>` `[n, width]`, and every global optimizer
//!   array as `global.<name>`;
//! - `head.safetensors`: `head.{i}.weight` `[in, out]` and `head.{i}.bias`;
//! - `head_optimizer.bin`: Burn's Adam state for the head (Burn's binary recorder);
//! - `trainer.json`: step, data position and time so far;
//! - `MANIFEST.json`: format version, the table's recipe (rows, dim, init,
//!   seed), whether the checkpoint is a base or a delta on `parent`, and the
//!   BLAKE3 of every file above (`b3sum`, or `pip install blake3`, checks them).
//!
//! A row that no step touched still equals its seeded initial value and its
//! optimizer state is still zero, so a **base** stores only the rows touched
//! since the run began and a **delta** only those touched since the previous
//! checkpoint. Restoring regenerates the table from the recipe and replays the
//! chain base → deltas over it. A chain is compacted into a new base when it
//! reaches `checkpoint.max_chain` links or its deltas outweigh its base.
//!
//! Durability: a checkpoint is written into `.tmp-*`, fsynced and renamed into
//! place, then `LATEST` is replaced atomically; pruning never removes a
//! checkpoint a kept one needs, nor the one `LATEST` names. Writing happens on
//! a background thread from a copy of the stored rows, so training goes on
//! meanwhile (at most one checkpoint in flight). On resume, a `LATEST` that is
//! missing, dangling or names a chain that does not verify falls back to the
//! newest checkpoint whose whole chain verifies, with a warning naming why.

mod chain;
mod manifest;
mod table_source;
mod writer;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use chain::{latest, Checkpoint};
pub use manifest::{LinkKind, CHECKPOINT_FORMAT_VERSION};
pub use table_source::{TableSource, TableStream};
pub use writer::{CheckpointStats, Checkpointer};

/// Where training stands: enough to continue exactly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Epoch in progress.
    pub epoch: u64,
    /// Batches of `epoch` already trained.
    pub batch_in_epoch: u64,
    /// Wall-clock seconds spent training so far (excluding evaluation).
    pub train_seconds: f64,
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// `step-NNNNNNNN`, the folder name of the checkpoint at `step`.
fn folder_name(step: u64) -> String {
    format!("step-{step:08}")
}
