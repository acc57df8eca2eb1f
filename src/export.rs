//! Model bundles (owned by the export/serve helper; stub until then).

use std::path::PathBuf;

/// `sparseburn export RUN_DIR --out MODEL_DIR`
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A training run directory (holds config.toml, vocab.txt, labels.txt, checkpoints/).
    pub run_dir: PathBuf,
    /// Where to write the bundle, e.g. models/<name>/<version>.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(_args: ExportArgs) -> anyhow::Result<()> {
    anyhow::bail!("export is not implemented yet")
}
