//! The rows of the table that a run's data can reach, numbered densely.
//!
//! A lazy optimizer moves only rows that appear in a batch, and evaluation
//! reads only the test examples' rows; every other row keeps its seeded
//! initial value for the whole run. So the trainer holds just the reachable
//! rows ("resident" rows, local ids `0..len`) with their optimizer state:
//! memory, page zeroing and cache footprint follow the rows the data touches,
//! not the table's size (Debian sections: 0.6M of 2.04M rows). Checkpoints and
//! everything after them speak the table's own ("global") row ids, and
//! untouched rows are regenerated from the table's recipe, so nothing outside
//! the trainer sees the difference.

use rayon::prelude::*;

pub struct ResidentRows {
    /// Rows of the whole table.
    table_rows: usize,
    /// Global id of each local row, ascending (so local order is global order).
    global: Vec<u32>,
    /// One bit per global row: resident or not.
    bits: Vec<u64>,
    /// Resident rows before each 64-row word of `bits` (rank support).
    before: Vec<u32>,
}

impl ResidentRows {
    /// The rows that appear in any of `id_lists`, out of a table of `table_rows` rows.
    pub fn reached_by(table_rows: usize, id_lists: &[&[u32]]) -> Self {
        let mut bits = vec![0u64; table_rows.div_ceil(64)];
        for ids in id_lists {
            for &id in *ids {
                assert!((id as usize) < table_rows, "row {id} out of range for a table of {table_rows} rows");
                bits[id as usize / 64] |= 1 << (id % 64);
            }
        }
        let mut before = Vec::with_capacity(bits.len());
        let mut global = Vec::new();
        for (w, &word) in bits.iter().enumerate() {
            before.push(global.len() as u32);
            let mut rest = word;
            while rest != 0 {
                global.push((w * 64) as u32 + rest.trailing_zeros());
                rest &= rest - 1;
            }
        }
        ResidentRows { table_rows, global, bits, before }
    }

    /// Resident rows (local ids are `0..len`).
    pub fn len(&self) -> usize {
        self.global.len()
    }

    pub fn is_empty(&self) -> bool {
        self.global.is_empty()
    }

    /// Rows of the whole table.
    pub fn table_rows(&self) -> usize {
        self.table_rows
    }

    /// Global ids of the local rows, ascending.
    pub fn global_ids(&self) -> &[u32] {
        &self.global
    }

    /// The local id of global row `id`, if it is resident.
    pub fn local(&self, id: u32) -> Option<u32> {
        let (w, bit) = (id as usize / 64, id % 64);
        let word = *self.bits.get(w)?;
        (word >> bit & 1 == 1).then(|| self.before[w] + (word & ((1u64 << bit) - 1)).count_ones())
    }

    /// Rewrites global ids as local ids (every id must be resident).
    pub fn localize(&self, ids: &mut [u32]) {
        ids.par_chunks_mut(1 << 16).for_each(|chunk| {
            for id in chunk {
                *id = self.local(*id).unwrap_or_else(|| panic!("row {id} is not resident"));
            }
        });
    }

    /// Global ids of local ids.
    pub fn globalize(&self, local: &[u32]) -> Vec<u32> {
        local.iter().map(|&l| self.global[l as usize]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn local_ids_are_ranks_among_the_reached_rows() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let table_rows = 10_000;
        let a: Vec<u32> = (0..3000).map(|_| rng.random_range(0..table_rows as u32)).collect();
        let b: Vec<u32> = (0..500).map(|_| rng.random_range(0..table_rows as u32)).chain([0, table_rows as u32 - 1]).collect();
        let r = ResidentRows::reached_by(table_rows, &[&a, &b]);
        // Independently: the sorted distinct union.
        let mut expect: Vec<u32> = a.iter().chain(&b).copied().collect();
        expect.sort_unstable();
        expect.dedup();
        assert_eq!(r.global_ids(), &expect[..]);
        for id in 0..table_rows as u32 {
            assert_eq!(r.local(id), expect.binary_search(&id).ok().map(|k| k as u32), "row {id}");
        }
        let mut ids = b.clone();
        r.localize(&mut ids);
        assert_eq!(r.globalize(&ids), b);
        assert_eq!(r.local(table_rows as u32 + 5), None);
    }
}
