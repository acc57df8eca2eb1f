//! Benchmarks behind `sparseburn bench` (owned by the bench helper; stub until then).

/// `sparseburn bench optim|train|predict`
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which benchmark: optim, train or predict.
    pub which: String,
    /// Remaining arguments for that benchmark.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench is not implemented yet")
}
