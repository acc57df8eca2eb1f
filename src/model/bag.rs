//! Fused EmbeddingBag: pools each bag's rows straight from the table, and turns
//! the pooled gradient back into a sparse row gradient. Nothing of shape
//! `[batch, tokens, dim]` or of table size is ever allocated.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::sparse_grad::SparseGrad;

/// How a bag's rows are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Average of the rows (fastText).
    #[default]
    Mean,
    /// Sum of the rows.
    Sum,
    /// Sum divided by √n (TF's `sqrtn` combiner).
    Sqrtn,
}

impl Pooling {
    /// The factor each row of a bag of `n` rows is multiplied by. An empty bag pools to zero.
    pub fn scale(self, n: usize) -> f32 {
        match (self, n) {
            (_, 0) => 0.0,
            (Pooling::Sum, _) => 1.0,
            (Pooling::Mean, n) => 1.0 / n as f32,
            (Pooling::Sqrtn, n) => 1.0 / (n as f32).sqrt(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Sum => "sum",
            Pooling::Sqrtn => "sqrtn",
        }
    }
}

/// A batch of bags in CSR form: bag `b` holds `ids[offsets[b]..offsets[b + 1]]`.
#[derive(Clone, Copy, Debug)]
pub struct Bags<'a> {
    pub ids: &'a [u32],
    pub offsets: &'a [usize],
}

impl<'a> Bags<'a> {
    pub fn new(ids: &'a [u32], offsets: &'a [usize]) -> Self {
        assert!(!offsets.is_empty() && offsets[0] == 0, "offsets must start at 0");
        assert_eq!(*offsets.last().unwrap(), ids.len(), "offsets must end at ids.len()");
        Bags { ids, offsets }
    }
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn bag(&self, b: usize) -> &'a [u32] {
        &self.ids[self.offsets[b]..self.offsets[b + 1]]
    }
}

/// Pools every bag from the row-major `table` (`dim` columns) into `out`
/// (`bags.len() × dim`), in parallel over bags.
pub fn bag_forward(table: &[f32], dim: usize, bags: Bags<'_>, pooling: Pooling, out: &mut [f32]) {
    assert_eq!(out.len(), bags.len() * dim, "output must be batch * dim");
    out.par_chunks_mut(dim).enumerate().for_each(|(b, pooled)| {
        pool_one(table, dim, bags.bag(b), pooling, pooled);
    });
}

/// Pools a single bag into `out` (`dim` values). Used by the predictor too, so
/// serving and training pool identically.
pub fn pool_one(table: &[f32], dim: usize, ids: &[u32], pooling: Pooling, out: &mut [f32]) {
    out.fill(0.0);
    for &id in ids {
        let row = &table[id as usize * dim..(id as usize + 1) * dim];
        for (o, r) in out.iter_mut().zip(row) {
            *o += r;
        }
    }
    let scale = pooling.scale(ids.len());
    if scale != 1.0 {
        out.iter_mut().for_each(|o| *o *= scale);
    }
}

/// Backward of [`bag_forward`]: given `d_pooled` (`bags.len() × dim`), writes the
/// sparse gradient of the table into `grad` (its buffers are reused).
pub fn bag_backward(bags: Bags<'_>, pooling: Pooling, d_pooled: &[f32], grad: &mut SparseGrad) {
    let dim = grad.dim();
    assert_eq!(d_pooled.len(), bags.len() * dim, "d_pooled must be batch * dim");
    // Bag index of every occurrence, found once so `add` is O(dim).
    let mut bag_of = Vec::with_capacity(bags.ids.len());
    for b in 0..bags.len() {
        bag_of.extend(std::iter::repeat_n(b as u32, bags.bag(b).len()));
    }
    grad.coalesce(
        bags.ids.len(),
        |k| bags.ids[k],
        |k, out| {
            let b = bag_of[k] as usize;
            let scale = pooling.scale(bags.bag(b).len());
            for (o, g) in out.iter_mut().zip(&d_pooled[b * dim..(b + 1) * dim]) {
                *o += scale * g;
            }
        },
    );
}
