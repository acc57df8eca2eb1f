//! Shuffled batches, prepared on a background thread so the trainer never waits on them.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::dataset::Dataset;

/// A batch of bags in CSR form with their labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub ids: Vec<u32>,
    pub offsets: Vec<usize>,
    pub labels: Vec<u32>,
    /// Index of each example in the dataset (to check data order across arms).
    pub examples: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn gather(data: &Dataset, examples: &[usize]) -> Batch {
        let mut b = Batch { offsets: vec![0], ..Default::default() };
        for &i in examples {
            b.ids.extend_from_slice(data.example(i));
            b.offsets.push(b.ids.len());
            b.labels.push(data.labels[i]);
        }
        b.examples = examples.to_vec();
        b
    }
}

/// The order of examples in `epoch`: a permutation drawn from `(seed, epoch)`
/// only, so every arm with the same seed sees the same batches and a resumed
/// run can skip straight to its position.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch + 1);
    order.shuffle(&mut rng);
    order
}

/// Batches of one epoch, starting at batch `skip`, built ahead on a thread.
pub struct BatchIter {
    rx: Receiver<Batch>,
    worker: Option<JoinHandle<()>>,
}

/// Batches prepared ahead of the trainer.
const PREFETCH: usize = 4;

impl BatchIter {
    pub fn new(data: Arc<Dataset>, batch_size: usize, seed: u64, epoch: u64, skip: usize) -> Self {
        let (tx, rx) = sync_channel(PREFETCH);
        let worker = std::thread::Builder::new()
            .name("batch-prefetch".into())
            .spawn(move || {
                let order = epoch_order(data.len(), seed, epoch);
                for chunk in order.chunks(batch_size).skip(skip) {
                    if tx.send(Batch::gather(&data, chunk)).is_err() {
                        return; // the trainer stopped early
                    }
                }
            })
            .expect("spawn batch prefetch thread");
        BatchIter { rx, worker: Some(worker) }
    }

    pub fn batches_per_epoch(len: usize, batch_size: usize) -> usize {
        len.div_ceil(batch_size)
    }
}

impl Iterator for BatchIter {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.rx.recv().ok()
    }
}

impl Drop for BatchIter {
    fn drop(&mut self) {
        // Unblock the worker (its send fails once rx is gone) before joining it.
        let (_, dummy) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, dummy));
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations_that_depend_only_on_seed_and_epoch() {
        let a = epoch_order(100, 1, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 1, 0));
        assert_ne!(a, epoch_order(100, 1, 1));
        assert_ne!(a, epoch_order(100, 2, 0));
    }
}
