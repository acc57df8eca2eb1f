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

/// Rows are initialised in chunks, each with its own RNG stream derived from
/// `(seed, chunk)`, so the values are independent of the thread count.
const INIT_CHUNK_ROWS: usize = 4096;

#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingTable {
    rows: usize,
    dim: usize,
    data: AlignedVec<f32>,
}

impl EmbeddingTable {
    pub fn new(rows: usize, dim: usize, init: TableInit, seed: u64) -> Self {
        assert!(dim > 0, "embedding dim must be positive");
        let mut data = AlignedVec::zeroed(rows * dim);
        let chunk_len = INIT_CHUNK_ROWS * dim;
        data.par_chunks_mut(chunk_len).enumerate().for_each(|(chunk, values)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(chunk as u64 + 1);
            match init {
                TableInit::Uniform { scale } => {
                    let s = scale.unwrap_or(1.0 / dim as f32);
                    values.iter_mut().for_each(|x| *x = rng.random_range(-s..=s));
                }
                TableInit::Normal { std } => {
                    let normal = Normal::new(0.0f32, std).expect("std must be finite and >= 0");
                    values.iter_mut().for_each(|x| *x = normal.sample(&mut rng));
                }
                // vec! of zeros is lazily mapped by the OS: touch every page now so the
                // first training steps do not pay page faults.
                TableInit::Zeros => prefault(values),
            }
        });
        EmbeddingTable { rows, dim, data }
    }

    /// A table from existing row-major values (e.g. a checkpoint or an export).
    pub fn from_vec(rows: usize, dim: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * dim, "table data length must be rows * dim");
        EmbeddingTable { rows, dim, data: AlignedVec::from_vec(data) }
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
    pub fn row_mut(&mut self, id: usize) -> &mut [f32] {
        &mut self.data[id * self.dim..(id + 1) * self.dim]
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
        if b > a && b - a >= HUGE_PAGE_MIN_BYTES {
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
    /// The address `offset` elements in, for prefetching (not dereferenced here).
    pub(crate) fn at(&self, offset: usize) -> *const T {
        self.0.wrapping_add(offset)
    }
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
