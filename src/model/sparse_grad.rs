//! Sparse row gradients: sorted unique row ids and one summed gradient row each.

use rayon::prelude::*;

/// The gradient of a loss with respect to an embedding table, holding only the
/// rows a batch touched. Rows are sorted and unique; duplicates were summed in
/// a fixed order (by position in the batch), so the result is deterministic.
#[derive(Clone, Debug, Default)]
pub struct SparseGrad {
    dim: usize,
    rows: Vec<u32>,
    values: Vec<f32>,
    /// Scratch for coalescing: `(row, occurrence)` pairs, reused across steps.
    order: Vec<(u32, u32)>,
    scratch: Vec<(u32, u32)>,
    segments: Vec<usize>,
}

/// Equal when they hold the same gradient (scratch buffers are not compared).
impl PartialEq for SparseGrad {
    fn eq(&self, other: &Self) -> bool {
        self.dim == other.dim && self.rows == other.rows && self.values == other.values
    }
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

    /// Renames every row `r` as `rename(r)`, which must keep rows sorted and
    /// unique (e.g. a rank's own rows `id % W == rank` as local ids `id / W`).
    pub fn renumber_rows(&mut self, rename: impl Fn(u32) -> u32) {
        self.rows.iter_mut().for_each(|r| *r = rename(*r));
        debug_assert!(self.rows.windows(2).all(|p| p[0] < p[1]), "renumbered rows must stay sorted and unique");
    }

    /// Builds the gradient from possibly-duplicated `(row, value)` pairs
    /// (`values` is `rows.len() × dim`), summing duplicates like TF's
    /// `_deduplicate_indexed_slices` and torch's `coalesce`.
    pub fn from_duplicates(dim: usize, rows: &[u32], values: &[f32]) -> Self {
        assert_eq!(values.len(), rows.len() * dim, "values must be rows.len() * dim");
        let mut grad = SparseGrad::new(dim);
        grad.coalesce(|pairs| pairs.extend(rows.iter().enumerate().map(|(k, &r)| (r, k as u32))), |k| (1.0, &values[k * dim..(k + 1) * dim]));
        grad
    }

    /// Recomputes this gradient from occurrences given as `(row, source)` pairs,
    /// pushed by `fill`. Occurrence `source` contributes `scale · values` where
    /// `(scale, values) = contribution(source)`; a row's contributions are
    /// summed in the order `fill` pushed them (so the result is deterministic),
    /// in parallel over rows.
    pub(crate) fn coalesce<'a>(&mut self, fill: impl FnOnce(&mut Vec<(u32, u32)>), contribution: impl Fn(usize) -> (f32, &'a [f32]) + Sync) {
        let dim = self.dim;
        self.order.clear();
        fill(&mut self.order);
        // Stable, so equal rows keep their push order.
        radix_sort_by_row(&mut self.order, &mut self.scratch);

        self.rows.clear();
        self.segments.clear();
        for (i, &(row, _)) in self.order.iter().enumerate() {
            if self.rows.last() != Some(&row) {
                self.rows.push(row);
                self.segments.push(i);
            }
        }
        self.segments.push(self.order.len());

        // Every value is overwritten below, so only a grown tail gets initialised.
        self.values.resize(self.rows.len() * dim, 0.0);
        let order = &self.order;
        let segments = &self.segments;
        self.values.par_chunks_mut(dim).with_min_len(ROWS_PER_TASK).enumerate().for_each(|(u, out)| {
            let occurrences = &order[segments[u]..segments[u + 1]];
            // The first occurrence is stored, the others added: no zeroing pass.
            let (scale, g) = contribution(occurrences[0].1 as usize);
            for (o, g) in out.iter_mut().zip(&g[..dim]) {
                *o = scale * g;
            }
            for &(_, k) in &occurrences[1..] {
                let (scale, g) = contribution(k as usize);
                for (o, g) in out.iter_mut().zip(&g[..dim]) {
                    *o += scale * g;
                }
            }
        });
    }
}

/// Unique rows per rayon task when summing: each row is a few adds of 256
/// bytes, so tasks must be large for the work to outweigh scheduling.
const ROWS_PER_TASK: usize = 256;

/// Sorts `(row, source)` pairs by row, stably: LSD radix sort on 12-bit digits
/// (two passes for tables up to 16M rows; the 16 KiB of counts stay in L1),
/// only as many passes as the largest row needs, skipping a pass where every
/// pair has the same digit. A batch's ~10k pairs take a few microseconds,
/// where a comparison sort spent a large share of the backward pass.
fn radix_sort_by_row(pairs: &mut Vec<(u32, u32)>, scratch: &mut Vec<(u32, u32)>) {
    const BITS: u32 = 12;
    const MASK: u32 = (1 << BITS) - 1;
    let n = pairs.len();
    if n < 64 {
        pairs.sort_by_key(|p| p.0); // stable; radix setup would dominate
        return;
    }
    let max = pairs.iter().map(|p| p.0).max().unwrap_or(0);
    scratch.clear();
    scratch.resize(n, (0, 0));
    let mut counts = [0u32; 1 << BITS];
    let mut shift = 0;
    while shift < u32::BITS && (shift == 0 || max >> shift != 0) {
        counts.fill(0);
        for p in pairs.iter() {
            counts[((p.0 >> shift) & MASK) as usize] += 1;
        }
        if counts.iter().any(|&c| c as usize == n) {
            shift += BITS; // one digit for all: this pass would not move anything
            continue;
        }
        let mut sum = 0;
        for c in counts.iter_mut() {
            (*c, sum) = (sum, sum + *c);
        }
        for &p in pairs.iter() {
            let d = ((p.0 >> shift) & MASK) as usize;
            scratch[counts[d] as usize] = p;
            counts[d] += 1;
        }
        std::mem::swap(pairs, scratch);
        shift += BITS;
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

    #[test]
    fn radix_sort_is_a_stable_sort_by_row() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (n, max) in [(10, 5u32), (1000, 7), (5000, 3000), (5000, 10_000_000), (3000, u32::MAX)] {
            let pairs: Vec<(u32, u32)> = (0..n).map(|k| (rng.random_range(0..=max), k as u32)).collect();
            let mut want = pairs.clone();
            want.sort_by_key(|p| p.0);
            let (mut got, mut scratch) = (pairs, Vec::new());
            radix_sort_by_row(&mut got, &mut scratch);
            assert_eq!(got, want, "n {n}, max {max}");
        }
    }

    #[test]
    fn reused_buffers_give_the_same_gradient() {
        let mut g = SparseGrad::from_duplicates(2, &[9, 9, 2, 700, 2], &[1.0; 10]);
        let fresh = SparseGrad::from_duplicates(2, &[4, 1], &[1.0, 2.0, 3.0, 4.0]);
        let values = [1.0, 2.0, 3.0, 4.0];
        g.coalesce(|pairs| pairs.extend([(4, 0), (1, 1)]), |k| (1.0, &values[2 * k..2 * k + 2]));
        assert_eq!((g.rows(), g.values()), (fresh.rows(), fresh.values()));
    }
}
