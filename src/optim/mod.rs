//! Optimizers for the sparse embedding table.
//!
//! Shaped like Burn's optimizer crate: a serde config struct → an optimizer
//! holding its state → `step`. Each optimizer sees the table and one
//! [`SparseGrad`] per step; `lr` comes from the schedule each step.

mod adam;
mod grad_rows;
mod sgd;
mod state;

pub use adam::{adam_state_arrays, AdamConfig, BiasCorrection, DenseAdam, LazyAdam};
pub use sgd::Sgd;
pub use state::{StateData, StateError, StateSource};

use serde::{Deserialize, Serialize};

use crate::model::{EmbeddingTable, SparseGrad};

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
    /// table holds the weights a dense optimizer would have (for export).
    fn apply_pending_decay(&mut self, _table: &mut EmbeddingTable) {}
}

/// Which table optimizer to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableOptimizerKind {
    #[default]
    LazyAdam,
    DenseAdam,
    Sgd,
}

impl TableOptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            TableOptimizerKind::LazyAdam => "lazy_adam",
            TableOptimizerKind::DenseAdam => "dense_adam",
            TableOptimizerKind::Sgd => "sgd",
        }
    }
}

/// `[optimizer.table]` in an experiment config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableOptimizerConfig {
    pub kind: TableOptimizerKind,
    /// Peak learning rate; the schedule scales it each step.
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    /// Decoupled (AdamW-style) weight decay; lazy optimizers catch up missed decay.
    pub weight_decay: f64,
    pub bias_correction: BiasCorrection,
}

impl Default for TableOptimizerConfig {
    fn default() -> Self {
        let adam = AdamConfig::default();
        TableOptimizerConfig {
            kind: TableOptimizerKind::LazyAdam,
            lr: 1e-3,
            beta1: adam.beta1,
            beta2: adam.beta2,
            epsilon: adam.epsilon,
            weight_decay: adam.weight_decay,
            bias_correction: adam.bias_correction,
        }
    }
}

impl TableOptimizerConfig {
    pub fn adam(&self) -> AdamConfig {
        AdamConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            bias_correction: self.bias_correction,
        }
    }

    /// Builds the optimizer for a `rows × dim` table, allocating (and pre-faulting) its state.
    pub fn init(&self, rows: usize, dim: usize) -> Box<dyn TableOptimizer> {
        match self.kind {
            TableOptimizerKind::LazyAdam => Box::new(self.adam().init_lazy(rows, dim)),
            TableOptimizerKind::DenseAdam => Box::new(self.adam().init_dense(rows, dim)),
            TableOptimizerKind::Sgd => Box::new(Sgd::new()),
        }
    }

    /// Bytes of state the optimizer will allocate for a `rows × dim` table.
    pub fn state_bytes(&self, rows: usize, dim: usize) -> u64 {
        // Per-row arrays, plus the u64 step counter (and the f64 running decay log with weight decay).
        match self.kind {
            TableOptimizerKind::Sgd => 8,
            _ => self.adam().state_bytes(rows, dim) + 8 + if self.weight_decay != 0.0 { 8 } else { 0 },
        }
    }
}
