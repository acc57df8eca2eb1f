//! The parallel loop over a sparse gradient's rows that the lazy table
//! optimizers share, and the one place where their row updates meet `unsafe`.
//!
//! [`for_each_grad_row`] takes the table and the optimizer's per-row arrays
//! by exclusive borrow, checks that the gradient's rows are sorted, unique and
//! in range, and hands each update call the `&mut` rows of every array for one
//! gradient row. Tasks are runs of consecutive sorted rows claimed from a
//! counter, with the rows ahead prefetched. Optimizer files stay safe code.
//!
//! The table comes in as [`TableRowsMut`], so optimizers see `&mut [f32]`
//! rows whatever the table's dtype: a half-precision row is widened into a
//! scratch slot of its own when taken, and as soon as its update has
//! returned the slot is written back with stochastic rounding
//! ([`crate::model::half_rows`]), keyed by (seed, step, row) so the result
//! does not depend on the thread count. Written back in the same pass, each
//! row is reached once per step, while its cache lines and TLB entry are hot.

use std::marker::PhantomData;

use crate::mem::prefetch;
use crate::model::half_rows::{load_row, store_row};
use crate::model::{EmbeddingTable, RoundingKey, RowValue, RowsForUpdate, SparseGrad};
use crate::par::for_each_claimed;
use half::{bf16, f16};

/// Rows per task of the lazy update: large enough to amortise claiming a
/// task, small enough (~10–20 µs) that a thread joining late waits little.
pub(super) const ROWS_PER_TASK: usize = 128;

/// How many rows ahead the lazy update prefetches. Touched rows are scattered
/// over the table, so each is a cache (and, without huge pages, TLB) miss; a
/// few rows in flight per thread hide most of the latency: 4 rows = 48 lines
/// of w, m and v. Measured with `sparseburn bench optim` (2 to 16 tried; 4 or
/// more are equal within noise, none at all is 2× slower; see BENCHMARKS.md).
pub(super) const PREFETCH_ROWS: usize = 4;

/// A row-major array of `rows × width` values, borrowed exclusively, whose
/// rows [`for_each_grad_row`] hands out as `&mut [T]`, each at most once.
pub struct RowsMut<'a, T> {
    ptr: *mut T,
    width: usize,
    rows: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a RowsMut is an exclusive borrow of its slice. Its values are
// reached only through `RowArrays::take`, whose contract (each row at most
// once per RowsMut) means no two threads ever hold the same value; moving
// `&mut T` to another thread needs `T: Send`.
unsafe impl<T: Send> Send for RowsMut<'_, T> {}
// SAFETY: as above: sharing a RowsMut only lets threads take distinct rows.
unsafe impl<T: Send> Sync for RowsMut<'_, T> {}

impl<'a, T> RowsMut<'a, T> {
    /// `data` as rows of `width` values (its length must be a whole number of rows).
    pub fn new(data: &'a mut [T], width: usize) -> Self {
        assert!(width > 0, "a row-indexed array needs a positive row width");
        assert!(data.len().is_multiple_of(width), "an array of {} values is not whole rows of {width}", data.len());
        RowsMut { ptr: data.as_mut_ptr(), width, rows: data.len() / width, _borrow: PhantomData }
    }

    /// Like [`RowsMut::new`], or `None` for an empty array (a per-row array
    /// that the config switched off, e.g. decay marks without weight decay).
    pub fn optional(data: &'a mut [T], width: usize) -> Option<Self> {
        (!data.is_empty()).then(|| RowsMut::new(data, width))
    }
}

/// One value per table row (an accumulator, a step count, a decay mark),
/// handed out as `&mut T`.
pub struct PerRowMut<'a, T>(RowsMut<'a, T>);

impl<'a, T> PerRowMut<'a, T> {
    pub fn new(data: &'a mut [T]) -> Self {
        PerRowMut(RowsMut::new(data, 1))
    }
    /// `None` for an empty array, as [`RowsMut::optional`].
    pub fn optional(data: &'a mut [T]) -> Option<Self> {
        (!data.is_empty()).then(|| PerRowMut::new(data))
    }
}

/// Arrays whose rows [`for_each_grad_row`] hands out: [`RowsMut`],
/// [`PerRowMut`], an `Option` of one (an array switched off), or a tuple of
/// up to six of these. Implemented only here: `take` is the unsafe part.
pub trait RowArrays: Sync {
    /// What one row of these arrays is, e.g. `(&mut [f32], &mut u32)`.
    type Row;
    /// Rows of these arrays (`None` when all are absent); panics if arrays differ.
    fn rows(&self) -> Option<usize>;
    /// Starts loading `row` of every array (a hint; never dereferences).
    fn prefetch(&self, row: usize);
    /// Called once before any `take`, with the gradient whose rows will be taken.
    fn prepare(&mut self, _grad: &SparseGrad) {}
    /// # Safety
    /// `row` must be below [`RowArrays::rows`], and no row may be taken twice
    /// from the same value of `Self` (the rows returned live as long as the
    /// borrow); `k` is the row's position in the gradient given to `prepare`.
    unsafe fn take(&self, row: usize, k: usize) -> Self::Row;
    /// Called on the thread that took `row` (as `k`), right after its update
    /// returned: writes back a row that was handed out as a copy.
    ///
    /// # Safety
    /// At most once per taken row, after the update given that row returned.
    #[inline(always)]
    unsafe fn release(&self, _row: usize, _k: usize) {}
}

impl<'a, T: Send> RowArrays for RowsMut<'a, T> {
    type Row = &'a mut [T];
    fn rows(&self) -> Option<usize> {
        Some(self.rows)
    }
    #[inline(always)]
    fn prefetch(&self, row: usize) {
        prefetch(self.ptr.wrapping_add(row * self.width), self.width);
    }
    #[inline(always)]
    unsafe fn take(&self, row: usize, _k: usize) -> &'a mut [T] {
        // SAFETY: row < self.rows (the caller's contract) keeps the slice in
        // the borrowed array; taking each row once keeps it unaliased.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(row * self.width), self.width) }
    }
}

impl<'a, T: Send> RowArrays for PerRowMut<'a, T> {
    type Row = &'a mut T;
    fn rows(&self) -> Option<usize> {
        self.0.rows()
    }
    #[inline(always)]
    fn prefetch(&self, row: usize) {
        self.0.prefetch(row);
    }
    #[inline(always)]
    unsafe fn take(&self, row: usize, k: usize) -> &'a mut T {
        // SAFETY: forwarded: the caller upholds `take`'s contract.
        unsafe { &mut self.0.take(row, k)[0] }
    }
}

impl<A: RowArrays> RowArrays for Option<A> {
    type Row = Option<A::Row>;
    fn rows(&self) -> Option<usize> {
        self.as_ref().and_then(|a| a.rows())
    }
    #[inline(always)]
    fn prefetch(&self, row: usize) {
        if let Some(a) = self {
            a.prefetch(row);
        }
    }
    fn prepare(&mut self, grad: &SparseGrad) {
        if let Some(a) = self {
            a.prepare(grad);
        }
    }
    #[inline(always)]
    unsafe fn take(&self, row: usize, k: usize) -> Self::Row {
        // SAFETY: forwarded: the caller upholds `take`'s contract.
        self.as_ref().map(|a| unsafe { a.take(row, k) })
    }
    #[inline(always)]
    unsafe fn release(&self, row: usize, k: usize) {
        if let Some(a) = self {
            // SAFETY: forwarded: the caller upholds `release`'s contract.
            unsafe { a.release(row, k) }
        }
    }
}

macro_rules! tuple_row_arrays {
    ($($a:ident)+) => {
        #[allow(non_snake_case)] // the type parameters name the tuple's parts
        impl<$($a: RowArrays),+> RowArrays for ($($a,)+) {
            type Row = ($($a::Row,)+);
            fn rows(&self) -> Option<usize> {
                let ($($a,)+) = self;
                let mut rows = None;
                $(
                    if let Some(n) = $a.rows() {
                        match rows {
                            None => rows = Some(n),
                            Some(m) => assert_eq!(m, n, "row-indexed arrays differ in rows: {m} and {n}"),
                        }
                    }
                )+
                rows
            }
            #[inline(always)]
            fn prefetch(&self, row: usize) {
                let ($($a,)+) = self;
                $($a.prefetch(row);)+
            }
            fn prepare(&mut self, grad: &SparseGrad) {
                let ($($a,)+) = self;
                $($a.prepare(grad);)+
            }
            #[inline(always)]
            unsafe fn take(&self, row: usize, k: usize) -> Self::Row {
                let ($($a,)+) = self;
                // SAFETY: forwarded to every part: the caller upholds `take`'s contract.
                unsafe { ($($a.take(row, k),)+) }
            }
            #[inline(always)]
            unsafe fn release(&self, row: usize, k: usize) {
                let ($($a,)+) = self;
                // SAFETY: forwarded to every part: the caller upholds `release`'s contract.
                unsafe { $($a.release(row, k);)+ }
            }
        }
    };
}
tuple_row_arrays!(A);
tuple_row_arrays!(A B);
tuple_row_arrays!(A B C);
tuple_row_arrays!(A B C D);
tuple_row_arrays!(A B C D E);
tuple_row_arrays!(A B C D E F);

/// Calls `update(rows, g)` once for every row of `grad`, in parallel, with
/// that row's `&mut` rows of `arrays` and its gradient `g`, prefetching the
/// rows [`PREFETCH_ROWS`] ahead so that their memory is on its way.
///
/// Panics, before any update, unless `grad`'s rows are strictly increasing
/// (its invariant, checked here so that soundness does not rest on it) and
/// below the arrays' row count, and unless all arrays have the same rows.
pub fn for_each_grad_row<A: RowArrays>(grad: &SparseGrad, mut arrays: A, update: impl Fn(A::Row, &[f32]) + Sync) {
    let (rows, values, dim) = (grad.rows(), grad.values(), grad.dim());
    if rows.is_empty() {
        return;
    }
    let table_rows = arrays.rows().expect("for_each_grad_row needs at least one array");
    // A few µs per step next to the update's memory traffic: the price of
    // handing out rows without trusting the caller.
    assert!(rows.windows(2).all(|p| p[0] < p[1]), "gradient rows are not sorted and unique");
    let last = rows[rows.len() - 1];
    assert!((last as usize) < table_rows, "row id {last} out of range for {table_rows} rows");
    arrays.prepare(grad);
    let shared = &arrays;
    for_each_claimed(rows.len().div_ceil(ROWS_PER_TASK), |task| {
        let first = task * ROWS_PER_TASK;
        let rows = &rows[first..(first + ROWS_PER_TASK).min(rows.len())];
        let g = &values[first * dim..(first + rows.len()) * dim];
        let ahead = |k: usize| {
            if let Some(&row) = rows.get(k) {
                shared.prefetch(row as usize);
            }
        };
        (0..PREFETCH_ROWS).for_each(ahead);
        for (k, (&row, g)) in rows.iter().zip(g.chunks_exact(dim)).enumerate() {
            ahead(k + PREFETCH_ROWS);
            // SAFETY: rows are strictly increasing (so each is taken once, by
            // one task) and below `table_rows` (checked above), `first + k` is
            // the row's position in the gradient `prepare` saw, and `arrays`
            // was moved into this call, so no other call takes from it.
            update(unsafe { shared.take(row as usize, first + k) }, g);
            // SAFETY: the row was taken just above, once, and its update has returned.
            unsafe { shared.release(row as usize, first + k) };
        }
    });
}

/// The table's rows for [`for_each_grad_row`], handed to the update as
/// `&mut [f32]` whatever the table stores.
pub enum TableRowsMut<'a> {
    F32(RowsMut<'a, f32>),
    Bf16(HalfRowsMut<'a, bf16>),
    F16(HalfRowsMut<'a, f16>),
}

impl<'a> TableRowsMut<'a> {
    /// Borrows `table` for one update (a half table's rounding key moves one step on).
    pub fn new(table: &'a mut EmbeddingTable) -> Self {
        let dim = table.dim();
        match table.for_update() {
            RowsForUpdate::F32(w) => TableRowsMut::F32(RowsMut::new(w, dim)),
            RowsForUpdate::Bf16(w, scratch, key) => TableRowsMut::Bf16(HalfRowsMut::new(w, dim, scratch, key)),
            RowsForUpdate::F16(w, scratch, key) => TableRowsMut::F16(HalfRowsMut::new(w, dim, scratch, key)),
        }
    }
}

/// Runs `$body` with `$r` bound to the variant's arrays (one predictable
/// branch per row; each arm is its own monomorphised code).
macro_rules! each_table_kind {
    ($self:expr, |$r:ident| $body:expr) => {
        match $self {
            TableRowsMut::F32($r) => $body,
            TableRowsMut::Bf16($r) => $body,
            TableRowsMut::F16($r) => $body,
        }
    };
}

impl<'a> RowArrays for TableRowsMut<'a> {
    type Row = &'a mut [f32];
    fn rows(&self) -> Option<usize> {
        each_table_kind!(self, |r| r.rows())
    }
    #[inline(always)]
    fn prefetch(&self, row: usize) {
        each_table_kind!(self, |r| r.prefetch(row))
    }
    fn prepare(&mut self, grad: &SparseGrad) {
        each_table_kind!(self, |r| r.prepare(grad))
    }
    #[inline(always)]
    unsafe fn take(&self, row: usize, k: usize) -> &'a mut [f32] {
        // SAFETY: forwarded: the caller upholds `take`'s contract.
        each_table_kind!(self, |r| unsafe { r.take(row, k) })
    }
    #[inline(always)]
    unsafe fn release(&self, row: usize, k: usize) {
        // SAFETY: forwarded: the caller upholds `release`'s contract.
        each_table_kind!(self, |r| unsafe { r.release(row, k) })
    }
}

/// Half-precision rows handed out as f32 copies: `take` widens row `row`
/// into scratch slot `k` (the row's position in the gradient, so every row
/// has its own slot), and `release` rounds the slot back into its row.
pub struct HalfRowsMut<'a, H> {
    rows: RowsMut<'a, H>,
    scratch: &'a mut Vec<f32>,
    /// `scratch`'s data once `prepare` has sized it.
    slots: *mut f32,
    key: RoundingKey,
}

// SAFETY: the rows are a RowsMut (see its impls); the slots are disjoint
// per gradient row, each handed out once by `take`, and read only by
// `release`, after that row's update has returned.
unsafe impl<H: Send> Send for HalfRowsMut<'_, H> {}
// SAFETY: as above.
unsafe impl<H: Send> Sync for HalfRowsMut<'_, H> {}

impl<'a, H: RowValue> HalfRowsMut<'a, H> {
    fn new(data: &'a mut [H], width: usize, scratch: &'a mut Vec<f32>, key: RoundingKey) -> Self {
        HalfRowsMut { rows: RowsMut::new(data, width), scratch, slots: std::ptr::null_mut(), key }
    }
}

impl<'a, H: RowValue> RowArrays for HalfRowsMut<'a, H> {
    type Row = &'a mut [f32];
    fn rows(&self) -> Option<usize> {
        Some(self.rows.rows)
    }
    #[inline(always)]
    fn prefetch(&self, row: usize) {
        self.rows.prefetch(row);
    }
    fn prepare(&mut self, grad: &SparseGrad) {
        let need = grad.len() * self.rows.width;
        if self.scratch.len() < need {
            self.scratch.resize(need, 0.0);
        }
        self.slots = self.scratch.as_mut_ptr();
    }
    #[inline(always)]
    unsafe fn take(&self, row: usize, k: usize) -> &'a mut [f32] {
        let width = self.rows.width;
        // SAFETY: row < rows (the caller's contract) keeps the row in the
        // borrowed array, which is only read here; k < grad.len() (k is the
        // row's position in the gradient `prepare` sized the scratch for)
        // keeps slot k in the scratch, and each k is taken once, so the slot
        // handed out is unaliased.
        unsafe {
            let src = std::slice::from_raw_parts(self.rows.ptr.add(row * width), width);
            let slot = std::slice::from_raw_parts_mut(self.slots.add(k * width), width);
            load_row(slot, src);
            slot
        }
    }
    #[inline(always)]
    unsafe fn release(&self, row: usize, k: usize) {
        let width = self.rows.width;
        // SAFETY: `take` handed out slot k for `row` (the caller's contract),
        // and that row's update has returned, so nothing else reads or writes
        // the slot now (for_each_grad_row lends the update its row only for
        // the call, on this thread). The table row is in range and, rows being
        // unique, reached by this thread alone; `take` only read it.
        unsafe {
            let slot = std::slice::from_raw_parts(self.slots.add(k * width), width);
            store_row(self.rows.take(row, 0), slot, &mut self.key.row_bits(row));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gradient_row_gets_its_own_rows_once() {
        let (rows, dim) = (1000, 3);
        let mut w = vec![0.0f32; rows * dim];
        let mut count = vec![0u32; rows];
        let mut absent: Vec<f64> = Vec::new();
        let ids: Vec<u32> = (0..rows as u32).filter(|r| r % 3 != 1).collect();
        let values: Vec<f32> = ids.iter().flat_map(|&r| [r as f32, 1.0, 2.0]).collect();
        let grad = SparseGrad::from_duplicates(dim, &ids, &values);
        let arrays = (RowsMut::new(&mut w, dim), PerRowMut::new(&mut count), PerRowMut::optional(&mut absent));
        for_each_grad_row(&grad, arrays, |(w, k, none), g| {
            assert!(none.is_none());
            *k += 1;
            w.copy_from_slice(g);
        });
        for r in 0..rows {
            let present = r % 3 != 1;
            assert_eq!(count[r], present as u32, "row {r}");
            let want = if present { [r as f32, 1.0, 2.0] } else { [0.0; 3] };
            assert_eq!(&w[r * dim..(r + 1) * dim], &want, "row {r}");
        }
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn refuses_a_row_beyond_the_arrays() {
        let mut w = vec![0.0f32; 4 * 2];
        let grad = SparseGrad::from_duplicates(2, &[1, 4], &[1.0; 4]);
        for_each_grad_row(&grad, RowsMut::new(&mut w, 2), |_, _| {});
    }

    #[test]
    #[should_panic(expected = "differ in rows")]
    fn refuses_arrays_of_different_rows() {
        let (mut w, mut k) = (vec![0.0f32; 4 * 2], vec![0u32; 3]);
        let grad = SparseGrad::from_duplicates(2, &[1], &[1.0; 2]);
        for_each_grad_row(&grad, (RowsMut::new(&mut w, 2), PerRowMut::new(&mut k)), |_, _| {});
    }
}
