//! Adam over an embedding table: the shared config, state and fused row kernel
//! of `lazy_adam` (rows in the batch only) and `dense_adam` (every row).
//!
//! Both use the same update (TF's LazyAdam / torch's SparseAdam form), with `t`
//! the table's global step, or the row's own step count under
//! `BiasCorrection::PerRow`:
//!
//! ```text
//! m ← β1·m + (1−β1)·g
//! v ← β2·v + (1−β2)·g²
//! w ← w·decay − lr·√(1−β2^t)/(1−β1^t) · m/(√v + ε)
//! ```
//!
//! `decay` is decoupled weight decay, `(1 − lr·wd)` per step. A lazy row that
//! was absent for some steps first receives the product of the factors it
//! missed, so lazy and dense agree on decay even under an lr schedule.

use serde::{Deserialize, Serialize};

use super::config::{self, HParam, InvalidKey};
use super::decay::LazyDecay;
use super::state::{StateData, StateError, StateSource};
use crate::mem::AlignedVec;
use crate::model::{EmbeddingTable, SparseGrad};

/// How Adam's bias correction counts steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BiasCorrection {
    /// The table's global step count (TF LazyAdam, torch SparseAdam).
    #[default]
    Global,
    /// Each row's own count of steps it was present in (FBGEMM). Rare rows
    /// otherwise take steps several times larger than lr.
    PerRow,
    /// No bias correction.
    None,
}

impl BiasCorrection {
    /// The config's spelling.
    pub fn name(self) -> &'static str {
        match self {
            BiasCorrection::Global => "global",
            BiasCorrection::PerRow => "per_row",
            BiasCorrection::None => "none",
        }
    }
}

/// Hyper-parameters shared by [`LazyAdam`] and [`DenseAdam`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
    pub bias_correction: BiasCorrection,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 0.0, bias_correction: BiasCorrection::Global }
    }
}

impl AdamConfig {
    pub fn init_lazy(self, rows: usize, dim: usize) -> super::LazyAdam {
        super::LazyAdam::new(self, rows, dim)
    }
    pub fn init_dense(self, rows: usize, dim: usize) -> super::DenseAdam {
        super::DenseAdam::new(self, rows, dim)
    }
    pub fn state_bytes(&self, rows: usize, dim: usize) -> u64 {
        let moments = 2 * rows as u64 * dim as u64 * 4;
        let row_steps = if self.bias_correction == BiasCorrection::PerRow { rows as u64 * 4 } else { 0 };
        let decay_marks = if self.weight_decay != 0.0 { rows as u64 * 8 } else { 0 };
        moments + row_steps + decay_marks
    }

    /// `lr·√(1−β2^t)/(1−β1^t)` (or `lr` without bias correction), in f64.
    pub fn step_size(&self, lr: f64, t: u64) -> f32 {
        if self.bias_correction == BiasCorrection::None {
            return lr as f32;
        }
        let t = t.min(i32::MAX as u64) as i32;
        (lr * (1.0 - self.beta2.powi(t)).sqrt() / (1.0 - self.beta1.powi(t))) as f32
    }

    /// The checks of `[optimizer.table]` for an Adam kind with this `lr`.
    pub(super) fn validate(&self, lr: f64) -> Result<(), InvalidKey> {
        config::positive("lr", lr)?;
        config::positive("epsilon", self.epsilon)?;
        config::unit("beta1", self.beta1)?;
        config::unit("beta2", self.beta2)?;
        config::weight_decay(lr, self.weight_decay)
    }

    /// State bytes of an Adam kind: the per-row arrays, the step count, and the decay sum.
    pub(super) fn total_state_bytes(&self, rows: usize, dim: usize) -> u64 {
        self.state_bytes(rows, dim) + 8 + if self.weight_decay != 0.0 { 8 } else { 0 }
    }

    pub(super) fn hparams(&self, lr: f64) -> Vec<(&'static str, HParam)> {
        vec![
            ("lr", HParam::Num(lr)),
            ("beta1", HParam::Num(self.beta1)),
            ("beta2", HParam::Num(self.beta2)),
            ("epsilon", HParam::Num(self.epsilon)),
            ("weight_decay", HParam::Num(self.weight_decay)),
            ("bias_correction", HParam::Str(self.bias_correction.name())),
        ]
    }
}

/// LazyAdam's bookkeeping, one for the host optimizers and the device table:
/// the global step, each row's own step count (`BiasCorrection::PerRow`) and
/// the catch-up decay marks, all on the host and in f64 where it matters.
/// The moments live with their owner (host arrays or device tensors).
#[derive(Debug)]
pub(super) struct AdamBook {
    pub(super) config: AdamConfig,
    pub(super) step: u64,
    /// Per-row step counts (only with `BiasCorrection::PerRow`).
    pub(super) row_steps: AlignedVec<u32>,
    pub(super) decay: LazyDecay,
}

impl AdamBook {
    pub(super) fn new(config: AdamConfig, rows: usize) -> Self {
        let per_row = config.bias_correction == BiasCorrection::PerRow;
        AdamBook { config, step: 0, row_steps: AlignedVec::zeroed(if per_row { rows } else { 0 }), decay: LazyDecay::new(config.weight_decay, rows) }
    }

    /// Advances the global step and decay product; returns the global step size
    /// and this step's decay factor for rows that were present last step too.
    pub(super) fn begin_step(&mut self, lr: f32) -> (f32, f32) {
        self.step += 1;
        let decay = self.decay.begin_step(lr);
        (self.config.step_size(lr as f64, self.step), decay)
    }

    /// The step size of each of `rows` (sorted, unique) after [`AdamBook::begin_step`]:
    /// from its own count, which this advances, under `BiasCorrection::PerRow`;
    /// `None` (the global step size) otherwise.
    pub(super) fn row_step_sizes(&mut self, rows: &[u32], lr: f32) -> Option<Vec<f32>> {
        if self.row_steps.is_empty() {
            return None;
        }
        let config = self.config;
        Some(
            rows.iter()
                .map(|&r| {
                    let k = &mut self.row_steps[r as usize];
                    *k += 1;
                    config.step_size(lr as f64, *k as u64)
                })
                .collect(),
        )
    }

    /// The decay each of `rows` missed, this step's included; moves their marks
    /// to now (`None` without weight decay).
    pub(super) fn catch_up_rows(&mut self, rows: &[u32]) -> Option<Vec<f32>> {
        self.decay.catch_up_rows(rows.iter().map(|&r| r as usize))
    }

    /// Every row's pending decay, marks moved to now (`None` without weight decay).
    pub(super) fn catch_up_all(&mut self) -> Option<Vec<f32>> {
        self.decay.catch_up_all()
    }

    /// The state arrays with moments `m` and `v`, in checkpoint order.
    pub(super) fn arrays<'a>(&'a self, m: &'a [f32], v: &'a [f32]) -> Vec<(&'static str, StateData<'a>)> {
        adam_state_arrays(&self.step, m, v, &self.row_steps, self.decay.arrays())
    }

    /// Reads `step`, `row_steps` and the decay arrays (not the moments).
    pub(super) fn load(&mut self, source: &dyn StateSource) -> Result<(), StateError> {
        source.read_u64("step", std::slice::from_mut(&mut self.step))?;
        if !self.row_steps.is_empty() {
            source.read_u32("row_steps", &mut self.row_steps)?;
        }
        self.decay.load(source)
    }

    /// Bytes of per-row bookkeeping: step counts and decay marks.
    pub(super) fn row_bytes(&self) -> usize {
        self.row_steps.len() * 4 + self.decay.arrays().map_or(0, |(_, marks)| marks.len() * 8)
    }
}

/// Moments and step counters for one table.
#[derive(Debug)]
pub(super) struct AdamState {
    pub(super) dim: usize,
    pub(super) book: AdamBook,
    /// Moments, row-major like the table and cache-line aligned like it, so a
    /// row of each is exactly 4 cache lines at dim 64.
    pub(super) m: AlignedVec<f32>,
    pub(super) v: AlignedVec<f32>,
}

impl AdamState {
    pub(super) fn new(config: AdamConfig, rows: usize, dim: usize) -> Self {
        AdamState { dim, book: AdamBook::new(config, rows), m: AlignedVec::zeroed(rows * dim), v: AlignedVec::zeroed(rows * dim) }
    }

    fn rows(&self) -> usize {
        self.m.len() / self.dim
    }

    /// Panics unless the table and gradient have this state's shape; returns `dim`.
    pub(super) fn check_shapes(&self, table: &EmbeddingTable, grad: &SparseGrad) -> usize {
        assert_eq!(table.dim(), self.dim, "table and optimizer dims differ");
        assert_eq!(grad.dim(), self.dim, "gradient and optimizer dims differ");
        assert_eq!(table.rows(), self.rows(), "table and optimizer rows differ");
        self.dim
    }

    pub(super) fn state(&self) -> Vec<(&'static str, StateData<'_>)> {
        self.book.arrays(&self.m, &self.v)
    }

    pub(super) fn load_state(&mut self, source: &dyn StateSource) -> Result<(), StateError> {
        source.read_f32("m", &mut self.m)?;
        source.read_f32("v", &mut self.v)?;
        self.book.load(source)
    }
}

/// An Adam table state as named arrays, in checkpoint order: `step`, `m`, `v`,
/// then `row_steps` (when non-empty) and `log_decay`, `row_log_decay` (when
/// `decay` is given). The host optimizers and the device table both use it, so
/// either reads the other's checkpoints.
pub fn adam_state_arrays<'a>(step: &'a u64, m: &'a [f32], v: &'a [f32], row_steps: &'a [u32], decay: Option<(&'a f64, &'a [f64])>) -> Vec<(&'static str, StateData<'a>)> {
    let mut s = vec![("step", StateData::U64(std::slice::from_ref(step))), ("m", StateData::F32(m)), ("v", StateData::F32(v))];
    if !row_steps.is_empty() {
        s.push(("row_steps", StateData::U32(row_steps)));
    }
    if let Some((log_decay, row_log_decay)) = decay {
        s.push(("log_decay", StateData::F64(std::slice::from_ref(log_decay))));
        s.push(("row_log_decay", StateData::F64(row_log_decay)));
    }
    s
}

/// The per-row arrays of [`adam_state_arrays`].
pub const ADAM_ROW_STATE: &[&str] = &["m", "v", "row_steps", "row_log_decay"];

/// Adam's constants for one step, converted to f32 once.
#[derive(Clone, Copy)]
pub(super) struct Coeffs {
    b1: f32,
    b2: f32,
    one_b1: f32,
    one_b2: f32,
    eps: f32,
    /// Whether the CPU has AVX2 (checked once per step).
    avx2: bool,
}

impl Coeffs {
    pub(super) fn new(c: &AdamConfig) -> Self {
        Coeffs {
            b1: c.beta1 as f32,
            b2: c.beta2 as f32,
            one_b1: (1.0 - c.beta1) as f32,
            one_b2: (1.0 - c.beta2) as f32,
            eps: c.epsilon as f32,
            #[cfg(target_arch = "x86_64")]
            avx2: std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            avx2: false,
        }
    }
}

/// The fused per-row update: reads g, m, v, w once and writes m, v, w once.
/// `g = None` is a zero gradient (dense Adam on an absent row).
///
/// Uses AVX2 (8 lanes) where the CPU has it, else the x86-64 baseline SSE2
/// (4 lanes). Both round every operation the same way (IEEE mul, add, sqrt
/// and div; no FMA contraction), so the results are bit-identical: only the
/// time differs. On cached rows the sqrt and div are a large part of the cost.
#[inline(always)]
pub(super) fn update_row(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: Option<&[f32]>, c: &Coeffs, step_size: f32, decay: f32) {
    #[cfg(target_arch = "x86_64")]
    if c.avx2 {
        // SAFETY: `c.avx2` is set only when the CPU reports AVX2 (Coeffs::new).
        return unsafe { update_row_avx2(w, m, v, g, c, step_size, decay) };
    }
    update_row_portable(w, m, v, g, c, step_size, decay)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn update_row_avx2(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: Option<&[f32]>, c: &Coeffs, step_size: f32, decay: f32) {
    update_row_portable(w, m, v, g, c, step_size, decay)
}

/// The update itself, written with zipped iterators over slices re-sliced to
/// one length, so the loop has no bounds checks and the compiler vectorises it.
#[inline(always)]
fn update_row_portable(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: Option<&[f32]>, c: &Coeffs, step_size: f32, decay: f32) {
    let n = w.len();
    let (m, v) = (&mut m[..n], &mut v[..n]);
    match g {
        Some(g) => {
            for (((w, m), v), &g) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(&g[..n]) {
                let mj = c.b1 * *m + c.one_b1 * g;
                let vj = c.b2 * *v + c.one_b2 * g * g;
                *m = mj;
                *v = vj;
                *w = *w * decay - step_size * mj / (vj.sqrt() + c.eps);
            }
        }
        None => {
            for ((w, m), v) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()) {
                let mj = c.b1 * *m;
                let vj = c.b2 * *v;
                *m = mj;
                *v = vj;
                *w = *w * decay - step_size * mj / (vj.sqrt() + c.eps);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::TableOptimizer;

    /// The AVX2 and SSE2 paths must agree bit for bit, or results would depend on the CPU.
    /// Without AVX2 there is one path only: the test says it was skipped
    /// instead of comparing that path with itself.
    #[test]
    fn vector_paths_are_bit_identical() {
        if !Coeffs::new(&AdamConfig::default()).avx2 {
            eprintln!("SKIPPED vector_paths_are_bit_identical: this CPU has no AVX2, so only the portable path exists");
            return;
        }
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut random = |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(-scale..scale)).collect() };
        let n = 67; // not a multiple of 8: the scalar tail runs too
        let (w0, m0, v0, g) = (random(n, 1.0), random(n, 0.1), random(n, 0.01), random(n, 1.0));
        let v0: Vec<f32> = v0.iter().map(|x| x.abs()).collect();
        let fast = Coeffs::new(&AdamConfig { weight_decay: 0.01, ..Default::default() });
        let mut portable = fast;
        portable.avx2 = false;
        assert!(fast.avx2, "the fast path must be the AVX2 one");
        for g in [Some(&g[..]), None] {
            let (mut w1, mut m1, mut v1) = (w0.clone(), m0.clone(), v0.clone());
            let (mut w2, mut m2, mut v2) = (w0.clone(), m0.clone(), v0.clone());
            update_row(&mut w1, &mut m1, &mut v1, g, &fast, 1e-3, 0.999);
            update_row(&mut w2, &mut m2, &mut v2, g, &portable, 1e-3, 0.999);
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!((bits(&w1), bits(&m1), bits(&v1)), (bits(&w2), bits(&m2), bits(&v2)));
            assert_ne!(w1, w0);
        }
    }

    /// A table larger than the optimizer's state must be refused before any
    /// row is written: rows are checked against the table, and m, v would be
    /// written out of bounds.
    #[test]
    #[should_panic(expected = "table and optimizer rows differ")]
    fn lazy_step_refuses_a_table_larger_than_its_state() {
        let mut opt = AdamConfig::default().init_lazy(10, 4);
        let mut table = EmbeddingTable::from_vec(20, 4, vec![0.0; 80]);
        let grad = SparseGrad::from_duplicates(4, &[15], &[1.0; 4]);
        opt.step(&mut table, &grad, 1e-3);
    }
}
