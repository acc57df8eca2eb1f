//! The embedding table: `rows × dim` f32, contiguous and row-major, in host memory.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How the table's rows are initialised.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TableInit {
    /// Uniform in `[-scale, scale]`; `scale` defaults to `1/dim` (fastText's choice).
    Uniform { scale: Option<f32> },
    /// Normal with mean 0 and standard deviation `std`.
    Normal { std: f32 },
    /// All zeros (useful for tests).
    Zeros,
}

impl Default for TableInit {
    fn default() -> Self {
        TableInit::Uniform { scale: None }
    }
}

/// Uniform rows come from one ChaCha8 stream per chunk of this many rows,
/// keyed by `(seed, chunk)`, so values are independent of the thread count;
/// one value is one 32-bit word of the stream, so any single row can also be
/// generated alone by seeking to it (lazy materialisation gives the same bits).
const INIT_CHUNK_ROWS: usize = 4096;

/// Normal rows each have their own stream (a normal sample takes a varying
/// number of words, so a chunk's stream cannot be sought into), keyed by
/// `(seed ^ NORMAL_SEED_SALT, row)`.
const NORMAL_SEED_SALT: u64 = 0x6e6f_726d_616c_2d31;

/// Everything that determines a table's initial rows: a row never trained
/// still equals `recipe.initial_row(r)`, which is what lets checkpoints store
/// only touched rows and a run start without touching the others.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableRecipe {
    pub rows: usize,
    pub dim: usize,
    pub init: TableInit,
    pub seed: u64,
}

impl TableRecipe {
    /// Writes row `row`'s initial values into `out` (`dim` values). Pure in `(recipe, row)`.
    pub fn initial_row(&self, row: usize, out: &mut [f32]) {
        debug_assert_eq!(out.len(), self.dim);
        match self.init {
            TableInit::Uniform { scale } => {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream((row / INIT_CHUNK_ROWS) as u64 + 1);
                rng.set_word_pos(((row % INIT_CHUNK_ROWS) * self.dim) as u128);
                let s = scale.unwrap_or(1.0 / self.dim as f32);
                out.iter_mut().for_each(|x| *x = rng.random_range(-s..=s));
            }
            TableInit::Normal { std } => {
                let normal = Normal::new(0.0f32, std).expect("std must be finite and >= 0");
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ NORMAL_SEED_SALT);
                rng.set_stream(row as u64);
                out.iter_mut().for_each(|x| *x = normal.sample(&mut rng));
            }
            TableInit::Zeros => out.fill(0.0),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingTable {
    rows: usize,
    dim: usize,
    data: AlignedVec<f32>,
    /// Set for a table created by [`EmbeddingTable::lazy`] until every row is
    /// materialised: rows are generated from the recipe on first use.
    lazy: Option<LazyRows>,
}

/// Which rows of a lazy table hold their values yet.
#[derive(Clone, Debug, PartialEq)]
struct LazyRows {
    recipe: TableRecipe,
    /// One bit per row: set once the row holds its initial (or a loaded) value.
    done: Vec<u64>,
    remaining: usize,
}

/// Fewer fresh rows than this are generated on the calling thread (a row
/// takes well under a microsecond; a parallel job costs tens of microseconds to start).
const PARALLEL_INIT_MIN_ROWS: usize = 512;

impl EmbeddingTable {
    /// A table with every row initialised now (in parallel).
    pub fn new(rows: usize, dim: usize, init: TableInit, seed: u64) -> Self {
        assert!(dim > 0, "embedding dim must be positive");
        let recipe = TableRecipe { rows, dim, init, seed };
        let mut data = AlignedVec::zeroed(rows * dim);
        let chunk_len = INIT_CHUNK_ROWS * dim;
        data.par_chunks_mut(chunk_len).enumerate().for_each(|(chunk, values)| match init {
            TableInit::Uniform { scale } => {
                // The chunk's whole stream at once: the same words initial_row seeks to.
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(chunk as u64 + 1);
                let s = scale.unwrap_or(1.0 / dim as f32);
                values.iter_mut().for_each(|x| *x = rng.random_range(-s..=s));
            }
            TableInit::Normal { .. } => {
                let first = chunk * INIT_CHUNK_ROWS;
                values.chunks_mut(dim).enumerate().for_each(|(i, row)| recipe.initial_row(first + i, row));
            }
            // vec! of zeros is lazily mapped by the OS: touch every page now so the
            // first training steps do not pay page faults.
            TableInit::Zeros => prefault(values),
        });
        EmbeddingTable { rows, dim, data, lazy: None }
    }

    /// A table of `global_ids.len()` rows holding rows `global_ids` of the table
    /// `recipe` describes, each with its initial value (generated in parallel,
    /// bit-identical to [`EmbeddingTable::new`]'s rows of those ids).
    pub fn from_recipe_rows(recipe: TableRecipe, global_ids: &[u32]) -> Self {
        assert!(recipe.dim > 0, "embedding dim must be positive");
        let dim = recipe.dim;
        let mut data = AlignedVec::zeroed(global_ids.len() * dim);
        data.par_chunks_mut(dim * 256).enumerate().for_each(|(c, rows)| {
            for (k, row) in rows.chunks_mut(dim).enumerate() {
                recipe.initial_row(global_ids[c * 256 + k] as usize, row);
            }
        });
        EmbeddingTable { rows: global_ids.len(), dim, data, lazy: None }
    }

    /// A table whose rows are generated from `recipe` only when first used
    /// ([`EmbeddingTable::materialize`]): start-up costs nothing per row, and
    /// memory for rows never used is never touched (the zeroed allocation is
    /// mapped by the OS on first write). Every row ends up bit-identical to
    /// [`EmbeddingTable::new`]'s.
    pub fn lazy(recipe: TableRecipe) -> Self {
        assert!(recipe.dim > 0, "embedding dim must be positive");
        let lazy = (recipe.rows > 0).then(|| LazyRows { recipe, done: vec![0; recipe.rows.div_ceil(64)], remaining: recipe.rows });
        EmbeddingTable { rows: recipe.rows, dim: recipe.dim, data: AlignedVec::zeroed(recipe.rows * recipe.dim), lazy }
    }

    /// Gives every row in `ids` its initial value if it has none yet. Rows
    /// must be materialised before they are read or updated.
    pub fn materialize(&mut self, ids: &[u32]) {
        let Some(lazy) = &mut self.lazy else { return };
        let mut fresh = Vec::new();
        for &id in ids {
            let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
            if lazy.done[word] & bit == 0 {
                lazy.done[word] |= bit;
                fresh.push(id);
            }
        }
        if fresh.is_empty() {
            return;
        }
        lazy.remaining -= fresh.len();
        let (recipe, dim) = (lazy.recipe, self.dim);
        if fresh.len() < PARALLEL_INIT_MIN_ROWS {
            for &r in &fresh {
                let r = r as usize;
                recipe.initial_row(r, &mut self.data[r * dim..(r + 1) * dim]);
            }
        } else {
            let data = SharedMut(self.data.as_mut_ptr());
            let rows = self.rows;
            fresh.par_iter().for_each(|&r| {
                let r = r as usize;
                assert!(r < rows, "row {r} out of range for a table of {rows} rows");
                // SAFETY: `fresh` holds each row once (its bit was clear and is now
                // set), and r < rows, so each task writes its own row in bounds.
                recipe.initial_row(r, unsafe { data.slice(r * dim, dim) });
            });
        }
        if lazy.remaining == 0 {
            self.lazy = None;
        }
    }

    /// Marks rows as holding their values already (written by a checkpoint
    /// restore), so they are never overwritten with their initial value.
    pub fn mark_materialized(&mut self, ids: &[u32]) {
        let Some(lazy) = &mut self.lazy else { return };
        for &id in ids {
            let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
            if lazy.done[word] & bit == 0 {
                lazy.done[word] |= bit;
                lazy.remaining -= 1;
            }
        }
        if lazy.remaining == 0 {
            self.lazy = None;
        }
    }

    /// Gives every row not yet materialised its initial value (a dense
    /// optimizer or a full export reads them all).
    pub fn materialize_all(&mut self) {
        let Some(lazy) = self.lazy.take() else { return };
        let (recipe, dim) = (lazy.recipe, self.dim);
        self.data.par_chunks_mut(INIT_CHUNK_ROWS * dim).enumerate().for_each(|(chunk, values)| {
            let first = chunk * INIT_CHUNK_ROWS;
            for (i, row) in values.chunks_mut(dim).enumerate() {
                let r = first + i;
                if lazy.done[r / 64] & (1 << (r % 64)) == 0 {
                    recipe.initial_row(r, row);
                }
            }
        });
    }

    /// Whether every row holds its value (always true for a table built by `new`).
    pub fn is_materialized(&self) -> bool {
        self.lazy.is_none()
    }

    /// A table from existing row-major values (e.g. a checkpoint or an export).
    pub fn from_vec(rows: usize, dim: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * dim, "table data length must be rows * dim");
        EmbeddingTable { rows, dim, data: AlignedVec::from_vec(data), lazy: None }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn row(&self, id: usize) -> &[f32] {
        &self.data[id * self.dim..(id + 1) * self.dim]
    }
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }
    pub fn into_vec(self) -> Vec<f32> {
        self.data.into_vec()
    }
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
    }
}

/// Rows and state arrays start on a cache-line boundary. Large allocations
/// from malloc are page-aligned plus a 16-byte header, which would make every
/// 256-byte row straddle 5 cache lines instead of 4: 25% more memory traffic
/// on the random row gathers that dominate the step.
const ALIGN_BYTES: usize = 64;

/// Buffers at least this large are advised to use transparent huge pages:
/// rows touched at random over gigabytes otherwise miss the TLB on every row
/// of every array (w, m, v).
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// A fixed-length buffer whose first element sits on a 64-byte boundary.
///
/// It is a `Vec<T>` with up to 64 bytes of slack; the visible part starts at
/// `offset`. Kept a plain `Vec` (not a custom allocation) so that loading can
/// realign a checkpoint's `Vec` in place and `into_vec` can hand one back,
/// neither needing a second table-sized buffer.
pub(crate) struct AlignedVec<T> {
    buf: Vec<T>,
    offset: usize,
    len: usize,
}

impl<T: Copy + Default + Send + Sync> AlignedVec<T> {
    fn slack() -> usize {
        let size = std::mem::size_of::<T>();
        assert!(size > 0 && ALIGN_BYTES.is_multiple_of(size), "element size must divide {ALIGN_BYTES}");
        ALIGN_BYTES / size
    }

    /// The offset (in elements) of the first 64-byte boundary in `buf`.
    fn offset_in(buf: &[T]) -> usize {
        let misalign = buf.as_ptr() as usize % ALIGN_BYTES;
        ((ALIGN_BYTES - misalign) % ALIGN_BYTES) / std::mem::size_of::<T>()
    }

    /// A zero-filled buffer. Its pages are mapped lazily by the OS (the
    /// caller writes every element, or use [`AlignedVec::zeroed_prefaulted`]).
    pub(crate) fn zeroed(len: usize) -> Self {
        // vec! of zeros comes from calloc: fresh pages, not yet touched, so the
        // huge-page advice applies before the first fault.
        let mut buf = vec![T::default(); len + Self::slack()];
        advise_huge_pages(&mut buf);
        let offset = Self::offset_in(&buf);
        AlignedVec { buf, offset, len }
    }

    /// A zero-filled buffer whose pages are already mapped.
    pub(crate) fn zeroed_prefaulted(len: usize) -> Self {
        let mut v = Self::zeroed(len);
        prefault(&mut v.buf);
        v
    }

    /// Takes `vec` over, moving its contents (in place) to an aligned start.
    pub(crate) fn from_vec(mut buf: Vec<T>) -> Self {
        let len = buf.len();
        if Self::offset_in(&buf) != 0 {
            // Growing a large allocation is an mremap, not a copy; the memmove is in place.
            buf.resize(len + Self::slack(), T::default());
        }
        advise_huge_pages(&mut buf);
        let offset = Self::offset_in(&buf);
        if offset != 0 {
            buf.copy_within(0..len, offset);
        }
        AlignedVec { buf, offset, len }
    }

    pub(crate) fn into_vec(mut self) -> Vec<T> {
        if self.offset != 0 {
            self.buf.copy_within(self.offset..self.offset + self.len, 0);
        }
        self.buf.truncate(self.len);
        self.buf
    }
}

impl<T> std::ops::Deref for AlignedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.offset..self.offset + self.len]
    }
}

impl<T> std::ops::DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.offset..self.offset + self.len]
    }
}

impl<T: Copy + Default + Send + Sync> Clone for AlignedVec<T> {
    fn clone(&self) -> Self {
        // A fresh allocation has its own alignment: re-derive the offset.
        let mut c = Self::zeroed(self.len);
        c.copy_from_slice(self);
        c
    }
}

impl<T: PartialEq> PartialEq for AlignedVec<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for AlignedVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// Whether large buffers ask for transparent huge pages (see [`set_huge_pages`]).
static HUGE_PAGES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Sets whether buffers allocated from now on ask for transparent huge pages
/// (on by default). Huge pages make random row access faster once the rows
/// are in memory, but the first touch of any row maps and zeroes 2 MiB, so a
/// table whose batches touch a small part of it pays for all of it. The
/// trainer sets this from `memory.huge_pages` before it allocates.
pub fn set_huge_pages(on: bool) {
    HUGE_PAGES.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Asks Linux to back `buf` with transparent huge pages (a hint: errors are
/// ignored, and other systems do nothing). With THP in `madvise` mode, as on
/// many distributions, buffers get huge pages only when asked.
fn advise_huge_pages<T>(buf: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const MADV_HUGEPAGE: i32 = 14;
        const PAGE: usize = 4096;
        unsafe extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        let start = buf.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let (a, b) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
        if b > a && b - a >= HUGE_PAGE_MIN_BYTES && HUGE_PAGES.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: [a, b) lies within `buf`, which we own mutably; MADV_HUGEPAGE
            // changes only how the kernel backs the pages, never their contents.
            unsafe { madvise(a as *mut std::ffi::c_void, b - a, MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// Hints the CPU to start loading the cache lines of `len` elements at `ptr`,
/// so that a row needed a few iterations from now arrives while this one is
/// computed. Random rows of a large table otherwise cost one full memory
/// latency each, with little overlap.
///
/// The hint is T1 (into L2, not L1): on the Zen 4 we measured, T0 prefetches
/// of 12 lines per row filled the L1 miss buffers and stalled the loop, and T1
/// was 20–30% faster on a 1M-row table (equal at 10M).
#[inline(always)]
pub(crate) fn prefetch<T>(ptr: *const T, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let p = ptr as *const i8;
        let bytes = len * std::mem::size_of::<T>();
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch is only a hint: it never faults and has no
            // visible effect, whatever the address. wrapping_add avoids
            // claiming the address is in bounds.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ptr, len);
}

/// Runs `f(0..chunks)` on the current rayon pool, each index exactly once,
/// with the threads claiming indices from a shared counter.
///
/// For the sub-millisecond loops of a step this beats rayon's recursive
/// halving: there, a worker that wakes late (a sleeping worker took ~40 µs
/// to start on the VM we measured, about a third of a whole lazy update)
/// steals half of the remaining work and the caller waits for it. Here a
/// late worker finds at most the last few chunks, or none, and the caller
/// runs any helper job nobody stole itself. (On the Debian benchmark the
/// table step went from 0.18–0.19 to 0.17 ms.)
pub(crate) fn for_each_claimed(chunks: usize, f: impl Fn(usize) + Sync) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let work = || loop {
        let c = next.fetch_add(1, Ordering::Relaxed);
        if c >= chunks {
            break;
        }
        f(c);
    };
    let helpers = rayon::current_num_threads().min(chunks).saturating_sub(1);
    rayon::scope(|s| {
        for _ in 0..helpers {
            s.spawn(|_| work());
        }
        work();
    });
}

/// Raw pointer that may cross threads, for loops whose tasks write disjoint
/// parts of one buffer (rows of a table, bags of an output).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub(crate) *mut T);
// SAFETY: only a pointer; every user guarantees the parts it hands out are
// disjoint, which is what makes sharing it between threads sound.
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}
impl<T> SharedMut<T> {
    /// # Safety
    /// `start..start+len` must be in bounds and no other thread may access it concurrently.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// A zero-filled buffer whose pages are already mapped.
pub fn zeroed_prefaulted<T: Default + Clone + Send + Sync + Copy>(len: usize) -> Vec<T> {
    let mut v = vec![T::default(); len];
    prefault(&mut v);
    v
}

/// Writes one element per 4 KiB page so the OS maps the page now rather than
/// inside a timed training step. Volatile so the compiler cannot drop the write.
pub fn prefault<T: Copy + Default + Send>(values: &mut [T]) {
    let stride = (4096 / std::mem::size_of::<T>().max(1)).max(1);
    values.par_chunks_mut(stride * 256).for_each(|chunk| {
        for i in (0..chunk.len()).step_by(stride) {
            // SAFETY: i < chunk.len(), so the pointer is in bounds and aligned.
            unsafe { std::ptr::write_volatile(chunk.as_mut_ptr().add(i), T::default()) };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_deterministic_and_within_range() {
        let a = EmbeddingTable::new(10_000, 8, TableInit::default(), 7);
        let b = EmbeddingTable::new(10_000, 8, TableInit::default(), 7);
        let c = EmbeddingTable::new(10_000, 8, TableInit::default(), 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.as_slice().iter().all(|x| x.abs() <= 1.0 / 8.0));
        let mean = a.as_slice().iter().map(|&x| x as f64).sum::<f64>() / a.as_slice().len() as f64;
        assert!(mean.abs() < 1e-3, "uniform init mean {mean}");
    }

    /// Rows generated one at a time, in any order, by any thread, equal the
    /// eagerly initialised table bit for bit: that is what lets a checkpoint
    /// store only touched rows and a run skip untouched ones at start-up.
    #[test]
    fn lazy_rows_equal_eager_rows_bit_for_bit() {
        let rows = 3 * INIT_CHUNK_ROWS + 17; // a partial last chunk
        for init in [TableInit::default(), TableInit::Uniform { scale: Some(0.3) }, TableInit::Normal { std: 0.5 }, TableInit::Zeros] {
            let eager = EmbeddingTable::new(rows, 24, init, 11);
            let mut lazy = EmbeddingTable::lazy(TableRecipe { rows, dim: 24, init, seed: 11 });
            // A few rows alone (serial path), then a large batch with repeats (parallel path).
            lazy.materialize(&[5, 4096, (rows - 1) as u32, 5]);
            for r in [5, 4096, rows - 1] {
                assert_eq!(lazy.row(r), eager.row(r), "{init:?} row {r}");
            }
            assert!(lazy.row(6).iter().all(|&x| x == 0.0) || init == TableInit::Zeros, "row 6 must still be untouched");
            let many: Vec<u32> = (0..rows as u32).rev().step_by(3).chain(0..700).collect();
            lazy.materialize(&many);
            // A row written by a restore keeps its value.
            lazy.mark_materialized(&[1]);
            lazy.data[24..48].fill(7.0);
            lazy.materialize_all();
            assert!(lazy.is_materialized());
            assert_eq!(lazy.row(1), &[7.0; 24][..]);
            lazy.data[24..48].copy_from_slice(eager.row(1));
            assert_eq!(lazy.as_slice(), eager.as_slice(), "{init:?}");
        }
    }

    #[test]
    fn rows_are_cache_line_aligned_and_round_trip() {
        let a = EmbeddingTable::new(1000, 64, TableInit::default(), 1);
        assert_eq!(a.as_slice().as_ptr() as usize % ALIGN_BYTES, 0);
        let values = a.as_slice().to_vec();
        // A plain Vec this large comes from mmap, 16 bytes past a page boundary.
        let b = EmbeddingTable::from_vec(1000, 64, values.clone());
        assert_eq!(b.as_slice().as_ptr() as usize % ALIGN_BYTES, 0);
        assert_eq!(b, a);
        assert_eq!(b.clone(), a);
        assert_eq!(b.into_vec(), values);
        let z: AlignedVec<f64> = AlignedVec::zeroed_prefaulted(100);
        assert_eq!(z.as_ptr() as usize % ALIGN_BYTES, 0);
        assert!(z.iter().all(|&x| x == 0.0));
    }
}
