//! `MANIFEST.json`: what a checkpoint folder holds and how to verify it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::io::blake3_file;
use crate::model::TableRecipe;

/// Version 2: sparse rows + chains (version 1 stored whole tables).
pub const CHECKPOINT_FORMAT_VERSION: u32 = 2;
pub(super) const ROWS_FILE: &str = "rows.safetensors";
pub(super) const HEAD_FILE: &str = "head.safetensors";
pub(super) const HEAD_OPTIM_FILE: &str = "head_optimizer.bin";
pub(super) const TRAINER_FILE: &str = "trainer.json";
pub(super) const MANIFEST_FILE: &str = "MANIFEST.json";
pub(super) const LATEST_FILE: &str = "LATEST";

/// A base holds every row that differs from its initial value; a delta only
/// the rows changed since its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    Base,
    Delta,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub format_version: u32,
    pub sparseburn_version: String,
    pub step: u64,
    pub kind: LinkKind,
    /// The checkpoint folder this delta applies on (none for a base).
    pub parent: Option<String>,
    /// Links between the base and this checkpoint (0 for a base).
    pub depth: u32,
    /// Regenerates every row this chain does not store.
    pub table: TableRecipe,
    pub table_optimizer: String,
    /// The table optimizer's config, so a reader can rebuild it (e.g. to apply pending decay).
    pub table_optimizer_config: serde_json::Value,
    /// Rows stored in `rows.safetensors`.
    pub rows_stored: u64,
    /// Every row is stored, without `ids` (a dense optimizer).
    pub all_rows: bool,
    /// Bytes of all files in the folder.
    pub bytes: u64,
    /// Checksum algorithm of `files`.
    pub checksum: String,
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    /// Reads and parses `dir/MANIFEST.json`, checking the format version.
    pub fn read(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let version = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["format_version"].as_u64());
        if let Some(v) = version.filter(|&v| v != CHECKPOINT_FORMAT_VERSION as u64) {
            bail!("{}: checkpoint format version {v} is not supported (this sparseburn {} reads version {CHECKPOINT_FORMAT_VERSION})", dir.display(), env!("CARGO_PKG_VERSION"),);
        }
        serde_json::from_str(&text).with_context(|| format!("{}: corrupt manifest", path.display()))
    }

    /// Checks every file against its checksum.
    pub fn verify_files(&self, dir: &Path) -> anyhow::Result<()> {
        if self.checksum != "blake3" {
            bail!("{}: unknown checksum algorithm {:?}", dir.join(MANIFEST_FILE).display(), self.checksum);
        }
        for f in [ROWS_FILE, HEAD_FILE, HEAD_OPTIM_FILE, TRAINER_FILE] {
            if !self.files.contains_key(f) {
                bail!("{}: lists no checksum for {f}", dir.join(MANIFEST_FILE).display());
            }
        }
        for (file, expected) in &self.files {
            let path = dir.join(file);
            let actual = blake3_file(&path)?;
            if &actual != expected {
                bail!("{}: checksum mismatch (file is corrupt or truncated): expected blake3 {expected}, found {actual}", path.display());
            }
        }
        Ok(())
    }
}
