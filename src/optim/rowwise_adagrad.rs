//! `kind = "rowwise_adagrad"`: FBGEMM's row-wise Adagrad. One f32 accumulator
//! per row instead of Adam's two per element (4 bytes a row instead of 512 at
//! dim 64), updated only for the rows in the batch:
//!
//! ```text
//! G_r ← G_r + mean_d(g²)
//! w   ← w·decay − lr·g/(√G_r + ε)
//! ```
//!
//! `decay` is optional decoupled weight decay, `(1 − lr·wd)` per step, with the
//! factors a row missed while absent caught up when it is next updated (or by
//! `apply_pending_decay`), as in lazy_adam.

use serde::{Deserialize, Serialize};

use super::config::{self, HParam, InvalidKey, OptimizerConfig};
use super::decay::{self, LazyDecay};
use super::rows::{for_each_grad_row, PerRowMut, TableRowsMut};
use super::state::{StateData, StateError, StateSource};
use super::TableOptimizer;
use crate::mem::AlignedVec;
use crate::model::{EmbeddingTable, SparseGrad};

/// `[optimizer.table]` with `kind = "rowwise_adagrad"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RowwiseAdagradConfig {
    /// Peak learning rate (default 0.01, FBGEMM's and torch's Adagrad default).
    pub lr: f64,
    /// Added to √G (default 1e-8, FBGEMM's).
    pub epsilon: f64,
    /// Decoupled weight decay (default 0): `w ← w·(1 − lr·wd)` every step,
    /// applied to an absent row when it next appears.
    pub weight_decay: f64,
}

impl Default for RowwiseAdagradConfig {
    fn default() -> Self {
        RowwiseAdagradConfig { lr: 0.01, epsilon: 1e-8, weight_decay: 0.0 }
    }
}

impl OptimizerConfig for RowwiseAdagradConfig {
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn validate(&self) -> Result<(), InvalidKey> {
        config::positive("lr", self.lr)?;
        config::positive("epsilon", self.epsilon)?;
        config::weight_decay(self.lr, self.weight_decay)
    }
    fn state_bytes(&self, rows: usize, _dim: usize) -> u64 {
        rows as u64 * 4 + 8 + LazyDecay::state_bytes(self.weight_decay, rows)
    }
    fn init(&self, rows: usize, dim: usize) -> Box<dyn TableOptimizer> {
        Box::new(RowwiseAdagrad::new(self.clone(), rows, dim))
    }
    fn hparams(&self) -> Vec<(&'static str, HParam)> {
        vec![("lr", HParam::Num(self.lr)), ("epsilon", HParam::Num(self.epsilon)), ("weight_decay", HParam::Num(self.weight_decay))]
    }
}

#[derive(Debug)]
pub struct RowwiseAdagrad {
    config: RowwiseAdagradConfig,
    dim: usize,
    step: u64,
    /// G_r: each row's sum over its steps of mean_d(g²). Starts at 0.
    sum_sq: AlignedVec<f32>,
    decay: LazyDecay,
}

impl RowwiseAdagrad {
    pub fn new(config: RowwiseAdagradConfig, rows: usize, dim: usize) -> Self {
        let decay = LazyDecay::new(config.weight_decay, rows);
        RowwiseAdagrad { config, dim, step: 0, sum_sq: AlignedVec::zeroed(rows), decay }
    }
}

impl TableOptimizer for RowwiseAdagrad {
    fn name(&self) -> &'static str {
        "rowwise_adagrad"
    }

    fn step(&mut self, table: &mut EmbeddingTable, grad: &SparseGrad, lr: f32) {
        let dim = self.dim;
        assert_eq!((table.dim(), grad.dim()), (dim, dim), "table, gradient and optimizer dims differ");
        self.step += 1;
        self.decay.begin_step(lr);
        let (log_decay, eps) = (self.decay.log_decay(), self.config.epsilon as f32);
        let arrays = (TableRowsMut::new(table), PerRowMut::new(&mut self.sum_sq), self.decay.marks());
        for_each_grad_row(grad, arrays, |(w, sum_sq, mark), g| {
            *sum_sq += g.iter().map(|g| g * g).sum::<f32>() / dim as f32;
            let rate = lr / (sum_sq.sqrt() + eps);
            let decay = mark.map_or(1.0, |mark| LazyDecay::catch_up(log_decay, mark));
            for (w, g) in w.iter_mut().zip(g) {
                *w = *w * decay - rate * g;
            }
        });
    }

    fn steps(&self) -> u64 {
        self.step
    }
    fn per_row_state(&self) -> &'static [&'static str] {
        &["sum_sq", "row_log_decay"]
    }
    fn state(&self) -> Vec<(&'static str, StateData<'_>)> {
        let mut s = vec![("step", StateData::U64(std::slice::from_ref(&self.step))), ("sum_sq", StateData::F32(&self.sum_sq))];
        decay::push_arrays(&mut s, &self.decay);
        s
    }
    fn load_state(&mut self, source: &dyn StateSource) -> Result<(), StateError> {
        source.read_u64("step", std::slice::from_mut(&mut self.step))?;
        source.read_f32("sum_sq", &mut self.sum_sq)?;
        self.decay.load(source)
    }
    fn apply_pending_decay(&mut self, table: &mut EmbeddingTable) {
        self.decay.apply_pending(table);
    }
}
