//! Turns a config's data section into encoded train and test sets: labels and
//! vocabulary from the training portion only, then the row ids of every example.

use std::collections::HashMap;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::data::reader::read_examples;
use crate::data::{Dataset, Featurizer, Labels, ReadStats, Tokenizer, Vocab};

pub struct Prepared {
    pub featurizer: Featurizer,
    pub labels: Labels,
    pub train: Arc<Dataset>,
    pub test: Dataset,
}

/// Indices held out for testing: `fraction` of each label's examples, drawn with `seed`.
fn stratified_holdout(labels: &[String], fraction: f64, seed: u64) -> Vec<bool> {
    let mut by_label: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, l) in labels.iter().enumerate() {
        by_label.entry(l).or_default().push(i);
    }
    let mut names: Vec<&str> = by_label.keys().copied().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut test = vec![false; labels.len()];
    for name in names {
        let idx = by_label.get_mut(name).unwrap();
        idx.shuffle(&mut rng);
        let n = (idx.len() as f64 * fraction).round() as usize;
        idx.iter().take(n).for_each(|&i| test[i] = true);
    }
    test
}

pub fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    let d = &config.data;
    let tokenizer = Tokenizer::new(config.tokenizer.clone());

    // Pass 1: labels of every line (cheap), to choose the held-out split when there is no test file.
    let mut line_labels = Vec::new();
    read_examples(&d.train, d.format, d.strict, |ex| line_labels.push(ex.label))?;
    if line_labels.is_empty() {
        anyhow::bail!("{}: no usable examples (empty file, or every line is bad)", d.train.display());
    }
    let held_out = match d.test {
        Some(_) => vec![false; line_labels.len()],
        None => stratified_holdout(&line_labels, d.test_fraction, d.split_seed),
    };

    // Pass 2: vocabulary and labels from the training portion.
    let mut counts: HashMap<String, u64> = HashMap::new();
    let (mut i, mut tokens) = (0, Vec::new());
    read_examples(&d.train, d.format, d.strict, |ex| {
        if !held_out[i] {
            tokenizer.tokenize_into(&ex.text, &mut tokens);
            for t in tokens.drain(..) {
                *counts.entry(t).or_insert(0) += 1;
            }
        }
        i += 1;
    })?;
    let labels = Labels::new(line_labels.iter().zip(&held_out).filter(|(_, h)| !**h).map(|(l, _)| l.clone()).collect());
    let featurizer = Featurizer::new(tokenizer, Vocab::from_counts(counts, &config.vocab), &config.vocab);

    // Pass 3: encode.
    let all = Dataset::encode_file(&d.train, d.format, d.strict, &featurizer, &labels)?;
    let (train, test) = match &d.test {
        Some(path) => (all, Dataset::encode_file(path, d.format, d.strict, &featurizer, &labels)?),
        None => {
            let (test_idx, train_idx): (Vec<usize>, Vec<usize>) = (0..all.len()).partition(|&i| held_out[i]);
            let (mut train, mut test) = (all.subset(&train_idx), all.subset(&test_idx));
            train.stats = all.stats.clone();
            test.stats = ReadStats::default();
            (train, test)
        }
    };
    Ok(Prepared { featurizer, labels, train: Arc::new(train), test })
}
