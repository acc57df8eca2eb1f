//! `kind = "dense_adam"`: Adam that updates every row every step; rows absent
//! from the batch get g = 0. The baseline that lazy_adam is compared against.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::adam::{update_row, AdamConfig, AdamState, BiasCorrection, Coeffs, ADAM_ROW_STATE};
use super::config::{HParam, InvalidKey, OptimizerConfig};
use super::state::{StateData, StateError, StateSource};
use super::TableOptimizer;
use crate::model::{EmbeddingTable, SparseGrad};

/// `[optimizer.table]` with `kind = "dense_adam"`: the same keys and defaults as lazy_adam.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenseAdamConfig {
    /// Peak learning rate (default 1e-3); the schedule scales it each step.
    pub lr: f64,
    /// First-moment decay (default 0.9).
    pub beta1: f64,
    /// Second-moment decay (default 0.999).
    pub beta2: f64,
    /// Added to √v (default 1e-8).
    pub epsilon: f64,
    /// Decoupled weight decay (default 0): `w ← w·(1 − lr·wd)` every step, every row.
    pub weight_decay: f64,
    /// `global` (default), `per_row` (equal to global here: every row is in every step) or `none`.
    pub bias_correction: BiasCorrection,
}

impl Default for DenseAdamConfig {
    fn default() -> Self {
        let a = AdamConfig::default();
        DenseAdamConfig { lr: 1e-3, beta1: a.beta1, beta2: a.beta2, epsilon: a.epsilon, weight_decay: a.weight_decay, bias_correction: a.bias_correction }
    }
}

impl DenseAdamConfig {
    pub fn adam(&self) -> AdamConfig {
        AdamConfig { beta1: self.beta1, beta2: self.beta2, epsilon: self.epsilon, weight_decay: self.weight_decay, bias_correction: self.bias_correction }
    }
}

impl OptimizerConfig for DenseAdamConfig {
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
        Box::new(DenseAdam::new(self.adam(), rows, dim))
    }
    fn hparams(&self) -> Vec<(&'static str, HParam)> {
        self.adam().hparams(self.lr)
    }
}

/// Rows per task of the dense update (a long loop: rayon's own splitting).
const DENSE_ROWS_PER_TASK: usize = 4096;

/// Adam that updates every row every step; rows absent from the batch get g = 0.
#[derive(Debug)]
pub struct DenseAdam {
    state: AdamState,
}

impl DenseAdam {
    pub fn new(config: AdamConfig, rows: usize, dim: usize) -> Self {
        DenseAdam { state: AdamState::new(config, rows, dim) }
    }
}

impl TableOptimizer for DenseAdam {
    fn name(&self) -> &'static str {
        "dense_adam"
    }
    fn updates_only_grad_rows(&self) -> bool {
        false
    }

    fn step(&mut self, table: &mut EmbeddingTable, grad: &SparseGrad, lr: f32) {
        let dim = self.state.check_shapes(table, grad);
        let (step_size, decay) = self.state.book.begin_step(lr);
        let s = &mut self.state;
        let coeffs = Coeffs::new(&s.book.config);
        let t = s.book.step;
        // Every row is present every step, so per-row counts equal the global
        // step, and every row's decay is applied now.
        s.book.row_steps.iter_mut().for_each(|k| *k = t as u32);
        s.book.decay.mark_all();
        let chunk = DENSE_ROWS_PER_TASK;
        table
            .as_mut_slice()
            .par_chunks_mut(chunk * dim)
            .zip(s.m.par_chunks_mut(chunk * dim))
            .zip(s.v.par_chunks_mut(chunk * dim))
            .enumerate()
            .for_each(|(c, ((w, m), v))| {
                let first = c * chunk;
                // Merge this chunk's rows with the sorted gradient rows.
                let mut k = grad.rows().partition_point(|&r| (r as usize) < first);
                for (i, ((w, m), v)) in w.chunks_mut(dim).zip(m.chunks_mut(dim)).zip(v.chunks_mut(dim)).enumerate() {
                    let row = first + i;
                    let g = if grad.rows().get(k) == Some(&(row as u32)) {
                        k += 1;
                        Some(grad.row_values(k - 1))
                    } else {
                        None
                    };
                    update_row(w, m, v, g, &coeffs, step_size, decay);
                }
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
}
