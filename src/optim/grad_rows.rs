//! The parallel loop over a sparse gradient's rows that the lazy table
//! optimizers share: tasks of consecutive sorted rows, claimed from a counter,
//! with the rows ahead prefetched.

use crate::model::table::for_each_claimed;
use crate::model::SparseGrad;

/// Rows per task of the lazy update: large enough to amortise claiming a
/// task, small enough (~10–20 µs) that a thread joining late waits little.
pub(super) const ROWS_PER_TASK: usize = 128;

/// How many rows ahead the lazy update prefetches. Touched rows are scattered
/// over the table, so each is a cache (and, without huge pages, TLB) miss; a
/// few rows in flight per thread hide most of the latency: 4 rows = 48 lines
/// of w, m and v. Measured with `sparseburn bench optim` (2 to 16 tried; 4 or
/// more are equal within noise, none at all is 2× slower; see BENCHMARKS.md).
pub(super) const PREFETCH_ROWS: usize = 4;

/// Calls `update(row, g)` once for every row of `grad` with that row's
/// gradient, in parallel, and `fetch(row)` [`PREFETCH_ROWS`] rows before the
/// row's update so that its memory is on its way when it is needed.
///
/// Each task is a run of consecutive entries of `grad`, so `g` is read
/// sequentially and the rows ahead are known. `grad`'s rows are sorted and
/// unique (its invariant) and checked here to be below `table_rows`: each
/// `update` call may therefore write its own row of any row-indexed array
/// without synchronisation, which is what the callers' `unsafe` relies on.
pub(super) fn for_each_grad_row(grad: &SparseGrad, table_rows: usize, fetch: impl Fn(usize) + Sync, update: impl Fn(usize, &[f32]) + Sync) {
    let (rows, values, dim) = (grad.rows(), grad.values(), grad.dim());
    if let Some(&last) = rows.last() {
        assert!((last as usize) < table_rows, "row id {last} out of range for {table_rows} rows");
    }
    for_each_claimed(rows.len().div_ceil(ROWS_PER_TASK), |task| {
        let first = task * ROWS_PER_TASK;
        let rows = &rows[first..(first + ROWS_PER_TASK).min(rows.len())];
        let g = &values[first * dim..(first + rows.len()) * dim];
        let ahead = |k: usize| {
            if let Some(&row) = rows.get(k) {
                fetch(row as usize);
            }
        };
        (0..PREFETCH_ROWS).for_each(ahead);
        for (k, (&row, g)) in rows.iter().zip(g.chunks_exact(dim)).enumerate() {
            ahead(k + PREFETCH_ROWS);
            update(row as usize, g);
        }
    });
}
