//! The few collective operations distributed training needs, over any
//! transport: MPI across processes and machines ([`super::MpiCollective`],
//! `--features mpi`), or threads in one process ([`super::ThreadCollective`],
//! for tests and for trying the modes without an MPI launch).
//!
//! Every rank calls the same operations in the same order (the MPI rule);
//! each returns an error, instead of waiting forever, when a peer has left.

use std::time::{Duration, Instant};

/// A group of `size` ranks exchanging bytes. Typed helpers and the all-reduce
/// are built on these in [`Collective`]'s inherent impl, so a new transport
/// implements only the byte operations.
pub trait Collective: Send + Sync {
    /// This process's (or thread's) number, `0..size`.
    fn rank(&self) -> usize;
    /// Ranks in the group (`W`).
    fn size(&self) -> usize;
    /// Every rank's `n`, in rank order.
    fn all_gather_counts(&self, n: u64) -> anyhow::Result<Vec<u64>>;
    /// Every rank's `bytes` (of any length), in rank order.
    fn all_gather_v(&self, bytes: &[u8]) -> anyhow::Result<Vec<Vec<u8>>>;
    /// `send[j]` goes to rank `j`; returns what each rank sent to this one, in rank order.
    fn all_to_all_v(&self, send: &[&[u8]]) -> anyhow::Result<Vec<Vec<u8>>>;
    fn barrier(&self) -> anyhow::Result<()>;
    /// Ends the whole job after an error on this rank, so no peer waits for
    /// it (MPI_Abort). In-process groups return: their peers see this rank
    /// leave when its handle is dropped.
    fn abort(&self, _message: &str) {}
}

impl dyn Collective + '_ {
    pub fn all_gather_v_u32(&self, values: &[u32]) -> anyhow::Result<Vec<Vec<u32>>> {
        Ok(self.all_gather_v(bytemuck::cast_slice(values))?.iter().map(|b| bytemuck::pod_collect_to_vec(b)).collect())
    }

    pub fn all_gather_v_f32(&self, values: &[f32]) -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(self.all_gather_v(bytemuck::cast_slice(values))?.iter().map(|b| bytemuck::pod_collect_to_vec(b)).collect())
    }

    pub fn all_to_all_v_u32(&self, send: &[Vec<u32>]) -> anyhow::Result<Vec<Vec<u32>>> {
        let bytes: Vec<&[u8]> = send.iter().map(|v| bytemuck::cast_slice(v)).collect();
        Ok(self.all_to_all_v(&bytes)?.iter().map(|b| bytemuck::pod_collect_to_vec(b)).collect())
    }

    pub fn all_to_all_v_f32(&self, send: &[Vec<f32>]) -> anyhow::Result<Vec<Vec<f32>>> {
        let bytes: Vec<&[u8]> = send.iter().map(|v| bytemuck::cast_slice(v)).collect();
        Ok(self.all_to_all_v(&bytes)?.iter().map(|b| bytemuck::pod_collect_to_vec(b)).collect())
    }

    /// Element-wise sum of every rank's `values` (all the same length), added
    /// in rank order `((v0 + v1) + v2) + …` on every rank: the result is
    /// bit-identical on all ranks and for any transport, which MPI_Allreduce
    /// does not promise.
    pub fn all_reduce_sum_f32(&self, values: &mut [f32]) -> anyhow::Result<()> {
        let all = self.all_gather_v_f32(values)?;
        for (r, v) in all.iter().enumerate() {
            if v.len() != values.len() {
                anyhow::bail!("all-reduce: rank {r} sent {} values, rank {} has {}", v.len(), self.rank(), values.len());
            }
        }
        values.copy_from_slice(&all[0]);
        for v in &all[1..] {
            for (o, x) in values.iter_mut().zip(v) {
                *o += x;
            }
        }
        Ok(())
    }

    /// Rank 0's `bytes` on every rank.
    pub fn broadcast_from_leader(&self, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
        let sent = if self.rank() == 0 { bytes } else { &[] };
        Ok(self.all_gather_v(sent)?.swap_remove(0))
    }
}

/// Bytes this rank sent to others and time spent in collectives, for the
/// step split (compute against communication).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Traffic {
    pub bytes_sent: u64,
    pub calls: u64,
    pub seconds: f64,
}

impl Traffic {
    /// Runs `op` (a collective sending `bytes` to other ranks) and counts it.
    pub fn count<T>(&mut self, bytes: usize, op: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        let t = Instant::now();
        let out = op();
        self.seconds += t.elapsed().as_secs_f64();
        self.bytes_sent += bytes as u64;
        self.calls += 1;
        out
    }
}

/// How long a blocking receive waits for a peer before the job is declared
/// stuck (in-process groups; MPI's runtime ends a job whose rank died).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(120);
