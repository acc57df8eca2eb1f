//! Vocabulary and feature ids.
//!
//! Row ids: `0..vocab.len()` are in-vocabulary words (most frequent first);
//! `vocab.len()..vocab.len() + buckets` are hash buckets shared by
//! out-of-vocabulary words and word n-grams (fastText-style).
//!
//! The hash is fixed and independent of seeds and platforms: FNV-1a 64 over the
//! token's UTF-8 bytes; an n-gram of tokens `t1..tn` hashes to
//! `h = n; h = h·116049371 + fnv(t_i)` (wrapping u64, fastText's constant), and
//! an OOV word to `fnv(word)`. The row is `vocab.len() + h % buckets`.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::tokenizer::Tokenizer;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VocabConfig {
    /// Words seen fewer times in training go to hash buckets.
    pub min_count: u64,
    /// Keep at most this many words (0 = no limit).
    pub max_size: usize,
    /// Hash buckets for OOV words and n-grams (0 = drop them).
    pub buckets: u64,
    /// Longest word n-gram to hash (1 = unigrams only).
    pub ngrams: usize,
}

impl Default for VocabConfig {
    fn default() -> Self {
        VocabConfig { min_count: 1, max_size: 0, buckets: 2_000_000, ngrams: 2 }
    }
}

/// Words and their training counts, most frequent first (ties by word).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vocab {
    words: Vec<String>,
    counts: Vec<u64>,
    index: HashMap<String, u32>,
}

impl Vocab {
    pub fn from_counts(counts: HashMap<String, u64>, config: &VocabConfig) -> Self {
        let mut entries: Vec<(String, u64)> = counts.into_iter().filter(|(_, c)| *c >= config.min_count).collect();
        entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if config.max_size > 0 {
            entries.truncate(config.max_size);
        }
        let (words, counts): (Vec<String>, Vec<u64>) = entries.into_iter().unzip();
        Vocab::from_words(words, counts)
    }

    fn from_words(words: Vec<String>, counts: Vec<u64>) -> Self {
        let index = words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32)).collect();
        Vocab { words, counts, index }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
    pub fn get(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }
    pub fn words(&self) -> &[String] {
        &self.words
    }
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Writes `word<TAB>count` lines.
    pub fn write(&self, mut out: impl Write) -> std::io::Result<()> {
        for (w, c) in self.words.iter().zip(&self.counts) {
            writeln!(out, "{w}\t{c}")?;
        }
        Ok(())
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open vocabulary {}", path.display()))?;
        let (mut words, mut counts) = (Vec::new(), Vec::new());
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("{}:{}: not valid UTF-8", path.display(), n + 1))?;
            let Some((word, count)) = line.rsplit_once('\t') else {
                bail!("{}:{}: expected `word<TAB>count`", path.display(), n + 1);
            };
            let count = count.parse().with_context(|| format!("{}:{}: bad count {count:?}", path.display(), n + 1))?;
            words.push(word.to_string());
            counts.push(count);
        }
        let vocab = Vocab::from_words(words, counts);
        if vocab.index.len() != vocab.words.len() {
            bail!("{}: duplicate words in vocabulary", path.display());
        }
        Ok(vocab)
    }
}

/// FNV-1a 64 of a token's bytes.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

const NGRAM_MULTIPLIER: u64 = 116_049_371;

/// Turns text into row ids: the tokenizer, the vocabulary and the n-gram hashing together.
#[derive(Clone, Debug)]
pub struct Featurizer {
    tokenizer: Tokenizer,
    vocab: Vocab,
    buckets: u64,
    ngrams: usize,
}

impl Featurizer {
    pub fn new(tokenizer: Tokenizer, vocab: Vocab, config: &VocabConfig) -> Self {
        Featurizer { tokenizer, vocab, buckets: config.buckets, ngrams: config.ngrams.max(1) }
    }

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    /// Rows of the embedding table: words + buckets.
    pub fn rows(&self) -> usize {
        self.vocab.len() + self.buckets as usize
    }

    /// Whether OOV words and n-grams get hash buckets (else they are dropped).
    pub fn has_buckets(&self) -> bool {
        self.buckets > 0
    }

    fn bucket(&self, hash: u64) -> u32 {
        (self.vocab.len() as u64 + hash % self.buckets) as u32
    }

    /// Appends the row ids of `text` to `ids`; `tokens` is scratch space.
    pub fn features_into(&self, text: &str, tokens: &mut Vec<String>, ids: &mut Vec<u32>) {
        self.tokenizer.tokenize_into(text, tokens);
        let hashes: Vec<u64> = if self.buckets > 0 { tokens.iter().map(|t| fnv1a64(t.as_bytes())).collect() } else { Vec::new() };
        self.push_ids(tokens.iter().map(|t| self.vocab.get(t)), &hashes, ids);
    }

    /// Appends the row ids of tokens already looked up: `words` gives each
    /// token's vocabulary id, `hashes` its [`fnv1a64`] (may be empty when there
    /// are no buckets). [`features_into`](Self::features_into) is this after tokenizing.
    pub fn push_ids(&self, words: impl Iterator<Item = Option<u32>>, hashes: &[u64], ids: &mut Vec<u32>) {
        for (i, word) in words.enumerate() {
            match word {
                Some(id) => ids.push(id),
                None if self.buckets > 0 => ids.push(self.bucket(hashes[i])),
                None => {}
            }
        }
        if self.buckets == 0 {
            return;
        }
        for n in 2..=self.ngrams {
            for window in hashes.windows(n) {
                let h = window.iter().fold(n as u64, |h, &t| h.wrapping_mul(NGRAM_MULTIPLIER).wrapping_add(t));
                ids.push(self.bucket(h));
            }
        }
    }

    pub fn features(&self, text: &str) -> Vec<u32> {
        let (mut tokens, mut ids) = (Vec::new(), Vec::new());
        self.features_into(text, &mut tokens, &mut ids);
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TokenizerConfig;

    #[test]
    fn fnv_matches_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn vocab_orders_by_count_and_applies_limits() {
        let counts = HashMap::from([("b".to_string(), 3), ("a".to_string(), 3), ("c".to_string(), 5), ("d".to_string(), 1)]);
        let v = Vocab::from_counts(counts, &VocabConfig { min_count: 2, max_size: 0, buckets: 10, ngrams: 2 });
        assert_eq!(v.words(), ["c", "a", "b"]);
        assert_eq!(v.get("a"), Some(1));
        assert_eq!(v.get("d"), None);
    }

    #[test]
    fn features_are_words_then_hashed_oov_and_bigrams() {
        let config = VocabConfig { min_count: 1, max_size: 0, buckets: 1000, ngrams: 2 };
        let vocab = Vocab::from_counts(HashMap::from([("the".to_string(), 2), ("cat".to_string(), 1)]), &config);
        let f = Featurizer::new(Tokenizer::new(TokenizerConfig::default()), vocab, &config);
        let ids = f.features("The cat sat");
        let sat = 2 + fnv1a64(b"sat") % 1000;
        let bigram = |a: &[u8], b: &[u8]| 2 + (2u64.wrapping_mul(NGRAM_MULTIPLIER).wrapping_add(fnv1a64(a)).wrapping_mul(NGRAM_MULTIPLIER).wrapping_add(fnv1a64(b))) % 1000;
        assert_eq!(ids, vec![0, 1, sat as u32, bigram(b"the", b"cat") as u32, bigram(b"cat", b"sat") as u32]);
        assert!(ids.iter().all(|&i| (i as usize) < f.rows()));
    }
}
