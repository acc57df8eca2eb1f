//! Table optimizers against a hand-written f64 reference of the documented update
//! (TF LazyAdam / torch SparseAdam form), step by step.

#![allow(clippy::needless_range_loop, clippy::type_complexity)] // reference formulas index like the maths they restate

use std::collections::{BTreeMap, HashMap};

use sparseburn::model::{EmbeddingTable, SparseGrad};
use sparseburn::optim::{
    AdamConfig, BiasCorrection, StateData, StateError, StateSource, TableOptimizer, TableOptimizerConfig, TableOptimizerKind,
};

const DIM: usize = 3;

/// Reference Adam in f64, written from the formulas, not from the implementation.
struct Reference {
    lazy: bool,
    c: AdamConfig,
    w: Vec<Vec<f64>>,
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    t: u64,
    row_t: Vec<u64>,
    /// Learning rate of every step so far (for catch-up decay).
    lrs: Vec<f64>,
    /// Step at which each row last received its decay.
    last_decayed: Vec<usize>,
}

impl Reference {
    fn new(lazy: bool, c: AdamConfig, init: &[f32]) -> Self {
        let w: Vec<Vec<f64>> = init.chunks(DIM).map(|r| r.iter().map(|&x| x as f64).collect()).collect();
        let n = w.len();
        Reference { lazy, c, m: vec![vec![0.0; DIM]; n], v: vec![vec![0.0; DIM]; n], w, t: 0, row_t: vec![0; n], lrs: vec![], last_decayed: vec![0; n] }
    }

    /// `grads`: possibly duplicated `(row, gradient)` pairs.
    fn step(&mut self, grads: &[(u32, [f64; DIM])], lr: f64) {
        let mut summed: BTreeMap<usize, [f64; DIM]> = BTreeMap::new();
        for (r, g) in grads {
            let e = summed.entry(*r as usize).or_insert([0.0; DIM]);
            (0..DIM).for_each(|j| e[j] += g[j]);
        }
        self.t += 1;
        self.lrs.push(lr);
        let (b1, b2, eps) = (self.c.beta1, self.c.beta2, self.c.epsilon);
        for r in 0..self.w.len() {
            let present = summed.contains_key(&r);
            if self.lazy && !present {
                continue;
            }
            let g = summed.get(&r).copied().unwrap_or([0.0; DIM]);
            self.row_t[r] += 1;
            let t = match self.c.bias_correction {
                BiasCorrection::Global => self.t,
                BiasCorrection::PerRow => self.row_t[r],
                BiasCorrection::None => 0,
            };
            let step_size = if t == 0 { lr } else { lr * (1.0 - b2.powi(t as i32)).sqrt() / (1.0 - b1.powi(t as i32)) };
            let decay: f64 = self.lrs[self.last_decayed[r]..].iter().map(|l| 1.0 - l * self.c.weight_decay).product();
            self.last_decayed[r] = self.lrs.len();
            for j in 0..DIM {
                self.m[r][j] = b1 * self.m[r][j] + (1.0 - b1) * g[j];
                self.v[r][j] = b2 * self.v[r][j] + (1.0 - b2) * g[j] * g[j];
                self.w[r][j] = self.w[r][j] * decay - step_size * self.m[r][j] / (self.v[r][j].sqrt() + eps);
            }
        }
    }
}

fn sparse(grads: &[(u32, [f64; DIM])]) -> SparseGrad {
    let rows: Vec<u32> = grads.iter().map(|g| g.0).collect();
    let values: Vec<f32> = grads.iter().flat_map(|g| g.1.map(|x| x as f32)).collect();
    SparseGrad::from_duplicates(DIM, &rows, &values)
}

fn init_table(rows: usize) -> EmbeddingTable {
    let data = (0..rows * DIM).map(|i| ((i * 37 % 11) as f32 - 5.0) / 10.0).collect();
    EmbeddingTable::from_vec(rows, DIM, data)
}

fn assert_close(table: &EmbeddingTable, reference: &Reference, what: &str) {
    for (r, row) in reference.w.iter().enumerate() {
        for j in 0..DIM {
            let (got, want) = (table.row(r)[j] as f64, row[j]);
            assert!((got - want).abs() <= 1e-6 + 1e-5 * want.abs(), "{what}: row {r} col {j}: got {got}, reference {want}");
        }
    }
}

/// Steps designed to hit the interesting cases: duplicates in a batch, a row
/// with non-zero moments absent for several steps, rows seen once.
fn schedule() -> Vec<(Vec<(u32, [f64; DIM])>, f64)> {
    vec![
        (vec![(1, [0.1, -0.2, 0.3]), (1, [0.1, 0.0, -0.1]), (3, [1.0, 2.0, -3.0])], 0.01),
        (vec![(0, [0.5, 0.5, 0.5]), (3, [-0.2, 0.1, 0.0])], 0.02),
        (vec![(2, [0.05, -0.05, 0.2])], 0.015),
        (vec![(4, [0.3, 0.3, -0.3]), (2, [0.1, 0.1, 0.1])], 0.01),
        (vec![(1, [-0.4, 0.2, 0.1]), (1, [0.2, 0.2, 0.2]), (1, [0.0, -0.1, 0.0])], 0.005),
        (vec![(3, [0.7, -0.1, 0.05])], 0.02),
    ]
}

fn run_against_reference(kind: TableOptimizerKind, adam: AdamConfig) {
    let rows = 5;
    let config = TableOptimizerConfig {
        kind,
        lr: 0.01,
        beta1: adam.beta1,
        beta2: adam.beta2,
        epsilon: adam.epsilon,
        weight_decay: adam.weight_decay,
        bias_correction: adam.bias_correction,
    };
    let mut table = init_table(rows);
    let mut opt = config.init(rows, DIM);
    let mut reference = Reference::new(kind == TableOptimizerKind::LazyAdam, adam, table.as_slice());
    for (i, (grads, lr)) in schedule().into_iter().enumerate() {
        opt.step(&mut table, &sparse(&grads), lr as f32);
        reference.step(&grads, lr);
        assert_close(&table, &reference, &format!("{} {adam:?} after step {}", kind.name(), i + 1));
    }
    assert_eq!(opt.steps(), schedule().len() as u64);
}

fn adam(bias_correction: BiasCorrection, weight_decay: f64) -> AdamConfig {
    AdamConfig { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay, bias_correction }
}

#[test]
fn lazy_adam_matches_reference() {
    run_against_reference(TableOptimizerKind::LazyAdam, adam(BiasCorrection::Global, 0.0));
}

#[test]
fn lazy_adam_per_row_bias_correction_matches_reference() {
    run_against_reference(TableOptimizerKind::LazyAdam, adam(BiasCorrection::PerRow, 0.0));
}

#[test]
fn lazy_adam_catch_up_weight_decay_matches_reference_under_a_schedule() {
    run_against_reference(TableOptimizerKind::LazyAdam, adam(BiasCorrection::Global, 0.5));
    run_against_reference(TableOptimizerKind::LazyAdam, adam(BiasCorrection::PerRow, 0.5));
}

#[test]
fn dense_adam_matches_reference() {
    run_against_reference(TableOptimizerKind::DenseAdam, adam(BiasCorrection::Global, 0.0));
    run_against_reference(TableOptimizerKind::DenseAdam, adam(BiasCorrection::Global, 0.5));
    run_against_reference(TableOptimizerKind::DenseAdam, adam(BiasCorrection::None, 0.0));
}

#[test]
fn duplicate_ids_are_summed_before_the_update() {
    let run = |grads: &[(u32, [f64; DIM])]| {
        let mut table = init_table(3);
        let mut opt = adam(BiasCorrection::Global, 0.0).init_lazy(3, DIM);
        opt.step(&mut table, &sparse(grads), 0.01);
        table
    };
    // [0.1, 0.1] @ row 1 must equal [0.2] @ row 1 exactly (0.1f32 + 0.1f32 == 0.2f32).
    assert_eq!(run(&[(1, [0.1; DIM]), (1, [0.1; DIM])]), run(&[(1, [0.2; DIM])]));
    // An uncoalesced duplicate split 1/4 + 3/4 matches the whole gradient.
    let whole = run(&[(1, [0.8, -0.4, 1.2])]);
    let split = run(&[(1, [0.2, -0.1, 0.3]), (1, [0.6, -0.3, 0.9])]);
    for (a, b) in whole.as_slice().iter().zip(split.as_slice()) {
        assert!((a - b).abs() < 1e-7, "{a} vs {b}");
    }
}

#[test]
fn lazy_and_dense_differ_exactly_when_a_row_with_moments_is_absent() {
    let c = adam(BiasCorrection::Global, 0.0);
    let (mut lazy_t, mut dense_t) = (init_table(2), init_table(2));
    let (mut lazy, mut dense) = (c.init_lazy(2, DIM), c.init_dense(2, DIM));
    // Both rows present: identical, bit for bit (same kernel, same order).
    let both = sparse(&[(0, [0.3, -0.2, 0.1]), (1, [0.5, 0.4, -0.6])]);
    for _ in 0..3 {
        lazy.step(&mut lazy_t, &both, 0.01);
        dense.step(&mut dense_t, &both, 0.01);
    }
    assert_eq!(lazy_t, dense_t);
    // Row 1 absent: lazy leaves it alone, dense keeps moving it with its momentum.
    let only0 = sparse(&[(0, [0.3, -0.2, 0.1])]);
    let row1_before = lazy_t.row(1).to_vec();
    lazy.step(&mut lazy_t, &only0, 0.01);
    dense.step(&mut dense_t, &only0, 0.01);
    assert_eq!(lazy_t.row(1), &row1_before[..]);
    assert_ne!(dense_t.row(1), &row1_before[..]);
    assert_eq!(lazy_t.row(0), dense_t.row(0));
}

/// A state source backed by owned arrays (what a checkpoint reader does).
#[derive(Default)]
struct Saved(HashMap<String, (Vec<f32>, Vec<u32>, Vec<f64>, Vec<u64>)>);

impl Saved {
    fn from(opt: &dyn TableOptimizer) -> Self {
        let mut s = Saved::default();
        for (name, data) in opt.state() {
            let e = s.0.entry(name.to_string()).or_default();
            match data {
                StateData::F32(x) => e.0 = x.to_vec(),
                StateData::U32(x) => e.1 = x.to_vec(),
                StateData::F64(x) => e.2 = x.to_vec(),
                StateData::U64(x) => e.3 = x.to_vec(),
            }
        }
        s
    }
    fn get<T: Copy>(&self, name: &str, pick: impl Fn(&(Vec<f32>, Vec<u32>, Vec<f64>, Vec<u64>)) -> &Vec<T>, into: &mut [T]) -> Result<(), StateError> {
        let v = pick(self.0.get(name).ok_or_else(|| StateError::Missing(name.into()))?);
        if v.len() != into.len() {
            return Err(StateError::WrongLength { name: name.into(), expected: into.len(), found: v.len() });
        }
        into.copy_from_slice(v);
        Ok(())
    }
}

impl StateSource for Saved {
    fn read_f32(&self, name: &str, into: &mut [f32]) -> Result<(), StateError> {
        self.get(name, |e| &e.0, into)
    }
    fn read_u32(&self, name: &str, into: &mut [u32]) -> Result<(), StateError> {
        self.get(name, |e| &e.1, into)
    }
    fn read_f64(&self, name: &str, into: &mut [f64]) -> Result<(), StateError> {
        self.get(name, |e| &e.2, into)
    }
    fn read_u64(&self, name: &str, into: &mut [u64]) -> Result<(), StateError> {
        self.get(name, |e| &e.3, into)
    }
}

#[test]
fn optimizer_state_round_trips_exactly() {
    for kind in [TableOptimizerKind::LazyAdam, TableOptimizerKind::DenseAdam, TableOptimizerKind::Sgd] {
        let config = TableOptimizerConfig { kind, weight_decay: 0.1, bias_correction: BiasCorrection::PerRow, ..Default::default() };
        let steps = schedule();
        let mut table = init_table(5);
        let mut opt = config.init(5, DIM);
        for (g, lr) in &steps[..3] {
            opt.step(&mut table, &sparse(g), *lr as f32);
        }
        let saved = Saved::from(opt.as_ref());
        let mut restored = config.init(5, DIM);
        restored.load_state(&saved).unwrap();
        let mut table2 = table.clone();
        for (g, lr) in &steps[3..] {
            opt.step(&mut table, &sparse(g), *lr as f32);
            restored.step(&mut table2, &sparse(g), *lr as f32);
        }
        assert_eq!(table, table2, "{}", kind.name());
        assert_eq!(opt.steps(), restored.steps());
        // A wrong-sized state is refused with a message naming the array.
        let mut other = config.init(6, DIM);
        let err = other.load_state(&saved);
        if kind != TableOptimizerKind::Sgd {
            assert!(matches!(err, Err(StateError::WrongLength { .. })), "{}: {err:?}", kind.name());
        }
    }
}

#[test]
fn sgd_updates_only_present_rows() {
    let mut table = init_table(4);
    let before = table.clone();
    let mut opt = TableOptimizerConfig { kind: TableOptimizerKind::Sgd, ..Default::default() }.init(4, DIM);
    opt.step(&mut table, &sparse(&[(2, [1.0, -2.0, 0.5]), (2, [1.0, 0.0, 0.0])]), 0.1);
    for r in [0, 1, 3] {
        assert_eq!(table.row(r), before.row(r));
    }
    let want = [before.row(2)[0] as f64 - 0.2, before.row(2)[1] as f64 + 0.2, before.row(2)[2] as f64 - 0.05];
    for j in 0..DIM {
        assert!((table.row(2)[j] as f64 - want[j]).abs() < 1e-6);
    }
}
