//! Plain sparse SGD: `w ← w − lr·g` for the rows in the batch. The simplest baseline.

use super::grad_rows::for_each_grad_row;
use super::state::{StateData, StateError, StateSource};
use super::TableOptimizer;
use crate::model::table::{prefetch, SharedMut};
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
        assert_eq!(grad.dim(), dim, "gradient and table dims differ");
        let table_rows = table.rows();
        let w = SharedMut(table.as_mut_slice().as_mut_ptr());
        let fetch = |r: usize| prefetch(w.at(r * dim), dim);
        for_each_grad_row(grad, table_rows, fetch, |r, g| {
            // SAFETY: for_each_grad_row hands out each row once and checks it is
            // < table.rows(), so this call alone writes row r.
            let w = unsafe { w.slice(r * dim, dim) };
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
