//! A device-resident embedding table with LazyAdam, in Burn tensor ops.
//!
//! The host path keeps the table in host memory and runs the fused
//! EmbeddingBag and LazyAdam on the CPU ([`crate::model::bag`],
//! [`crate::optim::LazyAdam`]). [`DeviceTable`] keeps the weights and both
//! Adam moments as `[rows, dim]` tensors on a Burn device instead, so on a GPU
//! the whole model can live there, with the same semantics:
//!
//! * forward: bag `b` pools `Σ table[id]` times [`Pooling::scale`], empty bags pool to 0;
//! * backward: each occurrence's gradient is `scale · d_pooled[b]`; duplicates
//!   of a row are summed before the update (the host's `SparseGrad`);
//! * step: LazyAdam on the unique rows only —
//!   `m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; w ← w·decay − s·m/(√v + ε)`
//!   with `s = lr·√(1−β2^t)/(1−β1^t)` from the global step or the row's own
//!   count (`BiasCorrection::PerRow`), and `decay` the catch-up decoupled weight
//!   decay, exactly as in `src/optim/adam.rs`.
//!
//! What runs where. The host already holds the batch's ids, so it plans each
//! batch (sorted unique rows, occurrence → row maps, the reduction tree:
//! [`DeviceBatch`]) and uploads small index tensors. Per-row scalars of the
//! optimizer (step counts and decay marks, 4–12 bytes per row against the
//! table's `12·dim` on the device) also stay on the host, and the per-row step
//! sizes and decay factors are computed there in f64 exactly as the host
//! optimizer does, then uploaded as one `[unique, 1]` column. Rows, moments,
//! gathers, reductions and the update run on the device.
//!
//! Use with a Burn head trained under `Autodiff<B>`: keep the table on the
//! inner backend `B`, feed `Tensor::from_inner(pooled).require_grad()` to the
//! head, and pass that tensor's gradient (`.grad(&grads)`) as `d_pooled`:
//!
//! ```ignore
//! let batch = table.prepare(bags, pooling);
//! let pooled = Tensor::<Autodiff<B>, 2>::from_inner(table.forward_prepared(&batch)).require_grad();
//! let grads = head.loss(pooled.clone(), labels).backward();
//! table.backward_and_step_prepared(&batch, pooled.grad(&grads).unwrap(), lr);
//! ```
//!
//! Numbers. `SegmentReduce::Sequential` reproduces the host path bit for bit
//! on the NdArray backend; `SegmentReduce::Tree` (the default) sums in another
//! order and agrees to rounding (tests/device_table.rs states the bounds). On
//! a CPU the host path is far faster (about 25× on NdArray in the ignored
//! timing test); this table is meant for GPU backends. The trainer runs it
//! with `placement.embedding = "cuda:N"`, or `"burn-cpu"` (Burn's Flex CPU
//! backend, for CI), through `src/train/table_home.rs`. On Flex every step
//! costs O(rows · dim): its `scatter_nd` copies the whole tensor before
//! writing the rows (burn-flex-0.21.0/src/ops/gather_scatter.rs:909,
//! `data_data.to_vec()`), three times a step (w, m, v).
//!
//! Burn 0.21 limitations this works around (file:line in the crates' sources):
//! * float `select_assign` and `scatter` implement only `IndexingUpdateOp::Add`
//!   (burn-backend-0.21.0/src/tensor/ops/float.rs:129 and :174,
//!   `_ => unimplemented!()`), so rows are written back with
//!   `scatter_nd(.., IndexingUpdateOp::Assign)` on the unique rows (the trait's
//!   default `float_scatter_nd` is `unimplemented!`, burn-backend-0.21.0/src/backend/ops/tensor.rs:476,
//!   but ndarray, cubecl, fusion, autodiff, candle, tch, flex, router and dispatch implement it);
//! * CubeCL runs `select_assign` with one thread per non-indexed element and a
//!   serial loop over the indices (burn-cubecl-0.21.0/src/kernel/index/select_assign.rs:49,
//!   `working_units` at :73; `scatter` likewise, scatter.rs:55): a `[n, dim]`
//!   segment sum gets `dim` threads. Hence [`SegmentReduce::Tree`], built from
//!   `select` + `sum_dim` only;
//! * CubeCL's `scatter_nd` is a plain read-modify-write per element
//!   (burn-cubecl-0.21.0/src/kernel/index/scatter_nd.rs:69-73), racy for
//!   duplicate indices, so it only ever sees unique rows here.

mod plan;
mod state;

pub use plan::{SegmentReduce, DEFAULT_TREE_WIDTH};
pub use state::{DeviceTableState, StateArrays};

use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use rayon::prelude::*;

use plan::{plan_tree, TreePlan};

use super::adam::AdamBook;
use super::{AdamConfig, BiasCorrection, StateError, StateSource};
use crate::model::{Bags, EmbeddingTable, Pooling};

/// Bytes a device table takes, split by where they live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceTableBytes {
    /// Weights, m and v on the device: `3 · rows · dim · 4`.
    pub device: u64,
    /// Per-row optimizer scalars on the host: step counts (4 bytes a row, with
    /// `BiasCorrection::PerRow`) and decay marks (8 bytes a row, with weight decay).
    pub host: u64,
}

/// An embedding table and its LazyAdam state as tensors on a Burn device.
pub struct DeviceTable<B: Backend> {
    rows: usize,
    dim: usize,
    // Options only so that an update can take the tensors by value (a uniquely
    // owned tensor is updated in place; a shared one would be copied whole).
    weights: Option<Tensor<B, 2>>,
    m: Option<Tensor<B, 2>>,
    v: Option<Tensor<B, 2>>,
    reduce: SegmentReduce,
    /// Step counts and decay marks, on the host: the host LazyAdam's own.
    book: AdamBook,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for DeviceTable<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTable")
            .field("rows", &self.rows)
            .field("dim", &self.dim)
            .field("config", &self.book.config)
            .field("reduce", &self.reduce)
            .field("step", &self.book.step)
            .field("device", &self.device)
            .finish()
    }
}

/// A per-row factor: one value for every row, or one per unique row.
enum PerRow {
    Same(f32),
    Rows(Vec<f32>),
}

fn int_tensor<B: Backend>(values: Vec<i32>, device: &B::Device) -> Tensor<B, 1, Int> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

fn column<B: Backend>(values: Vec<f32>, device: &B::Device) -> Tensor<B, 2> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n, 1]), device)
}

fn to_f32_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 tensor data")
}

/// A planned segment sum on the device (see [`plan::plan_tree`]).
struct DeviceTree<B: Backend> {
    levels: Vec<DeviceLevel<B>>,
    output: Option<Tensor<B, 1, Int>>,
}

struct DeviceLevel<B: Backend> {
    buckets: Vec<DeviceBucket<B>>,
    zero_row: bool,
}

struct DeviceBucket<B: Backend> {
    width: usize,
    chunks: usize,
    idx: Tensor<B, 1, Int>,
    weights: Option<Tensor<B, 2>>,
}

impl<B: Backend> DeviceTree<B> {
    fn upload(plan: TreePlan, device: &B::Device) -> Self {
        let levels = plan
            .levels
            .into_iter()
            .map(|l| DeviceLevel {
                buckets: l
                    .buckets
                    .into_iter()
                    .map(|b| DeviceBucket { width: b.width, chunks: b.chunks, idx: int_tensor(b.idx, device), weights: b.weights.map(|w| column(w, device)) })
                    .collect(),
                zero_row: l.zero_row,
            })
            .collect();
        DeviceTree { levels, output: plan.output.map(|o| int_tensor(o, device)) }
    }

    /// `[segments, dim]` sums over rows of `source`.
    fn run(&self, source: Tensor<B, 2>) -> Tensor<B, 2> {
        let [_, dim] = source.dims();
        let device = source.device();
        let mut cur = source;
        for level in &self.levels {
            let mut parts = Vec::with_capacity(level.buckets.len() + 1);
            for b in &level.buckets {
                let mut g = cur.clone().select(0, b.idx.clone());
                if let Some(w) = &b.weights {
                    g = g.mul(w.clone());
                }
                if b.width > 1 {
                    g = g.reshape([b.chunks, b.width, dim]).sum_dim(1).reshape([b.chunks, dim]);
                }
                parts.push(g);
            }
            if level.zero_row {
                parts.push(Tensor::zeros([1, dim], &device));
            }
            cur = if parts.len() == 1 { parts.pop().expect("one part") } else { Tensor::cat(parts, 0) };
        }
        match &self.output {
            None => cur,
            Some(idx) => cur.select(0, idx.clone()),
        }
    }
}

enum ForwardPlan<B: Backend> {
    /// No ids at all: every bag pools to zero.
    Empty,
    /// Gather every id's row, `select_assign`-add it into its bag.
    Sequential { ids: Tensor<B, 1, Int>, bag_of: Tensor<B, 1, Int> },
    /// Tree over the non-empty bags; `place` maps every bag to its row of
    /// `[non-empty sums; zero row]` when some bags are empty.
    Tree { tree: DeviceTree<B>, place: Option<Tensor<B, 1, Int>> },
}

/// The backward of a batch: its sorted unique rows, and the device side
/// (absent when the batch has no ids, so no zero-size tensors are made).
struct BackwardPlan<B: Backend> {
    rows: Vec<u32>,
    device: Option<BackwardDevice<B>>,
}

struct BackwardDevice<B: Backend> {
    sum: BackwardSum<B>,
    /// The unique rows as an index for `select`…
    idx: Tensor<B, 1, Int>,
    /// …and as a `[unique, 1]` index for `scatter_nd`.
    idx_nd: Tensor<B, 2, Int>,
}

enum BackwardSum<B: Backend> {
    /// Gather every occurrence's scaled `d_pooled` row, `select_assign`-add it into its unique row.
    Sequential { bag_of: Tensor<B, 1, Int>, unique_of: Tensor<B, 1, Int> },
    /// Tree over the unique rows, items weighted by their bag's scale.
    Tree { tree: DeviceTree<B> },
}

/// One batch of bags, planned on the host and uploaded once; reuse it for the
/// forward and the backward of the same batch.
pub struct DeviceBatch<B: Backend> {
    batch: usize,
    ids: usize,
    max_id: Option<u32>,
    pooling: Pooling,
    reduce: SegmentReduce,
    /// `[batch, 1]` pooling factors (absent for sum pooling).
    scales: Option<Tensor<B, 2>>,
    forward: ForwardPlan<B>,
    backward: Option<BackwardPlan<B>>,
}

impl<B: Backend> DeviceBatch<B> {
    /// Plans the forward, and the backward too when `with_backward`.
    pub fn new(bags: Bags<'_>, pooling: Pooling, reduce: SegmentReduce, with_backward: bool, device: &B::Device) -> Self {
        reduce.validate();
        let batch = bags.len();
        let n = bags.ids.len();
        assert!(n <= i32::MAX as usize, "{n} ids in one batch exceed the i32 index range");
        let max_id = bags.ids.par_iter().copied().max();
        if let Some(m) = max_id {
            assert!(m <= i32::MAX as u32, "row id {m} exceeds the i32 index range of device tensors");
        }
        let lens: Vec<usize> = (0..batch).map(|b| bags.bag(b).len()).collect();
        let scales = (pooling != Pooling::Sum && batch > 0).then(|| column(lens.iter().map(|&l| pooling.scale(l)).collect(), device));
        let mut bag_of: Vec<i32> = Vec::with_capacity(n);
        for (b, &l) in lens.iter().enumerate() {
            bag_of.extend(std::iter::repeat_n(b as i32, l));
        }

        let forward = if n == 0 {
            ForwardPlan::Empty
        } else {
            match reduce {
                SegmentReduce::Sequential => {
                    ForwardPlan::Sequential { ids: int_tensor(bags.ids.iter().map(|&i| i as i32).collect(), device), bag_of: int_tensor(bag_of.clone(), device) }
                }
                SegmentReduce::Tree { width } => {
                    // Segments are the non-empty bags; their items are the ids as they are.
                    let mut offsets = vec![0];
                    let mut place = Vec::with_capacity(batch);
                    let nonempty = lens.iter().filter(|&&l| l > 0).count();
                    for (b, &len) in lens.iter().enumerate() {
                        if len > 0 {
                            place.push((offsets.len() - 1) as i32);
                            offsets.push(bags.offsets[b + 1]);
                        } else {
                            place.push(nonempty as i32); // the zero row
                        }
                    }
                    let tree = DeviceTree::upload(plan_tree(&offsets, bags.ids, None, width), device);
                    let place = (nonempty < batch).then(|| int_tensor(place, device));
                    ForwardPlan::Tree { tree, place }
                }
            }
        };

        let backward = with_backward.then(|| {
            // Occurrences sorted by (row, position): the host SparseGrad's order.
            let mut order: Vec<(u32, u32)> = bags.ids.iter().enumerate().map(|(k, &r)| (r, k as u32)).collect();
            order.par_sort_unstable();
            let mut rows: Vec<u32> = Vec::new();
            // Start of every unique row's occurrences in `order`, then n.
            let mut offsets = Vec::new();
            let mut unique_of = vec![0i32; n];
            for (i, &(r, k)) in order.iter().enumerate() {
                if rows.last() != Some(&r) {
                    offsets.push(i);
                    rows.push(r);
                }
                unique_of[k as usize] = (rows.len() - 1) as i32;
            }
            offsets.push(n);
            if n == 0 {
                return BackwardPlan { rows, device: None };
            }
            let sum = match reduce {
                SegmentReduce::Sequential => BackwardSum::Sequential { bag_of: int_tensor(bag_of.clone(), device), unique_of: int_tensor(unique_of, device) },
                SegmentReduce::Tree { width } => {
                    let src: Vec<u32> = order.iter().map(|&(_, k)| bag_of[k as usize] as u32).collect();
                    let weights: Option<Vec<f32>> = (pooling != Pooling::Sum).then(|| src.iter().map(|&b| pooling.scale(lens[b as usize])).collect());
                    let plan = plan_tree(&offsets, &src, weights.as_deref(), width);
                    BackwardSum::Tree { tree: DeviceTree::upload(plan, device) }
                }
            };
            let u = rows.len();
            let idx_i32: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
            let dev = BackwardDevice { sum, idx: int_tensor(idx_i32.clone(), device), idx_nd: Tensor::from_data(TensorData::new(idx_i32, [u, 1]), device) };
            BackwardPlan { rows, device: Some(dev) }
        });

        DeviceBatch { batch, ids: n, max_id, pooling, reduce, scales, forward, backward }
    }

    /// Bags in the batch.
    pub fn len(&self) -> usize {
        self.batch
    }
    pub fn is_empty(&self) -> bool {
        self.batch == 0
    }
    /// Ids (occurrences) in the batch.
    pub fn ids(&self) -> usize {
        self.ids
    }
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }
    /// How this batch's segments are summed (a batch carries its own plan, so
    /// it may differ from the table's setting).
    pub fn reduce(&self) -> SegmentReduce {
        self.reduce
    }
    /// Sorted unique rows of the batch (when planned with the backward).
    pub fn unique_rows(&self) -> Option<&[u32]> {
        self.backward.as_ref().map(|b| b.rows.as_slice())
    }
}

impl<B: Backend> DeviceTable<B> {
    /// Uploads `table` with zero Adam moments at step 0, summing segments with
    /// the default [`SegmentReduce`] (see [`DeviceTable::with_reduce`]).
    pub fn from_host(table: &EmbeddingTable, config: AdamConfig, device: &B::Device) -> Self {
        Self::from_parts(table.rows(), table.dim(), table.as_slice().to_vec(), config, device)
    }

    /// [`DeviceTable::from_host`] without keeping a second host copy of the table.
    pub fn from_host_owned(table: EmbeddingTable, config: AdamConfig, device: &B::Device) -> Self {
        let (rows, dim) = (table.rows(), table.dim());
        Self::from_parts(rows, dim, table.into_vec(), config, device)
    }

    fn from_parts(rows: usize, dim: usize, data: Vec<f32>, config: AdamConfig, device: &B::Device) -> Self {
        assert!(dim > 0, "embedding dim must be positive");
        assert!(rows <= i32::MAX as usize, "{rows} rows exceed the i32 index range of device tensors");
        let weights = Tensor::from_data(TensorData::new(data, [rows, dim]), device);
        DeviceTable {
            rows,
            dim,
            weights: Some(weights),
            m: Some(Tensor::zeros([rows, dim], device)),
            v: Some(Tensor::zeros([rows, dim], device)),
            reduce: SegmentReduce::default(),
            book: AdamBook::new(config, rows),
            device: device.clone(),
        }
    }

    /// Chooses how segments are summed (default: `Tree { width: 32 }`).
    pub fn with_reduce(mut self, reduce: SegmentReduce) -> Self {
        reduce.validate();
        self.reduce = reduce;
        self
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn config(&self) -> &AdamConfig {
        &self.book.config
    }
    pub fn reduce(&self) -> SegmentReduce {
        self.reduce
    }
    pub fn device(&self) -> &B::Device {
        &self.device
    }
    /// Steps taken so far (the global `t`).
    pub fn steps(&self) -> u64 {
        self.book.step
    }
    /// The `[rows, dim]` weights on the device.
    pub fn weights(&self) -> &Tensor<B, 2> {
        self.weights.as_ref().expect("weights present between steps")
    }

    /// Downloads the weights. Pending catch-up decay is *not* applied, as on
    /// the host table; see [`DeviceTable::apply_pending_decay`].
    pub fn to_host(&self) -> EmbeddingTable {
        EmbeddingTable::from_vec(self.rows, self.dim, to_f32_vec(self.weights().clone()))
    }

    /// Bytes a `rows × dim` device table with `config` takes, per location.
    pub fn estimate_bytes(rows: usize, dim: usize, config: &AdamConfig) -> DeviceTableBytes {
        let (rows, dim) = (rows as u64, dim as u64);
        let row_steps = if config.bias_correction == BiasCorrection::PerRow { 4 * rows } else { 0 };
        let marks = if config.weight_decay != 0.0 { 8 * rows } else { 0 };
        DeviceTableBytes { device: 3 * rows * dim * 4, host: row_steps + marks }
    }

    /// Bytes held now: device tensors plus host per-row scalars.
    pub fn bytes(&self) -> usize {
        self.device_bytes() + self.host_bytes()
    }
    /// Weights, m and v on the device.
    pub fn device_bytes(&self) -> usize {
        3 * self.rows * self.dim * std::mem::size_of::<f32>()
    }
    /// Per-row step counts and decay marks on the host.
    pub fn host_bytes(&self) -> usize {
        self.book.row_bytes()
    }

    /// Plans `bags` for a forward and a backward on this table's device.
    pub fn prepare(&self, bags: Bags<'_>, pooling: Pooling) -> DeviceBatch<B> {
        DeviceBatch::new(bags, pooling, self.reduce, true, &self.device)
    }
    /// Plans `bags` for a forward only (evaluation).
    pub fn prepare_forward(&self, bags: Bags<'_>, pooling: Pooling) -> DeviceBatch<B> {
        DeviceBatch::new(bags, pooling, self.reduce, false, &self.device)
    }

    fn check_ids(&self, batch: &DeviceBatch<B>) {
        if let Some(m) = batch.max_id {
            assert!((m as usize) < self.rows, "row id {m} out of range for {} rows", self.rows);
        }
    }

    /// Pooled `[bags, dim]` on the device for bags in CSR form.
    pub fn forward(&self, bags: Bags<'_>, pooling: Pooling) -> Tensor<B, 2> {
        self.forward_prepared(&self.prepare_forward(bags, pooling))
    }

    /// Pooled `[bags, dim]` for a planned batch.
    pub fn forward_prepared(&self, batch: &DeviceBatch<B>) -> Tensor<B, 2> {
        self.check_ids(batch);
        let (b, dim) = (batch.batch, self.dim);
        let sums = match &batch.forward {
            ForwardPlan::Empty => return Tensor::zeros([b, dim], &self.device),
            ForwardPlan::Sequential { ids, bag_of } => {
                let rows = self.weights().clone().select(0, ids.clone());
                Tensor::zeros([b, dim], &self.device).select_assign(0, bag_of.clone(), rows, IndexingUpdateOp::Add)
            }
            ForwardPlan::Tree { tree, place } => {
                let sums = tree.run(self.weights().clone());
                match place {
                    None => sums,
                    Some(place) => Tensor::cat(vec![sums, Tensor::zeros([1, dim], &self.device)], 0).select(0, place.clone()),
                }
            }
        };
        // Sum first, then scale: the host's order (`pool_one`).
        match &batch.scales {
            Some(s) => sums.mul(s.clone()),
            None => sums,
        }
    }

    /// Backward of [`DeviceTable::forward`] and one LazyAdam step, for `d_pooled`
    /// (`[bags, dim]`, the gradient of the loss with respect to the pooled output).
    pub fn backward_and_step(&mut self, bags: Bags<'_>, pooling: Pooling, d_pooled: Tensor<B, 2>, lr: f32) {
        let batch = self.prepare(bags, pooling);
        self.backward_and_step_prepared(&batch, d_pooled, lr);
    }

    /// The summed `[unique, dim]` gradient of the batch's unique rows (sorted
    /// as [`DeviceBatch::unique_rows`]): the host `bag_backward`'s `SparseGrad`.
    /// A batch without ids gives a `[0, dim]` tensor.
    pub fn sparse_grad(&self, batch: &DeviceBatch<B>, d_pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        let plan = Self::backward_plan(batch);
        assert_eq!(d_pooled.dims(), [batch.batch, self.dim], "d_pooled must be [bags, dim]");
        match &plan.device {
            None => Tensor::zeros([0, self.dim], &self.device),
            Some(dev) => self.summed_grad(batch, dev, d_pooled),
        }
    }

    fn backward_plan(batch: &DeviceBatch<B>) -> &BackwardPlan<B> {
        batch.backward.as_ref().expect("batch was planned for the forward only: use DeviceTable::prepare")
    }

    fn summed_grad(&self, batch: &DeviceBatch<B>, dev: &BackwardDevice<B>, d_pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        let d_pooled = d_pooled.to_device(&self.device);
        match &dev.sum {
            BackwardSum::Sequential { bag_of, unique_of } => {
                // scale · d_pooled[b], the same product the host forms per occurrence.
                let scaled = match &batch.scales {
                    Some(s) => d_pooled.mul(s.clone()),
                    None => d_pooled,
                };
                let occ = scaled.select(0, bag_of.clone());
                let [u, _] = dev.idx_nd.dims();
                Tensor::zeros([u, self.dim], &self.device).select_assign(0, unique_of.clone(), occ, IndexingUpdateOp::Add)
            }
            BackwardSum::Tree { tree } => tree.run(d_pooled),
        }
    }

    /// [`DeviceTable::backward_and_step`] for a batch planned with [`DeviceTable::prepare`].
    pub fn backward_and_step_prepared(&mut self, batch: &DeviceBatch<B>, d_pooled: Tensor<B, 2>, lr: f32) {
        let g = self.sparse_grad(batch, d_pooled);
        self.step_with_grad(batch, g, lr);
    }

    /// One LazyAdam step with `g`, the batch's [`DeviceTable::sparse_grad`]
    /// (the backward and the step apart, e.g. to time them apart).
    pub fn step_with_grad(&mut self, batch: &DeviceBatch<B>, g: Tensor<B, 2>, lr: f32) {
        self.check_ids(batch);
        let plan = Self::backward_plan(batch);
        assert_eq!(g.dims(), [plan.rows.len(), self.dim], "g must be [unique rows, dim]");

        // The host optimizer's bookkeeping: global step and decay product advance every step.
        let (global_step_size, _) = self.book.begin_step(lr);
        let c = self.book.config;
        let Some(dev) = &plan.device else {
            return;
        };
        let unique = &plan.rows;

        // Per-row scalars on the host, in f64 as the host optimizer computes them.
        let step_sizes = match self.book.row_step_sizes(unique, lr) {
            Some(sizes) => PerRow::Rows(sizes),
            None => PerRow::Same(global_step_size),
        };
        let decays = self.book.catch_up_rows(unique);

        let (b1, b2, eps) = (c.beta1 as f32, c.beta2 as f32, c.epsilon as f32);
        let (one_b1, one_b2) = ((1.0 - c.beta1) as f32, (1.0 - c.beta2) as f32);
        let w = self.weights.take().expect("weights present between steps");
        let m = self.m.take().expect("m present between steps");
        let v = self.v.take().expect("v present between steps");
        let w_u = w.clone().select(0, dev.idx.clone());
        let m_u = m.clone().select(0, dev.idx.clone());
        let v_u = v.clone().select(0, dev.idx.clone());

        // Same f32 operations in the same order as the host's `update_row`.
        let m_new = m_u.mul_scalar(b1).add(g.clone().mul_scalar(one_b1));
        let v_new = v_u.mul_scalar(b2).add(g.clone().mul_scalar(one_b2).mul(g));
        let scaled_m = match step_sizes {
            PerRow::Same(s) => m_new.clone().mul_scalar(s),
            PerRow::Rows(s) => m_new.clone().mul(column(s, &self.device)),
        };
        let update = scaled_m.div(v_new.clone().sqrt().add_scalar(eps));
        let w_dec = match decays {
            Some(d) => w_u.mul(column(d, &self.device)),
            None => w_u,
        };
        let w_new = w_dec.sub(update);

        let idx = &dev.idx_nd;
        self.weights = Some(w.scatter_nd(idx.clone(), w_new, IndexingUpdateOp::Assign));
        self.m = Some(m.scatter_nd(idx.clone(), m_new, IndexingUpdateOp::Assign));
        self.v = Some(v.scatter_nd(idx.clone(), v_new, IndexingUpdateOp::Assign));
    }

    /// Downloads the weights of `rows` (`rows.len() × dim`, row-major), e.g. for histograms.
    pub fn rows_to_host(&self, rows: &[u32]) -> Vec<f32> {
        if rows.is_empty() {
            return Vec::new();
        }
        let idx = int_tensor(rows.iter().map(|&r| r as i32).collect(), &self.device);
        to_f32_vec(self.weights().clone().select(0, idx))
    }

    /// Applies every row's deferred decay (weight decay only), so the weights
    /// are those a dense optimizer would hold, e.g. before export.
    pub fn apply_pending_decay(&mut self) {
        let Some(factors) = self.book.catch_up_all() else { return };
        let w = self.weights.take().expect("weights present between steps");
        self.weights = Some(w.mul(column(factors, &self.device)));
    }

    /// Downloads the optimizer state, named as the host `LazyAdam`'s.
    pub fn state(&self) -> DeviceTableState {
        let decay = self.book.decay.arrays();
        DeviceTableState {
            step: self.book.step,
            m: to_f32_vec(self.m.as_ref().expect("m present").clone()),
            v: to_f32_vec(self.v.as_ref().expect("v present").clone()),
            row_steps: self.book.row_steps.to_vec(),
            log_decay: decay.map_or(0.0, |(log_decay, _)| *log_decay),
            row_log_decay: decay.map_or_else(Vec::new, |(_, marks)| marks.to_vec()),
            decays: decay.is_some(),
        }
    }

    /// Restores state written by [`DeviceTable::state`] or by the host
    /// `LazyAdam` (wrap its `state()` in [`StateArrays`]); sizes must match.
    pub fn load_state(&mut self, source: &dyn StateSource) -> Result<(), StateError> {
        // Read everything before changing anything: a bad source leaves the table as it was.
        let n = self.rows * self.dim;
        let mut m = vec![0.0f32; n];
        let mut v = vec![0.0f32; n];
        source.read_f32("m", &mut m)?;
        source.read_f32("v", &mut v)?;
        let mut book = AdamBook::new(self.book.config, self.rows);
        book.load(source)?;
        let shape = [self.rows, self.dim];
        self.m = Some(Tensor::from_data(TensorData::new(m, shape), &self.device));
        self.v = Some(Tensor::from_data(TensorData::new(v, shape), &self.device));
        self.book = book;
        Ok(())
    }
}
