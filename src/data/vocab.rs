//! Vocabulary and feature ids.
//!
//! Row ids: `0..vocab.len()` are in-vocabulary words (most frequent first);
//! `vocab.len()..vocab.len() + buckets` are hash buckets shared by
//! out-of-vocabulary words and word n-grams (fastText-style).
//!
//! The hash is fixed and independent of seeds and platforms: FNV-1a 64 over the
//! token's UTF-8 bytes; an n-gram of tokens `t1..tn` hashes to
//! `h = n; h = h·116049371 + fnv(t_i)` (wrapping u64, fastText's constant), an
//! OOV word to `fnv(word)`, and a character n-gram of a word (fastText's
//! subwords, see [`char_ngrams`]) to `fnv(ngram)`. The row is
//! `vocab.len() + h % buckets`.

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
    /// Shortest character n-gram of a word, fastText's `-minn` (0 = none).
    pub minn: usize,
    /// Longest character n-gram of a word, fastText's `-maxn` (0 = none).
    pub maxn: usize,
}

impl Default for VocabConfig {
    fn default() -> Self {
        VocabConfig { min_count: 1, max_size: 0, buckets: 2_000_000, ngrams: 2, minn: 0, maxn: 0 }
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

/// Calls `each` with the character n-grams of `word` as fastText's
/// `Dictionary::computeSubwords` makes them: the word is wrapped as `<word>`,
/// and every run of `minn..=maxn` characters (Unicode scalar values) of it is an
/// n-gram, except the lone `<` and `>`; ordered by start, then by length.
/// `scratch` holds the wrapped word.
pub fn char_ngrams(word: &str, minn: usize, maxn: usize, scratch: &mut String, mut each: impl FnMut(&str)) {
    if maxn == 0 {
        return;
    }
    scratch.clear();
    scratch.push('<');
    scratch.push_str(word);
    scratch.push('>');
    let bounds: Vec<usize> = scratch.char_indices().map(|(i, _)| i).chain(std::iter::once(scratch.len())).collect();
    let chars = bounds.len() - 1;
    for start in 0..chars {
        for n in minn.max(1)..=maxn.min(chars - start) {
            if n == 1 && (start == 0 || start + 1 == chars) {
                continue;
            }
            each(&scratch[bounds[start]..bounds[start + n]]);
        }
    }
}

/// Turns text into row ids: the tokenizer, the vocabulary and the n-gram hashing together.
#[derive(Clone, Debug)]
pub struct Featurizer {
    tokenizer: Tokenizer,
    vocab: Vocab,
    buckets: u64,
    ngrams: usize,
    minn: usize,
    maxn: usize,
}

impl Featurizer {
    pub fn new(tokenizer: Tokenizer, vocab: Vocab, config: &VocabConfig) -> Self {
        Featurizer { tokenizer, vocab, buckets: config.buckets, ngrams: config.ngrams.max(1), minn: config.minn, maxn: config.maxn }
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

    /// Whether words get character n-gram rows (they need buckets).
    pub fn has_char_ngrams(&self) -> bool {
        self.buckets > 0 && self.maxn > 0
    }

    /// Appends the [`fnv1a64`] of every character n-gram of `token` to `out`
    /// (nothing when character n-grams are off); `scratch` is scratch space.
    pub fn char_ngram_hashes(&self, token: &str, scratch: &mut String, out: &mut Vec<u64>) {
        if self.has_char_ngrams() {
            char_ngrams(token, self.minn, self.maxn, scratch, |g| out.push(fnv1a64(g.as_bytes())));
        }
    }

    fn bucket(&self, hash: u64) -> u32 {
        (self.vocab.len() as u64 + hash % self.buckets) as u32
    }

    /// Appends the row ids of `text` to `ids`; `tokens` is scratch space.
    pub fn features_into(&self, text: &str, tokens: &mut Vec<String>, ids: &mut Vec<u32>) {
        self.tokenizer.tokenize_into(text, tokens);
        let hashes: Vec<u64> = if self.buckets > 0 { tokens.iter().map(|t| fnv1a64(t.as_bytes())).collect() } else { Vec::new() };
        let (mut grams, mut scratch) = (Vec::new(), String::new());
        for t in tokens.iter() {
            self.char_ngram_hashes(t, &mut scratch, &mut grams);
        }
        self.push_ids(tokens.iter().map(|t| self.vocab.get(t)), &hashes, &grams, ids);
    }

    /// Appends the row ids of tokens already looked up: `words` gives each
    /// token's vocabulary id, `hashes` its [`fnv1a64`] (may be empty when there
    /// are no buckets), `char_grams` the [`char_ngram_hashes`](Self::char_ngram_hashes)
    /// of every token in order, concatenated. [`features_into`](Self::features_into)
    /// is this after tokenizing; training encodes through it too.
    ///
    /// Order: each token's row, then all word 2-grams, 3-grams, ..., then the
    /// character n-grams of each token in text order.
    pub fn push_ids(&self, words: impl Iterator<Item = Option<u32>>, hashes: &[u64], char_grams: &[u64], ids: &mut Vec<u32>) {
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
        ids.extend(char_grams.iter().map(|&h| self.bucket(h)));
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
        let v = Vocab::from_counts(counts, &VocabConfig { min_count: 2, max_size: 0, buckets: 10, ngrams: 2, ..VocabConfig::default() });
        assert_eq!(v.words(), ["c", "a", "b"]);
        assert_eq!(v.get("a"), Some(1));
        assert_eq!(v.get("d"), None);
    }

    #[test]
    fn features_are_words_then_hashed_oov_and_bigrams() {
        let config = VocabConfig { min_count: 1, max_size: 0, buckets: 1000, ngrams: 2, ..VocabConfig::default() };
        let vocab = Vocab::from_counts(HashMap::from([("the".to_string(), 2), ("cat".to_string(), 1)]), &config);
        let f = Featurizer::new(Tokenizer::new(TokenizerConfig::default()), vocab, &config);
        let ids = f.features("The cat sat");
        let sat = 2 + fnv1a64(b"sat") % 1000;
        let bigram = |a: &[u8], b: &[u8]| 2 + (2u64.wrapping_mul(NGRAM_MULTIPLIER).wrapping_add(fnv1a64(a)).wrapping_mul(NGRAM_MULTIPLIER).wrapping_add(fnv1a64(b))) % 1000;
        assert_eq!(ids, vec![0, 1, sat as u32, bigram(b"the", b"cat") as u32, bigram(b"cat", b"sat") as u32]);
        assert!(ids.iter().all(|&i| (i as usize) < f.rows()));
    }

    /// fastText's `Dictionary::computeSubwords`, transcribed byte by byte (a
    /// byte `b` with `b & 0xC0 == 0x80` continues a UTF-8 character), as the
    /// reference for [`char_ngrams`].
    fn fasttext_subwords(word: &str, minn: usize, maxn: usize) -> Vec<String> {
        let word = format!("<{word}>").into_bytes();
        let mut out = Vec::new();
        for i in 0..word.len() {
            if word[i] & 0xC0 == 0x80 {
                continue;
            }
            let (mut ngram, mut j, mut n) = (Vec::new(), i, 1);
            while j < word.len() && n <= maxn {
                ngram.push(word[j]);
                j += 1;
                while j < word.len() && word[j] & 0xC0 == 0x80 {
                    ngram.push(word[j]);
                    j += 1;
                }
                if n >= minn && !(n == 1 && (i == 0 || j == word.len())) {
                    out.push(String::from_utf8(ngram.clone()).unwrap());
                }
                n += 1;
            }
        }
        out
    }

    fn subwords(word: &str, minn: usize, maxn: usize) -> Vec<String> {
        let mut out = Vec::new();
        char_ngrams(word, minn, maxn, &mut String::new(), |g| out.push(g.to_string()));
        out
    }

    #[test]
    fn char_ngrams_are_fasttext_s_subwords() {
        // fastText's documented example: "where", n = 3.
        assert_eq!(subwords("where", 3, 3), ["<wh", "whe", "her", "ere", "re>"]);
        assert_eq!(subwords("ab", 1, 2), ["<a", "a", "ab", "b", "b>"]);
        for word in ["where", "a", "über", "日本語", "naïve-ish", "x"] {
            for (minn, maxn) in [(3, 6), (1, 1), (2, 3), (1, 10), (4, 4)] {
                assert_eq!(subwords(word, minn, maxn), fasttext_subwords(word, minn, maxn), "{word} {minn}..{maxn}");
            }
        }
        assert!(subwords("where", 0, 0).is_empty());
    }

    #[test]
    fn char_ngrams_hash_into_the_buckets_after_word_ngrams() {
        let config = VocabConfig { min_count: 1, max_size: 0, buckets: 1009, ngrams: 2, minn: 2, maxn: 3 };
        let vocab = Vocab::from_counts(HashMap::from([("the".to_string(), 2)]), &config);
        let f = Featurizer::new(Tokenizer::new(TokenizerConfig::default()), vocab, &config);
        let row = |s: &str| (1 + fnv1a64(s.as_bytes()) % 1009) as u32;
        let bigram = (1 + 2u64.wrapping_mul(NGRAM_MULTIPLIER).wrapping_add(fnv1a64(b"the")).wrapping_mul(NGRAM_MULTIPLIER).wrapping_add(fnv1a64(b"ox")) % 1009) as u32;
        let mut want = vec![0, row("ox"), bigram];
        // Independently listed: 2- and 3-grams of "<the>", then of "<ox>".
        for g in ["<t", "<th", "th", "the", "he", "he>", "e>", "<o", "<ox", "ox", "ox>", "x>"] {
            want.push(row(g));
        }
        assert_eq!(f.features("The ox"), want);
        // No buckets: no character n-grams either.
        let none = VocabConfig { buckets: 0, ..config };
        let f = Featurizer::new(Tokenizer::new(TokenizerConfig::default()), Vocab::from_counts(HashMap::from([("the".to_string(), 2)]), &none), &none);
        assert_eq!(f.features("The ox"), [0]);
    }
}
