//! `kind = "lazy_adam"`: Adam that updates m, v and w only for the rows present
//! in the batch (TF's LazyAdam, torch's SparseAdam), with optional per-row bias
//! correction and decoupled weight decay caught up by rows that were absent.

use serde::{Deserialize, Serialize};

use super::adam::{update_row, AdamConfig, AdamState, BiasCorrection, Coeffs, ADAM_ROW_STATE};
use super::config::{HParam, InvalidKey, OptimizerConfig};
use super::decay::LazyDecay;
use super::rows::{for_each_grad_row, PerRowMut, RowsMut, TableRowsMut};
use super::state::{StateData, StateError, StateSource};
use super::TableOptimizer;
use crate::model::{EmbeddingTable, SparseGrad};

/// `[optimizer.table]` with `kind = "lazy_adam"` (the default kind).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LazyAdamConfig {
    /// Peak learning rate (default 1e-3); the schedule scales it each step.
    pub lr: f64,
    /// First-moment decay (default 0.9).
    pub beta1: f64,
    /// Second-moment decay (default 0.999).
    pub beta2: f64,
    /// Added to √v (default 1e-8).
    pub epsilon: f64,
    /// Decoupled weight decay (default 0): `w ← w·(1 − lr·wd)` every step,
    /// applied to an absent row when it next appears.
    pub weight_decay: f64,
    /// `global` (default), `per_row` (each row's own step count, FBGEMM) or `none`.
    pub bias_correction: BiasCorrection,
}

impl Default for LazyAdamConfig {
    fn default() -> Self {
        let a = AdamConfig::default();
        LazyAdamConfig { lr: 1e-3, beta1: a.beta1, beta2: a.beta2, epsilon: a.epsilon, weight_decay: a.weight_decay, bias_correction: a.bias_correction }
    }
}

impl LazyAdamConfig {
    pub fn adam(&self) -> AdamConfig {
        AdamConfig { beta1: self.beta1, beta2: self.beta2, epsilon: self.epsilon, weight_decay: self.weight_decay, bias_correction: self.bias_correction }
    }
}

impl OptimizerConfig for LazyAdamConfig {
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn validate(&self) -> Result<(), InvalidKey> {
        self.adam().validate(self.lr)
    }
    fn state_bytes(&self, rows: usize, dim: usize) -> u64 {
        self.adam().total_state_bytes(rows, dim)
    }
    fn init(&self, rows: usize, dim: usize) -> Box<dyn TableOptimizer> {
        Box::new(LazyAdam::new(self.adam(), rows, dim))
    }
    fn hparams(&self) -> Vec<(&'static str, HParam)> {
        self.adam().hparams(self.lr)
    }
}

/// Adam that updates m, v and w only for the rows present in the batch.
#[derive(Debug)]
pub struct LazyAdam {
    state: AdamState,
}

impl LazyAdam {
    pub fn new(config: AdamConfig, rows: usize, dim: usize) -> Self {
        LazyAdam { state: AdamState::new(config, rows, dim) }
    }
}

impl TableOptimizer for LazyAdam {
    fn name(&self) -> &'static str {
        "lazy_adam"
    }

    fn step(&mut self, table: &mut EmbeddingTable, grad: &SparseGrad, lr: f32) {
        let dim = self.state.check_shapes(table, grad);
        let (global_step_size, _) = self.state.book.begin_step(lr);
        let s = &mut self.state;
        let (config, log_decay, lr) = (s.book.config, s.book.decay.log_decay(), lr as f64);
        let coeffs = Coeffs::new(&config);
        let arrays = (
            TableRowsMut::new(table),
            RowsMut::new(&mut s.m, dim),
            RowsMut::new(&mut s.v, dim),
            PerRowMut::optional(&mut s.book.row_steps),
            s.book.decay.marks(),
        );
        for_each_grad_row(grad, arrays, |(w, m, v, row_steps, mark), g| {
            let step_size = match row_steps {
                Some(k) => {
                    *k += 1;
                    config.step_size(lr, *k as u64)
                }
                None => global_step_size,
            };
            // Every factor since this row's last update, this step's included.
            let decay = mark.map_or(1.0, |mark| LazyDecay::catch_up(log_decay, mark));
            update_row(w, m, v, Some(g), &coeffs, step_size, decay);
        });
    }

    fn steps(&self) -> u64 {
        self.state.book.step
    }
    fn per_row_state(&self) -> &'static [&'static str] {
        ADAM_ROW_STATE
    }
    fn state(&self) -> Vec<(&'static str, StateData<'_>)> {
        self.state.state()
    }
    fn load_state(&mut self, source: &dyn StateSource) -> Result<(), StateError> {
        self.state.load_state(source)
    }
    fn apply_pending_decay(&mut self, table: &mut EmbeddingTable) {
        self.state.book.decay.apply_pending(table);
    }
}
