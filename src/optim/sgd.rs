//! Plain sparse SGD: `w ← w − lr·g` for the rows in the batch. The simplest baseline.

use rayon::prelude::*;

use super::state::{StateData, StateError, StateSource};
use super::TableOptimizer;
use crate::model::{EmbeddingTable, SparseGrad};

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
        // Gather the touched rows' (disjoint) slices, then update them in parallel.
        let mut rows: Vec<&mut [f32]> = Vec::with_capacity(grad.len());
        let mut rest = table.as_mut_slice();
        let mut consumed = 0;
        for &r in grad.rows() {
            let start = r as usize * dim - consumed;
            let (_, tail) = rest.split_at_mut(start);
            let (row, tail) = tail.split_at_mut(dim);
            rows.push(row);
            rest = tail;
            consumed = (r as usize + 1) * dim;
        }
        rows.par_iter_mut().enumerate().with_min_len(256).for_each(|(k, w)| {
            for (w, g) in w.iter_mut().zip(grad.row_values(k)) {
                *w -= lr * g;
            }
        });
    }

    fn steps(&self) -> u64 {
        self.step
    }
    fn state(&self) -> Vec<(&'static str, StateData<'_>)> {
        vec![("step", StateData::U64(std::slice::from_ref(&self.step)))]
    }
    fn load_state(&mut self, source: &dyn StateSource) -> Result<(), StateError> {
        source.read_u64("step", std::slice::from_mut(&mut self.step))
    }
}
