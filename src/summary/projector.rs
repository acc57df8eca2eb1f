//! Files for TensorBoard's embedding projector.
//!
//! The projector plugin reads `<run>/projector_config.pbtxt` and resolves its
//! paths relative to that file (and refuses paths that leave the run folder).

use anyhow::{ensure, Context};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

pub const TENSOR_NAME: &str = "word_embedding";

/// Writes `projector/tensors.tsv`, `projector/metadata.tsv` and
/// `projector_config.pbtxt` under `run_dir`. `vectors` is row-major, `words.len()` rows of `dim`.
pub fn write_projector(run_dir: &Path, words: &[String], vectors: &[f32], dim: usize) -> anyhow::Result<()> {
    ensure!(dim > 0 && !words.is_empty(), "projector: needs at least one word and dim > 0");
    ensure!(vectors.len() == words.len() * dim, "projector: {} words × dim {dim} needs {} values, got {}", words.len(), words.len() * dim, vectors.len());
    let dir = run_dir.join("projector");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    write_lines(&dir.join("tensors.tsv"), vectors.chunks(dim).map(|row| row.iter().map(f32::to_string).collect::<Vec<_>>().join("\t")))?;
    // One column, so no header row. A tab would make the projector read line 1
    // as a header and a newline would shift every row, so both become spaces.
    write_lines(
        &dir.join("metadata.tsv"),
        words.iter().map(|w| {
            let w = w.replace(['\t', '\n', '\r'], " ");
            if w.is_empty() {
                "<empty>".to_string()
            } else {
                w
            }
        }),
    )?;

    let config = format!("embeddings {{\n  tensor_name: \"{TENSOR_NAME}\"\n  tensor_path: \"projector/tensors.tsv\"\n  metadata_path: \"projector/metadata.tsv\"\n}}\n");
    let config_path = run_dir.join("projector_config.pbtxt");
    fs::write(&config_path, config).with_context(|| format!("writing {}", config_path.display()))
}

fn write_lines(path: &Path, lines: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let write = || -> std::io::Result<()> {
        let mut out = BufWriter::new(fs::File::create(path)?);
        for line in lines {
            writeln!(out, "{line}")?;
        }
        out.flush()
    };
    write().with_context(|| format!("writing {}", path.display()))
}
