//! The trained model of a distributed run, for export and checks: a
//! replicated run's rank 0 holds it all; a row-sharded run's table is read
//! from every rank's shard, a range of rows at a time ([`TableSource`]).

use std::path::Path;

use anyhow::{bail, Context};

use super::rank_dirs::{rank_dir, Manifest};
use crate::config::DistributedMode;
use crate::model::{EmbeddingTable, HeadWeights};
use crate::train::checkpoint::{checkpoints_dir, Checkpoint, TableSource};

/// The table of checkpoint `ckpt` of the run in `run_dir` (rank 0's
/// directory): a row-sharded run's rows come from the rank that owns them,
/// at the same step.
pub fn table_of_run(run_dir: &Path, ckpt: &Checkpoint) -> anyhow::Result<TableSource> {
    let mut source = TableSource::new(ckpt)?;
    let Some(manifest) = Manifest::read(run_dir)? else { return Ok(source) };
    if manifest.mode != DistributedMode::RowSharded {
        return Ok(source);
    }
    let step_dir = ckpt.dir.file_name().context("a checkpoint folder has a name")?;
    for rank in 1..manifest.world_size {
        let dir = checkpoints_dir(&rank_dir(run_dir, rank)).join(step_dir);
        let shard = Checkpoint::open(&dir).with_context(|| format!("rank {rank}'s shard of {} (row_sharded over {} ranks)", ckpt.dir.display(), manifest.world_size))?;
        if shard.stored_rows()?.is_none() {
            bail!("{}: stores every row, which a row-sharded rank never does", dir.display());
        }
        source.add_chain(&shard)?;
    }
    Ok(source)
}

/// The whole model of checkpoint `ckpt` of the run in `run_dir` in memory
/// (for checks; export streams [`table_of_run`] instead).
pub fn model_of_run(run_dir: &Path, ckpt: &Checkpoint) -> anyhow::Result<(EmbeddingTable, HeadWeights)> {
    let table = table_of_run(run_dir, ckpt)?;
    Ok((table.read(0..table.recipe().rows)?, ckpt.head()?))
}
