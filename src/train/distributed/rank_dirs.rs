//! Where each rank of a distributed run keeps its files: rank 0 in the run
//! directory itself, rank `r > 0` in `RUN_DIR/ranks/rank-r`; and the
//! manifest that records the job's shape for `--resume`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::collective::Collective;
use crate::config::{Config, DistributedMode};
use crate::train::TrainOptions;

/// Written by rank 0 into the run directory.
pub const MANIFEST_FILE: &str = "distributed.json";
/// Holds `rank-1`, `rank-2`, …: the other ranks' own run directories.
pub const RANKS_DIR: &str = "ranks";

/// A distributed run's shape: a resume must have the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub mode: DistributedMode,
    pub world_size: usize,
}

impl Manifest {
    pub fn read(run_dir: &Path) -> anyhow::Result<Option<Manifest>> {
        let path = run_dir.join(MANIFEST_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| format!("{}: not a distributed-run manifest", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn write(&self, run_dir: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        crate::io::write_atomic(&run_dir.join(MANIFEST_FILE), |w| w.write_all(&json))
    }
}

/// The run directory of rank `rank` of the run in `base`.
pub fn rank_dir(base: &Path, rank: usize) -> PathBuf {
    if rank == 0 {
        base.to_path_buf()
    } else {
        base.join(RANKS_DIR).join(format!("rank-{rank}"))
    }
}

/// This rank's options: rank 0 picks (or creates) the run directory and tells
/// the others, which run in their own folder inside it. Any rank's failure
/// here is every rank's error (they all return it).
pub fn rank_options(comm: &dyn Collective, mode: DistributedMode, config: &Config, options: &TrainOptions) -> anyhow::Result<TrainOptions> {
    let (rank, size) = (comm.rank(), comm.size());
    // Rank 0 decides; "ok:" or "error:" goes to every rank.
    let decided: anyhow::Result<PathBuf> = if rank == 0 { leader_dir(mode, size, config, options) } else { Ok(PathBuf::new()) };
    let message = match &decided {
        Ok(dir) => format!("ok:{}", dir.to_str().context("the run directory's path must be valid UTF-8")?),
        Err(e) => format!("error:{e:#}"),
    };
    let answer = String::from_utf8(comm.broadcast_from_leader(message.as_bytes())?).context("rank 0 sent a run directory that is not UTF-8")?;
    let base = match answer.split_once(':') {
        Some(("ok", dir)) => PathBuf::from(dir),
        Some(("error", e)) if rank == 0 => bail!("{e}"),
        Some(("error", e)) => bail!("rank 0 could not start the run: {e}"),
        _ => bail!("rank 0 sent an unreadable answer: {answer:?}"),
    };
    let mut mine = options.clone();
    if options.resume.is_some() {
        check_manifest(&base, mode, size)?;
        let dir = rank_dir(&base, rank);
        if !dir.is_dir() {
            bail!("{}: rank {rank}'s part of the run is missing (was it trained with fewer ranks?)", dir.display());
        }
        mine.resume = Some(dir);
    } else {
        let dir = rank_dir(&base, rank);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        mine.run_dir = Some(dir);
    }
    Ok(mine)
}

/// Rank 0's run directory, created (with its manifest) for a fresh run.
fn leader_dir(mode: DistributedMode, size: usize, config: &Config, options: &TrainOptions) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &options.resume {
        check_manifest(dir, mode, size)?;
        return Ok(dir.clone());
    }
    let dir = match &options.run_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => crate::train::run_dir::create(config)?,
    };
    Manifest { mode, world_size: size }.write(&dir)?;
    Ok(dir)
}

fn check_manifest(dir: &Path, mode: DistributedMode, size: usize) -> anyhow::Result<()> {
    match Manifest::read(dir)? {
        None => bail!("{}: has no {MANIFEST_FILE}: it was not trained by a distributed job, so it cannot be resumed by one", dir.display()),
        Some(m) if m.world_size != size => bail!(
            "{}: was trained by {} ranks ({} mode) and must be resumed by as many (`mpirun -np {} sparseburn train --resume {}`), not {size}",
            dir.display(),
            m.world_size,
            m.mode.name(),
            m.world_size,
            dir.display()
        ),
        Some(m) if m.mode != mode => bail!("{}: was trained in {} mode, its config says {}", dir.display(), m.mode.name(), mode.name()),
        Some(_) => Ok(()),
    }
}

/// Rank `r > 0`'s config: quiet, without TensorBoard (rank 0 reports the run).
pub fn rank_config(config: &Config, rank: usize) -> Config {
    let mut c = config.clone();
    if rank > 0 {
        c.logging.quiet = true;
        c.logging.tensorboard = false;
        c.export.dir = None;
    }
    c
}
