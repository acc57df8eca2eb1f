//! A data file read once: its bytes are hashed (SHA-256) while its lines are
//! parsed and tokenized in parallel, every distinct token is interned once,
//! and the examples are kept as token ids. Counting the vocabulary and
//! encoding row ids then work on ids, without reading or tokenizing again.
//!
//! The file is read in blocks that end at a line break, so memory holds one
//! block of text at a time, never the whole file.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::reader::{parse_line_borrowed, DataFormat, ReadStats, BAD_SAMPLES_KEPT};
use super::tokenizer::Tokenizer;
use super::vocab::{fnv1a64, Featurizer};

/// Bytes of text read and processed together.
const BLOCK_BYTES: usize = 16 << 20;
/// Lines tokenized by one parallel task.
const LINES_PER_TASK: usize = 2048;

/// FNV-1a 64 as a `Hasher`: SipHash showed at 15% of preparation in a profile,
/// and these maps hold the user's own tokens, so flooding is no concern.
#[derive(Clone, Copy)]
pub struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(0xcbf29ce484222325)
    }
}

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = bytes.iter().fold(self.0, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    }
}

type FnvMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FnvHasher>>;

/// Every distinct token seen, numbered in order of first appearance.
#[derive(Debug, Default)]
pub struct Interner {
    words: Vec<String>,
    index: FnvMap<String, u32>,
}

impl Interner {
    pub fn len(&self) -> usize {
        self.words.len()
    }
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
    pub fn word(&self, id: u32) -> &str {
        &self.words[id as usize]
    }
    fn intern(&mut self, word: String) -> u32 {
        if let Some(&id) = self.index.get(&word) {
            return id;
        }
        let id = self.words.len() as u32;
        self.index.insert(word.clone(), id);
        self.words.push(word);
        id
    }
}

/// Size, modification time and SHA-256 of the bytes that were read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileIdentity {
    pub path: PathBuf,
    pub size: u64,
    /// Nanoseconds since the Unix epoch (0 if the file system has none).
    pub mtime_unix_ns: u64,
    pub sha256: String,
}

/// The examples of one file as interned token ids (CSR), with their labels.
#[derive(Debug)]
pub struct TokenizedFile {
    pub identity: FileIdentity,
    pub stats: ReadStats,
    /// Label of each example, in file order.
    pub labels: Vec<String>,
    /// `offsets[i]..offsets[i + 1]` index example `i`'s tokens.
    pub offsets: Vec<usize>,
    pub tokens: Vec<u32>,
}

impl TokenizedFile {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn example(&self, i: usize) -> &[u32] {
        &self.tokens[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// One parallel task's lines: tokens numbered in a task-local interner,
/// mapped to the global one when the task's results are merged.
#[derive(Default)]
struct Chunk {
    lines: u64,
    labels: Vec<String>,
    lengths: Vec<usize>,
    tokens: Vec<u32>,
    words: Vec<String>,
    /// (line number within the chunk, 1-based; reason)
    bad: Vec<(u64, &'static str)>,
}

fn tokenize_lines(lines: &[&[u8]], format: DataFormat, tokenizer: &Tokenizer) -> Chunk {
    let mut chunk = Chunk { lines: lines.len() as u64, ..Default::default() };
    let mut local: FnvMap<String, u32> = FnvMap::default();
    let mut lower = String::new();
    for (i, line) in lines.iter().enumerate() {
        match parse_line_borrowed(line, format) {
            Ok(Some((label, text))) => {
                let before = chunk.tokens.len();
                tokenizer.for_each_token(text, &mut lower, |t| {
                    // Look up by &str: a String is allocated once per distinct token.
                    let id = match local.get(t) {
                        Some(&id) => id,
                        None => {
                            let id = local.len() as u32;
                            local.insert(t.to_string(), id);
                            chunk.words.push(t.to_string());
                            id
                        }
                    };
                    chunk.tokens.push(id);
                });
                chunk.lengths.push(chunk.tokens.len() - before);
                chunk.labels.push(label.to_string());
            }
            Ok(None) => {}
            Err(reason) => chunk.bad.push((i as u64 + 1, reason)),
        }
    }
    chunk
}

/// Reads `path` once and tokenizes every good example, interning tokens into
/// `interner`. Bad lines are counted (or, when `strict`, the first is an error
/// naming file and line), exactly as [`super::reader::read_examples`] does.
pub fn tokenize_file(path: &Path, format: DataFormat, strict: bool, tokenizer: &Tokenizer, interner: &mut Interner) -> anyhow::Result<TokenizedFile> {
    tokenize_in_blocks(path, format, strict, tokenizer, interner, BLOCK_BYTES)
}

fn tokenize_in_blocks(path: &Path, format: DataFormat, strict: bool, tokenizer: &Tokenizer, interner: &mut Interner, block_bytes: usize) -> anyhow::Result<TokenizedFile> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open data file {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut out = TokenizedFile {
        identity: FileIdentity { path: path.to_path_buf(), size: 0, mtime_unix_ns: 0, sha256: String::new() },
        stats: ReadStats::default(),
        labels: Vec::new(),
        offsets: vec![0],
        tokens: Vec::new(),
    };
    let mut block: Vec<u8> = Vec::with_capacity(block_bytes);
    let mut carry: Vec<u8> = Vec::new();
    loop {
        // The previous block's unfinished last line comes first; a line longer
        // than a block doubles what is read until its end is in.
        block.clear();
        block.append(&mut carry);
        let want = if block.len() < block_bytes { block_bytes - block.len() } else { block.len() };
        let n = (&mut file).take(want as u64).read_to_end(&mut block).with_context(|| format!("reading {}", path.display()))?;
        let at_end = n == 0;
        if !at_end {
            // Keep the unfinished last line for the next block.
            let keep_from = block.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            carry.extend_from_slice(&block[keep_from..]);
            block.truncate(keep_from);
        }
        if block.is_empty() && at_end {
            break;
        }
        out.identity.size += block.len() as u64;
        let lines: Vec<&[u8]> = block.split_inclusive(|&b| b == b'\n').collect();
        let (_, chunks) = rayon::join(|| hasher.update(&block), || lines.par_chunks(LINES_PER_TASK).map(|l| tokenize_lines(l, format, tokenizer)).collect::<Vec<_>>());
        for chunk in chunks {
            merge(&mut out, chunk, path, strict, interner)?;
        }
        if at_end {
            break;
        }
    }
    let meta = file.metadata().with_context(|| format!("reading the metadata of {}", path.display()))?;
    out.identity.mtime_unix_ns = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as u64);
    out.identity.sha256 = format!("{:x}", hasher.finalize());
    Ok(out)
}

fn merge(out: &mut TokenizedFile, chunk: Chunk, path: &Path, strict: bool, interner: &mut Interner) -> anyhow::Result<()> {
    let first_line = out.stats.lines;
    if let Some(&(line, reason)) = chunk.bad.first()
        && strict
    {
        bail!("{}:{}: bad line ({reason})", path.display(), first_line + line);
    }
    for &(line, reason) in &chunk.bad {
        if out.stats.bad_samples.len() < BAD_SAMPLES_KEPT {
            out.stats.bad_samples.push((first_line + line, reason.to_string()));
        }
    }
    out.stats.bad += chunk.bad.len() as u64;
    out.stats.lines += chunk.lines;
    out.stats.examples += chunk.labels.len() as u64;
    let global: Vec<u32> = chunk.words.into_iter().map(|w| interner.intern(w)).collect();
    out.tokens.extend(chunk.tokens.iter().map(|&t| global[t as usize]));
    for len in chunk.lengths {
        let end = out.offsets.last().unwrap() + len;
        out.offsets.push(end);
    }
    out.labels.extend(chunk.labels);
    Ok(())
}

/// Tokenizes examples held in memory as `(label, text)` pairs, as
/// [`tokenize_file`] does a file's lines; `name` stands for the file in
/// errors and in the data fingerprint, whose SHA-256 covers the examples as
/// `label<TAB>text<LF>` lines (so a resumed run detects changed data).
pub fn tokenize_examples(examples: &[(String, String)], name: &str, tokenizer: &Tokenizer, interner: &mut Interner) -> anyhow::Result<TokenizedFile> {
    let mut hasher = Sha256::new();
    let mut out = TokenizedFile {
        identity: FileIdentity { path: PathBuf::from(name), size: 0, mtime_unix_ns: 0, sha256: String::new() },
        stats: ReadStats { lines: examples.len() as u64, examples: examples.len() as u64, ..Default::default() },
        labels: Vec::with_capacity(examples.len()),
        offsets: Vec::with_capacity(examples.len() + 1),
        tokens: Vec::new(),
    };
    out.offsets.push(0);
    let mut lower = String::new();
    for (i, (label, text)) in examples.iter().enumerate() {
        // labels.txt keeps one label per line.
        if label.trim().is_empty() || label.contains(['\t', '\n', '\r']) {
            bail!("{name}: example {}: label {label:?} must be non-empty and hold no tab or line break", i + 1);
        }
        for part in [label.as_bytes(), b"\t", text.as_bytes(), b"\n"] {
            hasher.update(part);
            out.identity.size += part.len() as u64;
        }
        tokenizer.for_each_token(text, &mut lower, |t| out.tokens.push(interner.intern(t.to_string())));
        out.offsets.push(out.tokens.len());
        out.labels.push(label.clone());
    }
    out.identity.sha256 = format!("{:x}", hasher.finalize());
    Ok(out)
}

/// Each interned token's vocabulary id, hash and character n-gram hashes:
/// what [`Featurizer::push_ids`] needs, computed once per distinct token.
pub struct TokenRows {
    words: Vec<Option<u32>>,
    hashes: Vec<u64>,
    /// `grams[gram_offsets[t]..gram_offsets[t + 1]]` are token `t`'s character n-gram hashes.
    grams: Vec<u64>,
    gram_offsets: Vec<usize>,
}

impl TokenRows {
    pub fn new(featurizer: &Featurizer, interner: &Interner) -> Self {
        let words = interner.words.par_iter().map(|w| featurizer.vocab().get(w)).collect();
        let hashes = if featurizer.has_buckets() { interner.words.par_iter().map(|w| fnv1a64(w.as_bytes())).collect() } else { Vec::new() };
        let (mut grams, mut gram_offsets) = (Vec::new(), vec![0]);
        if featurizer.has_char_ngrams() {
            let per_token: Vec<Vec<u64>> = interner
                .words
                .par_iter()
                .map_init(String::new, |scratch, w| {
                    let mut out = Vec::new();
                    featurizer.char_ngram_hashes(w, scratch, &mut out);
                    out
                })
                .collect();
            for g in per_token {
                grams.extend_from_slice(&g);
                gram_offsets.push(grams.len());
            }
        }
        TokenRows { words, hashes, grams, gram_offsets }
    }

    /// Row ids (CSR) of every example of `file`, encoded in parallel, in file order.
    pub fn encode(&self, featurizer: &Featurizer, file: &TokenizedFile) -> (Vec<u32>, Vec<usize>) {
        let parts: Vec<(Vec<u32>, Vec<usize>)> = (0..file.len())
            .collect::<Vec<_>>()
            .par_chunks(LINES_PER_TASK)
            .map(|examples| {
                let (mut ids, mut lengths, mut hashes, mut grams) = (Vec::new(), Vec::with_capacity(examples.len()), Vec::new(), Vec::new());
                for &i in examples {
                    let tokens = file.example(i);
                    let before = ids.len();
                    hashes.clear();
                    if !self.hashes.is_empty() {
                        hashes.extend(tokens.iter().map(|&t| self.hashes[t as usize]));
                    }
                    grams.clear();
                    if self.gram_offsets.len() > 1 {
                        for &t in tokens {
                            grams.extend_from_slice(&self.grams[self.gram_offsets[t as usize]..self.gram_offsets[t as usize + 1]]);
                        }
                    }
                    featurizer.push_ids(tokens.iter().map(|&t| self.words[t as usize]), &hashes, &grams, &mut ids);
                    lengths.push(ids.len() - before);
                }
                (ids, lengths)
            })
            .collect();
        let total = parts.iter().map(|p| p.0.len()).sum();
        let (mut ids, mut offsets) = (Vec::with_capacity(total), Vec::with_capacity(file.len() + 1));
        offsets.push(0);
        for (part, lengths) in parts {
            ids.extend_from_slice(&part);
            for len in lengths {
                offsets.push(offsets.last().unwrap() + len);
            }
        }
        (ids, offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::reader::read_examples;
    use crate::data::TokenizerConfig;

    #[test]
    fn blocks_of_any_size_give_the_streaming_reader_s_examples() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.tsv");
        let mut text = Vec::new();
        for i in 0..200 {
            text.extend_from_slice(format!("l{}\tThe Quick fox {i} jumps; über {}\n", i % 4, "long ".repeat(i % 9)).as_bytes());
            if i % 40 == 3 {
                text.extend_from_slice(b"\n\xc3\x28 broken\nno tab\r\n");
            }
        }
        text.extend_from_slice(b"l1\tno newline at the end");
        std::fs::write(&path, &text).unwrap();

        let tokenizer = Tokenizer::new(TokenizerConfig::default());
        let (mut labels, mut tokens) = (Vec::new(), Vec::new());
        let stats = read_examples(&path, DataFormat::Tsv, false, |ex| {
            labels.push(ex.label);
            tokens.push(tokenizer.tokenize(&ex.text));
        })
        .unwrap();
        // Independently: sha256sum of the file.
        let sum = std::process::Command::new("sha256sum").arg(&path).output().unwrap();
        let sum = String::from_utf8(sum.stdout).unwrap().split_whitespace().next().unwrap().to_string();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;

        for block in [5, 64, 1000, BLOCK_BYTES] {
            let mut interner = Interner::default();
            let f = tokenize_in_blocks(&path, DataFormat::Tsv, false, &tokenizer, &mut interner, block).unwrap();
            assert_eq!(f.stats, stats, "block {block}");
            assert_eq!(f.labels, labels, "block {block}");
            let words: Vec<Vec<String>> = (0..f.len()).map(|i| f.example(i).iter().map(|&t| interner.word(t).to_string()).collect()).collect();
            assert_eq!(words, tokens, "block {block}");
            assert_eq!(f.identity.size, text.len() as u64);
            assert_eq!(f.identity.sha256, sum);
            assert_eq!(f.identity.mtime_unix_ns, modified);
        }
    }
}
