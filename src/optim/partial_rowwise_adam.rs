//! `kind = "partial_rowwise_adam"`: FBGEMM's partial row-wise Adam. The first
//! moment per element, the second per row from the mean square gradient (4
//! bytes a row instead of 256 at dim 64), updated only for the rows in the batch:
//!
//! ```text
//! m   ← β1·m + (1−β1)·g
//! v_r ← β2·v_r + (1−β2)·mean_d(g²)
//! w   ← w·decay − lr·(m/(1−β1^t)) / (√(v_r/(1−β2^t)) + ε)
//! ```
//!
//! `t` is the table's global step, or the row's own step count under
//! `bias_correction = "per_row"` (no correction under `"none"`). `decay` is
//! optional decoupled weight decay caught up lazily, as in lazy_adam.

use serde::{Deserialize, Serialize};

use super::adam::BiasCorrection;
use super::config::{self, HParam, InvalidKey, OptimizerConfig};
use super::decay::{self, LazyDecay};
use super::rows::{for_each_grad_row, PerRowMut, RowsMut, TableRowsMut};
use super::state::{StateData, StateError, StateSource};
use super::TableOptimizer;
use crate::mem::AlignedVec;
use crate::model::{EmbeddingTable, SparseGrad};

/// `[optimizer.table]` with `kind = "partial_rowwise_adam"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartialRowwiseAdamConfig {
    /// Peak learning rate (default 1e-3); the schedule scales it each step.
    pub lr: f64,
    /// First-moment decay (default 0.9).
    pub beta1: f64,
    /// Decay of the per-row second moment (default 0.999).
    pub beta2: f64,
    /// Added to √v̂ (default 1e-8).
    pub epsilon: f64,
    /// Decoupled weight decay (default 0), caught up by rows that were absent.
    pub weight_decay: f64,
    /// `global` (default, FBGEMM's), `per_row` (each row's own step count) or `none`.
    pub bias_correction: BiasCorrection,
}

impl Default for PartialRowwiseAdamConfig {
    fn default() -> Self {
        PartialRowwiseAdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 0.0, bias_correction: BiasCorrection::Global }
    }
}

impl PartialRowwiseAdamConfig {
    /// `(1 − β1^t, 1 − β2^t)`, or `(1, 1)` without bias correction.
    fn corrections(&self, t: u64) -> (f32, f32) {
        if self.bias_correction == BiasCorrection::None {
            return (1.0, 1.0);
        }
        let t = t.min(i32::MAX as u64) as i32;
        ((1.0 - self.beta1.powi(t)) as f32, (1.0 - self.beta2.powi(t)) as f32)
    }
}

impl OptimizerConfig for PartialRowwiseAdamConfig {
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn validate(&self) -> Result<(), InvalidKey> {
        config::positive("lr", self.lr)?;
        config::positive("epsilon", self.epsilon)?;
        config::unit("beta1", self.beta1)?;
        config::unit("beta2", self.beta2)?;
        config::weight_decay(self.lr, self.weight_decay)
    }
    fn state_bytes(&self, rows: usize, dim: usize) -> u64 {
        let (rows, dim) = (rows as u64, dim as u64);
        let row_steps = if self.bias_correction == BiasCorrection::PerRow { rows * 4 } else { 0 };
        rows * dim * 4 + rows * 4 + row_steps + 8 + LazyDecay::state_bytes(self.weight_decay, rows as usize)
    }
    fn init(&self, rows: usize, dim: usize) -> Box<dyn TableOptimizer> {
        Box::new(PartialRowwiseAdam::new(self.clone(), rows, dim))
    }
    fn hparams(&self) -> Vec<(&'static str, HParam)> {
        vec![
            ("lr", HParam::Num(self.lr)),
            ("beta1", HParam::Num(self.beta1)),
            ("beta2", HParam::Num(self.beta2)),
            ("epsilon", HParam::Num(self.epsilon)),
            ("weight_decay", HParam::Num(self.weight_decay)),
            ("bias_correction", HParam::Str(self.bias_correction.name())),
        ]
    }
}

#[derive(Debug)]
pub struct PartialRowwiseAdam {
    config: PartialRowwiseAdamConfig,
    dim: usize,
    step: u64,
    /// First moment, row-major like the table.
    m: AlignedVec<f32>,
    /// Second moment, one per row.
    v_row: AlignedVec<f32>,
    /// Per-row step counts (only with `bias_correction = "per_row"`).
    row_steps: AlignedVec<u32>,
    decay: LazyDecay,
}

impl PartialRowwiseAdam {
    pub fn new(config: PartialRowwiseAdamConfig, rows: usize, dim: usize) -> Self {
        let per_row = config.bias_correction == BiasCorrection::PerRow;
        PartialRowwiseAdam {
            dim,
            step: 0,
            m: AlignedVec::zeroed(rows * dim),
            v_row: AlignedVec::zeroed(rows),
            row_steps: AlignedVec::zeroed(if per_row { rows } else { 0 }),
            decay: LazyDecay::new(config.weight_decay, rows),
            config,
        }
    }
}

impl TableOptimizer for PartialRowwiseAdam {
    fn name(&self) -> &'static str {
        "partial_rowwise_adam"
    }

    fn step(&mut self, table: &mut EmbeddingTable, grad: &SparseGrad, lr: f32) {
        let dim = self.dim;
        assert_eq!((table.dim(), grad.dim()), (dim, dim), "table, gradient and optimizer dims differ");
        self.step += 1;
        self.decay.begin_step(lr);
        let c = &self.config;
        let global = c.corrections(self.step);
        let (b1, b2, eps) = (c.beta1 as f32, c.beta2 as f32, c.epsilon as f32);
        let (one_b1, one_b2) = ((1.0 - c.beta1) as f32, (1.0 - c.beta2) as f32);
        let log_decay = self.decay.log_decay();
        let arrays = (
            TableRowsMut::new(table),
            RowsMut::new(&mut self.m, dim),
            PerRowMut::new(&mut self.v_row),
            PerRowMut::optional(&mut self.row_steps),
            self.decay.marks(),
        );
        for_each_grad_row(grad, arrays, |(w, m, v, row_steps, mark), g| {
            let (bc1, bc2) = match row_steps {
                Some(k) => {
                    *k += 1;
                    c.corrections(*k as u64)
                }
                None => global,
            };
            *v = b2 * *v + one_b2 * (g.iter().map(|g| g * g).sum::<f32>() / dim as f32);
            let scale = lr / (bc1 * ((*v / bc2).sqrt() + eps));
            let decay = mark.map_or(1.0, |mark| LazyDecay::catch_up(log_decay, mark));
            for ((w, m), &g) in w.iter_mut().zip(m.iter_mut()).zip(g) {
                *m = b1 * *m + one_b1 * g;
                *w = *w * decay - scale * *m;
            }
        });
    }

    fn steps(&self) -> u64 {
        self.step
    }
    fn per_row_state(&self) -> &'static [&'static str] {
        &["m", "v_row", "row_steps", "row_log_decay"]
    }
    fn state(&self) -> Vec<(&'static str, StateData<'_>)> {
        let mut s = vec![
            ("step", StateData::U64(std::slice::from_ref(&self.step))),
            ("m", StateData::F32(&self.m)),
            ("v_row", StateData::F32(&self.v_row)),
        ];
        if !self.row_steps.is_empty() {
            s.push(("row_steps", StateData::U32(&self.row_steps)));
        }
        decay::push_arrays(&mut s, &self.decay);
        s
    }
    fn load_state(&mut self, source: &dyn StateSource) -> Result<(), StateError> {
        source.read_u64("step", std::slice::from_mut(&mut self.step))?;
        source.read_f32("m", &mut self.m)?;
        source.read_f32("v_row", &mut self.v_row)?;
        if !self.row_steps.is_empty() {
            source.read_u32("row_steps", &mut self.row_steps)?;
        }
        self.decay.load(source)
    }
    fn apply_pending_decay(&mut self, table: &mut EmbeddingTable) {
        self.decay.apply_pending(table);
    }
}
