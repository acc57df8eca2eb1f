//! Model bundles: what a trained run exports for serving.
//!
//! A bundle is one folder, written into a temporary sibling (`.tmp-export-*`)
//! and renamed into place (or swapped in one step for `--force`), so an
//! interrupted export never looks complete and never removes the bundle it
//! was replacing; its leftover folder is removed by the next export there
//! ([`crate::staging`]):
//!
//! - `manifest.json`: [`Manifest`], the format version, labels, tokenizer and
//!   vocabulary settings, shapes, and the SHA-256 and size of every other file;
//! - `vocab.txt`: `word<TAB>count` lines, as in the run directory;
//! - `model.safetensors`: `table` `[rows, dim]` in the run's
//!   `model.table_dtype` (F32, BF16 or F16, as trained: no conversion) and
//!   `head.{i}.weight` `[in, out]`, `head.{i}.bias` `[out]` F32. No optimizer state.
//!
//! `model.safetensors` opens with Python's `safetensors` package
//! (`safetensors.numpy.load_file`; a BF16 table needs `safetensors.torch`,
//! numpy having no bfloat16). Every tensor's size is a multiple of 4 bytes
//! and the safetensors writer pads the header to 8 bytes, so every tensor's
//! data (the table's included) starts at a multiple of 4 bytes in the file: a reader can use the
//! memory-mapped table in place ([`crate::serve::Predictor`] checks this at
//! load and falls back to a copy if a foreign writer broke it).
//!
//! For serving, bundles live in numbered version folders, as TF Serving's do:
//! `models/<name>/<version>/`. [`export_next_version`] picks the next number.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::data::{Split, TokenizerConfig, Vocab, VocabConfig};
use crate::io::{sha256_file, table_tensor_dtype, write_atomic, write_safetensors_to, TensorData, TensorOut};
use crate::model::{DenseLayer, Pooling, TableDtype};
use crate::staging::StagingDir;
use crate::train::{checkpoint, run_dir};

/// The bundle format this sparseburn writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const VOCAB_FILE: &str = "vocab.txt";
/// Bundles are written in `<parent>/.tmp-export-*` folders, then renamed.
pub const STAGING_PREFIX: &str = ".tmp-export-";

/// `sparseburn export RUN_DIR --out MODEL_DIR`
#[derive(Debug)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ExportArgs {
    /// A training run directory (holds config.toml, vocab.txt, labels.txt, checkpoints/).
    pub run_dir: PathBuf,
    /// Where to write the bundle, e.g. models/<name>/<version>.
    #[cfg_attr(feature = "cli", arg(long, conflicts_with = "base"))]
    pub out: Option<PathBuf>,
    /// Write the bundle as the next numbered version under this folder, e.g.
    /// models/<name> (without --out or --base: the run config's `[export] dir`).
    #[cfg_attr(feature = "cli", arg(long))]
    pub base: Option<PathBuf>,
    /// Export this checkpoint folder instead of the run's latest.
    #[cfg_attr(feature = "cli", arg(long))]
    pub checkpoint: Option<PathBuf>,
    /// Replace an existing bundle at --out.
    #[cfg_attr(feature = "cli", arg(long))]
    pub force: bool,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let options = ExportOptions { checkpoint: args.checkpoint.clone(), force: args.force };
    let dir = match (&args.out, &args.base) {
        (Some(out), _) => export_with(&args.run_dir, out, &options)?,
        (None, Some(base)) => export_next_version_with(&args.run_dir, base, &options)?,
        (None, None) => {
            let config = read_run_config(&args.run_dir)?;
            let Some(base) = config.export.dir else {
                bail!("give --out MODEL_DIR (e.g. models/<name>/1) or --base models/<name>, or set `[export] dir` in the run's config");
            };
            export_next_version_with(&args.run_dir, &base, &options)?
        }
    };
    let manifest = Manifest::read(&dir)?;
    println!("exported {} ({} rows × {}, {} labels) to {}", manifest.source.checkpoint, manifest.model.rows, manifest.model.dim, manifest.labels.len(), dir.display());
    if version_of(&dir).is_none() {
        log::warn!("`sparseburn serve --model-base DIR` serves numbered folders (DIR/1, DIR/2, …); this bundle's folder is not a number");
    }
    Ok(())
}

/// Everything about a bundle except the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub sparseburn_version: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub source: SourceInfo,
    /// Class names; logit `i` is `labels[i]`.
    pub labels: Vec<String>,
    pub tokenizer: TokenizerConfig,
    pub vocab: VocabInfo,
    pub model: ModelInfo,
    /// How text becomes a prediction, spelled out for readers in other languages
    /// (`examples/python/predict.py`). Bundles from before it was recorded used
    /// exactly these definitions.
    #[serde(default)]
    pub definition: Definition,
    /// File name → checksum and size, for every file of the bundle but the manifest.
    pub files: BTreeMap<String, FileInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The run folder's name (e.g. `lazy_adam-1`): no path from the training machine.
    #[serde(default)]
    pub run: String,
    /// The checkpoint folder name, e.g. `step-00000570`.
    pub checkpoint: String,
    pub step: u64,
    pub experiment: String,
    pub arm: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VocabInfo {
    /// Words in `vocab.txt`: table rows `0..size` are words, the rest hash buckets.
    pub size: usize,
    /// Hash buckets for out-of-vocabulary words and n-grams.
    pub buckets: u64,
    /// Longest hashed word n-gram.
    pub ngrams: usize,
    /// Character n-grams of each token, `minn..=maxn` characters (0 = none;
    /// absent in bundles from before they existed).
    #[serde(default)]
    pub minn: usize,
    #[serde(default)]
    pub maxn: usize,
    /// How the vocabulary was cut (provenance; not needed to featurize).
    pub min_count: u64,
    pub max_size: usize,
}

impl VocabInfo {
    /// The vocabulary settings the featurizer needs.
    pub fn config(&self) -> VocabConfig {
        VocabConfig { min_count: self.min_count, max_size: self.max_size, buckets: self.buckets, ngrams: self.ngrams, minn: self.minn, maxn: self.maxn }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Table rows: vocabulary size + buckets.
    pub rows: usize,
    pub dim: usize,
    pub pooling: Pooling,
    /// `(in, out)` of each head layer, ReLU between them.
    pub head: Vec<LayerShape>,
    /// The table's dtype; absent (f32) in bundles from before half rows.
    #[serde(default, skip_serializing_if = "TableDtype::is_f32")]
    pub table_dtype: TableDtype,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerShape {
    pub input: usize,
    pub output: usize,
}

/// The featurizer, pooling and head as data: everything a reader needs, next
/// to `tokenizer`, `vocab` and `model`, to turn a text into probabilities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    pub tokens: TokenDefinition,
    pub hash: HashDefinition,
    pub rows: RowDefinition,
    pub pooling: String,
    pub head: HeadDefinition,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenDefinition {
    /// `alphanumeric_runs` (`tokenizer.split = "alnum"`): tokens are maximal runs
    /// of characters that are Unicode Alphabetic or Numeric (general category Nd,
    /// Nl, No); every other character separates. `fasttext_whitespace`
    /// (`"whitespace"`): tokens are maximal runs of characters other than the
    /// bytes 0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C, 0x00.
    pub split: String,
    /// Applied to each token after splitting when `tokenizer.lowercase`: Unicode full lowercase.
    pub lowercase: String,
    /// `tokenizer.max_tokens`: the first that many tokens are kept (0 = all), before n-grams.
    pub max_tokens: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HashDefinition {
    /// `fnv1a_64` over the token's UTF-8 bytes.
    pub function: String,
    /// FNV offset basis and prime, as decimal u64.
    pub offset_basis: u64,
    pub prime: u64,
    /// n-gram `t1..tn`: `h = n; h = h * multiplier + fnv(t_i)` for each token, wrapping u64.
    pub ngram_multiplier: u64,
    pub ngram: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowDefinition {
    pub word: String,
    pub oov: String,
    pub ngrams: String,
    /// How `vocab.minn`/`vocab.maxn` make character n-grams (absent in older bundles, which had none).
    #[serde(default)]
    pub char_ngrams: String,
    pub order: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadDefinition {
    /// `[in, out]`: a layer computes `y = x @ weight + bias`.
    pub weight_layout: String,
    /// Between consecutive layers (none after the last).
    pub activation: String,
    pub output: String,
}

impl Definition {
    /// The definition of a bundle whose tokenizer is `tokenizer`.
    pub fn new(tokenizer: &TokenizerConfig) -> Self {
        let mut d = Definition::default();
        d.tokens.split = match tokenizer.split {
            Split::Alnum => "alphanumeric_runs",
            Split::Whitespace => "fasttext_whitespace",
        }
        .into();
        d
    }
}

impl Default for Definition {
    fn default() -> Self {
        Definition {
            tokens: TokenDefinition {
                split: "alphanumeric_runs".into(),
                lowercase: "unicode_full_lowercase_per_token".into(),
                max_tokens: "keep_first_n_tokens_0_is_all".into(),
            },
            hash: HashDefinition {
                function: "fnv1a_64_utf8".into(),
                offset_basis: 0xcbf2_9ce4_8422_2325,
                prime: 0x0000_0100_0000_01b3,
                ngram_multiplier: 116_049_371,
                ngram: "h = n; for each token t: h = h * ngram_multiplier + fnv(t) (wrapping u64)".into(),
            },
            rows: RowDefinition {
                word: "a token on line i (0-based) of vocab.txt is row i".into(),
                oov: "any other token is row vocab.size + fnv(token) % vocab.buckets (dropped when buckets = 0)".into(),
                ngrams: "for n = 2..=vocab.ngrams, each window of n consecutive tokens is row vocab.size + h % vocab.buckets (none when buckets = 0)".into(),
                char_ngrams: "when vocab.maxn > 0 and buckets > 0: each token t, wrapped as '<' + t + '>', gives every run of vocab.minn..=vocab.maxn Unicode characters except a lone '<' or '>' (by start, then length; fastText's subwords), each row vocab.size + fnv(ngram) % vocab.buckets".into(),
                order: "tokens in text order, then all 2-grams, then all 3-grams, ..., then the character n-grams of each token in text order; pooled by f32 addition in this order".into(),
            },
            pooling: "the rows summed in f32 in row order, times an f32 scale: mean 1/count, sum 1, sqrtn 1/sqrt(count); no rows: zeros".into(),
            head: HeadDefinition {
                weight_layout: "[in, out]".into(),
                activation: "relu".into(),
                output: "softmax over the logits; logit i is labels[i]".into(),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub sha256: String,
    pub bytes: u64,
}

impl Manifest {
    /// Reads `dir/manifest.json`: a newer `format_version` is refused with an
    /// error saying so (checked before the rest, whose fields may differ).
    pub fn read(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {} (not a model bundle?)", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON (corrupt or truncated)", path.display()))?;
        let Some(version) = value.get("format_version").and_then(|v| v.as_u64()) else {
            bail!("{}: no `format_version`: not a sparseburn model manifest", path.display());
        };
        if version > FORMAT_VERSION as u64 {
            bail!(
                "{}: bundle format version {version} is newer than this sparseburn {} reads (up to {FORMAT_VERSION}); upgrade sparseburn",
                path.display(),
                env!("CARGO_PKG_VERSION")
            );
        }
        if version == 0 {
            bail!("{}: bundle format version 0 is not valid", path.display());
        }
        serde_json::from_value(value).with_context(|| format!("{}: invalid manifest", path.display()))
    }
}

/// Options of [`export_with`].
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// A checkpoint folder to export instead of the run's latest.
    pub checkpoint: Option<PathBuf>,
    /// Replace an existing bundle at the destination.
    pub force: bool,
}

/// Exports the latest checkpoint of `run_dir` as a bundle at `out` (refusing to
/// overwrite an existing one); returns `out`. Called by training's `[export] dir`.
pub fn export_run(run_dir: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    export_with(run_dir, out, &ExportOptions::default())
}

/// Exports `run_dir` as the next numbered version under `base` (`base/1` when
/// there is none yet); returns the version folder.
pub fn export_next_version(run_dir: &Path, base: &Path) -> anyhow::Result<PathBuf> {
    export_next_version_with(run_dir, base, &ExportOptions::default())
}

fn export_next_version_with(run_dir: &Path, base: &Path, options: &ExportOptions) -> anyhow::Result<PathBuf> {
    let staged = stage(run_dir, base, options)?;
    // Another export may claim the same number between the scan and the rename: take the next one.
    for _ in 0..100 {
        let out = base.join(next_version(base)?.to_string());
        match publish_new(&staged, &out) {
            Ok(()) => return Ok(out),
            Err(e) if out.exists() => log::debug!("{}: taken meanwhile ({e:#}), trying the next version", out.display()),
            Err(e) => return Err(e),
        }
    }
    bail!("{}: could not claim a free version number", base.display())
}

/// [`export_run`] with options.
pub fn export_with(run_dir: &Path, out: &Path, options: &ExportOptions) -> anyhow::Result<PathBuf> {
    let existed = out.exists();
    if existed {
        if !options.force {
            bail!("{} already exists: export to a new version folder, or pass --force to replace it", out.display());
        }
        if !out.join(MANIFEST_FILE).is_file() {
            bail!("refusing to replace {}: it is not a model bundle (no {MANIFEST_FILE}); did you mean a version folder inside it?", out.display());
        }
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut staged = stage(run_dir, parent, options)?;
    if existed {
        staged.replace(out)?;
    } else {
        // Not there at the start: if another export put a bundle there meanwhile, fail rather than replace it.
        publish_new(&staged, out)?;
    }
    Ok(out.to_path_buf())
}

/// Renames the staged bundle to `out` only if nothing is there, in one step
/// (Linux `renameat2(RENAME_NOREPLACE)`): of two exports racing to one folder,
/// exactly one succeeds and the other fails naming it.
fn publish_new(staged: &StagingDir, out: &Path) -> anyhow::Result<()> {
    match rename_no_replace(staged.path(), out) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists || out.exists() => {
            bail!("{} already exists: another export created it meanwhile (nothing was replaced)", out.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot rename {} into {}", staged.path().display(), out.display())),
    }
    // The staging folder is gone from its old name; dropping `staged` later finds nothing to delete there.
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all(); // makes the rename durable
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(std::io::Error::from)
}

/// Elsewhere: a plain rename, which fails onto a non-empty folder (only an empty one could be replaced).
#[cfg(not(target_os = "linux"))]
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    if to.exists() {
        return Err(std::io::ErrorKind::AlreadyExists.into());
    }
    std::fs::rename(from, to)
}

/// The numeric version of a bundle folder (`models/sotu/3` → 3): ASCII digits only.
pub fn version_of(dir: &Path) -> Option<u64> {
    let name = dir.file_name()?.to_str()?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// Numbered version folders under `base`, highest first.
pub fn versions(base: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(base).with_context(|| format!("cannot list {}", base.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", base.display()))?;
        let path = entry.path();
        if let Some(v) = version_of(&path).filter(|_| path.is_dir()) {
            out.push((v, path));
        }
    }
    out.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
    Ok(out)
}

/// One past the highest numbered version under `base` (1 for none or a missing folder).
pub fn next_version(base: &Path) -> anyhow::Result<u64> {
    if !base.exists() {
        return Ok(1);
    }
    Ok(versions(base)?.first().map_or(1, |(v, _)| v + 1))
}

/// The run's resolved config, parsed without [`Config::validate`]: exporting
/// must not depend on the training data still being reachable from here.
fn read_run_config(run_dir: &Path) -> anyhow::Result<Config> {
    let path = run_dir.join(run_dir::CONFIG_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {} (not a run directory?)", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))
}

/// Writes a bundle into a staging folder in `parent`, checked and complete, ready to publish.
fn stage(run_dir: &Path, parent: &Path, options: &ExportOptions) -> anyhow::Result<StagingDir> {
    let config = read_run_config(run_dir)?;
    let labels = run_dir::read_labels(run_dir)?;
    let vocab_src = run_dir.join(run_dir::VOCAB_FILE);
    let vocab = Vocab::read(&vocab_src)?;
    let ckpt_dir = match &options.checkpoint {
        Some(dir) => dir.clone(),
        None => checkpoint::latest(run_dir)?,
    };
    let ckpt = checkpoint::Checkpoint::open(&ckpt_dir)?;
    // Streamed, a range of rows at a time: a row-sharded run's rows come from
    // every rank's shard, and no copy of the table is held.
    let table = crate::distributed::table_of_run(run_dir, &ckpt)?;
    let recipe = table.recipe();
    let head = ckpt.head()?;

    let rows = vocab.len() + config.vocab.buckets as usize;
    if recipe.rows != rows {
        bail!("{}: table has {} rows, but vocabulary {} + buckets {} = {rows}", ckpt_dir.display(), recipe.rows, vocab.len(), config.vocab.buckets);
    }
    if recipe.dim != config.model.dim || head.input_dim() != recipe.dim {
        bail!("{}: table dim {}, head input {}, config model.dim {} disagree", ckpt_dir.display(), recipe.dim, head.input_dim(), config.model.dim);
    }
    if head.classes() != labels.len() {
        bail!("{}: head has {} outputs but {} has {} labels", ckpt_dir.display(), head.classes(), run_dir.join(run_dir::LABELS_FILE).display(), labels.len());
    }
    for pair in head.layers.windows(2) {
        if pair[0].output != pair[1].input {
            bail!("{}: head layers do not chain ({} outputs into {} inputs)", ckpt_dir.display(), pair[0].output, pair[1].input);
        }
    }

    let staging = StagingDir::new(parent, STAGING_PREFIX)?;
    let dir = staging.path();

    let stream = table.stream();
    let table_dtype = recipe.dtype;
    let mut tensors = vec![TensorOut { name: "table".into(), dtype: table_tensor_dtype(table_dtype), shape: vec![rows, recipe.dim], data: TensorData::Streamed(&stream) }];
    for (i, l) in head.layers.iter().enumerate() {
        tensors.push(TensorOut::f32(DenseLayer::weight_name(i), l.weight_shape(), &l.weight));
        tensors.push(TensorOut::f32(DenseLayer::bias_name(i), l.bias_shape(), &l.bias));
    }
    let meta = HashMap::from([("format".to_string(), "sparseburn-bundle".to_string()), ("format_version".to_string(), FORMAT_VERSION.to_string())]);
    write_atomic(&dir.join(MODEL_FILE), |w| write_safetensors_to(w, &tensors, &meta))?;
    drop(tensors);
    write_atomic(&dir.join(VOCAB_FILE), |w| vocab.write(w))?;

    let mut files = BTreeMap::new();
    for name in [MODEL_FILE, VOCAB_FILE] {
        let path = dir.join(name);
        let bytes = std::fs::metadata(&path).with_context(|| format!("cannot stat {}", path.display()))?.len();
        files.insert(name.to_string(), FileInfo { sha256: sha256_file(&path)?, bytes });
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        sparseburn_version: env!("CARGO_PKG_VERSION").to_string(),
        created: rfc3339_utc(std::time::SystemTime::now()),
        source: SourceInfo {
            run: std::fs::canonicalize(run_dir).unwrap_or_else(|_| run_dir.to_path_buf()).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            checkpoint: ckpt_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            step: ckpt.state.step,
            experiment: config.experiment.name.clone(),
            arm: config.experiment.arm.clone(),
        },
        labels: labels.names().to_vec(),
        tokenizer: config.tokenizer.clone(),
        vocab: VocabInfo {
            size: vocab.len(),
            buckets: config.vocab.buckets,
            ngrams: config.vocab.ngrams,
            minn: config.vocab.minn,
            maxn: config.vocab.maxn,
            min_count: config.vocab.min_count,
            max_size: config.vocab.max_size,
        },
        model: ModelInfo {
            rows,
            dim: config.model.dim,
            pooling: config.model.pooling,
            head: head.layers.iter().map(|l| LayerShape { input: l.input, output: l.output }).collect(),
            table_dtype,
        },
        definition: Definition::new(&config.tokenizer),
        files,
    };
    write_atomic(&dir.join(MANIFEST_FILE), |w| serde_json::to_writer_pretty(&mut *w, &manifest).map_err(std::io::Error::other))?;
    // Temp files are created owner-only; a bundle is meant to be read by a serving account too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for name in [MODEL_FILE, VOCAB_FILE, MANIFEST_FILE] {
            let path = dir.join(name);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).with_context(|| format!("cannot chmod {}", path.display()))?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).with_context(|| format!("cannot chmod {}", dir.display()))?;
    }
    Ok(staging)
}

/// `2024-05-01T12:34:56Z` for a system time (UTC, whole seconds).
pub fn rfc3339_utc(t: std::time::SystemTime) -> String {
    crate::io::rfc3339_utc_seconds(t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH + Duration::from_secs(1_714_566_896)), "2024-05-01T12:34:56Z");
    }

    /// Row ids computed from nothing but the manifest's definition (as a foreign
    /// reader would) equal the featurizer's: the definition cannot drift from the code.
    #[test]
    fn the_definition_reproduces_the_featurizer() {
        use crate::data::{Featurizer, Tokenizer, TokenizerConfig, Vocab, VocabConfig};
        let d = Definition::default();
        let fnv = |s: &str| s.bytes().fold(d.hash.offset_basis, |h, b| (h ^ b as u64).wrapping_mul(d.hash.prime));
        let words = ["the", "war", "ünïon"];
        let vocab_config = VocabConfig { min_count: 1, max_size: 0, buckets: 997, ngrams: 3, ..VocabConfig::default() };
        let vocab = Vocab::from_counts(words.iter().enumerate().map(|(i, w)| (w.to_string(), 10 - i as u64)).collect(), &vocab_config);
        let tokenizer = TokenizerConfig { lowercase: true, max_tokens: 6, ..TokenizerConfig::default() };
        let featurizer = Featurizer::new(Tokenizer::new(tokenizer), vocab.clone(), &vocab_config);
        let text = "The WAR, the Ünïon—and 1812's peace! (ignored past six tokens)";
        let tokens: Vec<String> = text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).take(6).map(str::to_lowercase).collect();
        let bucket = |h: u64| (vocab.len() as u64 + h % vocab_config.buckets) as u32;
        let mut want: Vec<u32> = tokens.iter().map(|t| vocab.get(t).unwrap_or_else(|| bucket(fnv(t)))).collect();
        for n in 2..=vocab_config.ngrams {
            for w in tokens.windows(n) {
                want.push(bucket(w.iter().fold(n as u64, |h, t| h.wrapping_mul(d.hash.ngram_multiplier).wrapping_add(fnv(t)))));
            }
        }
        assert_eq!(tokens.len(), 6);
        assert_eq!(featurizer.features(text), want);
    }

    #[test]
    fn versions_are_numeric_folder_names() {
        assert_eq!(version_of(Path::new("models/x/12")), Some(12));
        assert_eq!(version_of(Path::new("models/x/+1")), None);
        assert_eq!(version_of(Path::new("models/x/1a")), None);
        assert_eq!(version_of(Path::new("models/x/.tmp-export-1")), None);
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(next_version(&tmp.path().join("missing")).unwrap(), 1);
        for d in ["1", "3", "10", "x", ".tmp-export-99"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        std::fs::write(tmp.path().join("20"), "a file, not a version").unwrap();
        let v: Vec<u64> = versions(tmp.path()).unwrap().into_iter().map(|(v, _)| v).collect();
        assert_eq!(v, [10, 3, 1]);
        assert_eq!(next_version(tmp.path()).unwrap(), 11);
    }
}
