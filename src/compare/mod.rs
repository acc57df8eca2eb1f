//! A/B optimizer comparisons (owned by the compare helper; stub until then).

use std::path::PathBuf;

/// `sparseburn compare configs/lazy_vs_dense.toml`
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    pub config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

pub fn run(_args: CompareArgs) -> anyhow::Result<()> {
    anyhow::bail!("compare is not implemented yet")
}
