//! Plain sparse SGD: `w ← w − lr·g` for the rows in the batch. The simplest baseline.

use super::adam::{PREFETCH_ROWS, ROWS_PER_TASK};
use super::state::{StateData, StateError, StateSource};
use super::TableOptimizer;
use crate::model::table::{for_each_claimed, prefetch, SharedMut};
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
        let rows = grad.rows();
        if let Some(&last) = rows.last() {
            assert!((last as usize) < table.rows(), "row id {last} out of range for {} rows", table.rows());
        }
        let w = SharedMut(table.as_mut_slice().as_mut_ptr());
        // Same shape as LazyAdam: runs of sorted rows per task, rows ahead prefetched.
        let values = grad.values();
        for_each_claimed(rows.len().div_ceil(ROWS_PER_TASK), |task| {
            let first = task * ROWS_PER_TASK;
            let rows = &rows[first..(first + ROWS_PER_TASK).min(rows.len())];
            let g = &values[first * dim..(first + rows.len()) * dim];
            let fetch = |k: usize| {
                if let Some(&ahead) = rows.get(k) {
                    prefetch(w.0.wrapping_add(ahead as usize * dim), dim);
                }
            };
            (0..PREFETCH_ROWS).for_each(fetch);
            for (k, (&row, g)) in rows.iter().zip(g.chunks_exact(dim)).enumerate() {
                fetch(k + PREFETCH_ROWS);
                // SAFETY: rows are sorted, unique and < table.rows() (checked above), so
                // each task writes a distinct row.
                let w = unsafe { w.slice(row as usize * dim, dim) };
                for (w, g) in w.iter_mut().zip(g) {
                    *w -= lr * g;
                }
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
