//! `kind = "sgd"`: plain sparse SGD, `w ← w − lr·g` for the rows in the batch. The simplest baseline.

use serde::{Deserialize, Serialize};

use super::config::{self, HParam, InvalidKey, OptimizerConfig};
use super::rows::{for_each_grad_row, TableRowsMut};
use super::state::{StateData, StateError, StateSource};
use super::TableOptimizer;
use crate::model::{EmbeddingTable, SparseGrad};

/// `[optimizer.table]` with `kind = "sgd"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Peak learning rate (default 1e-3); the schedule scales it each step.
    pub lr: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { lr: 1e-3 }
    }
}

impl OptimizerConfig for SgdConfig {
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn validate(&self) -> Result<(), InvalidKey> {
        config::positive("lr", self.lr)
    }
    fn state_bytes(&self, _rows: usize, _dim: usize) -> u64 {
        8 // the step count
    }
    fn init(&self, _rows: usize, _dim: usize) -> Box<dyn TableOptimizer> {
        Box::new(Sgd::new())
    }
    fn hparams(&self) -> Vec<(&'static str, HParam)> {
        vec![("lr", HParam::Num(self.lr))]
    }
}

#[derive(Debug, Default)]
pub struct Sgd {
    step: u64,
}

impl Sgd {
    pub fn new() -> Self {
        Sgd::default()
    }
}

impl TableOptimizer for Sgd {
    fn name(&self) -> &'static str {
        "sgd"
    }

    fn step(&mut self, table: &mut EmbeddingTable, grad: &SparseGrad, lr: f32) {
        self.step += 1;
        let dim = table.dim();
        assert_eq!(grad.dim(), dim, "gradient and table dims differ");
        for_each_grad_row(grad, TableRowsMut::new(table), |w, g| {
            for (w, g) in w.iter_mut().zip(g) {
                *w -= lr * g;
            }
        });
    }

    fn steps(&self) -> u64 {
        self.step
    }
    fn per_row_state(&self) -> &'static [&'static str] {
        &[]
    }
    fn state(&self) -> Vec<(&'static str, StateData<'_>)> {
        vec![("step", StateData::U64(std::slice::from_ref(&self.step)))]
    }
    fn load_state(&mut self, source: &dyn StateSource) -> Result<(), StateError> {
        source.read_u64("step", std::slice::from_mut(&mut self.step))
    }
}
