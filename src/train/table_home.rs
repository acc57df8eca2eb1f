//! Where the embedding table lives while training (`placement.embedding`):
//! the seam between the training step and the table.
//!
//! * [`TableHome::Host`]: the table and its optimizer in host memory, the
//!   fused host bag (`bag_forward` / `bag_backward`) and `TableOptimizer::step`.
//! * [`TableHome::Device`]: a [`DeviceTable`] (weights, m and v as Burn
//!   tensors with LazyAdam) on the head's own backend, so the pooled bags and
//!   their gradient never leave the device.
//!
//! Either way the trainer's host `EmbeddingTable` and `TableOptimizer` are
//! what evaluation, checkpoints, export and the projector read. A device
//! table writes its weights and state into them in [`TableHome::sync`]
//! (before each evaluation and checkpoint), in the host LazyAdam's named
//! arrays: a device-table checkpoint is a host lazy_adam checkpoint, so
//! `export`, `Checkpoint::model()` and resume read it unchanged. The price is
//! a host copy of the table and its state, and a full download per sync.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use crate::config::Config;
use crate::device::TablePlacement;
use crate::distributed::Distributed;
use crate::model::{bag_backward, bag_backward_rows, bag_forward, Bags, EmbeddingTable, Pooling, SparseGrad};
use crate::optim::device_table::{DeviceBatch, DeviceTable, SegmentReduce, StateArrays};
use crate::optim::{TableOptimizer, TableOptimizerConfig};

/// The table's side of a training step, in the order the step calls it:
/// [`TableHome::pool`], [`TableHome::receive_grad`], [`TableHome::backward`],
/// [`TableHome::step`].
pub(crate) enum TableHome<B: Backend> {
    Host(HostStep),
    Device(Box<DeviceStep<B>>),
}

/// The host path's per-step buffers.
pub(crate) struct HostStep {
    pooled: Vec<f32>,
    d_pooled: Vec<f32>,
    grad: SparseGrad,
}

/// A device table and the batch in flight.
pub(crate) struct DeviceStep<B: Backend> {
    placement: TablePlacement,
    table: DeviceTable<B>,
    batch: Option<DeviceBatch<B>>,
    d_pooled: Option<Tensor<B, 2>>,
    /// The summed gradient of the last step's unique rows (kept for histograms).
    grad: Option<Tensor<B, 2>>,
    /// Steps taken since the host copy was last written.
    unsynced: bool,
}

impl<B: Backend> TableHome<B> {
    /// The home `config.placement.embedding` asks for. A device table starts
    /// from the host `table` (every row materialised here) and `optimizer`'s
    /// state, so a resumed run continues from its checkpoint.
    pub(crate) fn new(config: &Config, table: &mut EmbeddingTable, optimizer: &dyn TableOptimizer, device: &B::Device) -> anyhow::Result<Self> {
        let placement = crate::device::parse_table_placement(&config.placement.embedding).map_err(anyhow::Error::msg)?;
        let dim = table.dim();
        if placement == TablePlacement::Host {
            return Ok(TableHome::Host(HostStep { pooled: Vec::new(), d_pooled: Vec::new(), grad: SparseGrad::new(dim) }));
        }
        // Config::validate refuses these; a config built in code may not have been validated.
        if placement.dense_device().map(|d| d.to_string()).as_deref() != Some(config.placement.dense.as_str()) {
            anyhow::bail!("placement.embedding = \"{placement}\" needs placement.dense on the same device, got {:?}", config.placement.dense);
        }
        let TableOptimizerConfig::LazyAdam(adam) = &config.optimizer.table else {
            anyhow::bail!("placement.embedding = \"{placement}\" supports only optimizer.table.kind = \"lazy_adam\"");
        };
        // On a CPU backend the sequential sum is the host's order (bit-identical
        // results); on a GPU it would run `dim` threads per segment, so use the tree.
        let reduce = match placement {
            TablePlacement::Cuda(_) => SegmentReduce::default(),
            _ => SegmentReduce::Sequential,
        };
        table.materialize_all();
        let mut device_table = DeviceTable::from_host(table, adam.adam(), device).with_reduce(reduce);
        device_table.load_state(&StateArrays(&optimizer.state())).map_err(|e| anyhow::anyhow!("moving the table optimizer's state to {placement}: {e}"))?;
        Ok(TableHome::Device(Box::new(DeviceStep { placement, table: device_table, batch: None, d_pooled: None, grad: None, unsynced: false })))
    }

    /// TensorFlow-style name of the device holding the table, e.g. `/device:GPU:0`.
    pub(crate) fn tf_device(&self) -> String {
        match self {
            TableHome::Host(_) => TablePlacement::Host.tf_name(),
            TableHome::Device(d) => d.placement.tf_name(),
        }
    }

    /// How the table runs, for the placement log.
    pub(crate) fn describe(&self) -> String {
        match self {
            TableHome::Host(_) => "host memory, fused host kernels".into(),
            TableHome::Device(d) => format!("Burn device table on {} ({:?}), lazy_adam on the device", d.placement, d.table.reduce()),
        }
    }

    /// The pooled bags as the head's input (tracked for its gradient).
    /// A distributed run (host tables only) pools its share of the batch
    /// (`bags`) from rows read through `dist` (its own, or in row-sharded mode
    /// rows fetched from their owners) and returns the whole batch's pooled
    /// bags, gathered from every rank.
    pub(crate) fn pool<AB: AutodiffBackend<InnerBackend = B>>(
        &mut self,
        table: &mut EmbeddingTable,
        dist: &mut Distributed,
        bags: Bags<'_>,
        pooling: Pooling,
        device: &AB::Device,
    ) -> anyhow::Result<Tensor<AB, 2>> {
        Ok(match self {
            TableHome::Host(h) => {
                let (n, dim) = (bags.len(), table.dim());
                h.pooled.resize(n * dim, 0.0);
                dist.lookup(table, bags.ids)?;
                let (rows, ids) = dist.view(table, bags.ids);
                bag_forward(rows, dim, Bags::new(ids, bags.offsets), pooling, &mut h.pooled);
                let pooled = dist.gather_pooled(h.pooled.clone())?;
                let examples = pooled.len() / dim.max(1);
                Tensor::from_data(TensorData::new(pooled, [examples, dim]), device).require_grad()
            }
            TableHome::Device(d) => {
                let batch = d.table.prepare(bags, pooling);
                let pooled = d.table.forward_prepared(&batch);
                d.batch = Some(batch);
                Tensor::from_inner(pooled).require_grad()
            }
        })
    }

    /// Takes the gradient of the pooled bags (the host path reads it back, which waits for the head).
    pub(crate) fn receive_grad(&mut self, d_pooled: Tensor<B, 2>) -> anyhow::Result<()> {
        match self {
            TableHome::Host(h) => h.d_pooled = d_pooled.into_data().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?,
            TableHome::Device(d) => d.d_pooled = Some(d_pooled),
        }
        Ok(())
    }

    /// The table's sparse gradient over the whole batch (`bags`, data ids):
    /// duplicates of a row summed. A distributed rank computes the rows
    /// [`Distributed::grad_rows`] gives it, then shares them
    /// ([`Distributed::share_table_grad`]).
    pub(crate) fn backward(&mut self, table: &mut EmbeddingTable, dist: &mut Distributed, bags: Bags<'_>, pooling: Pooling) -> anyhow::Result<()> {
        match self {
            TableHome::Host(h) => {
                match dist.grad_rows() {
                    None => bag_backward(bags, pooling, &h.d_pooled, &mut h.grad),
                    Some((rank, w)) => bag_backward_rows(bags, pooling, &h.d_pooled, &mut h.grad, |id| id as usize % w == rank),
                }
                dist.share_table_grad(&mut h.grad, table)?;
            }
            TableHome::Device(d) => {
                let (batch, d_pooled) = (d.batch.as_ref().expect("pool before backward"), d.d_pooled.take().expect("receive_grad before backward"));
                d.grad = Some(d.table.sparse_grad(batch, d_pooled));
            }
        }
        Ok(())
    }

    /// One table optimizer step at learning rate `lr`.
    pub(crate) fn step(&mut self, table: &mut EmbeddingTable, optimizer: &mut dyn TableOptimizer, lr: f32) {
        match self {
            TableHome::Host(h) => optimizer.step(table, &h.grad, lr),
            TableHome::Device(d) => {
                let (batch, grad) = (d.batch.as_ref().expect("pool before step"), d.grad.clone().expect("backward before step"));
                d.table.step_with_grad(batch, grad, lr);
                d.unsynced = true;
            }
        }
    }

    /// Sorted unique rows of the last step (local ids, as the table's).
    pub(crate) fn touched_rows(&self) -> &[u32] {
        match self {
            TableHome::Host(h) => h.grad.rows(),
            TableHome::Device(d) => d.batch.as_ref().and_then(|b| b.unique_rows()).unwrap_or(&[]),
        }
    }

    /// L2 norms of the last step's touched rows (after the step) and of their gradients.
    pub(crate) fn touched_norms(&self, table: &EmbeddingTable) -> (Vec<f32>, Vec<f32>) {
        let dim = table.dim();
        let norm = |row: &[f32]| row.iter().map(|x| x * x).sum::<f32>().sqrt();
        let norms = |values: &[f32]| values.chunks(dim).map(norm).collect::<Vec<f32>>();
        match self {
            TableHome::Host(h) => {
                let mut row = vec![0f32; dim];
                let row_norms = h.grad.rows().iter().map(|&r| {
                    table.row_into(r as usize, &mut row);
                    norm(&row)
                });
                (row_norms.collect(), norms(h.grad.values()))
            }
            TableHome::Device(d) => {
                let rows = norms(&d.table.rows_to_host(self.touched_rows()));
                let grads = d.grad.as_ref().map_or_else(Vec::new, |g| norms(&g.clone().into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default()));
                (rows, grads)
            }
        }
    }

    /// Writes a device table's weights and optimizer state into the host
    /// `table` and `optimizer` (what checkpoints and evaluation read), if any
    /// step changed them since the last sync. Nothing to do on the host.
    pub(crate) fn sync(&mut self, table: &mut EmbeddingTable, optimizer: &mut dyn TableOptimizer) -> anyhow::Result<()> {
        let TableHome::Device(d) = self else { return Ok(()) };
        if !d.unsynced {
            return Ok(());
        }
        table.as_mut_slice().copy_from_slice(&d.table.to_host().into_vec());
        optimizer.load_state(&d.table.state()).map_err(|e| anyhow::anyhow!("copying the device table's optimizer state to the host: {e}"))?;
        d.unsynced = false;
        Ok(())
    }
}
