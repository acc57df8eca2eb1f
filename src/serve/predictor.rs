//! The resident predictor: a bundle loaded once, then any number of
//! predictions of any batch size from any thread.
//!
//! Loading verifies `manifest.json` and every file's size and SHA-256, copies
//! the head, and builds the featurizer. A table up to
//! [`LoadOptions::copy_table_max_bytes`] is read into anonymous memory, so no
//! later change to the file (truncation, an overwrite in place) can reach the
//! answers or fault the process. A larger one is mapped privately and used in
//! place (rows are paged in on first touch); such a predictor notices a change
//! to its file ([`Predictor::table_file_changed`], one `fstat`, checked by the
//! server before and after every request) and the server then unloads it
//! instead of serving changed weights. A truncation that lands during a
//! prediction cannot kill the process: the mapping is guarded
//! ([`super::mapping_guard`]), the read sees zeros, and the change check after
//! the prediction discards that answer.
//! A prediction runs exactly the functions evaluation runs
//! ([`pool_one`], [`HeadWeights::logits_into`]), so its logits equal
//! [`crate::train::eval::logits`] bit for bit, and its scores are
//! `exp(z - log_sum_exp(z))` with evaluation's [`log_sum_exp`].

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::io::Read;

use anyhow::{bail, Context};
use memmap2::{Mmap, MmapOptions};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::mapping_guard::MappingGuard;

use crate::data::{Featurizer, Tokenizer, Vocab};
use crate::export::{Manifest, MANIFEST_FILE, MODEL_FILE, VOCAB_FILE};
use crate::model::{pool_one, DenseLayer, HeadWeights, Pooling, TableDtype, TableView};
use crate::train::eval::log_sum_exp;

/// Top-k labels of one text with their probabilities, highest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Prediction {
    pub labels: Vec<String>,
    pub scores: Vec<f32>,
}

/// How [`Predictor::load_with`] checks the bundle.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Hash every file against the manifest's SHA-256 (reads the whole table
    /// once, which also brings it into the page cache). When off, only file
    /// sizes are checked, and a multi-GB table loads in milliseconds.
    pub verify_checksums: bool,
    /// Tables up to this many bytes are copied into memory (immune to changes
    /// of the file); larger ones are memory-mapped.
    pub copy_table_max_bytes: u64,
}

/// Default of [`LoadOptions::copy_table_max_bytes`]: 1 GiB.
pub const COPY_TABLE_MAX_BYTES: u64 = 1 << 30;

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { verify_checksums: true, copy_table_max_bytes: COPY_TABLE_MAX_BYTES }
    }
}

/// Where the table's values live.
enum TableData {
    /// Used in place from the private memory map (the data is aligned for its dtype).
    /// `guard` is declared first so it unregisters before `mmap` unmaps.
    Mapped { guard: MappingGuard, mmap: Mmap, start: usize, len: usize },
    /// In anonymous memory, as u32 words so that any dtype's values are aligned.
    Owned(Vec<u32>),
}

/// What identifies a file's contents without reading them: a change in place
/// (truncate, overwrite, even with the old mtime put back) moves `ctime`, a
/// replacement moves `ino`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub bytes: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
            FileStamp { dev: meta.dev(), ino: meta.ino(), bytes: meta.len(), mtime_ns: ns(meta.mtime(), meta.mtime_nsec()), ctime_ns: ns(meta.ctime(), meta.ctime_nsec()) }
        }
        #[cfg(not(unix))]
        {
            let mtime_ns = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as i128);
            FileStamp { dev: 0, ino: 0, bytes: meta.len(), mtime_ns, ctime_ns: mtime_ns }
        }
    }

    /// What differs from `self` (for the log line), or `None` when nothing does.
    pub fn change(&self, now: &FileStamp) -> Option<String> {
        if self == now {
            return None;
        }
        let mut what = Vec::new();
        if (self.dev, self.ino) != (now.dev, now.ino) {
            what.push("replaced by another file".to_string());
        }
        if self.bytes != now.bytes {
            what.push(format!("size {} → {} bytes", self.bytes, now.bytes));
        }
        if self.mtime_ns != now.mtime_ns {
            what.push("modification time".to_string());
        }
        if self.ctime_ns != now.ctime_ns && what.is_empty() {
            what.push("status change time (written or attributes changed)".to_string());
        }
        Some(what.join(", "))
    }
}

/// A loaded bundle. `Send + Sync`: share it behind an `Arc` between threads.
pub struct Predictor {
    dir: PathBuf,
    manifest: Manifest,
    featurizer: Featurizer,
    table: TableData,
    table_dtype: TableDtype,
    /// The open table file and its stamp when verified.
    model_file: std::fs::File,
    /// Every bundle file's stamp when it was loaded (name → stamp).
    stamps: Vec<(String, FileStamp)>,
    rows: usize,
    dim: usize,
    pooling: Pooling,
    head: HeadWeights,
    load_time: Duration,
}

/// Per-thread buffers, reused across calls (sized to the head, never to the model).
#[derive(Default)]
struct Scratch {
    tokens: Vec<String>,
    ids: Vec<u32>,
    pooled: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    order: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Predictor {
    /// Loads and fully verifies the bundle in `dir`.
    pub fn load(dir: impl AsRef<Path>) -> anyhow::Result<Self> {
        Self::load_with(dir, &LoadOptions::default())
    }

    pub fn load_with(dir: impl AsRef<Path>, options: &LoadOptions) -> anyhow::Result<Self> {
        let started = Instant::now();
        let dir = dir.as_ref();
        let manifest = Manifest::read(dir)?;
        for required in [MODEL_FILE, VOCAB_FILE] {
            if !manifest.files.contains_key(required) {
                bail!("{}: lists no {required}", dir.join(MANIFEST_FILE).display());
            }
        }
        // Sizes first (cheap, and catches truncation even without hashing).
        for (name, info) in &manifest.files {
            let path = dir.join(name);
            let len = std::fs::metadata(&path).with_context(|| format!("{}: missing from the bundle", path.display()))?.len();
            if len != info.bytes {
                bail!("{}: is {len} bytes, the manifest says {} (truncated or corrupt)", path.display(), info.bytes);
            }
        }

        let model_path = dir.join(MODEL_FILE);
        let mut file = std::fs::File::open(&model_path).with_context(|| format!("cannot open {}", model_path.display()))?;
        let stamp = FileStamp::of(&file.metadata().with_context(|| format!("cannot stat {}", model_path.display()))?);
        let expected = manifest.files[MODEL_FILE].bytes;
        if stamp.bytes != expected {
            bail!("{}: is {} bytes, the manifest says {expected} (changed while loading?)", model_path.display(), stamp.bytes);
        }
        // Small tables are read (never mapped): nothing done to the file later can reach them.
        // `read` cannot fault on a file truncated meanwhile; it just comes up short.
        let copy = stamp.bytes <= options.copy_table_max_bytes;
        enum Bytes {
            Read(Vec<u8>),
            Mapped(Mmap),
        }
        let bytes = if copy {
            let mut buf = Vec::with_capacity(stamp.bytes as usize);
            file.read_to_end(&mut buf).with_context(|| format!("cannot read {}", model_path.display()))?;
            if buf.len() as u64 != expected {
                bail!("{}: read {} bytes, the manifest says {expected} (changed while loading?)", model_path.display(), buf.len());
            }
            Bytes::Read(buf)
        } else {
            // SAFETY: a private read-only map of a file whose size we just checked.
            // Someone truncating it later makes reads past the new end fault: the
            // mapping is guarded below (a fault reads zeros and marks the table
            // changed), and the server checks the file's stamp around every request.
            let mmap = unsafe { MmapOptions::new().map_copy_read_only(&file) }.with_context(|| format!("cannot map {}", model_path.display()))?;
            #[cfg(unix)]
            let _ = mmap.advise(memmap2::Advice::Random); // rows are read by id, not in order
            Bytes::Mapped(mmap)
        };
        let data: &[u8] = match &bytes {
            Bytes::Read(v) => v,
            Bytes::Mapped(m) => m,
        };
        if options.verify_checksums {
            for (name, info) in &manifest.files {
                let path = dir.join(name);
                let actual = if name == MODEL_FILE { sha256_hex(data) } else { crate::io::sha256_file(&path)? };
                if actual != info.sha256 {
                    bail!("{}: checksum mismatch (corrupt or modified): manifest sha256 {}, file {actual}", path.display(), info.sha256);
                }
            }
        }

        let tensors = SafeTensors::deserialize(data).with_context(|| format!("{}: not a valid safetensors file (truncated or corrupt?)", model_path.display()))?;
        let m = &manifest.model;
        let table_view = tensors.tensor("table").map_err(|_| anyhow::anyhow!("{}: no `table` tensor", model_path.display()))?;
        let table_dtype = m.table_dtype;
        let want = crate::io::table_tensor_dtype(table_dtype);
        if table_view.dtype() != want || table_view.shape() != [m.rows, m.dim] {
            bail!("{}: `table` is {:?} {:?}, the manifest says {want:?} [{}, {}]", model_path.display(), table_view.dtype(), table_view.shape(), m.rows, m.dim);
        }
        let table_bytes = table_view.data();
        let start = table_bytes.as_ptr() as usize - data.as_ptr() as usize;
        let (table_len, aligned) = (table_bytes.len(), (table_bytes.as_ptr() as usize).is_multiple_of(table_dtype.size()));
        let owned_table = if copy || !aligned {
            if !copy {
                log::warn!("{}: table data is not {}-byte aligned; copying it into memory", model_path.display(), table_dtype.size());
            }
            let mut words = vec![0u32; table_len.div_ceil(4)];
            bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..table_len].copy_from_slice(table_bytes);
            Some(words)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(m.head.len());
        for (i, shape) in m.head.iter().enumerate() {
            let read = |name: String, want: &[usize]| -> anyhow::Result<Vec<f32>> {
                let t = tensors.tensor(&name).map_err(|_| anyhow::anyhow!("{}: no `{name}` tensor", model_path.display()))?;
                if t.dtype() != Dtype::F32 || t.shape() != want {
                    bail!("{}: `{name}` is {:?} {:?}, the manifest says F32 {want:?}", model_path.display(), t.dtype(), t.shape());
                }
                Ok(bytemuck::pod_collect_to_vec(t.data()))
            };
            let weight = read(format!("head.{i}.weight"), &[shape.input, shape.output])?;
            let bias = read(format!("head.{i}.bias"), &[shape.output])?;
            layers.push(DenseLayer { input: shape.input, output: shape.output, weight, bias });
        }
        let head = HeadWeights { layers };
        if head.layers.is_empty() || head.input_dim() != m.dim || head.layers.windows(2).any(|w| w[0].output != w[1].input) {
            bail!("{}: head layers {:?} do not fit table dim {}", dir.join(MANIFEST_FILE).display(), m.head, m.dim);
        }
        if head.classes() != manifest.labels.len() {
            bail!("{}: head has {} outputs but {} labels", dir.join(MANIFEST_FILE).display(), head.classes(), manifest.labels.len());
        }

        let vocab = Vocab::read(&dir.join(VOCAB_FILE))?;
        if vocab.len() != manifest.vocab.size {
            bail!("{}: {} words, the manifest says {}", dir.join(VOCAB_FILE).display(), vocab.len(), manifest.vocab.size);
        }
        let featurizer = Featurizer::new(Tokenizer::new(manifest.tokenizer.clone()), vocab, &manifest.vocab.config());
        // Every id the featurizer can produce must index the table: checked once here, so predict cannot go out of bounds.
        if featurizer.rows() != m.rows {
            bail!("{}: vocabulary {} + buckets {} = {} rows, the table has {}", dir.display(), manifest.vocab.size, manifest.vocab.buckets, featurizer.rows(), m.rows);
        }

        let (rows, dim, pooling) = (m.rows, m.dim, m.pooling);
        drop(tensors);
        let table = match (owned_table, bytes) {
            (Some(v), _) => TableData::Owned(v),
            (None, Bytes::Mapped(mmap)) => {
                let guard = MappingGuard::new(mmap.as_ptr(), mmap.len()).with_context(|| format!("cannot map {}", model_path.display()))?;
                TableData::Mapped { guard, mmap, start, len: table_len }
            }
            (None, Bytes::Read(_)) => unreachable!("a read table is always owned"),
        };
        // The stamps the server compares against (the table file's from the open
        // file, before it was read): a change during the load shows up on the first poll.
        let mut stamps = vec![(MODEL_FILE.to_string(), stamp)];
        for name in manifest.files.keys().filter(|n| *n != MODEL_FILE).map(String::as_str).chain([MANIFEST_FILE]) {
            let path = dir.join(name);
            let meta = std::fs::metadata(&path).with_context(|| format!("cannot stat {}", path.display()))?;
            stamps.push((name.to_string(), FileStamp::of(&meta)));
        }
        Ok(Predictor { dir: dir.to_path_buf(), manifest, featurizer, table, table_dtype, model_file: file, stamps, rows, dim, pooling, head, load_time: started.elapsed() })
    }

    /// The table's rows in their stored dtype (pooling widens them to f32).
    fn table(&self) -> TableView<'_> {
        let bytes: &[u8] = match &self.table {
            TableData::Mapped { mmap, start, len, .. } => &mmap[*start..*start + *len],
            TableData::Owned(v) => &bytemuck::cast_slice(v)[..self.rows * self.dim * self.table_dtype.size()],
        };
        match self.table_dtype {
            TableDtype::F32 => TableView::F32(bytemuck::cast_slice(bytes)),
            TableDtype::Bf16 => TableView::Bf16(bytemuck::cast_slice(bytes)),
            TableDtype::F16 => TableView::F16(bytemuck::cast_slice(bytes)),
        }
    }

    /// The dtype the bundle's table is stored (and served) in.
    pub fn table_dtype(&self) -> TableDtype {
        self.table_dtype
    }

    /// For a memory-mapped table: how its file (the very inode mapped) changed
    /// since it was verified, if it did, including a read that faulted because
    /// the file shrank (answers computed since then are wrong: discard them).
    /// Always `None` for a table in memory.
    pub fn table_file_changed(&self) -> Option<String> {
        let TableData::Mapped { guard, .. } = &self.table else { return None };
        if guard.faulted() {
            return Some(format!("{MODEL_FILE}: a read of its mapping faulted (the file was truncated)"));
        }
        let now = match self.model_file.metadata() {
            Ok(m) => FileStamp::of(&m),
            Err(e) => return Some(format!("cannot stat it: {e}")),
        };
        // Same inode by construction: only size and times can move.
        self.stamps[0].1.change(&now).map(|what| format!("{MODEL_FILE}: {what}"))
    }

    /// Which bundle files changed on disk (in place or replaced) since loading, if any.
    pub fn files_changed(&self) -> Option<String> {
        let changes: Vec<String> = self
            .stamps
            .iter()
            .filter_map(|(name, then)| match std::fs::metadata(self.dir.join(name)) {
                Ok(meta) => then.change(&FileStamp::of(&meta)).map(|what| format!("{name}: {what}")),
                Err(e) => Some(format!("{name}: {e}")),
            })
            .collect();
        (!changes.is_empty()).then(|| changes.join("; "))
    }

    /// Top-`top_k` labels and probabilities of each text (`top_k` 0 or above the
    /// label count gives every label). Any batch size, including 0.
    pub fn predict<S: AsRef<str>>(&self, texts: &[S], top_k: usize) -> Vec<Prediction> {
        SCRATCH.with_borrow_mut(|s| texts.iter().map(|t| self.predict_with(t.as_ref(), top_k, s)).collect())
    }

    pub fn predict_one(&self, text: &str, top_k: usize) -> Prediction {
        SCRATCH.with_borrow_mut(|s| self.predict_with(text, top_k, s))
    }

    /// The raw logits of one text (what evaluation computes), one per label.
    pub fn logits(&self, text: &str) -> Vec<f32> {
        SCRATCH.with_borrow_mut(|s| self.logits_with(text, s).to_vec())
    }

    /// Probabilities of every label, in label order.
    pub fn probabilities(&self, text: &str) -> Vec<f32> {
        let z = self.logits(text);
        let lse = log_sum_exp(&z);
        z.iter().map(|&v| (v as f64 - lse).exp() as f32).collect()
    }

    /// The table rows a text pools (its words, hashed OOV words and n-grams).
    pub fn features(&self, text: &str) -> Vec<u32> {
        self.featurizer.features(text)
    }

    fn logits_with<'s>(&self, text: &str, s: &'s mut Scratch) -> &'s [f32] {
        s.ids.clear();
        self.featurizer.features_into(text, &mut s.tokens, &mut s.ids);
        let width = self.head.max_width();
        s.pooled.resize(self.dim, 0.0);
        s.a.resize(width.max(self.dim), 0.0);
        s.b.resize(width.max(self.dim), 0.0);
        pool_one(self.table(), self.dim, &s.ids, self.pooling, &mut s.pooled);
        self.head.logits_into(&s.pooled, &mut s.a, &mut s.b)
    }

    fn predict_with(&self, text: &str, top_k: usize, s: &mut Scratch) -> Prediction {
        let mut order = std::mem::take(&mut s.order);
        let z = self.logits_with(text, s);
        let k = if top_k == 0 { z.len() } else { top_k.min(z.len()) };
        let lse = log_sum_exp(z);
        order.clear();
        order.extend(0..z.len() as u32);
        // Highest logit first; ties keep label order. total_cmp: NaN cannot panic.
        let by_score = |a: &u32, b: &u32| z[*b as usize].total_cmp(&z[*a as usize]).then(a.cmp(b));
        if k < order.len() {
            order.select_nth_unstable_by(k, by_score);
            order.truncate(k);
        }
        order.sort_unstable_by(by_score);
        let prediction = Prediction {
            labels: order.iter().map(|&i| self.manifest.labels[i as usize].clone()).collect(),
            scores: order.iter().map(|&i| (z[i as usize] as f64 - lse).exp() as f32).collect(),
        };
        s.order = order;
        prediction
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn labels(&self) -> &[String] {
        &self.manifest.labels
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn head(&self) -> &HeadWeights {
        &self.head
    }
    /// Whether the table is used in place from the memory map (else it was copied).
    pub fn table_is_mapped(&self) -> bool {
        matches!(self.table, TableData::Mapped { .. })
    }
    /// How long [`Predictor::load`] took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor")
            .field("dir", &self.dir)
            .field("rows", &self.rows)
            .field("dim", &self.dim)
            .field("labels", &self.manifest.labels.len())
            .field("mapped", &self.table_is_mapped())
            .finish()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictor_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Predictor>();
    }
}
