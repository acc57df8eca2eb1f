//! The trained model of a distributed run, for export and checks: a
//! replicated run's rank 0 holds it all; a row-sharded run's table is put
//! together rank by rank (at most two tables in memory, whatever `W`).

use std::path::Path;

use anyhow::{bail, Context};

use super::rank_dirs::{rank_dir, Manifest};
use crate::config::DistributedMode;
use crate::model::{EmbeddingTable, HeadWeights};
use crate::train::checkpoint::{checkpoints_dir, Checkpoint};

/// The weights of checkpoint `ckpt` of the run in `run_dir` (rank 0's
/// directory): [`Checkpoint::model`], with a row-sharded run's rows taken
/// from the rank that owns them, at the same step.
pub fn model_of_run(run_dir: &Path, ckpt: &Checkpoint) -> anyhow::Result<(EmbeddingTable, HeadWeights)> {
    let (mut table, head) = ckpt.model()?;
    let Some(manifest) = Manifest::read(run_dir)? else { return Ok((table, head)) };
    if manifest.mode != DistributedMode::RowSharded {
        return Ok((table, head));
    }
    let step_dir = ckpt.dir.file_name().context("a checkpoint folder has a name")?;
    let dim = table.dim();
    for rank in 1..manifest.world_size {
        let dir = checkpoints_dir(&rank_dir(run_dir, rank)).join(step_dir);
        let shard = Checkpoint::open(&dir).with_context(|| format!("rank {rank}'s shard of {} (row_sharded over {} ranks)", ckpt.dir.display(), manifest.world_size))?;
        let Some(rows) = shard.stored_rows()? else {
            bail!("{}: stores every row, which a row-sharded rank never does", dir.display());
        };
        // Rows no rank stored keep their initial value (with any pending decay), the same in every rank's model.
        let (shard_table, _) = shard.model()?;
        for &id in &rows {
            let id = id as usize;
            table.as_mut_slice()[id * dim..(id + 1) * dim].copy_from_slice(shard_table.row(id));
        }
    }
    Ok((table, head))
}
