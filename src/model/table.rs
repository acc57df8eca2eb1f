//! The embedding table: `rows × dim` values (f32, bf16 or f16; see
//! [`super::half_rows`]), contiguous and row-major, in host memory.

use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::half_rows::{load_row, store_row, RoundingKey, RowValue, TableDtype, TableView};
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
pub const INIT_CHUNK_ROWS: usize = 4096;

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
    /// What the rows are stored in: initial rows are generated in f32 and
    /// rounded to nearest. Absent (f32) in manifests written before it existed.
    #[serde(default, skip_serializing_if = "TableDtype::is_f32")]
    pub dtype: TableDtype,
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

    /// Row `row`'s initial value as the table stores it, widened back to f32.
    pub fn initial_row_stored(&self, row: usize, out: &mut [f32]) {
        self.initial_row(row, out);
        match self.dtype {
            TableDtype::F32 => {}
            TableDtype::Bf16 => out.iter_mut().for_each(|x| *x = bf16::round_nearest(*x).to_f32()),
            TableDtype::F16 => out.iter_mut().for_each(|x| *x = f16::round_nearest(*x).to_f32()),
        }
    }

    /// Row `row`'s initial value in the stored type (`tmp`: `dim` f32 of scratch).
    /// For f32 this is [`TableRecipe::initial_row`] plus a copy, so f32 tables call that directly.
    fn initial_row_as<H: RowValue>(&self, row: usize, out: &mut [H], tmp: &mut [f32]) {
        self.initial_row(row, tmp);
        out.iter_mut().zip(tmp.iter()).for_each(|(o, &x)| *o = H::round_nearest(x));
    }

    /// Rows `chunk * INIT_CHUNK_ROWS ..` of the eager table, in f32 (`values`: whole rows).
    fn initial_chunk(&self, chunk: usize, values: &mut [f32]) {
        let dim = self.dim;
        match self.init {
            TableInit::Uniform { scale } => {
                // The chunk's whole stream at once: the same words initial_row seeks to.
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream(chunk as u64 + 1);
                let s = scale.unwrap_or(1.0 / dim as f32);
                values.iter_mut().for_each(|x| *x = rng.random_range(-s..=s));
            }
            TableInit::Normal { .. } => {
                let first = chunk * INIT_CHUNK_ROWS;
                values.chunks_mut(dim).enumerate().for_each(|(i, row)| self.initial_row(first + i, row));
            }
            // vec! of zeros is lazily mapped by the OS: touch every page now so the
            // first training steps do not pay page faults.
            TableInit::Zeros => prefault(values),
        }
    }
}

/// The rows in the table's dtype.
#[derive(Clone, Debug, PartialEq)]
enum TableData {
    F32(AlignedVec<f32>),
    Bf16(AlignedVec<bf16>),
    F16(AlignedVec<f16>),
}

/// Runs `$body` with `$v` bound to the table's values in their own type
/// (generic code inside is monomorphised once per dtype).
macro_rules! with_values {
    ($data:expr, |$v:ident| $body:expr) => {
        match $data {
            TableData::F32($v) => $body,
            TableData::Bf16($v) => $body,
            TableData::F16($v) => $body,
        }
    };
}

impl TableData {
    fn zeroed(dtype: TableDtype, len: usize) -> Self {
        match dtype {
            TableDtype::F32 => TableData::F32(AlignedVec::zeroed(len)),
            TableDtype::Bf16 => TableData::Bf16(AlignedVec::zeroed(len)),
            TableDtype::F16 => TableData::F16(AlignedVec::zeroed(len)),
        }
    }
}

/// The mutable view of a table that a row update needs: the rows in their
/// type, a reusable f32 buffer for widened rows, and the rounding key of this update.
pub enum RowsForUpdate<'a> {
    F32(&'a mut [f32]),
    Bf16(&'a mut [bf16], &'a mut Vec<f32>, RoundingKey),
    F16(&'a mut [f16], &'a mut Vec<f32>, RoundingKey),
}

/// Scratch kept between steps so an update allocates nothing once grown;
/// not part of the table's value (empty in a clone).
#[derive(Default)]
struct Scratch(Vec<f32>);
impl Clone for Scratch {
    fn clone(&self) -> Self {
        Scratch::default()
    }
}
impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scratch")
    }
}

#[derive(Clone, Debug)]
pub struct EmbeddingTable {
    rows: usize,
    dim: usize,
    data: TableData,
    /// Set for a table created by [`EmbeddingTable::lazy`] until every row is
    /// materialised: rows are generated from the recipe on first use.
    lazy: Option<LazyRows>,
    /// Seeds the stochastic rounding of half-precision rows.
    seed: u64,
    /// The step the next update's rounding is keyed by (see [`EmbeddingTable::set_update_step`]).
    update_step: u64,
    scratch: Scratch,
}

/// Equal tables hold the same rows (and the same rows still to generate);
/// the rounding seed and step are how the next update rounds, not part of the value.
impl PartialEq for EmbeddingTable {
    fn eq(&self, other: &Self) -> bool {
        (self.rows, self.dim, &self.data, &self.lazy) == (other.rows, other.dim, &other.data, &other.lazy)
    }
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
    /// An f32 table with every row initialised now (in parallel).
    pub fn new(rows: usize, dim: usize, init: TableInit, seed: u64) -> Self {
        Self::eager(TableRecipe { rows, dim, init, seed, dtype: TableDtype::F32 })
    }

    /// A table with every row of `recipe` initialised now (in parallel).
    pub fn eager(recipe: TableRecipe) -> Self {
        Self::eager_rows(recipe, 0..recipe.rows)
    }

    /// A table of rows `range` of the table `recipe` describes, each with its
    /// initial value: [`EmbeddingTable::eager`]'s rows, generated as fast. A
    /// range that does not start on a generation chunk (4096 rows) is
    /// generated row by row ([`EmbeddingTable::from_recipe_rows`]).
    pub fn eager_rows(recipe: TableRecipe, range: std::ops::Range<usize>) -> Self {
        let dim = recipe.dim;
        assert!(dim > 0, "embedding dim must be positive");
        assert!(range.start <= range.end && range.end <= recipe.rows, "rows {range:?} of a {}-row table", recipe.rows);
        if !range.start.is_multiple_of(INIT_CHUNK_ROWS) {
            return Self::from_recipe_rows(recipe, &(range.start as u32..range.end as u32).collect::<Vec<_>>());
        }
        let first_chunk = range.start / INIT_CHUNK_ROWS;
        let mut data = TableData::zeroed(recipe.dtype, range.len() * dim);
        match &mut data {
            TableData::F32(values) => values.par_chunks_mut(INIT_CHUNK_ROWS * dim).enumerate().for_each(|(c, values)| recipe.initial_chunk(first_chunk + c, values)),
            TableData::Bf16(values) => round_chunks(&recipe, first_chunk, values),
            TableData::F16(values) => round_chunks(&recipe, first_chunk, values),
        }
        Self::with_data(range.len(), dim, data, None, recipe.seed)
    }

    fn with_data(rows: usize, dim: usize, data: TableData, lazy: Option<LazyRows>, seed: u64) -> Self {
        EmbeddingTable { rows, dim, data, lazy, seed, update_step: 0, scratch: Scratch::default() }
    }

    /// A table of `global_ids.len()` rows holding rows `global_ids` of the table
    /// `recipe` describes, each with its initial value (generated in parallel,
    /// bit-identical to [`EmbeddingTable::eager`]'s rows of those ids).
    pub fn from_recipe_rows(recipe: TableRecipe, global_ids: &[u32]) -> Self {
        assert!(recipe.dim > 0, "embedding dim must be positive");
        let dim = recipe.dim;
        let mut data = TableData::zeroed(recipe.dtype, global_ids.len() * dim);
        with_values!(&mut data, |values| values.par_chunks_mut(dim * 256).enumerate().for_each(|(c, rows)| {
            let mut tmp = vec![0f32; dim];
            for (k, row) in rows.chunks_mut(dim).enumerate() {
                initial_row_into(&recipe, global_ids[c * 256 + k] as usize, row, &mut tmp);
            }
        }));
        Self::with_data(global_ids.len(), dim, data, None, recipe.seed)
    }

    /// A table whose rows are generated from `recipe` only when first used
    /// ([`EmbeddingTable::materialize`]): start-up costs nothing per row, and
    /// memory for rows never used is never touched (the zeroed allocation is
    /// mapped by the OS on first write). Every row ends up bit-identical to
    /// [`EmbeddingTable::eager`]'s.
    pub fn lazy(recipe: TableRecipe) -> Self {
        assert!(recipe.dim > 0, "embedding dim must be positive");
        let lazy = (recipe.rows > 0).then(|| LazyRows { recipe, done: vec![0; recipe.rows.div_ceil(64)], remaining: recipe.rows });
        Self::with_data(recipe.rows, recipe.dim, TableData::zeroed(recipe.dtype, recipe.rows * recipe.dim), lazy, recipe.seed)
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
        let (recipe, dim, rows) = (lazy.recipe, self.dim, self.rows);
        with_values!(&mut self.data, |data| {
            if fresh.len() < PARALLEL_INIT_MIN_ROWS {
                let mut tmp = vec![0f32; dim];
                for &r in &fresh {
                    let r = r as usize;
                    initial_row_into(&recipe, r, &mut data[r * dim..(r + 1) * dim], &mut tmp);
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
                let data = SharedMut(data.as_mut_ptr());
                fresh.par_iter().for_each_init(
                    || vec![0f32; dim],
                    |tmp, &r| {
                        let r = r as usize;
                        assert!(r < rows, "row {r} out of range for a table of {rows} rows");
                        // SAFETY: `fresh` holds each row once (its bit was clear and is now
                        // set), and r < rows, so each task writes its own row in bounds.
                        initial_row_into(&recipe, r, unsafe { data.slice(r * dim, dim) }, tmp);
                    },
                );
            }
        });
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
        with_values!(&mut self.data, |data| data.par_chunks_mut(INIT_CHUNK_ROWS * dim).enumerate().for_each(|(chunk, values)| {
            let first = chunk * INIT_CHUNK_ROWS;
            let mut tmp = vec![0f32; dim];
            for (i, row) in values.chunks_mut(dim).enumerate() {
                let r = first + i;
                if lazy.done[r / 64] & (1 << (r % 64)) == 0 {
                    initial_row_into(&recipe, r, row, &mut tmp);
                }
            }
        }));
    }

    /// Whether every row holds its value (always true for a table built by `new`).
    pub fn is_materialized(&self) -> bool {
        self.lazy.is_none()
    }

    /// An f32 table from existing row-major values (e.g. a checkpoint or an export).
    pub fn from_vec(rows: usize, dim: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * dim, "table data length must be rows * dim");
        Self::with_data(rows, dim, TableData::F32(AlignedVec::from_vec(data)), None, 0)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn dtype(&self) -> TableDtype {
        match self.data {
            TableData::F32(_) => TableDtype::F32,
            TableData::Bf16(_) => TableDtype::Bf16,
            TableData::F16(_) => TableDtype::F16,
        }
    }
    /// The rows in their stored type.
    pub fn view(&self) -> TableView<'_> {
        match &self.data {
            TableData::F32(v) => TableView::F32(v),
            TableData::Bf16(v) => TableView::Bf16(v),
            TableData::F16(v) => TableView::F16(v),
        }
    }
    /// Row `id` widened to f32 into `out` (`dim` values), whatever the dtype.
    pub fn row_into(&self, id: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.dim, "row buffer must hold dim values");
        self.view().row_into(id, out);
    }
    /// Every value widened to f32 (a copy; for export, projector and tests).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.view().to_f32_vec()
    }
    /// Row `id` of an f32 table. Panics for a half-precision table (use [`EmbeddingTable::row_into`]).
    pub fn row(&self, id: usize) -> &[f32] {
        &self.as_slice()[id * self.dim..(id + 1) * self.dim]
    }
    /// The values of an f32 table. Panics for a half-precision table (use [`EmbeddingTable::view`]).
    pub fn as_slice(&self) -> &[f32] {
        match &self.data {
            TableData::F32(v) => v,
            _ => panic!("the table stores {} rows, not f32: read it through view() or row_into()", self.dtype().name()),
        }
    }
    /// The values of an f32 table. Panics for a half-precision table (use [`EmbeddingTable::update_all_rows`]).
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        let dtype = self.dtype();
        match &mut self.data {
            TableData::F32(v) => v,
            _ => panic!("the table stores {} rows, not f32: update it through update_all_rows() or the optimizer row helper", dtype.name()),
        }
    }
    /// The values of an f32 table; for a half-precision one, widened to f32.
    pub fn into_vec(self) -> Vec<f32> {
        match self.data {
            TableData::F32(v) => v.into_vec(),
            _ => self.view().to_f32_vec(),
        }
    }
    /// The stored values' bytes (rows of [`EmbeddingTable::row_bytes`]).
    pub fn as_bytes(&self) -> &[u8] {
        with_values!(&self.data, |v| bytemuck::cast_slice(&v[..]))
    }
    /// The stored values' bytes, to be overwritten in place (a checkpoint restore).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        with_values!(&mut self.data, |v| bytemuck::cast_slice_mut(&mut v[..]))
    }
    /// Bytes of one stored row.
    pub fn row_bytes(&self) -> usize {
        self.dim * self.dtype().size()
    }
    /// Bytes the rows take in memory.
    pub fn bytes(&self) -> usize {
        self.rows * self.dim * self.dtype().size()
    }

    /// Sets the step that the next update's stochastic rounding is keyed by.
    /// The trainer sets its global step before every table update, so a
    /// resumed run draws the same bits as an uninterrupted one; without it,
    /// each update uses the next step after the previous one.
    pub fn set_update_step(&mut self, step: u64) {
        self.update_step = step;
    }

    /// The rows for one update (the optimizer row helper's view): a
    /// half-precision table also lends its scratch and this update's
    /// rounding key, and the next update's key moves one step on.
    pub fn for_update(&mut self) -> RowsForUpdate<'_> {
        let key = RoundingKey { seed: self.seed, step: self.update_step };
        self.update_step += 1;
        match &mut self.data {
            TableData::F32(v) => RowsForUpdate::F32(v),
            TableData::Bf16(v) => RowsForUpdate::Bf16(v, &mut self.scratch.0, key),
            TableData::F16(v) => RowsForUpdate::F16(v, &mut self.scratch.0, key),
        }
    }

    /// Calls `f(row, values)` for every row, in parallel, with the row widened
    /// to f32; a half-precision row is written back with stochastic rounding
    /// keyed like an update (see [`EmbeddingTable::for_update`]).
    pub fn update_all_rows(&mut self, f: impl Fn(usize, &mut [f32]) + Sync) {
        self.update_rows_numbered_from(0, f);
    }

    /// [`EmbeddingTable::update_all_rows`] for a table that holds rows
    /// `first..` of a larger one (a range being exported): half rows are
    /// rounded with the bits of their row number in the larger table, so the
    /// result equals that table's own update. `f` gets the local row.
    pub fn update_rows_numbered_from(&mut self, first: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
        self.update_rows(first, false, f);
    }

    /// [`EmbeddingTable::update_all_rows`] for the rows that hold their
    /// values: a lazy table's other rows are neither read nor written, so
    /// they still cost no memory.
    pub fn update_held_rows(&mut self, f: impl Fn(usize, &mut [f32]) + Sync) {
        self.update_rows(0, true, f);
    }

    /// Whether row `r` holds its value (a lazy table's row once materialised).
    pub fn holds_row(&self, r: usize) -> bool {
        is_held(self.lazy.as_ref().map(|lazy| &lazy.done[..]), r)
    }

    fn update_rows(&mut self, first: usize, held_only: bool, f: impl Fn(usize, &mut [f32]) + Sync) {
        let dim = self.dim;
        let key = RoundingKey { seed: self.seed, step: self.update_step };
        self.update_step += 1;
        let done = self.lazy.as_ref().filter(|_| held_only).map(|lazy| &lazy.done[..]);
        match &mut self.data {
            TableData::F32(v) => v.par_chunks_mut(dim).enumerate().filter(|(r, _)| is_held(done, *r)).for_each(|(r, w)| f(r, w)),
            TableData::Bf16(v) => update_half_rows(v, dim, first, done, key, &f),
            TableData::F16(v) => update_half_rows(v, dim, first, done, key, &f),
        }
    }
}

/// Whether row `r` is to be updated: every row, or (with a lazy table's
/// bits) only a materialised one.
fn is_held(done: Option<&[u64]>, r: usize) -> bool {
    done.is_none_or(|done| done[r / 64] & (1 << (r % 64)) != 0)
}

fn update_half_rows<H: RowValue>(values: &mut [H], dim: usize, first: usize, done: Option<&[u64]>, key: RoundingKey, f: &(impl Fn(usize, &mut [f32]) + Sync)) {
    values.par_chunks_mut(dim).enumerate().filter(|(r, _)| is_held(done, *r)).for_each_init(
        || vec![0f32; dim],
        |tmp, (r, row)| {
            load_row(tmp, row);
            f(r, tmp);
            store_row(row, tmp, &mut key.row_bits(first + r));
        },
    );
}

/// Row `r`'s initial value in the stored type, through `tmp` for half types.
#[inline]
fn initial_row_into<H: RowValue>(recipe: &TableRecipe, r: usize, out: &mut [H], tmp: &mut [f32]) {
    if H::DTYPE == TableDtype::F32 {
        // f32 rows are generated in place (H is f32: the cast cannot fail).
        recipe.initial_row(r, bytemuck::cast_slice_mut(out));
    } else {
        recipe.initial_row_as(r, out, tmp);
    }
}

/// The eager table's rows in a half type: each chunk generated in f32 as for
/// an f32 table, then rounded to nearest, so a half table's rows are exactly
/// the f32 table's rows rounded.
fn round_chunks<H: RowValue>(recipe: &TableRecipe, first_chunk: usize, values: &mut [H]) {
    values.par_chunks_mut(INIT_CHUNK_ROWS * recipe.dim).enumerate().for_each(|(c, values)| {
        let mut tmp = vec![0f32; values.len()];
        recipe.initial_chunk(first_chunk + c, &mut tmp);
        values.iter_mut().zip(&tmp).for_each(|(o, &x)| *o = H::round_nearest(x));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::ALIGN_BYTES;

    #[test]
    fn any_range_of_rows_is_those_rows_of_the_eager_table() {
        for (dtype, init) in [(TableDtype::F32, TableInit::default()), (TableDtype::Bf16, TableInit::default()), (TableDtype::F16, TableInit::Normal { std: 0.1 })] {
            let recipe = TableRecipe { rows: 3 * INIT_CHUNK_ROWS + 100, dim: 5, init, seed: 3, dtype };
            let whole = EmbeddingTable::eager(recipe);
            let row_bytes = 5 * dtype.size();
            // Aligned (fast path) and unaligned starts, ends inside a chunk and at the table's end.
            for range in [0..1, INIT_CHUNK_ROWS..2 * INIT_CHUNK_ROWS + 7, 2 * INIT_CHUNK_ROWS..recipe.rows, 17..INIT_CHUNK_ROWS + 3, 0..recipe.rows] {
                let part = EmbeddingTable::eager_rows(recipe, range.clone());
                assert_eq!(part.as_bytes(), &whole.as_bytes()[range.start * row_bytes..range.end * row_bytes], "{dtype:?} rows {range:?}");
            }
        }
    }

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
            let mut lazy = EmbeddingTable::lazy(TableRecipe { rows, dim: 24, init, seed: 11, dtype: TableDtype::F32 });
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
            lazy.as_mut_slice()[24..48].fill(7.0);
            lazy.materialize_all();
            assert!(lazy.is_materialized());
            assert_eq!(lazy.row(1), &[7.0; 24][..]);
            lazy.as_mut_slice()[24..48].copy_from_slice(eager.row(1));
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
