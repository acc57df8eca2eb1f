//! Optimizers for the sparse embedding table.
//!
//! Shaped like Burn's optimizer crate: a serde config struct with documented
//! defaults → an optimizer holding its state → `step`. Each optimizer sees the
//! table and one [`SparseGrad`] per step; `lr` comes from the schedule each step.
//!
//! One file per optimizer (its config, validation, state size, hparams and
//! update) and one registration line in [`table_optimizers!`] below. Lazy
//! updates go through [`rows::for_each_grad_row`], which hands each gradient
//! row's `&mut` rows of the table and of the optimizer's per-row arrays to the
//! update, so optimizer files write no `unsafe`.

mod adam;
mod config;
mod decay;
pub mod device_table;
mod registry;
pub mod rows;
mod state;

pub use adam::{adam_state_arrays, AdamConfig, BiasCorrection};
pub use config::{HParam, InvalidKey, OptimizerConfig};
pub use decay::owed_factor;
pub use state::{StateData, StateError, StateSource};

use crate::model::{EmbeddingTable, SparseGrad};

// The registry: one line per optimizer, `module: Variant(Config)`. The module
// `src/optim/<module>.rs` is declared by the line, its public items are
// re-exported here, and `kind = "<module>"` selects it in `[optimizer.table]`.
// The first line is the default kind.
registry::table_optimizers! {
    lazy_adam: LazyAdam(LazyAdamConfig),
    dense_adam: DenseAdam(DenseAdamConfig),
    sgd: Sgd(SgdConfig),
    rowwise_adagrad: RowwiseAdagrad(RowwiseAdagradConfig),
    partial_rowwise_adam: PartialRowwiseAdam(PartialRowwiseAdamConfig),
    #[cfg(test)] toy_sign_sgd: ToySignSgd(ToySignSgdConfig),
}

/// One optimizer over an embedding table.
pub trait TableOptimizer: Send {
    /// The config name, e.g. `"lazy_adam"`.
    fn name(&self) -> &'static str;
    /// Applies one step. Rows absent from `grad` are left untouched by lazy
    /// optimizers and updated with a zero gradient by dense ones.
    fn step(&mut self, table: &mut EmbeddingTable, grad: &SparseGrad, lr: f32);
    /// Steps taken so far (the global `t`).
    fn steps(&self) -> u64;
    /// Every state array by name, for checkpoints.
    fn state(&self) -> Vec<(&'static str, StateData<'_>)>;
    /// The arrays of [`TableOptimizer::state`] that hold one fixed-width record
    /// per table row (moments, per-row counters), by name; every other array
    /// is global (step counts, running products). Sparse and delta checkpoints
    /// store only the touched rows of these; a row never touched holds zeros.
    fn per_row_state(&self) -> &'static [&'static str];
    /// Whether a step changes only the rows of its gradient (lazy optimizers);
    /// a dense optimizer changes every row, so its checkpoints are always full.
    fn updates_only_grad_rows(&self) -> bool {
        true
    }
    /// Restores the state written by [`TableOptimizer::state`]; sizes must match.
    fn load_state(&mut self, source: &dyn StateSource) -> Result<(), StateError>;
    /// Bytes held by the optimizer state.
    fn state_bytes(&self) -> usize {
        self.state().iter().map(|(_, d)| d.bytes()).sum()
    }
    /// Applies any decay deferred by lazy weight decay to every row, so the
    /// table holds the weights a dense optimizer would have (for export and
    /// at the end of training). Optimizers without deferred decay do nothing.
    fn apply_pending_decay(&mut self, _table: &mut EmbeddingTable) {}
}
