//! One rank's part of a distributed run: what the trainer's step calls at
//! its seams (the rank's share of a batch, row lookup, gradient exchange,
//! evaluation). With `mode = "none"` every call is the identity, so a
//! one-process run does exactly what it did before.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::collective::{Collective, Traffic};
use super::rank_dirs;
use crate::cancel::CancelToken;
use crate::config::{Config, DistributedMode};
use crate::data::{Batch, Dataset};
use crate::model::{EmbeddingTable, HeadWeights, Pooling, SparseGrad, TableView};
use crate::train::checkpoint::{checkpoints_dir, Checkpoint};
use crate::train::resident::ResidentRows;
use crate::train::{evaluate, metrics_of, score_examples, EvalMetrics, ExampleScore, TrainOptions};

/// What a distributed run reports in its outcome (per rank).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DistributedStats {
    pub mode: DistributedMode,
    pub rank: usize,
    pub world_size: usize,
    /// Bytes this rank sent to other ranks per training step (row ids, rows, pooled bags, row gradients).
    pub bytes_sent_per_step: f64,
    /// Milliseconds per step spent in collectives (waiting for the slowest rank included).
    pub communication_ms_per_step: f64,
    pub collectives_per_step: f64,
}

pub struct Distributed {
    mode: DistributedMode,
    comm: Option<Arc<dyn Collective>>,
    /// Training-step traffic (evaluation and set-up are not counted).
    traffic: Traffic,
    /// row_sharded: this step's sorted unique row ids, their rows, and the
    /// share's ids rewritten as positions in `wanted`.
    wanted: Vec<u32>,
    gathered: Vec<f32>,
    positions: Vec<u32>,
    /// The caller's token (Ctrl-C may reach one process only), and the one the
    /// trainer sees: cancelled on every rank at the same step once any rank's
    /// own token is, so all stop together.
    cancel: CancelToken,
    agreed: CancelToken,
}

impl Distributed {
    /// The run's transport: the group given in `options`, else MPI when this
    /// process was started by `mpirun` (and built with `--features mpi`).
    pub fn connect(config: &Config, options: &TrainOptions) -> anyhow::Result<Distributed> {
        let mode = config.distributed.mode;
        let comm: Option<Arc<dyn Collective>> = match (mode, &options.group) {
            (DistributedMode::None, _) => None,
            (_, Some(group)) => Some(group.collective().clone()),
            (_, None) => Some(mpi_world(mode)?),
        };
        Ok(Distributed {
            mode,
            comm,
            traffic: Traffic::default(),
            wanted: Vec::new(),
            gathered: Vec::new(),
            positions: Vec::new(),
            cancel: options.cancel.clone(),
            agreed: CancelToken::new(),
        })
    }

    pub fn rank(&self) -> usize {
        self.comm.as_ref().map_or(0, |c| c.rank())
    }

    pub fn size(&self) -> usize {
        self.comm.as_ref().map_or(1, |c| c.size())
    }

    pub fn mode(&self) -> DistributedMode {
        self.mode
    }

    /// The transport, for ending the job after an error on this rank.
    pub fn collective(&self) -> Option<Arc<dyn Collective>> {
        self.comm.clone()
    }

    /// This rank's config and options (its run directory; quiet, no TensorBoard on ranks > 0).
    pub fn rank_setup(&self, config: &Config, options: &TrainOptions) -> anyhow::Result<(Config, TrainOptions)> {
        match &self.comm {
            None => Ok((config.clone(), options.clone())),
            Some(c) => {
                let mut options = rank_dirs::rank_options(c.as_ref(), self.mode, config, options)?;
                options.cancel = self.agreed.clone();
                Ok((rank_dirs::rank_config(config, c.rank()), options))
            }
        }
    }

    /// Checks the run can be split this way and, for row_sharded, returns the
    /// rows this rank holds (as "resident" rows: local id = data id / W; the
    /// checkpointer and table recipe then work unchanged) and their count.
    /// `resident` are the rows the data reaches (data ids index them), if held
    /// that way; `rows` is the whole table's. `resumed_step`: the step this
    /// rank's checkpoint is at, which every rank's must share.
    pub fn plan(
        &self,
        config: &Config,
        train_examples: usize,
        resident: Option<Arc<ResidentRows>>,
        rows: usize,
        resumed_step: Option<u64>,
    ) -> anyhow::Result<(Option<Arc<ResidentRows>>, usize)> {
        let held = resident.as_ref().map_or(rows, |r| r.len());
        let Some(comm) = &self.comm else { return Ok((resident, held)) };
        let w = comm.size();
        let bs = config.train.batch_size;
        let last = train_examples % bs;
        if bs < w || (last > 0 && last < w) {
            bail!(
                "train.batch_size = {bs} over {train_examples} examples gives a batch of {} examples, fewer than the {w} ranks: every rank needs at least one example of every batch (use a batch size of at least {w} that leaves no smaller last batch)",
                if bs < w { bs } else { last }
            );
        }
        let steps = comm.all_gather_counts(resumed_step.map_or(u64::MAX, |s| s + 1))?;
        if steps.iter().any(|&s| s != steps[0]) {
            let described: Vec<String> =
                steps.iter().enumerate().map(|(r, &s)| format!("rank {r}: {}", if s == u64::MAX { "none".into() } else { format!("step {}", s - 1) })).collect();
            bail!("the ranks' latest checkpoints differ ({}): a rank stopped while the others checkpointed; resume needs the same step on every rank", described.join(", "));
        }
        if self.mode != DistributedMode::RowSharded {
            return Ok((resident, held));
        }
        let rank = comm.rank();
        let owned: Vec<u32> = match &resident {
            Some(r) => r.global_ids().iter().skip(rank).step_by(w).copied().collect(),
            None => (rank as u32..rows as u32).step_by(w).collect(),
        };
        let shard = ResidentRows::reached_by(rows, &[&owned]);
        debug_assert_eq!(shard.global_ids(), &owned[..]);
        let n = shard.len();
        Ok((Some(Arc::new(shard)), n))
    }

    /// This rank's share of a global batch: examples `[r·n/W, (r+1)·n/W)`.
    pub fn local_batch<'a>(&self, batch: &'a Batch) -> Cow<'a, Batch> {
        let Some(comm) = &self.comm else { return Cow::Borrowed(batch) };
        let std::ops::Range { start: a, end: b } = share_of(comm.rank(), comm.size(), batch.len());
        let (from, to) = (batch.offsets[a], batch.offsets[b]);
        Cow::Owned(Batch {
            ids: batch.ids[from..to].to_vec(),
            offsets: batch.offsets[a..=b].iter().map(|o| o - from).collect(),
            labels: batch.labels[a..b].to_vec(),
            examples: batch.examples[a..b].to_vec(),
        })
    }

    /// Makes the rows `ids` read available to [`Distributed::view`]: materialises
    /// them in the table, or (row_sharded) fetches them from their owners.
    pub fn lookup(&mut self, table: &mut EmbeddingTable, ids: &[u32]) -> anyhow::Result<()> {
        if self.mode != DistributedMode::RowSharded {
            table.materialize(ids);
            return Ok(());
        }
        self.wanted.clear();
        self.wanted.extend_from_slice(ids);
        self.wanted.sort_unstable();
        self.wanted.dedup();
        self.positions.clear();
        self.positions.extend(ids.iter().map(|id| self.wanted.binary_search(id).expect("every id is wanted") as u32));
        let wanted = std::mem::take(&mut self.wanted);
        let fetched = self.fetch_rows(table, &wanted, true);
        self.wanted = wanted;
        self.gathered = fetched?;
        Ok(())
    }

    /// The rows and ids the step pools with after [`Distributed::lookup`]: the
    /// table and `ids`, or (row_sharded) the fetched rows under their
    /// positions in the step's sorted unique ids (the gradient's rows are
    /// those positions too).
    pub fn view<'a>(&'a self, table: &'a EmbeddingTable, ids: &'a [u32]) -> (TableView<'a>, &'a [u32]) {
        match self.mode {
            DistributedMode::RowSharded => (TableView::F32(&self.gathered), &self.positions),
            _ => (table.view(), ids),
        }
    }

    /// Rows `wanted` (sorted, unique data ids) from their owners; every rank
    /// must call it (with its own list, empty or not) to serve the others.
    fn fetch_rows(&mut self, table: &EmbeddingTable, wanted: &[u32], count: bool) -> anyhow::Result<Vec<f32>> {
        let comm = self.comm.clone().context("row lookups need a group")?;
        let (rank, w, dim) = (comm.rank(), comm.size(), table.dim());
        let mut requests: Vec<Vec<u32>> = vec![Vec::new(); w];
        for &id in wanted {
            requests[id as usize % w].push(id);
        }
        let sent = requests.iter().enumerate().filter(|(j, _)| *j != rank).map(|(_, r)| r.len() * 4).sum();
        let asked = self.counted(count, sent, || comm.all_to_all_v_u32(&requests))?;
        let mut replies: Vec<Vec<f32>> = Vec::with_capacity(w);
        for (from, ids) in asked.iter().enumerate() {
            let mut rows = Vec::with_capacity(ids.len() * dim);
            for &id in ids {
                let local = id as usize / w;
                if id as usize % w != rank || local >= table.rows() {
                    bail!("rank {from} asked rank {rank} for row {id}, which it does not hold ({} rows of {w} ranks)", table.rows());
                }
                rows.extend_from_slice(table.row(local));
            }
            replies.push(rows);
        }
        let sent = replies.iter().enumerate().filter(|(j, _)| *j != rank).map(|(_, r)| r.len() * 4).sum();
        let answers = self.counted(count, sent, || comm.all_to_all_v_f32(&replies))?;
        // Back into `wanted` order: each owner answered its requests in order.
        let mut next = vec![0usize; w];
        let mut out = Vec::with_capacity(wanted.len() * dim);
        for &id in wanted {
            let owner = id as usize % w;
            let k = next[owner];
            next[owner] += 1;
            let row = answers[owner].get(k * dim..(k + 1) * dim).with_context(|| format!("rank {owner} sent fewer rows than rank {rank} asked for"))?;
            out.extend_from_slice(row);
        }
        Ok(out)
    }

    fn counted<T>(&mut self, count: bool, bytes: usize, op: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        if count {
            self.traffic.count(bytes, op)
        } else {
            op()
        }
    }

    /// The whole batch's pooled bags from every rank's share (`local`: its
    /// examples × dim), in rank order, which is example order. Every rank
    /// then runs the head on the global batch exactly as one process does:
    /// the same loss, head gradients and `d_pooled`, with no sum over ranks
    /// whose order could differ from one process's. A cancellation on any
    /// rank travels with it (one flag per rank), so every rank stops at the
    /// same step.
    pub fn gather_pooled(&mut self, mut local: Vec<f32>) -> anyhow::Result<Vec<f32>> {
        let Some(comm) = self.comm.clone() else { return Ok(local) };
        local.push(if self.cancel.is_cancelled() { 1.0 } else { 0.0 });
        let parts = self.traffic.count(local.len() * 4 * (comm.size() - 1), || comm.all_gather_v_f32(&local))?;
        let mut pooled = Vec::with_capacity(parts.iter().map(|p| p.len() - 1).sum());
        for (rank, part) in parts.iter().enumerate() {
            let (rows, flag) = part.split_last().map(|(f, r)| (r, *f)).with_context(|| format!("rank {rank} sent no pooled bags"))?;
            if flag > 0.0 {
                self.agreed.cancel();
            }
            pooled.extend_from_slice(rows);
        }
        Ok(pooled)
    }

    /// The rows whose gradient this rank computes from the whole batch, as
    /// `(rank, W)` for rows `id % W == rank` (None: one process, every row).
    /// row_sharded: the rows it owns. replicated: its part of the exchange in
    /// [`Distributed::share_table_grad`]. Each row's gradient is thus summed
    /// over the batch's examples by one rank, in example order: the sum one
    /// process computes, bit for bit.
    pub fn grad_rows(&self) -> Option<(usize, usize)> {
        self.comm.as_ref().map(|c| (c.rank(), c.size()))
    }

    /// Turns the gradient of the rows this rank computed (see
    /// [`Distributed::grad_rows`]; rows are data ids) into the gradient of the
    /// rows it holds: replicated, every rank's rows (all-gather-v; each row
    /// comes from exactly one rank, so nothing is summed), the rows other
    /// ranks' shares read materialised; row_sharded, its own rows renumbered
    /// as local ids `id / W`.
    pub fn share_table_grad(&mut self, grad: &mut SparseGrad, table: &mut EmbeddingTable) -> anyhow::Result<()> {
        let Some(comm) = self.comm.clone() else { return Ok(()) };
        let (w, dim) = (comm.size(), grad.dim());
        match self.mode {
            DistributedMode::None => Ok(()),
            DistributedMode::Replicated => {
                let rows = self.traffic.count(grad.len() * 4 * (w - 1), || comm.all_gather_v_u32(grad.rows()))?;
                let values = self.traffic.count(grad.values().len() * 4 * (w - 1), || comm.all_gather_v_f32(grad.values()))?;
                *grad = SparseGrad::from_duplicates(dim, &rows.concat(), &values.concat());
                table.materialize(grad.rows());
                Ok(())
            }
            DistributedMode::RowSharded => {
                grad.renumber_rows(|id| id / w as u32);
                Ok(())
            }
        }
    }

    /// Evaluates the model on `test`: locally, or (row_sharded) split like a
    /// training batch: rank r scores its contiguous share of the examples,
    /// [`EVAL_CHUNK`] at a time with their rows fetched from the owners, and
    /// the scores are all-gathered in rank (= example) order, so every rank
    /// gets the metrics one process computes, and no rank holds more than a
    /// chunk's rows.
    pub fn evaluate(&mut self, table: &EmbeddingTable, head: &HeadWeights, pooling: Pooling, test: &Dataset, k: usize) -> anyhow::Result<EvalMetrics> {
        if self.mode != DistributedMode::RowSharded {
            return Ok(evaluate(table, head, pooling, test, k));
        }
        let comm = self.comm.clone().context("row_sharded needs a group")?;
        let (rank, w, n) = (comm.rank(), comm.size(), test.len());
        let rounds = (0..w).map(|r| share_of(r, w, n).len().div_ceil(EVAL_CHUNK)).max().unwrap_or(0);
        let mine = share_of(rank, w, n);
        let mut scores: Vec<ExampleScore> = Vec::with_capacity(mine.len());
        for round in 0..rounds {
            // Every rank takes part in every round's fetch (to serve the others), its own chunk empty or not.
            let chunk = (mine.start + round * EVAL_CHUNK).min(mine.end)..(mine.start + (round + 1) * EVAL_CHUNK).min(mine.end);
            let ids = test.ids_of(chunk.clone());
            let mut unique = ids.to_vec();
            unique.sort_unstable();
            unique.dedup();
            let rows = self.fetch_rows(table, &unique, false)?;
            let positions: Vec<u32> = ids.iter().map(|id| unique.binary_search(id).expect("a chunk id") as u32).collect();
            let held = EmbeddingTable::from_vec(unique.len(), table.dim(), rows);
            let base = test.offsets[chunk.start];
            scores.extend(score_examples(&held, head, pooling, k, chunk.len(), |i| {
                let e = chunk.start + i;
                (&positions[test.offsets[e] - base..test.offsets[e + 1] - base], test.labels[e])
            }));
        }
        let all = comm.all_gather_v(bytemuck::cast_slice(&scores))?;
        let scores: Vec<ExampleScore> = all.iter().flat_map(|b| bytemuck::pod_collect_to_vec::<u8, ExampleScore>(b)).collect();
        if scores.len() != n {
            bail!("the ranks scored {} test examples, not {n}", scores.len());
        }
        Ok(metrics_of(&scores, test, k))
    }

    /// The checkpoint a resumed rank continues from: its latest, or, when a
    /// rank died while the others checkpointed, the newest step every rank
    /// has (the newer folders of ranks that got further are removed: no other
    /// rank can continue from them).
    pub fn open_checkpoint(&self, run_dir: &Path) -> anyhow::Result<Checkpoint> {
        let latest = Checkpoint::open_latest(run_dir)?;
        let Some(comm) = &self.comm else { return Ok(latest) };
        let steps = comm.all_gather_counts(latest.state.step)?;
        let common = *steps.iter().min().expect("a group has a rank");
        if latest.state.step == common {
            return Ok(latest);
        }
        let root = checkpoints_dir(run_dir);
        let dir = root.join(format!("step-{common:08}"));
        let ckpt =
            Checkpoint::open(&dir).with_context(|| format!("rank {}: another rank's latest checkpoint is at step {common}, this one's at {}", comm.rank(), latest.state.step))?;
        for entry in std::fs::read_dir(&root).with_context(|| format!("cannot list {}", root.display()))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.strip_prefix("step-").and_then(|n| n.parse::<u64>().ok()).is_some_and(|s| s > common) {
                log::warn!("{}: removed: the other ranks stopped before step {common}'s successor, so the job continues from step {common}", entry.path().display());
                crate::durable::remove_dir_all(&entry.path())?;
            }
        }
        Ok(ckpt)
    }

    /// Per-step traffic of this rank over this session's `steps`.
    pub fn stats(&self, steps: u64) -> Option<DistributedStats> {
        let comm = self.comm.as_ref()?;
        let n = steps.max(1) as f64;
        Some(DistributedStats {
            mode: self.mode,
            rank: comm.rank(),
            world_size: comm.size(),
            bytes_sent_per_step: self.traffic.bytes_sent as f64 / n,
            communication_ms_per_step: self.traffic.seconds * 1e3 / n,
            collectives_per_step: self.traffic.calls as f64 / n,
        })
    }

    /// Waits for every rank (the end of a run), so none finalises MPI while another still sends.
    pub fn finish(&self) -> anyhow::Result<()> {
        self.comm.as_ref().map_or(Ok(()), |c| c.barrier())
    }
}

/// Rank `rank`'s contiguous share of `n` examples split over `w` ranks.
fn share_of(rank: usize, w: usize, n: usize) -> std::ops::Range<usize> {
    rank * n / w..(rank + 1) * n / w
}

/// Test examples a row-sharded rank scores per round: their rows, and the
/// rows it serves to the other ranks' chunks, are all it holds for
/// evaluation. Measured on Debian sections (one epoch, row_sharded): 2048
/// raised a W = 4 rank's peak RSS ≈ 50 MiB above its training plateau; 512
/// gave peaks of 384 MiB at W = 2 and 245 at W = 4, and 128 gave 368 and 237.
/// Once the examples moved to disk (a plateau 40 MiB lower), the W = 4 peaks
/// were 189–190 MiB with 128, 185–189 with 64 and 185–186 with 32; 32 also
/// took 0.1–0.4 s longer per evaluation on 2 shared cores, and each round is
/// three collectives' latency on a network.
const EVAL_CHUNK: usize = 64;

#[cfg(feature = "mpi")]
fn mpi_world(mode: DistributedMode) -> anyhow::Result<Arc<dyn Collective>> {
    if !super::launched_by_mpi() {
        bail!(
            "distributed.mode = \"{}\" needs an MPI launch: `mpirun -np N sparseburn train CONFIG` (no MPI launcher found: OMPI_COMM_WORLD_SIZE, PMI_SIZE and PMIX_RANK are unset)",
            mode.name()
        );
    }
    Ok(Arc::new(super::MpiCollective::init()?))
}

#[cfg(not(feature = "mpi"))]
fn mpi_world(mode: DistributedMode) -> anyhow::Result<Arc<dyn Collective>> {
    bail!(
        "distributed.mode = \"{}\" needs MPI, and this sparseburn was built without it: install MPI and build with `cargo build --release --features mpi`, then launch with `mpirun -np N sparseburn train CONFIG` (README: Training on several machines)",
        mode.name()
    )
}
