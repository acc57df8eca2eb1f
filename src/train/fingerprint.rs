//! The data a run was trained on, as a fingerprint kept in the run folder:
//! each data file's size, modification time and SHA-256 (of the bytes that
//! were read, hashed during the one read), and what was derived from them:
//! labels, vocabulary and the train/test split. A resumed run compares the
//! fingerprint of the data it finds with the recorded one, so that changed
//! data is refused instead of silently mapping words and labels elsewhere.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::tokenized::TokenizedFile;
use crate::data::{Labels, Vocab};

/// Where a run keeps its fingerprint.
pub const FINGERPRINT_FILE: &str = "data_fingerprint.json";
const FORMAT_VERSION: u32 = 1;

/// One data file as it was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFingerprint {
    /// `train` or `test`.
    pub role: String,
    pub path: PathBuf,
    /// Bytes read.
    pub size: u64,
    /// Nanoseconds since the Unix epoch; informative only (a copy or `touch`
    /// changes it without changing the data).
    pub mtime_unix_ns: u64,
    /// SHA-256 of the bytes read (`sha256sum FILE` gives the same).
    pub sha256: String,
    pub lines: u64,
    pub examples: u64,
}

/// Every data file of a run and what training derived from them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    pub format_version: u32,
    pub files: Vec<FileFingerprint>,
    /// The training labels, in output order (as `labels.txt`).
    pub labels: Vec<String>,
    pub vocab_words: usize,
    /// SHA-256 of `vocab.txt` as the run writes it (`word<TAB>count` lines).
    pub vocab_sha256: String,
    pub train_examples: usize,
    pub test_examples: usize,
    /// SHA-256 of one byte per example of the train file: 1 if held out for testing, else 0.
    pub split_sha256: String,
}

/// Lets `Vocab::write` feed a hash.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl DataFingerprint {
    /// `files` are `(role, file)` pairs; `held_out` has one flag per example of the train file.
    pub fn new<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a TokenizedFile)>,
        labels: &Labels,
        vocab: &Vocab,
        held_out: &[bool],
        train_examples: usize,
        test_examples: usize,
    ) -> Self {
        let files = files
            .into_iter()
            .map(|(role, f)| FileFingerprint {
                role: role.to_string(),
                path: f.identity.path.clone(),
                size: f.identity.size,
                mtime_unix_ns: f.identity.mtime_unix_ns,
                sha256: f.identity.sha256.clone(),
                lines: f.stats.lines,
                examples: f.stats.examples,
            })
            .collect();
        let mut vocab_hash = HashWriter(Sha256::new());
        vocab.write(&mut vocab_hash).expect("hashing never fails");
        let split: Vec<u8> = held_out.iter().map(|&h| h as u8).collect();
        DataFingerprint {
            format_version: FORMAT_VERSION,
            files,
            labels: labels.names().to_vec(),
            vocab_words: vocab.len(),
            vocab_sha256: format!("{:x}", vocab_hash.0.finalize()),
            train_examples,
            test_examples,
            split_sha256: format!("{:x}", Sha256::digest(&split)),
        }
    }

    /// Writes `<run_dir>/data_fingerprint.json` (through a temporary file).
    pub fn write(&self, run_dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        crate::io::write_atomic(&run_dir.join(FINGERPRINT_FILE), |w| w.write_all(text.as_bytes()))
    }

    /// The fingerprint recorded in `run_dir`, or `None` if the run has none
    /// (it was started by a build that did not write one).
    pub fn read(run_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = run_dir.join(FINGERPRINT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let fp: DataFingerprint = serde_json::from_str(&text).with_context(|| format!("{}: not a data fingerprint", path.display()))?;
        if fp.format_version != FORMAT_VERSION {
            anyhow::bail!("{}: format version {}, this build reads {FORMAT_VERSION}", path.display(), fp.format_version);
        }
        Ok(Some(fp))
    }

    /// `Ok` if `now` describes the same data as `self` (the recorded one);
    /// else every difference, naming the file and field. Modification times
    /// and paths alone are not differences: the content is what counts.
    pub fn compare(&self, now: &DataFingerprint) -> Result<(), String> {
        let mut diffs = Vec::new();
        for old in &self.files {
            match now.files.iter().find(|f| f.role == old.role) {
                None => diffs.push(format!("{} file {}: no longer used", old.role, old.path.display())),
                Some(new) if new.sha256 != old.sha256 => diffs.push(format!(
                    "{} file {}: content changed (SHA-256 {} → {}; size {} → {} bytes; {} → {} lines, {} → {} examples; modified {} → {})",
                    old.role,
                    new.path.display(),
                    short(&old.sha256),
                    short(&new.sha256),
                    old.size,
                    new.size,
                    old.lines,
                    new.lines,
                    old.examples,
                    new.examples,
                    utc(old.mtime_unix_ns),
                    utc(new.mtime_unix_ns)
                )),
                Some(_) => {}
            }
        }
        for new in now.files.iter().filter(|n| !self.files.iter().any(|o| o.role == n.role)) {
            diffs.push(format!("{} file {}: not used before", new.role, new.path.display()));
        }
        if self.labels != now.labels {
            let removed: Vec<&str> = self.labels.iter().filter(|l| !now.labels.contains(l)).map(String::as_str).collect();
            let added: Vec<&str> = now.labels.iter().filter(|l| !self.labels.contains(l)).map(String::as_str).collect();
            diffs.push(format!("labels: {} → {} (removed: [{}]; added: [{}])", self.labels.len(), now.labels.len(), removed.join(", "), added.join(", ")));
        }
        if self.vocab_sha256 != now.vocab_sha256 {
            diffs.push(format!("vocabulary: {} → {} words (vocab.txt SHA-256 {} → {})", self.vocab_words, now.vocab_words, short(&self.vocab_sha256), short(&now.vocab_sha256)));
        }
        if self.split_sha256 != now.split_sha256 || self.train_examples != now.train_examples || self.test_examples != now.test_examples {
            diffs.push(format!(
                "split: {} train / {} test examples → {} / {} (held-out set {})",
                self.train_examples,
                self.test_examples,
                now.train_examples,
                now.test_examples,
                if self.split_sha256 == now.split_sha256 { "unchanged" } else { "changed" }
            ));
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(format!("the data changed since the run started: {}", diffs.join("; ")))
        }
    }
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

/// `2026-11-30T19:20:23Z` for nanoseconds since the Unix epoch.
fn utc(ns: u64) -> String {
    crate::io::rfc3339_utc_seconds((ns / 1_000_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::train::prepare::prepare;

    fn sha256sum(path: &Path) -> String {
        let out = std::process::Command::new("sha256sum").arg(path).output().unwrap();
        String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
    }

    fn lines(n: usize, labels: &[&str]) -> String {
        (0..n).map(|i| format!("{}\tword{} common text {}\n", labels[i % labels.len()], i % 13, i % 7)).collect()
    }

    #[test]
    fn records_the_data_and_names_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let train = dir.path().join("train.tsv");
        std::fs::write(&train, lines(200, &["a", "b", "c"])).unwrap();
        let toml = format!("[data]\ntrain = {:?}\ntest_fraction = 0.25\n[vocab]\nbuckets = 100\n", train.display().to_string());
        let config = Config::from_toml(&toml, "test", &[]).unwrap();
        let p = prepare(&config).unwrap();
        let fp = &p.fingerprint;

        // Checked against other readers: sha256sum of the data file and of vocab.txt as the run writes it.
        assert_eq!(fp.files.len(), 1);
        assert_eq!(fp.files[0].sha256, sha256sum(&train));
        assert_eq!(fp.files[0].size, std::fs::metadata(&train).unwrap().len());
        assert_eq!((fp.files[0].lines, fp.files[0].examples), (200, 200));
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        crate::train::run_dir::write_run_files(&run, &config, &p.labels, p.featurizer.vocab()).unwrap();
        assert_eq!(fp.vocab_sha256, sha256sum(&run.join("vocab.txt")));
        assert_eq!(fp.labels, ["a", "b", "c"]);
        // Labels a, b, c have 67, 67, 66 lines; a quarter of each, rounded: 17 + 17 + 17 held out.
        assert_eq!((fp.train_examples, fp.test_examples), (149, 51));

        // Written and read back; absent in a run that never wrote one.
        fp.write(&run).unwrap();
        assert_eq!(DataFingerprint::read(&run).unwrap().as_ref(), Some(fp));
        assert_eq!(DataFingerprint::read(dir.path()).unwrap(), None);

        // Same content, new modification time: not a change.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&train, lines(200, &["a", "b", "c"])).unwrap();
        let again = prepare(&config).unwrap().fingerprint;
        assert_ne!(again.files[0].mtime_unix_ns, fp.files[0].mtime_unix_ns);
        assert_eq!(fp.compare(&again), Ok(()));

        // 10 lines appended: the file, its size and the split are named.
        let mut more = lines(200, &["a", "b", "c"]);
        more += &lines(10, &["a", "b", "c"]);
        std::fs::write(&train, &more).unwrap();
        let e = fp.compare(&prepare(&config).unwrap().fingerprint).unwrap_err();
        let size = std::fs::metadata(&train).unwrap().len();
        assert!(e.contains(&format!("train file {}: content changed", train.display())), "{e}");
        assert!(e.contains(&format!("size {} → {size} bytes; 200 → 210 lines", fp.files[0].size)), "{e}");
        assert!(e.contains("split: 149 train / 51 test examples → "), "{e}");

        // One label gone: named.
        std::fs::write(&train, lines(200, &["a", "b"])).unwrap();
        let e = fp.compare(&prepare(&config).unwrap().fingerprint).unwrap_err();
        assert!(e.contains("labels: 3 → 2 (removed: [c]; added: [])"), "{e}");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        // date -u -d @1772050823 → 2026-02-25T20:20:23Z
        assert_eq!(utc(1_772_050_823_000_000_123), "2026-02-25T20:20:23Z");
        // A leap day: date -u -d @951782400 → 2000-02-29T00:00:00Z
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
    }
}
