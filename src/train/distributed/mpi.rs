//! [`Collective`] over MPI (rsmpi): the job's ranks are the processes
//! `mpirun` started, on one machine or many.
//!
//! Failures: MPI's default error handler (MPI_ERRORS_ARE_FATAL) is kept, so
//! a failed call ends the job, and Open MPI's runtime ends every rank when
//! one dies (`mpirun` prints which rank and why, within seconds). A rank
//! whose training returns an error calls [`Collective::abort`] (MPI_Abort)
//! instead of finalising, which would wait for peers that are waiting for it.

use anyhow::{bail, Context};
use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

use super::collective::Collective;

pub struct MpiCollective {
    /// Finalises MPI when dropped (after the last collective of the run).
    universe: Universe,
    rank: usize,
    size: usize,
}

impl MpiCollective {
    /// Initialises MPI (once per process). Calls may come from any one thread
    /// at a time (the trainer runs inside its rayon pool), hence `Serialized`.
    pub fn init() -> anyhow::Result<Self> {
        let (universe, threading) =
            mpi::initialize_with_threading(mpi::Threading::Serialized).context("MPI was already initialised in this process (one distributed run per process)")?;
        if threading < mpi::Threading::Serialized {
            bail!("the MPI library offers thread level {threading:?}; distributed training needs Serialized");
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(MpiCollective { universe, rank, size })
    }

    fn world(&self) -> SimpleCommunicator {
        self.universe.world()
    }
}

fn count(n: usize, what: &str) -> anyhow::Result<Count> {
    Count::try_from(n).map_err(|_| anyhow::anyhow!("{what}: {n} bytes is more than one MPI message can carry ({} bytes)", Count::MAX))
}

/// Offsets of consecutive blocks of `counts`.
fn displacements(counts: &[Count]) -> Vec<Count> {
    counts.iter().scan(0, |at, &c| Some(std::mem::replace(at, *at + c))).collect()
}

/// Splits a received buffer into its per-rank blocks.
fn split(buf: &[u8], counts: &[Count]) -> Vec<Vec<u8>> {
    let mut at = 0;
    counts
        .iter()
        .map(|&c| {
            let block = buf[at..at + c as usize].to_vec();
            at += c as usize;
            block
        })
        .collect()
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather_counts(&self, n: u64) -> anyhow::Result<Vec<u64>> {
        let mut counts = vec![0u64; self.size];
        self.world().all_gather_into(&n, &mut counts[..]);
        Ok(counts)
    }

    fn all_gather_v(&self, bytes: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
        let counts = self.all_gather_counts(bytes.len() as u64)?.into_iter().map(|c| count(c as usize, "all-gather")).collect::<anyhow::Result<Vec<Count>>>()?;
        let displs = displacements(&counts);
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        count(total, "all-gather")?;
        let mut buf = vec![0u8; total];
        {
            let mut partition = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
            self.world().all_gather_varcount_into(bytes, &mut partition);
        }
        Ok(split(&buf, &counts))
    }

    fn all_to_all_v(&self, send: &[&[u8]]) -> anyhow::Result<Vec<Vec<u8>>> {
        assert_eq!(send.len(), self.size, "all_to_all_v needs one buffer per rank");
        // Every block carries one leading byte, so the send buffer is never
        // empty: an empty `[u8]`'s dangling pointer is 0x1, which is Open MPI's
        // MPI_IN_PLACE, and the call then "sends" the receive buffer
        // (MPI_ERR_TRUNCATE). An empty all-gather contribution is harmless:
        // in place, it sends its own zero bytes.
        let send_counts = send.iter().map(|b| count(b.len() + 1, "all-to-all")).collect::<anyhow::Result<Vec<Count>>>()?;
        // Each rank learns how much every other rank sends it: one all-to-all of counts.
        let mut recv_counts = vec![0 as Count; self.size];
        self.world().all_to_all_into(&send_counts[..], &mut recv_counts[..]);
        let mut flat: Vec<u8> = Vec::with_capacity(send_counts.iter().map(|&c| c as usize).sum());
        for block in send {
            flat.push(0);
            flat.extend_from_slice(block);
        }
        let send_displs = displacements(&send_counts);
        let recv_displs = displacements(&recv_counts);
        let total: usize = recv_counts.iter().map(|&c| c as usize).sum();
        let mut buf = vec![0u8; total];
        {
            let partition = Partition::new(&flat[..], &send_counts[..], &send_displs[..]);
            let mut received = PartitionMut::new(&mut buf[..], &recv_counts[..], &recv_displs[..]);
            self.world().all_to_all_varcount_into(&partition, &mut received);
        }
        // Each block without its leading byte.
        Ok(recv_displs.iter().zip(&recv_counts).map(|(&at, &c)| buf[at as usize + 1..(at + c) as usize].to_vec()).collect())
    }

    fn barrier(&self) -> anyhow::Result<()> {
        self.world().barrier();
        Ok(())
    }

    fn abort(&self, message: &str) {
        eprintln!("rank {} of {}: {message}; stopping every rank (MPI_Abort)", self.rank, self.size);
        self.world().abort(1)
    }
}
