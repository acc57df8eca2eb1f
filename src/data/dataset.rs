//! Encoded datasets: every example as row ids (CSR) plus a label index, built
//! by streaming the file (texts are not kept).

use std::collections::HashMap;
use std::path::Path;

use super::reader::{read_examples, DataFormat, ReadStats};
use super::row_ids::RowIds;
use super::vocab::Featurizer;

/// The label set of the training data, in a stable order (sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Labels {
    pub fn new(mut names: Vec<String>) -> Self {
        names.sort();
        names.dedup();
        // Callers pass every example's label: keep room for the distinct ones only.
        names.shrink_to_fit();
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i as u32)).collect();
        Labels { names, index }
    }
    pub fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }
    pub fn names(&self) -> &[String] {
        &self.names
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Label id of an example whose label was never seen in training; it is
/// evaluated and always counts as an error.
pub const UNKNOWN_LABEL: u32 = u32::MAX;

#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// Every example's row ids, one example after another: on the heap, or on
    /// disk after [`Dataset::move_ids_to_disk`].
    pub ids: RowIds,
    /// `offsets[i]..offsets[i + 1]` are example `i`'s ids.
    pub offsets: Vec<usize>,
    pub labels: Vec<u32>,
    /// Examples whose label is not in the training label set.
    pub unknown_labels: u64,
    pub stats: ReadStats,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Appends example `i`'s ids to `out`.
    pub fn extend_with_example(&self, i: usize, out: &mut Vec<u32>) {
        self.ids.extend_into(self.offsets[i]..self.offsets[i + 1], out);
    }

    /// The ids of examples `examples`, one after another (borrowed from the
    /// heap, or read from disk); example `i`'s start at `offsets[i] - offsets[examples.start]`.
    pub fn ids_of(&self, examples: std::ops::Range<usize>) -> std::borrow::Cow<'_, [u32]> {
        self.ids.slice(self.offsets[examples.start]..self.offsets[examples.end])
    }

    /// Bytes of row ids, offsets and labels held on the heap.
    pub fn heap_bytes(&self) -> u64 {
        let ids = if self.ids.on_disk() { 0 } else { self.ids.len() * 4 };
        (ids + self.offsets.len() * std::mem::size_of::<usize>() + self.labels.len() * 4) as u64
    }

    /// Moves the row ids to an unlinked file in `dir` (see [`RowIds`]): readers
    /// then hold the ids they read, not the dataset's.
    pub fn move_ids_to_disk(&mut self, dir: &Path) -> anyhow::Result<()> {
        self.ids.move_to_disk(dir)
    }

    /// Streams `path` and encodes every good example.
    pub fn encode_file(path: &Path, format: DataFormat, strict: bool, featurizer: &Featurizer, labels: &Labels) -> anyhow::Result<Self> {
        let mut data = Dataset { offsets: vec![0], ..Default::default() };
        let (mut tokens, mut ids) = (Vec::new(), Vec::new());
        let stats = read_examples(path, format, strict, |ex| {
            featurizer.features_into(&ex.text, &mut tokens, &mut ids);
            data.offsets.push(ids.len());
            let label = labels.get(&ex.label).unwrap_or(UNKNOWN_LABEL);
            data.unknown_labels += (label == UNKNOWN_LABEL) as u64;
            data.labels.push(label);
        })?;
        data.ids = ids.into();
        data.stats = stats;
        Ok(data)
    }

    /// The examples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut out = Dataset { offsets: vec![0], ..Default::default() };
        let ids = out.ids.heap_mut();
        for &i in indices {
            self.extend_with_example(i, ids);
            out.offsets.push(ids.len());
            out.labels.push(self.labels[i]);
        }
        out.unknown_labels = out.labels.iter().filter(|&&l| l == UNKNOWN_LABEL).count() as u64;
        out
    }
}
