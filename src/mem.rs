//! Memory for tables and optimizer state: cache-line aligned buffers in
//! anonymous memory or in a mapped table file ([`mapped`]), transparent huge
//! pages, prefetch hints and prefaulting. Below `model` and `optim`, which
//! both allocate row arrays with it.

use rayon::prelude::*;

pub mod mapped;
pub mod thp;

/// Rows and state arrays start on a cache-line boundary. Large allocations
/// from malloc are page-aligned plus a 16-byte header, which would make every
/// 256-byte row straddle 5 cache lines instead of 4: 25% more memory traffic
/// on the random row gathers that dominate the step.
pub const ALIGN_BYTES: usize = 64;

/// Buffers at least this large are advised to use transparent huge pages:
/// rows touched at random over gigabytes otherwise miss the TLB on every row
/// of every array (w, m, v).
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// A fixed-length buffer whose first element sits on a 64-byte boundary,
/// in anonymous memory or in a region of a table file ([`mapped`]).
///
/// In memory it is a `Vec<T>` with up to 64 bytes of slack; the visible part
/// starts at `offset`. Kept a plain `Vec` (not a custom allocation) so that
/// loading can realign a checkpoint's `Vec` in place and `into_vec` can hand
/// one back, neither needing a second table-sized buffer. A mapped region is
/// page-aligned. `T` is plain old data, so file bytes are valid values.
pub struct AlignedVec<T> {
    backing: Backing<T>,
    offset: usize,
    len: usize,
}

enum Backing<T> {
    Heap(Vec<T>),
    /// Inside [`mapped::place_in`]: the table and optimizer state of `model.table_storage = "mmap"`.
    Mapped(mapped::MappedRegion),
}

impl<T: bytemuck::Pod + Default + Send + Sync> AlignedVec<T> {
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
    /// Inside [`mapped::place_in`] it is a region of the table file.
    pub fn zeroed(len: usize) -> Self {
        let size = std::mem::size_of::<T>();
        if let Some(region) = mapped::zeroed_region(len * size, size) {
            return AlignedVec { backing: Backing::Mapped(region), offset: 0, len };
        }
        // Zeroed by the allocator (calloc: fresh pages, not yet touched), so
        // the huge-page advice applies before the first fault. Not `vec![T::default(); n]`:
        // that is calloc only for primitive types and writes every element of
        // any other (bf16, f16), faulting the whole buffer in 4 KiB pages first.
        let mut buf: Vec<T> = bytemuck::zeroed_vec(len + Self::slack());
        advise_huge_pages(&mut buf);
        let offset = Self::offset_in(&buf);
        AlignedVec { backing: Backing::Heap(buf), offset, len }
    }

    /// A zero-filled buffer whose pages are already mapped.
    pub fn zeroed_prefaulted(len: usize) -> Self {
        let mut v = Self::zeroed(len);
        prefault(&mut v);
        v
    }

    /// Takes `vec` over, moving its contents (in place) to an aligned start.
    pub fn from_vec(mut buf: Vec<T>) -> Self {
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
        AlignedVec { backing: Backing::Heap(buf), offset, len }
    }

    /// The values as a `Vec`: no copy in memory, a full copy from a mapped file.
    pub fn into_vec(self) -> Vec<T> {
        match self.backing {
            Backing::Heap(mut buf) => {
                if self.offset != 0 {
                    buf.copy_within(self.offset..self.offset + self.len, 0);
                }
                buf.truncate(self.len);
                buf
            }
            Backing::Mapped(_) => self.to_vec(),
        }
    }
}

impl<T: bytemuck::Pod> std::ops::Deref for AlignedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.backing {
            Backing::Heap(buf) => &buf[self.offset..self.offset + self.len],
            // Pod: any bytes are valid values; the region is page-aligned (cast_slice checks).
            Backing::Mapped(r) => &bytemuck::cast_slice(r.bytes())[..self.len],
        }
    }
}

impl<T: bytemuck::Pod> std::ops::DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.backing {
            Backing::Heap(buf) => &mut buf[self.offset..self.offset + self.len],
            Backing::Mapped(r) => &mut bytemuck::cast_slice_mut(r.bytes_mut())[..self.len],
        }
    }
}

impl<T: bytemuck::Pod + Default + Send + Sync> Clone for AlignedVec<T> {
    fn clone(&self) -> Self {
        // A fresh allocation has its own alignment: re-derive the offset.
        let mut c = Self::zeroed(self.len);
        c.copy_from_slice(self);
        c
    }
}

impl<T: bytemuck::Pod + PartialEq> PartialEq for AlignedVec<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: bytemuck::Pod + std::fmt::Debug> std::fmt::Debug for AlignedVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// `bytes` in decimal units (the `*_gb` budgets are decimal GB), precise
/// enough that small GPU parts do not all read "0.000 GB".
pub fn size(bytes: u64) -> String {
    match bytes {
        u64::MAX => "> 18.4 EB".to_string(),
        b if b >= 1_000_000_000 => format!("{:.3} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
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

/// Returns the heap memory freed so far to the OS, and from then on keeps
/// at most [`TRIM_THRESHOLD_BYTES`] free at the top of each malloc arena.
///
/// glibc keeps freed blocks for reuse. After data preparation, whose large
/// transient buffers are gone before the table is allocated, that is memory
/// the process holds but never uses again. `malloc_trim` returns the free
/// blocks of every arena, but not the free top of a thread's arena (where the
/// trainer's pool thread allocates); glibc trims that top only on `free`, and
/// only beyond a threshold that grows with the largest block freed (to
/// 64 MiB). Fixing the threshold is what releases it. Measured on Debian
/// sections: one process 626 -> 612 MiB peak RSS, each of 4 row-sharded
/// ranks 203 -> 188 MiB (RSS sampled every 20 ms), step time unchanged. With other allocators and
/// systems it does nothing.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes when glibc returns free memory, and
    // malloc_trim only returns free heap pages to the kernel; neither touches
    // a live allocation, and both are safe to call from any thread.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES as i32);
        libc::malloc_trim(0);
    }
}

/// Free memory glibc may keep at an arena's top. 8 MiB releases as much on
/// Debian sections as 1 MiB (4 ranks: 188 vs 187 MiB), with more room for a
/// step's transient buffers to be reused rather than returned and faulted in
/// again.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD_BYTES: usize = 8 << 20;

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
pub fn prefetch<T>(ptr: *const T, len: usize) {
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

    /// Pages of `buf` (whole pages inside it) that are resident, from mincore(2).
    #[cfg(target_os = "linux")]
    fn resident_pages<T>(buf: &[T]) -> (usize, usize) {
        const PAGE: usize = 4096;
        let start = (buf.as_ptr() as usize).next_multiple_of(PAGE);
        let end = (buf.as_ptr() as usize + std::mem::size_of_val(buf)) / PAGE * PAGE;
        let pages = (end - start) / PAGE;
        let mut flags = vec![0u8; pages];
        // SAFETY: [start, end) is page-aligned and inside `buf`, a live
        // allocation; mincore only writes one byte per page into `flags`.
        let rc = unsafe { libc::mincore(start as *mut libc::c_void, end - start, flags.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        (flags.iter().filter(|&&f| f & 1 != 0).count(), pages)
    }

    /// A zeroed half-precision buffer is not written when allocated (it would
    /// then be faulted in 4 KiB pages before the huge-page advice), for f32 and
    /// for types the standard library's `vec!` does not know are zero.
    #[test]
    #[cfg(target_os = "linux")]
    fn zeroed_buffers_are_untouched_until_written() {
        fn check<T: bytemuck::Pod + Default + Send + Sync + PartialEq + std::fmt::Debug>() {
            let mut v = AlignedVec::<T>::zeroed((64 << 20) / std::mem::size_of::<T>());
            let (resident, pages) = resident_pages(&v);
            assert!(resident <= 1, "{resident} of {pages} pages of a fresh zeroed {} buffer are resident", std::any::type_name::<T>());
            prefault(&mut v);
            assert_eq!(resident_pages(&v), (pages, pages));
            assert!(v.iter().all(|x| *x == T::default()));
        }
        check::<f32>();
        check::<half::bf16>();
        check::<half::f16>();
    }
}
