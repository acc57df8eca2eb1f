//! Sparse row gradients: sorted unique row ids and one summed gradient row each.

use rayon::prelude::*;

/// The gradient of a loss with respect to an embedding table, holding only the
/// rows a batch touched. Rows are sorted and unique; duplicates were summed in
/// a fixed order (by position in the batch), so the result is deterministic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseGrad {
    dim: usize,
    rows: Vec<u32>,
    values: Vec<f32>,
    /// Scratch for coalescing: `(row, occurrence)` pairs, reused across steps.
    order: Vec<(u32, u32)>,
    segments: Vec<usize>,
}

impl SparseGrad {
    pub fn new(dim: usize) -> Self {
        SparseGrad { dim, ..Default::default() }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Sorted unique row ids.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }
    /// `rows().len() × dim` summed gradient rows, in the order of `rows()`.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
    pub fn row_values(&self, k: usize) -> &[f32] {
        &self.values[k * self.dim..(k + 1) * self.dim]
    }
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Builds the gradient from possibly-duplicated `(row, value)` pairs
    /// (`values` is `rows.len() × dim`), summing duplicates like TF's
    /// `_deduplicate_indexed_slices` and torch's `coalesce`.
    pub fn from_duplicates(dim: usize, rows: &[u32], values: &[f32]) -> Self {
        assert_eq!(values.len(), rows.len() * dim, "values must be rows.len() * dim");
        let mut grad = SparseGrad::new(dim);
        grad.coalesce(rows.len(), |k| rows[k], |k, out| {
            for (o, v) in out.iter_mut().zip(&values[k * dim..(k + 1) * dim]) {
                *o += v;
            }
        });
        grad
    }

    /// Recomputes this gradient from `n` occurrences. `row_of(k)` names the row of
    /// occurrence `k`; `add(k, out)` adds occurrence `k`'s contribution into `out`.
    /// Occurrences of one row are summed in increasing `k`, in parallel over rows.
    pub(crate) fn coalesce(
        &mut self,
        n: usize,
        row_of: impl Fn(usize) -> u32,
        add: impl Fn(usize, &mut [f32]) + Sync,
    ) {
        let dim = self.dim;
        self.order.clear();
        self.order.extend((0..n).map(|k| (row_of(k), k as u32)));
        // Keys are unique (occurrence index breaks ties), so unstable sort is deterministic.
        self.order.par_sort_unstable();

        self.rows.clear();
        self.segments.clear();
        for (i, &(row, _)) in self.order.iter().enumerate() {
            if self.rows.last() != Some(&row) {
                self.rows.push(row);
                self.segments.push(i);
            }
        }
        self.segments.push(self.order.len());

        self.values.clear();
        self.values.resize(self.rows.len() * dim, 0.0);
        let order = &self.order;
        let segments = &self.segments;
        self.values
            .par_chunks_mut(dim)
            .with_min_len(64)
            .enumerate()
            .for_each(|(u, out)| {
                for &(_, k) in &order[segments[u]..segments[u + 1]] {
                    add(k as usize, out);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_summed_and_rows_sorted() {
        let g = SparseGrad::from_duplicates(2, &[5, 1, 5, 3], &[1.0, 2.0, 10.0, 20.0, 0.5, 0.25, 7.0, 8.0]);
        assert_eq!(g.rows(), &[1, 3, 5]);
        assert_eq!(g.values(), &[10.0, 20.0, 7.0, 8.0, 1.5, 2.25]);
    }
}
