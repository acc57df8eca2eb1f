//! Encoded datasets: every example as row ids (CSR) plus a label index, built
//! by streaming the file (texts are not kept).

use std::collections::HashMap;
use std::path::Path;

use super::reader::{read_examples, DataFormat, ReadStats};
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
    pub ids: Vec<u32>,
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
    pub fn example(&self, i: usize) -> &[u32] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
    }

    /// Streams `path` and encodes every good example.
    pub fn encode_file(path: &Path, format: DataFormat, strict: bool, featurizer: &Featurizer, labels: &Labels) -> anyhow::Result<Self> {
        let mut data = Dataset { offsets: vec![0], ..Default::default() };
        let mut tokens = Vec::new();
        let stats = read_examples(path, format, strict, |ex| {
            featurizer.features_into(&ex.text, &mut tokens, &mut data.ids);
            data.offsets.push(data.ids.len());
            let label = labels.get(&ex.label).unwrap_or(UNKNOWN_LABEL);
            data.unknown_labels += (label == UNKNOWN_LABEL) as u64;
            data.labels.push(label);
        })?;
        data.stats = stats;
        Ok(data)
    }

    /// The examples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut out = Dataset { offsets: vec![0], ..Default::default() };
        for &i in indices {
            out.ids.extend_from_slice(self.example(i));
            out.offsets.push(out.ids.len());
            out.labels.push(self.labels[i]);
        }
        out.unknown_labels = out.labels.iter().filter(|&&l| l == UNKNOWN_LABEL).count() as u64;
        out
    }
}
