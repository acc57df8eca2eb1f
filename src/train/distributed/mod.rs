//! Training across processes and machines: `[distributed] mode`.
//!
//! Both modes train the same global batches as one process, and end with
//! the same weights bit for bit: no value is ever a sum over ranks.
//!
//! * Forward: rank `r` of `W` pools its contiguous share of each global batch
//!   and the pooled bags are all-gathered (a few KB), so every rank runs the
//!   replicated head on the whole batch, as one process does: same loss, same
//!   head gradients (no all-reduce), same gradient of the pooled bags.
//! * Backward: the gradient of row `id` is summed over the whole batch's
//!   occurrences of it, in example order, by one rank, `id % W` (every rank
//!   holds the global batch's ids): one process's sum, bit for bit, with the
//!   work split `W` ways.
//! * **replicated** (data parallel): every rank holds the whole table; the
//!   row gradients are exchanged as (unique row ids, rows) with an
//!   all-gather-v (each row sent by its one rank), and every rank applies the
//!   same update, so replicas stay bit-identical.
//! * **row_sharded** (TorchRec's row-wise sharding): rank `r` holds the rows
//!   `id % W == r` (local index `id / W`) and their optimizer state. Each step
//!   a rank sends its share's unique row ids to their owners (all-to-all-v)
//!   and pools from the rows they send back; an owner computes its rows'
//!   gradients itself (as above), so no gradient travels, and steps its shard
//!   with the ordinary table optimizer.
//!
//! Files: rank 0 owns the run directory (config, metrics, TensorBoard,
//! summary, its checkpoints) and writes `distributed.json` (mode and `W`);
//! rank `r > 0` runs in `RUN_DIR/ranks/rank-r`, with its own checkpoints (its
//! shard, for row_sharded), quiet and without TensorBoard. Evaluation: in
//! replicated mode every rank evaluates its own (identical) weights; in
//! row_sharded mode rank 0 gathers the test examples' rows from their owners,
//! evaluates, and sends the metrics to every rank.
//!
//! The transport is a [`Collective`]: MPI ([`MpiCollective`], `--features
//! mpi`, chosen automatically under `mpirun`) or threads in one process
//! ([`ThreadCollective`], given through [`crate::train::TrainOptions`]).

mod collective;
mod model;
#[cfg(feature = "mpi")]
mod mpi;
mod rank_dirs;
mod session;
mod threads;

pub use collective::{Collective, Traffic, PEER_TIMEOUT};
pub use model::{model_of_run, table_of_run};
#[cfg(feature = "mpi")]
pub use mpi::MpiCollective;
pub use rank_dirs::{Manifest, MANIFEST_FILE, RANKS_DIR};
pub use session::{Distributed, DistributedStats};
pub use threads::ThreadCollective;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// A rank's handle on its group, as [`crate::train::TrainOptions`] carries it.
/// Unwind-safe: a rank that panics drops its handle, and its peers' calls fail.
pub struct Group(AssertUnwindSafe<Arc<dyn Collective>>);

impl Clone for Group {
    fn clone(&self) -> Self {
        Group::new(self.0 .0.clone())
    }
}

impl Group {
    pub fn new(collective: Arc<dyn Collective>) -> Group {
        Group(AssertUnwindSafe(collective))
    }

    pub fn collective(&self) -> &Arc<dyn Collective> {
        &self.0
    }

    /// One handle per rank of a new in-process group of `size` ranks.
    pub fn threads(size: usize) -> Vec<Group> {
        ThreadCollective::group(size).into_iter().map(|c| Group::new(Arc::new(c))).collect()
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Group(rank {} of {})", self.0.rank(), self.0.size())
    }
}

/// Whether this process was started by an MPI launcher (Open MPI, MPICH, Slurm's PMI).
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"].iter().any(|v| std::env::var_os(v).is_some())
}
