//! Shuffled batches in CSR form.

use std::sync::Arc;

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
            data.extend_with_example(i, &mut b.ids);
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

/// Batches of one epoch, starting at batch `skip`, gathered when asked for:
/// a batch is a few microseconds of copying, less than handing it over from a
/// prefetch thread costs when the cores are busy with the step.
pub struct BatchIter {
    data: Arc<Dataset>,
    order: Vec<usize>,
    batch_size: usize,
    /// Position in `order` of the next batch's first example.
    next: usize,
}

impl BatchIter {
    pub fn new(data: Arc<Dataset>, batch_size: usize, seed: u64, epoch: u64, skip: usize) -> Self {
        assert!(batch_size > 0, "batch_size must be positive");
        let order = epoch_order(data.len(), seed, epoch);
        let next = skip.saturating_mul(batch_size).min(order.len());
        BatchIter { data, order, batch_size, next }
    }

    pub fn batches_per_epoch(len: usize, batch_size: usize) -> usize {
        len.div_ceil(batch_size)
    }
}

impl Iterator for BatchIter {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let batch = Batch::gather(&self.data, &self.order[self.next..end]);
        self.next = end;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_the_epoch_order_from_any_skip() {
        let data = Arc::new(Dataset {
            ids: (0..10).collect::<Vec<u32>>().into(),
            offsets: (0..=10).collect(),
            labels: (0..10).map(|i| i % 3).collect(),
            unknown_labels: 0,
            stats: Default::default(),
        });
        let order = epoch_order(10, 7, 2);
        let all: Vec<Batch> = BatchIter::new(data.clone(), 4, 7, 2, 0).collect();
        assert_eq!(all.iter().map(Batch::len).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(all.iter().flat_map(|b| b.examples.clone()).collect::<Vec<_>>(), order);
        assert_eq!(all[1].ids, order[4..8].iter().map(|&i| i as u32).collect::<Vec<_>>());
        let skipped: Vec<Batch> = BatchIter::new(data.clone(), 4, 7, 2, 1).collect();
        assert_eq!(skipped, all[1..]);
        assert_eq!(BatchIter::new(data, 4, 7, 2, 9).count(), 0);
    }

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
