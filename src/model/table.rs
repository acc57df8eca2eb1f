//! The embedding table: `rows × dim` f32, contiguous and row-major, in host memory.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::mem::{prefault, AlignedVec};
use crate::par::SharedMut;

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
            // The tasks below write one row each: soundness needs the rows unique.
            debug_assert!(
                {
                    let mut sorted = fresh.clone();
                    sorted.sort_unstable();
                    sorted.windows(2).all(|p| p[0] < p[1])
                },
                "rows to materialise must be unique"
            );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::ALIGN_BYTES;

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
