//! Turns a config's data section into encoded train and test sets: labels and
//! vocabulary from the training portion only, then the row ids of every example.
//! Each data file is read once (see [`crate::data::tokenized`]); the same pass
//! gives its fingerprint.

use std::collections::HashMap;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::fingerprint::DataFingerprint;
use crate::config::Config;
use crate::data::dataset::UNKNOWN_LABEL;
use crate::data::tokenized::{tokenize_examples, tokenize_file, Interner, TokenRows, TokenizedFile};
use crate::data::{Dataset, Featurizer, Labels, ReadStats, Tokenizer, Vocab};

/// Where the examples come from.
#[derive(Clone, Debug, Default)]
pub enum DataSource {
    /// The config's `data.train` and `data.test` files.
    #[default]
    Files,
    /// `(label, text)` pairs held in memory.
    Examples(Examples),
}

/// Examples given in memory (the config's `data.train`/`data.test` are then unused).
#[derive(Clone, Debug, Default)]
pub struct Examples {
    pub train: Vec<(String, String)>,
    /// `None`: hold out `data.test_fraction` of each label's training examples, as with files.
    pub test: Option<Vec<(String, String)>>,
}

pub struct Prepared {
    pub featurizer: Featurizer,
    pub labels: Labels,
    pub train: Arc<Dataset>,
    pub test: Dataset,
    /// What the data files and the derived vocabulary, labels and split were.
    pub fingerprint: DataFingerprint,
    /// The training data's file (or in-memory name), for messages.
    pub train_source: String,
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

/// Reads and encodes the config's data files.
pub fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    prepare_from(config, &DataSource::Files)
}

/// Encodes the examples of `source`, with the config's tokenizer, vocabulary and split settings.
pub fn prepare_from(config: &Config, source: &DataSource) -> anyhow::Result<Prepared> {
    let d = &config.data;
    let tokenizer = Tokenizer::new(config.tokenizer.clone());
    let mut interner = Interner::default();
    let (train_file, test_file) = match source {
        DataSource::Files => {
            let train = tokenize_file(&d.train, d.format, d.strict, &tokenizer, &mut interner)?;
            let test = match &d.test {
                Some(path) => Some(tokenize_file(path, d.format, d.strict, &tokenizer, &mut interner)?),
                None => None,
            };
            (train, test)
        }
        DataSource::Examples(e) => {
            let train = tokenize_examples(&e.train, IN_MEMORY_TRAIN, &tokenizer, &mut interner)?;
            let test = match &e.test {
                Some(test) => Some(tokenize_examples(test, IN_MEMORY_TEST, &tokenizer, &mut interner)?),
                None => None,
            };
            (train, test)
        }
    };
    let train_source = train_file.identity.path.display().to_string();
    if train_file.is_empty() {
        anyhow::bail!("{train_source}: no usable examples (empty file, or every line is bad)");
    }
    if test_file.is_none() && !(d.test_fraction > 0.0 && d.test_fraction < 1.0) {
        anyhow::bail!("`data.test_fraction` must be in (0, 1) when there is no test set, got {}", d.test_fraction);
    }
    let held_out = match test_file {
        Some(_) => vec![false; train_file.len()],
        None => stratified_holdout(&train_file.labels, d.test_fraction, d.split_seed),
    };

    // Vocabulary and labels from the training portion.
    let mut counts = vec![0u64; interner.len()];
    for i in (0..train_file.len()).filter(|&i| !held_out[i]) {
        train_file.example(i).iter().for_each(|&t| counts[t as usize] += 1);
    }
    let counts: HashMap<String, u64> = counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(t, &c)| (interner.word(t as u32).to_string(), c)).collect();
    let labels = Labels::new(train_file.labels.iter().zip(&held_out).filter(|(_, h)| !**h).map(|(l, _)| l.clone()).collect());
    let featurizer = Featurizer::new(tokenizer, Vocab::from_counts(counts, &config.vocab), &config.vocab);

    let rows = TokenRows::new(&featurizer, &interner);
    let all = encode(&rows, &featurizer, &train_file, &labels);
    let (train, test) = match &test_file {
        Some(file) => (all, encode(&rows, &featurizer, file, &labels)),
        None => {
            let (test_idx, train_idx): (Vec<usize>, Vec<usize>) = (0..all.len()).partition(|&i| held_out[i]);
            let (mut train, mut test) = (all.subset(&train_idx), all.subset(&test_idx));
            train.stats = all.stats.clone();
            test.stats = ReadStats::default();
            (train, test)
        }
    };
    let files = std::iter::once(("train", &train_file)).chain(test_file.as_ref().map(|f| ("test", f)));
    let fingerprint = DataFingerprint::new(files, &labels, featurizer.vocab(), &held_out, train.len(), test.len());
    Ok(Prepared { featurizer, labels, train: Arc::new(train), test, fingerprint, train_source })
}

/// What in-memory examples are called in messages and the data fingerprint.
pub const IN_MEMORY_TRAIN: &str = "<in-memory train examples>";
pub const IN_MEMORY_TEST: &str = "<in-memory test examples>";

/// Row ids and label ids of every example of `file`.
fn encode(rows: &TokenRows, featurizer: &Featurizer, file: &TokenizedFile, labels: &Labels) -> Dataset {
    let (ids, offsets) = rows.encode(featurizer, file);
    let label_ids: Vec<u32> = file.labels.iter().map(|l| labels.get(l).unwrap_or(UNKNOWN_LABEL)).collect();
    let unknown_labels = label_ids.iter().filter(|&&l| l == UNKNOWN_LABEL).count() as u64;
    Dataset { ids: ids.into(), offsets, labels: label_ids, unknown_labels, stats: file.stats.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::reader::read_examples;
    use std::path::Path;

    /// The three-pass preparation this module replaced, kept as the reference:
    /// it reads through the streaming reader and featurizes text directly.
    fn reference(config: &Config) -> (Featurizer, Labels, Dataset, Dataset) {
        let d = &config.data;
        let tokenizer = Tokenizer::new(config.tokenizer.clone());
        let mut line_labels = Vec::new();
        read_examples(&d.train, d.format, d.strict, |ex| line_labels.push(ex.label)).unwrap();
        let held_out = match d.test {
            Some(_) => vec![false; line_labels.len()],
            None => stratified_holdout(&line_labels, d.test_fraction, d.split_seed),
        };
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut i = 0;
        read_examples(&d.train, d.format, d.strict, |ex| {
            if !held_out[i] {
                for t in tokenizer.tokenize(&ex.text) {
                    *counts.entry(t).or_insert(0) += 1;
                }
            }
            i += 1;
        })
        .unwrap();
        let labels = Labels::new(line_labels.iter().zip(&held_out).filter(|(_, h)| !**h).map(|(l, _)| l.clone()).collect());
        let featurizer = Featurizer::new(tokenizer, Vocab::from_counts(counts, &config.vocab), &config.vocab);
        let all = Dataset::encode_file(&d.train, d.format, d.strict, &featurizer, &labels).unwrap();
        let (train, test) = match &d.test {
            Some(path) => (all, Dataset::encode_file(path, d.format, d.strict, &featurizer, &labels).unwrap()),
            None => {
                let (test_idx, train_idx): (Vec<usize>, Vec<usize>) = (0..all.len()).partition(|&i| held_out[i]);
                let (mut train, test) = (all.subset(&train_idx), all.subset(&test_idx));
                train.stats = all.stats.clone();
                (train, test)
            }
        };
        (featurizer, labels, train, test)
    }

    fn assert_same_dataset(a: &Dataset, b: &Dataset, what: &str) {
        assert_eq!(a.labels, b.labels, "{what}: labels");
        assert_eq!(a.offsets, b.offsets, "{what}: offsets");
        assert_eq!(a.ids, b.ids, "{what}: ids");
        assert_eq!(a.unknown_labels, b.unknown_labels, "{what}: unknown labels");
        assert_eq!(a.stats, b.stats, "{what}: read stats");
    }

    fn assert_matches_reference(config: &Config) {
        let p = prepare(config).unwrap();
        let (featurizer, labels, train, test) = reference(config);
        assert_eq!(p.featurizer.vocab(), featurizer.vocab(), "vocabulary");
        assert_eq!(p.featurizer.rows(), featurizer.rows());
        assert_eq!(p.labels, labels);
        assert_same_dataset(&p.train, &train, "train");
        assert_same_dataset(&p.test, &test, "test");
    }

    fn config(text: &str, overrides: &[String]) -> Config {
        Config::from_toml(text, "test", overrides).unwrap()
    }

    #[test]
    fn one_read_gives_the_three_pass_result_on_the_sample() {
        let text = std::fs::read_to_string("configs/quickstart.toml").unwrap();
        assert_matches_reference(&config(&text, &[]));
        // Unigrams only, no buckets (OOV dropped), a vocabulary cap.
        let o = ["vocab.buckets=0", "vocab.min_count=3", "vocab.max_size=500"].map(String::from);
        assert_matches_reference(&config(&text, &o));
        let o = ["vocab.ngrams=3", "tokenizer.lowercase=false", "tokenizer.max_tokens=20", "data.split_seed=7"].map(String::from);
        assert_matches_reference(&config(&text, &o));
        // fastText's whitespace split and character n-grams: training's encoding equals the featurizer's.
        let o = ["tokenizer.split=whitespace", "vocab.minn=2", "vocab.maxn=4", "vocab.min_count=2"].map(String::from);
        assert_matches_reference(&config(&text, &o));
    }

    /// Also any config named by SPARSEBURN_PREPARE_CHECK (e.g. configs/debian_sections.toml).
    #[test]
    fn one_read_gives_the_three_pass_result_on_a_named_config() {
        if let Ok(path) = std::env::var("SPARSEBURN_PREPARE_CHECK") {
            assert_matches_reference(&Config::load(Path::new(&path), &[]).unwrap());
        }
    }

    #[test]
    fn one_read_gives_the_three_pass_result_with_a_test_file_and_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let train = dir.path().join("train.tsv");
        let test = dir.path().join("test.tsv");
        let mut t = String::new();
        for i in 0..300 {
            let label = ["a", "b", "c"][i % 3];
            t += &format!("{label}\tWord{} shared Ünïcode text, item {i}; more {}\r\n", i % 17, i % 5);
            if i % 50 == 0 {
                t += "no tab on this line\n\n";
            }
        }
        t += "a\tlast line without a newline";
        std::fs::write(&train, t).unwrap();
        std::fs::write(&test, b"a\tword3 shared\nz\tunseen label here\nb\t\xff bad utf8\n").unwrap();
        let toml = format!("[data]\ntrain = {:?}\ntest = {:?}\n[vocab]\nmin_count = 2\nbuckets = 5000\n", train.display().to_string(), test.display().to_string());
        let c = config(&toml, &[]);
        assert_matches_reference(&c);
        let p = prepare(&c).unwrap();
        assert_eq!(p.test.unknown_labels, 1);
        assert_eq!((p.train.stats.bad, p.test.stats.bad), (6, 1));

        let strict = config(&toml, &["data.strict=true".into()]);
        let e = format!("{:#}", prepare(&strict).err().unwrap());
        assert!(e.contains(&format!("{}:2: bad line (no TAB between label and text)", train.display())), "{e}");
    }
}
