//! Resident predictor, stdin predict loop and HTTP server (owned by the export/serve helper; stub until then).

use std::path::PathBuf;

/// `sparseburn predict --model MODEL_DIR`
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    #[arg(long)]
    pub model: PathBuf,
}

/// `sparseburn serve --model-base models/<name> --addr 127.0.0.1:8501`
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[arg(long)]
    pub model_base: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8501")]
    pub addr: String,
}

pub fn predict(_args: PredictArgs) -> anyhow::Result<()> {
    anyhow::bail!("predict is not implemented yet")
}

pub fn serve(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("serve is not implemented yet")
}
