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
    data: Vec<f32>,
}

impl EmbeddingTable {
    pub fn new(rows: usize, dim: usize, init: TableInit, seed: u64) -> Self {
        assert!(dim > 0, "embedding dim must be positive");
        let mut data = vec![0.0f32; rows * dim];
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
        EmbeddingTable { rows, dim, data }
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
        self.data
    }
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
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
}
