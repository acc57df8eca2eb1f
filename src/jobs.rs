//! A fixed pool of worker threads that take jobs in order until the list is
//! done or a stop flag is set: how `compare` and `sweep` run their trainings
//! N at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::cancel::CancelToken;

/// Runs `work(i)` for `i` in `0..jobs` on `workers` threads (at least 1, at
/// most `jobs`), in index order of start. Once `stop` is cancelled no job
/// starts; a job that returns `true` in `.1` cancels it itself (e.g. it was
/// interrupted). Returns each job's result, `None` for the ones never started.
pub fn run<R: Send>(jobs: usize, workers: usize, stop: &CancelToken, work: impl Fn(usize) -> (R, bool) + Sync) -> Vec<Option<R>> {
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..jobs).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, jobs.max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= jobs || stop.is_cancelled() {
                    return;
                }
                let (result, stop_now) = work(i);
                if stop_now {
                    stop.cancel();
                }
                results.lock().unwrap()[i] = Some(result);
            });
        }
    });
    results.into_inner().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_runs_once_and_results_keep_their_index() {
        let stop = CancelToken::new();
        let out = run(17, 4, &stop, |i| (i * i, false));
        assert_eq!(out, (0..17).map(|i| Some(i * i)).collect::<Vec<_>>());
    }

    #[test]
    fn a_stopping_job_prevents_later_starts() {
        let stop = CancelToken::new();
        let out = run(10, 1, &stop, |i| (i, i == 3));
        assert_eq!(out, (0..10).map(|i| (i <= 3).then_some(i)).collect::<Vec<_>>());
        assert!(stop.is_cancelled());
    }
}
