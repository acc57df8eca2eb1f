//! A set of table rows with O(1) insertion: a bitmap for membership plus the
//! list of members, so clearing and listing cost the members, not the table.

pub(crate) struct RowSet {
    bits: Vec<u64>,
    ids: Vec<u32>,
    /// Every row (a dense optimizer changes them all each step).
    all: bool,
}

impl RowSet {
    pub fn new(rows: usize) -> Self {
        RowSet { bits: vec![0; rows.div_ceil(64)], ids: Vec::new(), all: false }
    }

    pub fn insert(&mut self, ids: &[u32]) {
        if self.all {
            return;
        }
        for &id in ids {
            let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
            if self.bits[word] & bit == 0 {
                self.bits[word] |= bit;
                self.ids.push(id);
            }
        }
    }

    pub fn insert_all(&mut self) {
        self.clear();
        self.all = true;
    }

    pub fn clear(&mut self) {
        for &id in &self.ids {
            self.bits[id as usize / 64] = 0;
        }
        self.ids.clear();
        self.all = false;
    }

    pub fn len(&self, rows: usize) -> usize {
        if self.all {
            rows
        } else {
            self.ids.len()
        }
    }

    /// The members in ascending order, or `None` for every row.
    pub fn sorted(&self) -> Option<Vec<u32>> {
        if self.all {
            return None;
        }
        let mut ids = self.ids.clone();
        ids.sort_unstable();
        Some(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_unique_sorted_and_cleared() {
        let mut s = RowSet::new(200);
        s.insert(&[130, 5, 64, 5, 199]);
        s.insert(&[64, 0]);
        assert_eq!(s.sorted(), Some(vec![0, 5, 64, 130, 199]));
        assert_eq!(s.len(200), 5);
        s.clear();
        assert_eq!(s.sorted(), Some(vec![]));
        s.insert(&[5]);
        assert_eq!(s.sorted(), Some(vec![5]), "clearing must reset the bitmap");
        s.insert_all();
        assert_eq!((s.sorted(), s.len(200)), (None, 200));
    }
}
