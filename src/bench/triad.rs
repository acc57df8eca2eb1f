//! A STREAM-style triad, `a[i] = b[i] + s·c[i]` over three large f64 arrays,
//! in parallel: the sustainable memory bandwidth the optimizer is compared with.
//!
//! Bytes are counted as STREAM does: 2 reads + 1 write of 8 bytes per element
//! (the write-allocate read of `a` is not counted). Plain stores, as a
//! compiler emits them for STREAM's C source without special flags.

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::mem::AlignedVec;

#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TriadArgs {
    /// Size of each of the three arrays, in GB.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1.0))]
    pub gb: f64,
    /// Repetitions per array offset (4 offsets); the best is reported (STREAM's convention).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 5))]
    pub reps: usize,
    /// Threads (0 = all cores).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
    pub threads: usize,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct TriadResult {
    pub bytes_per_array: u64,
    pub reps: usize,
    pub threads: usize,
    /// Offsets (in elements) of b and c that gave the best time.
    pub best_offsets: (usize, usize),
    pub best_s: f64,
    pub median_s: f64,
    /// Best-of-reps bandwidth, STREAM-counted (3 × 8 bytes per element).
    pub gb_per_s: f64,
    pub median_gb_per_s: f64,
}

pub fn run(args: TriadArgs) -> anyhow::Result<()> {
    let r = super::with_threads(args.threads, || triad(args.gb, args.reps))?;
    println!(
        "triad: 3 × {:.2} GB f64 arrays, {} threads: best {:.2} GB/s (b, c offset by {:?} elements), median {:.2} GB/s",
        r.bytes_per_array as f64 / 1e9,
        r.threads,
        r.gb_per_s,
        r.best_offsets,
        r.median_gb_per_s
    );
    Ok(())
}

/// Element offsets of `b` and `c` relative to `a` that the triad tries (as
/// STREAM's OFFSET does). With all three arrays at the same offset in their
/// pages, a store to `a[i]` and the loads of `b[i]`, `c[i]` share their low
/// address bits, and this CPU then ran the triad ~30% slower (4K aliasing).
const OFFSETS: [(usize, usize); 4] = [(0, 0), (8, 16), (16, 32), (32, 64)];

/// Runs the triad on the current rayon pool: `reps` repetitions for each of
/// the offsets above; the best is the result.
pub fn triad(gb_per_array: f64, reps: usize) -> TriadResult {
    let n = ((gb_per_array * 1e9) as usize / 8).max(1 << 20);
    let slack = 64;
    // Allocated like the table and optimizer state (aligned, huge pages), so
    // the yardstick gets every advantage the optimizer gets.
    let mut a: AlignedVec<f64> = AlignedVec::zeroed_prefaulted(n + slack);
    let mut b: AlignedVec<f64> = AlignedVec::zeroed_prefaulted(n + slack);
    let mut c: AlignedVec<f64> = AlignedVec::zeroed_prefaulted(n + slack);
    b.par_iter_mut().for_each(|x| *x = 1.0);
    c.par_iter_mut().for_each(|x| *x = 2.0);
    let s = 3.0f64;
    // One contiguous block per task, a few per thread: big enough that
    // scheduling is free and each thread streams through memory.
    let chunk = n.div_ceil(rayon::current_num_threads() * 4);
    let mut times = Vec::with_capacity(reps * OFFSETS.len());
    let mut best = (f64::MAX, (0, 0));
    for &(ob, oc) in &OFFSETS {
        let (a, b, c) = (&mut a[..n], &b[ob..ob + n], &c[oc..oc + n]);
        for _ in 0..reps.max(1) {
            let t0 = Instant::now();
            a.par_chunks_mut(chunk).zip(b.par_chunks(chunk)).zip(c.par_chunks(chunk)).for_each(|((a, b), c)| {
                for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                    *a = b + s * c;
                }
            });
            let t = t0.elapsed().as_secs_f64();
            times.push(t);
            if t < best.0 {
                best = (t, (ob, oc));
            }
            std::hint::black_box(&mut *a);
        }
        assert!(a[n / 2] == 7.0, "triad computed the wrong values");
    }
    let bytes = 3.0 * n as f64 * 8.0;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    TriadResult {
        bytes_per_array: n as u64 * 8,
        reps: times.len(),
        threads: rayon::current_num_threads(),
        best_offsets: best.1,
        best_s: best.0,
        median_s: median,
        gb_per_s: bytes / best.0 / 1e9,
        median_gb_per_s: bytes / median / 1e9,
    }
}
