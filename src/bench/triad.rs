//! A STREAM-style triad, `a[i] = b[i] + s·c[i]` over three large f64 arrays,
//! in parallel: the sustainable memory bandwidth the optimizer is compared with.
//!
//! Bytes are counted as STREAM does: 2 reads + 1 write of 8 bytes per element
//! (the write-allocate read of `a` is not counted). Plain stores, as a
//! compiler emits them for STREAM's C source without special flags.

use std::time::Instant;

use clap::Args;
use rayon::prelude::*;
use serde::Serialize;

use crate::model::table::AlignedVec;

#[derive(Args, Debug, Clone)]
pub struct TriadArgs {
    /// Size of each of the three arrays, in GB.
    #[arg(long, default_value_t = 1.0)]
    pub gb: f64,
    /// Repetitions; the best is reported (STREAM's convention).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct TriadResult {
    pub bytes_per_array: u64,
    pub reps: usize,
    pub threads: usize,
    pub best_s: f64,
    pub median_s: f64,
    /// Best-of-reps bandwidth, STREAM-counted (3 × 8 bytes per element).
    pub gb_per_s: f64,
    pub median_gb_per_s: f64,
}

pub fn run(args: TriadArgs) -> anyhow::Result<()> {
    let r = super::with_threads(args.threads, || triad(args.gb, args.reps))?;
    println!(
        "triad: 3 × {:.2} GB f64 arrays, {} threads: best {:.2} GB/s, median {:.2} GB/s",
        r.bytes_per_array as f64 / 1e9,
        r.threads,
        r.gb_per_s,
        r.median_gb_per_s
    );
    Ok(())
}

/// Runs the triad on the current rayon pool.
pub fn triad(gb_per_array: f64, reps: usize) -> TriadResult {
    let n = ((gb_per_array * 1e9) as usize / 8).max(1 << 20);
    // Allocated like the table and optimizer state (aligned, huge pages), so
    // the yardstick gets every advantage the optimizer gets: with 4 KiB pages
    // it measured 20–45% lower here.
    let mut a: AlignedVec<f64> = AlignedVec::zeroed_prefaulted(n);
    let mut b: AlignedVec<f64> = AlignedVec::zeroed_prefaulted(n);
    let mut c: AlignedVec<f64> = AlignedVec::zeroed_prefaulted(n);
    b.par_iter_mut().for_each(|x| *x = 1.0);
    c.par_iter_mut().for_each(|x| *x = 2.0);
    let s = 3.0f64;
    // One contiguous block per task, a few per thread: big enough that
    // scheduling is free and each thread streams through memory.
    let chunk = n.div_ceil(rayon::current_num_threads() * 4);
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        a.par_chunks_mut(chunk).zip(b.par_chunks(chunk)).zip(c.par_chunks(chunk)).for_each(|((a, b), c)| {
            for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                *a = b + s * c;
            }
        });
        times.push(t0.elapsed().as_secs_f64());
        std::hint::black_box(&mut a);
    }
    assert!(a[n / 2] == 7.0, "triad computed the wrong values");
    let bytes = 3.0 * n as f64 * 8.0;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let (best, median) = (sorted[0], sorted[sorted.len() / 2]);
    TriadResult {
        bytes_per_array: n as u64 * 8,
        reps: times.len(),
        threads: rayon::current_num_threads(),
        best_s: best,
        median_s: median,
        gb_per_s: bytes / best / 1e9,
        median_gb_per_s: bytes / median / 1e9,
    }
}
