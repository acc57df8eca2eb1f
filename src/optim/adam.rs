//! Adam over an embedding table, lazy (rows in the batch only) and dense (every row).
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

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::state::{StateData, StateError, StateSource};
use super::TableOptimizer;
use super::grad_rows::for_each_grad_row;
use crate::model::table::{prefetch, AlignedVec, SharedMut};
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
    pub fn init_lazy(self, rows: usize, dim: usize) -> LazyAdam {
        LazyAdam { state: AdamState::new(self, rows, dim) }
    }
    pub fn init_dense(self, rows: usize, dim: usize) -> DenseAdam {
        DenseAdam { state: AdamState::new(self, rows, dim) }
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
}

/// Moments and step counters for one table.
#[derive(Debug)]
struct AdamState {
    config: AdamConfig,
    dim: usize,
    step: u64,
    /// Moments, row-major like the table and cache-line aligned like it, so a
    /// row of each is exactly 4 cache lines at dim 64.
    m: AlignedVec<f32>,
    v: AlignedVec<f32>,
    /// Per-row step counts (only with `BiasCorrection::PerRow`).
    row_steps: AlignedVec<u32>,
    /// Σ ln(1 − lr·wd) over all steps so far (only with weight decay).
    log_decay: f64,
    /// Each row's `log_decay` when its decay was last applied (only with weight decay).
    row_log_decay: AlignedVec<f64>,
}

impl AdamState {
    fn new(config: AdamConfig, rows: usize, dim: usize) -> Self {
        let per_row = config.bias_correction == BiasCorrection::PerRow;
        let decays = config.weight_decay != 0.0;
        AdamState {
            config,
            dim,
            step: 0,
            m: AlignedVec::zeroed(rows * dim),
            v: AlignedVec::zeroed(rows * dim),
            row_steps: AlignedVec::zeroed(if per_row { rows } else { 0 }),
            log_decay: 0.0,
            row_log_decay: AlignedVec::zeroed(if decays { rows } else { 0 }),
        }
    }

    fn rows(&self) -> usize {
        self.m.len() / self.dim
    }

    /// Panics unless the table and gradient have this state's shape; returns
    /// `dim`. The row check matters for soundness: rows are bounded by the
    /// table, and the update writes the same rows of m and v.
    fn check_shapes(&self, table: &EmbeddingTable, grad: &SparseGrad) -> usize {
        assert_eq!(table.dim(), self.dim, "table and optimizer dims differ");
        assert_eq!(grad.dim(), self.dim, "gradient and optimizer dims differ");
        assert_eq!(table.rows(), self.rows(), "table and optimizer rows differ");
        self.dim
    }

    fn state(&self) -> Vec<(&'static str, StateData<'_>)> {
        let decay = (!self.row_log_decay.is_empty()).then_some((&self.log_decay, &self.row_log_decay[..]));
        adam_state_arrays(&self.step, &self.m, &self.v, &self.row_steps, decay)
    }

    fn load_state(&mut self, source: &dyn StateSource) -> Result<(), StateError> {
        source.read_u64("step", std::slice::from_mut(&mut self.step))?;
        source.read_f32("m", &mut self.m)?;
        source.read_f32("v", &mut self.v)?;
        if !self.row_steps.is_empty() {
            source.read_u32("row_steps", &mut self.row_steps)?;
        }
        if !self.row_log_decay.is_empty() {
            source.read_f64("log_decay", std::slice::from_mut(&mut self.log_decay))?;
            source.read_f64("row_log_decay", &mut self.row_log_decay)?;
        }
        Ok(())
    }

    /// Advances the global step and decay product; returns the global step size
    /// and this step's decay factor for rows that were present last step too.
    fn begin_step(&mut self, lr: f32) -> (f32, f32) {
        self.step += 1;
        let decay = 1.0 - lr as f64 * self.config.weight_decay;
        if self.config.weight_decay != 0.0 {
            self.log_decay += decay.ln();
        }
        (self.config.step_size(lr as f64, self.step), decay as f32)
    }
}

/// An Adam table state as named arrays, in checkpoint order: `step`, `m`, `v`,
/// then `row_steps` (when non-empty) and `log_decay`, `row_log_decay` (when
/// `decay` is given). The host optimizers and the device table both use it, so
/// either reads the other's checkpoints.
pub fn adam_state_arrays<'a>(
    step: &'a u64,
    m: &'a [f32],
    v: &'a [f32],
    row_steps: &'a [u32],
    decay: Option<(&'a f64, &'a [f64])>,
) -> Vec<(&'static str, StateData<'a>)> {
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
struct Coeffs {
    b1: f32,
    b2: f32,
    one_b1: f32,
    one_b2: f32,
    eps: f32,
    /// Whether the CPU has AVX2 (checked once per step).
    avx2: bool,
}

impl Coeffs {
    fn new(c: &AdamConfig) -> Self {
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
fn update_row(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: Option<&[f32]>, c: &Coeffs, step_size: f32, decay: f32) {
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

/// Rows per task of the dense update (a long loop: rayon's own splitting).
const DENSE_ROWS_PER_TASK: usize = 4096;

/// Adam that updates m, v and w only for the rows present in the batch.
#[derive(Debug)]
pub struct LazyAdam {
    state: AdamState,
}

impl TableOptimizer for LazyAdam {
    fn name(&self) -> &'static str {
        "lazy_adam"
    }

    fn step(&mut self, table: &mut EmbeddingTable, grad: &SparseGrad, lr: f32) {
        let dim = self.state.check_shapes(table, grad);
        let (global_step_size, _) = self.state.begin_step(lr);
        let s = &mut self.state;
        let (config, log_decay, lr) = (s.config, s.log_decay, lr as f64);
        let coeffs = Coeffs::new(&config);
        let table_rows = table.rows();
        let w = SharedMut(table.as_mut_slice().as_mut_ptr());
        let m = SharedMut(s.m.as_mut_ptr());
        let v = SharedMut(s.v.as_mut_ptr());
        let row_steps = SharedMut(s.row_steps.as_mut_ptr());
        let row_log_decay = SharedMut(s.row_log_decay.as_mut_ptr());
        let (per_row, decays) = (!s.row_steps.is_empty(), !s.row_log_decay.is_empty());
        let fetch = |r: usize| {
            for p in [w, m, v] {
                prefetch(p.at(r * dim), dim);
            }
        };
        for_each_grad_row(grad, table_rows, fetch, |r, g| {
            // SAFETY: for_each_grad_row hands out each row once and checks it is
            // < table.rows(), so this call alone touches row r of w, m, v and the per-row arrays.
            let (w, m, v) = unsafe { (w.slice(r * dim, dim), m.slice(r * dim, dim), v.slice(r * dim, dim)) };
            let step_size = if per_row {
                // SAFETY: as above.
                let k_i = unsafe { &mut row_steps.slice(r, 1)[0] };
                *k_i += 1;
                config.step_size(lr, *k_i as u64)
            } else {
                global_step_size
            };
            let decay = if decays {
                // Catch up every factor since this row's last update, this step's included.
                // SAFETY: as above.
                let mark = unsafe { &mut row_log_decay.slice(r, 1)[0] };
                let factor = (log_decay - *mark).exp();
                *mark = log_decay;
                factor as f32
            } else {
                1.0
            };
            update_row(w, m, v, Some(g), &coeffs, step_size, decay);
        });
    }

    fn steps(&self) -> u64 {
        self.state.step
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
        let s = &mut self.state;
        if s.row_log_decay.is_empty() {
            return;
        }
        let log_decay = s.log_decay;
        table
            .as_mut_slice()
            .par_chunks_mut(s.dim)
            .zip(s.row_log_decay.par_iter_mut())
            .for_each(|(w, mark)| {
                let factor = (log_decay - *mark).exp() as f32;
                *mark = log_decay;
                w.iter_mut().for_each(|x| *x *= factor);
            });
    }
}

/// Adam that updates every row every step; rows absent from the batch get g = 0.
#[derive(Debug)]
pub struct DenseAdam {
    state: AdamState,
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
        let (step_size, decay) = self.state.begin_step(lr);
        let s = &mut self.state;
        let coeffs = Coeffs::new(&s.config);
        let (log_decay, t) = (s.log_decay, s.step);
        // Every row is present every step, so per-row counts equal the global step.
        s.row_steps.iter_mut().for_each(|k| *k = t as u32);
        s.row_log_decay.iter_mut().for_each(|mark| *mark = log_decay);
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
        self.state.step
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 and SSE2 paths must agree bit for bit, or results would depend on the CPU.
    #[test]
    fn vector_paths_are_bit_identical() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut random = |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(-scale..scale)).collect() };
        let n = 67; // not a multiple of 8: the scalar tail runs too
        let (w0, m0, v0, g) = (random(n, 1.0), random(n, 0.1), random(n, 0.01), random(n, 1.0));
        let v0: Vec<f32> = v0.iter().map(|x| x.abs()).collect();
        let fast = Coeffs::new(&AdamConfig { weight_decay: 0.01, ..Default::default() });
        let mut portable = fast;
        portable.avx2 = false;
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
