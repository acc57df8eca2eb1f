//! Fused EmbeddingBag: pools each bag's rows straight from the table, and turns
//! the pooled gradient back into a sparse row gradient. Nothing of shape
//! `[batch, tokens, dim]` or of table size is ever allocated.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::half_rows::{RowValue, TableView};
use super::sparse_grad::SparseGrad;
use crate::mem::prefetch;

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

/// Bags per rayon task: a batch of 256 bags gives 32 tasks, enough to balance
/// 2–16 threads while each task is long enough to hide the scheduling cost.
const BAGS_PER_TASK: usize = 8;

/// Ids ahead whose rows are prefetched. Rows are scattered over a table much
/// larger than the caches, so each is a memory access; keeping several in
/// flight is what makes the gather fast (see BENCHMARKS.md).
const PREFETCH_IDS: usize = 16;

#[inline(always)]
fn prefetch_id<H>(table: &[H], dim: usize, ids: &[u32], k: usize) {
    if let Some(&id) = ids.get(k) {
        prefetch(table.as_ptr().wrapping_add(id as usize * dim), dim);
    }
}

/// `out += row`, vectorised (equal lengths, no bounds checks in the loop).
#[inline(always)]
fn add_row<H: RowValue>(out: &mut [f32], row: &[H]) {
    let row = &row[..out.len()];
    for (o, r) in out.iter_mut().zip(row) {
        *o += r.to_f32();
    }
}

#[inline(always)]
fn scale_row(out: &mut [f32], scale: f32) {
    if scale != 1.0 {
        out.iter_mut().for_each(|o| *o *= scale);
    }
}

/// Runs `$call` with `$t` bound to the view's values in their own type:
/// one match per call, the loops inside monomorphised per type.
macro_rules! with_rows {
    ($view:expr, |$t:ident| $call:expr) => {
        match $view {
            TableView::F32($t) => $call,
            TableView::Bf16($t) => $call,
            TableView::F16($t) => $call,
        }
    };
}

/// Pools every bag from the row-major `table` (`dim` columns; f32 values or
/// a [`TableView`] of half rows, widened as they are added) into `out`
/// (`bags.len() × dim`), in parallel over groups of bags.
pub fn bag_forward<'t>(table: impl Into<TableView<'t>>, dim: usize, bags: Bags<'_>, pooling: Pooling, out: &mut [f32]) {
    with_rows!(table.into(), |t| forward_rows(t, dim, bags, pooling, out))
}

fn forward_rows<H: RowValue>(table: &[H], dim: usize, bags: Bags<'_>, pooling: Pooling, out: &mut [f32]) {
    assert_eq!(out.len(), bags.len() * dim, "output must be batch * dim");
    if out.is_empty() {
        return;
    }
    out.par_chunks_mut(dim * BAGS_PER_TASK).enumerate().for_each(|(c, out)| {
        let first = c * BAGS_PER_TASK;
        // All of this task's ids in order, so prefetching runs across bag boundaries.
        let ids = &bags.ids[bags.offsets[first]..bags.offsets[first + out.len() / dim]];
        (0..PREFETCH_IDS).for_each(|k| prefetch_id(table, dim, ids, k));
        let mut k = 0;
        for (b, pooled) in out.chunks_exact_mut(dim).enumerate() {
            let bag = bags.bag(first + b);
            pooled.fill(0.0);
            for &id in bag {
                prefetch_id(table, dim, ids, k + PREFETCH_IDS);
                k += 1;
                add_row(pooled, &table[id as usize * dim..(id as usize + 1) * dim]);
            }
            scale_row(pooled, pooling.scale(bag.len()));
        }
    });
}

/// Pools a single bag into `out` (`dim` values). Used by evaluation and the
/// predictor too, so serving and training pool identically (same order of
/// additions, same scaling).
pub fn pool_one<'t>(table: impl Into<TableView<'t>>, dim: usize, ids: &[u32], pooling: Pooling, out: &mut [f32]) {
    with_rows!(table.into(), |t| pool_rows(t, dim, ids, pooling, out))
}

fn pool_rows<H: RowValue>(table: &[H], dim: usize, ids: &[u32], pooling: Pooling, out: &mut [f32]) {
    out.fill(0.0);
    (0..PREFETCH_IDS).for_each(|k| prefetch_id(table, dim, ids, k));
    for (k, &id) in ids.iter().enumerate() {
        prefetch_id(table, dim, ids, k + PREFETCH_IDS);
        add_row(out, &table[id as usize * dim..(id as usize + 1) * dim]);
    }
    scale_row(out, pooling.scale(ids.len()));
}

/// Backward of [`bag_forward`]: given `d_pooled` (`bags.len() × dim`), writes the
/// sparse gradient of the table into `grad` (its buffers are reused, so a
/// step allocates nothing once they have grown).
///
/// Each occurrence of a row in bag `b` contributes `scale(b) · d_pooled[b]`;
/// a row's contributions are summed in increasing bag order.
pub fn bag_backward(bags: Bags<'_>, pooling: Pooling, d_pooled: &[f32], grad: &mut SparseGrad) {
    bag_backward_rows(bags, pooling, d_pooled, grad, |_| true);
}

/// [`bag_backward`] for the rows `keep` accepts only (a distributed rank's
/// share of the rows): each kept row's gradient is summed over the same
/// occurrences in the same order, so it equals the unfiltered one bit for bit.
pub fn bag_backward_rows(bags: Bags<'_>, pooling: Pooling, d_pooled: &[f32], grad: &mut SparseGrad, keep: impl Fn(u32) -> bool) {
    let dim = grad.dim();
    assert_eq!(d_pooled.len(), bags.len() * dim, "d_pooled must be batch * dim");
    grad.coalesce(
        // Occurrences are named by their bag: that is all a contribution needs,
        // and CSR order already lists them by increasing bag.
        |pairs| {
            for b in 0..bags.len() {
                pairs.extend(bags.bag(b).iter().filter(|&&id| keep(id)).map(|&id| (id, b as u32)));
            }
        },
        // The pooling scale uses the whole bag's length, kept rows or not.
        |b| (pooling.scale(bags.bag(b).len()), &d_pooled[b * dim..(b + 1) * dim]),
    );
}
