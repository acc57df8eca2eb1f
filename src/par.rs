//! Parallel loops over disjoint parts of one buffer, on the current rayon pool.
//! Below `model` and `optim`, which both run their row loops with it.

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
pub fn for_each_claimed(chunks: usize, f: impl Fn(usize) + Sync) {
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
pub struct SharedMut<T>(pub *mut T);
// SAFETY: only a pointer; every user guarantees the parts it hands out are
// disjoint, which is what makes sharing it between threads sound.
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}
impl<T> SharedMut<T> {
    /// # Safety
    /// `start..start+len` must be in bounds and no other thread may access it concurrently.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}
