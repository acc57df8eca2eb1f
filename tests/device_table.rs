//! The device-resident table (Burn tensor ops) against the host path
//! (`bag_forward`, `bag_backward` + `LazyAdam`), on the CPU backend.
//!
//! Tolerance. `SegmentReduce::Sequential` adds rows in the host's order with
//! the host's f32 operations, so it must match bit for bit. `SegmentReduce::Tree`
//! adds a segment's L values in another order; any two orders of summing L
//! floats differ by at most 2·γ_L·Σ|x| with γ_L = L·u/(1−L·u), u = 2⁻²⁴
//! (Higham, *Accuracy and Stability of Numerical Algorithms*, §4.2). Forward
//! and gradient sums are checked against that bound, element by element.
//! Through Adam the gradient's relative error ε_g becomes a relative error of
//! about ε_g in m and in √v, hence in the step m/(√v+ε), so after a few steps
//! weights, m and v agree to about 1e-6 relative. Gradients here are positive
//! (d_pooled > 0) so their sums have no cancellation: with cancellation a sum
//! near 0 can flip sign between orders, and Adam, which normalises the step,
//! would turn that rounding difference into a full `lr` step. That is a
//! property of Adam under any reordering (e.g. a GPU), not of this code.
//!
//! Built with `--features cuda`, the same tests run the device table on the
//! first CUDA GPU (`cargo test --release --features cuda --test device_table`);
//! there is no fallback to the CPU, so without a GPU they fail.

use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use sparseburn::model::{bag_backward, bag_forward, Bags, EmbeddingTable, Pooling, SparseGrad, TableInit};
use sparseburn::optim::device_table::{DeviceTable, DeviceTableState, SegmentReduce, StateArrays};
use sparseburn::optim::{AdamConfig, BiasCorrection, LazyAdam, StateData, StateError, TableOptimizer};

#[cfg(not(feature = "cuda"))]
type B = burn::backend::NdArray<f32>;
#[cfg(feature = "cuda")]
type B = burn::backend::Cuda<f32>;

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn device() -> burn::tensor::ops::Device<B> {
    Default::default()
}

fn reduces() -> [SegmentReduce; 4] {
    [SegmentReduce::Sequential, SegmentReduce::Tree { width: 2 }, SegmentReduce::Tree { width: 4 }, SegmentReduce::default()]
}

fn tensor2(values: &[f32], rows: usize, dim: usize) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values.to_vec(), [rows, dim]), &device())
}

fn data(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn gamma(l: usize) -> f64 {
    let lu = l as f64 * U;
    lu / (1.0 - lu)
}

/// A CSR batch.
struct Batch {
    ids: Vec<u32>,
    offsets: Vec<usize>,
}

impl Batch {
    fn new(bags: &[&[u32]]) -> Self {
        let mut ids = Vec::new();
        let mut offsets = vec![0];
        for b in bags {
            ids.extend_from_slice(b);
            offsets.push(ids.len());
        }
        Batch { ids, offsets }
    }
    fn bags(&self) -> Bags<'_> {
        Bags::new(&self.ids, &self.offsets)
    }
    fn len(&self) -> usize {
        self.offsets.len() - 1
    }
}

/// Random bags over rows `0..touched`, with duplicates, an empty bag and a long bag.
fn random_batch(rng: &mut ChaCha8Rng, touched: u32, bags: usize) -> Batch {
    let mut all: Vec<Vec<u32>> = Vec::new();
    for b in 0..bags {
        let len = match b {
            0 => 0,
            1 => 45,
            _ => rng.random_range(1..9),
        };
        // A few hot rows so duplicates within bags and across bags are common.
        all.push((0..len).map(|_| if rng.random_bool(0.4) { rng.random_range(0..4) } else { rng.random_range(0..touched) }).collect());
    }
    all.swap(0, bags / 2); // the empty bag in the middle
    let refs: Vec<&[u32]> = all.iter().map(|v| v.as_slice()).collect();
    Batch::new(&refs)
}

fn table(rows: usize, dim: usize, seed: u64) -> EmbeddingTable {
    EmbeddingTable::new(rows, dim, TableInit::Uniform { scale: Some(0.5) }, seed)
}

fn host_forward(t: &EmbeddingTable, batch: &Batch, pooling: Pooling) -> Vec<f32> {
    let mut out = vec![0.0; batch.len() * t.dim()];
    bag_forward(t.as_slice(), t.dim(), batch.bags(), pooling, &mut out);
    out
}

/// Checks the device forward against the host's, within the reordering bound (exactly for Sequential).
fn check_forward(t: &EmbeddingTable, got: &[f32], batch: &Batch, pooling: Pooling, reduce: SegmentReduce) {
    let dim = t.dim();
    let want = host_forward(t, batch, pooling);
    assert_eq!(got.len(), want.len());
    for b in 0..batch.len() {
        let ids = batch.bags().bag(b);
        let scale = pooling.scale(ids.len()) as f64;
        for j in 0..dim {
            let (g, w) = (got[b * dim + j], want[b * dim + j]);
            if reduce == SegmentReduce::Sequential {
                assert_eq!(g.to_bits(), w.to_bits(), "{pooling:?} bag {b} col {j}: {g} vs host {w}");
                continue;
            }
            let abs_sum: f64 = ids.iter().map(|&i| t.row(i as usize)[j].abs() as f64).sum();
            let bound = 2.0 * gamma(ids.len()) * abs_sum * scale + 2.0 * U * w.abs() as f64;
            assert!(((g - w) as f64).abs() <= bound, "{reduce:?} {pooling:?} bag {b} col {j}: {g} vs host {w} (bound {bound:e})");
        }
    }
}

#[test]
fn forward_matches_host_bag_forward() {
    let t = table(30, 5, 1);
    let batch = Batch::new(&[
        &[3, 7, 3],
        &[],
        &[0],
        &[5, 5, 5, 5, 1, 2, 9, 11, 13, 17, 19, 23, 29, 0, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23],
        &[9, 19],
        &[],
        &[29, 29],
    ]);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let random = random_batch(&mut rng, 30, 20);
    for reduce in reduces() {
        let dt = DeviceTable::<B>::from_host(&t, AdamConfig::default(), &device()).with_reduce(reduce);
        for pooling in [Pooling::Mean, Pooling::Sum, Pooling::Sqrtn] {
            for batch in [&batch, &random] {
                let got = data(dt.forward(batch.bags(), pooling));
                check_forward(&t, &got, batch, pooling, reduce);
            }
        }
    }
}

#[test]
fn forward_of_batches_without_ids() {
    let t = table(4, 3, 2);
    let dt = DeviceTable::<B>::from_host(&t, AdamConfig::default(), &device());
    let empty = Batch::new(&[&[], &[]]);
    assert_eq!(data(dt.forward(empty.bags(), Pooling::Mean)), vec![0.0; 6]);
    let none = Batch::new(&[]);
    assert_eq!(dt.forward(none.bags(), Pooling::Mean).dims(), [0, 3]);
}

#[test]
fn round_trip_to_host_is_exact() {
    let t = table(17, 6, 3);
    let dt = DeviceTable::<B>::from_host(&t, AdamConfig::default(), &device());
    assert_eq!(dt.to_host(), t);
    let owned = DeviceTable::<B>::from_host_owned(t.clone(), AdamConfig::default(), &device());
    assert_eq!(owned.to_host(), t);
}

fn find<'a>(state: &'a [(&'static str, StateData<'a>)], name: &str) -> &'a StateData<'a> {
    &state.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no state {name}")).1
}

fn f32s<'a>(d: &'a StateData<'a>) -> &'a [f32] {
    match d {
        StateData::F32(x) => x,
        _ => panic!("not f32"),
    }
}

/// Largest |a−b| / (|b| + floor) over two arrays, after checking the lengths.
fn max_rel(a: &[f32], b: &[f32], floor: f32) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| (x - y).abs() as f64 / (y.abs() as f64 + floor as f64)).fold(0.0, f64::max)
}

/// Tree: weights agree to `W_REL` of (|w| + Σ lr so far). An Adam step moves a
/// weight by about lr, and reordering perturbs that movement relatively, not w
/// itself (which may pass near 0).
const W_REL: f64 = 1e-6;
/// Tree: m and v agree to `MV_REL` relative. Their relative error is the
/// summed gradient's, ≤ 2·γ_L ≈ 5.4e-6 for the longest segment here (45 ids).
const MV_REL: f64 = 1e-5;

/// Weights, m and v agree: bit for bit under Sequential, else within the bounds above.
fn check_state(dt: &DeviceTable<B>, host_table: &EmbeddingTable, opt: &LazyAdam, reduce: SegmentReduce, moved: f32, what: &str) {
    let state = opt.state();
    let dev = dt.state();
    let dev_table = dt.to_host();
    let (hm, hv) = (f32s(find(&state, "m")), f32s(find(&state, "v")));
    if reduce == SegmentReduce::Sequential {
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(dev_table.as_slice()), bits(host_table.as_slice()), "{what}: weights");
        assert_eq!(bits(&dev.m), bits(hm), "{what}: m");
        assert_eq!(bits(&dev.v), bits(hv), "{what}: v");
    } else {
        // m and v of untouched rows are exactly 0 on both sides: 0 / (0 + floor) = 0.
        let w = max_rel(dev_table.as_slice(), host_table.as_slice(), moved);
        let m = max_rel(&dev.m, hm, f32::MIN_POSITIVE);
        let v = max_rel(&dev.v, hv, f32::MIN_POSITIVE);
        eprintln!("{what}: w {w:.2e} (of |w| + Σlr), m {m:.2e}, v {v:.2e}");
        assert!(w <= W_REL && m <= MV_REL && v <= MV_REL, "{what}: relative differences w {w:e}, m {m:e}, v {v:e}");
    }
    // Host-side per-row scalars are computed by the same f64 code: exact.
    let mut again = opt_like(dt.config(), dt.rows(), dt.dim());
    again.load_state(&dev).expect("device state loads into the host optimizer");
    assert_eq!(again.steps(), opt.steps(), "{what}: steps");
    for name in ["row_steps", "log_decay", "row_log_decay"] {
        let (a, b) = (state.iter().find(|(n, _)| *n == name), again.state().iter().find(|(n, _)| *n == name).map(|x| x.1.to_le_bytes()));
        assert_eq!(a.map(|x| x.1.to_le_bytes()), b, "{what}: {name}");
    }
}

fn opt_like(c: &AdamConfig, rows: usize, dim: usize) -> LazyAdam {
    c.init_lazy(rows, dim)
}

fn d_pooled(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(0.1f32..1.0)).collect()
}

/// Several steps of `backward_and_step` against `bag_backward` + `LazyAdam::step`.
fn run_parity(config: AdamConfig, reduce: SegmentReduce, seed: u64) {
    let (rows, dim, touched) = (40usize, 6usize, 30u32);
    let init = table(rows, dim, seed);
    let mut host = init.clone();
    let mut opt = config.init_lazy(rows, dim);
    let mut dt = DeviceTable::<B>::from_host(&init, config, &device()).with_reduce(reduce);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut grad = SparseGrad::new(dim);
    let what = |s: usize| format!("{config:?} {reduce:?} step {s}");
    let mut moved = 0.0f32;
    for step in 0..7 {
        let pooling = [Pooling::Mean, Pooling::Sum, Pooling::Sqrtn][step % 3];
        // Step 4 touches only a few rows, so others catch up decay later.
        let batch = if step == 4 { Batch::new(&[&[2, 2], &[], &[7]]) } else { random_batch(&mut rng, touched, 12) };
        let lr = 0.01 * (1.0 + (step % 3) as f32);
        let d = d_pooled(&mut rng, batch.len() * dim);

        // The device forward equals the host's over the same weights (the
        // device's own: under Tree they drift from `host` within the bounds below).
        let prepared = dt.prepare(batch.bags(), pooling);
        check_forward(&dt.to_host(), &data(dt.forward_prepared(&prepared)), &batch, pooling, reduce);

        bag_backward(batch.bags(), pooling, &d, &mut grad);
        // The device's summed gradient is the host SparseGrad.
        assert_eq!(prepared.unique_rows().unwrap(), grad.rows(), "{}", what(step));
        let g = data(dt.sparse_grad(&prepared, tensor2(&d, batch.len(), dim)));
        if reduce == SegmentReduce::Sequential {
            assert_eq!(g, grad.values(), "{}", what(step));
        } else {
            let occurrences = |r: u32| batch.ids.iter().filter(|&&i| i == r).count();
            for (k, &r) in grad.rows().iter().enumerate() {
                // Positive terms: Σ|x| is the sum itself.
                let bound = 2.0 * gamma(occurrences(r)) * 1.0001;
                for j in 0..dim {
                    let (x, y) = (g[k * dim + j] as f64, grad.row_values(k)[j] as f64);
                    assert!((x - y).abs() <= bound * y.abs(), "{} grad row {r}: {x} vs {y}", what(step));
                }
            }
        }

        let before = dt.to_host();
        opt.step(&mut host, &grad, lr);
        dt.backward_and_step_prepared(&prepared, tensor2(&d, batch.len(), dim), lr);
        moved += lr;
        check_state(&dt, &host, &opt, reduce, moved, &what(step));

        // Rows absent from the batch are bit-identical to before the step.
        let after = dt.to_host();
        for r in 0..rows {
            if grad.rows().binary_search(&(r as u32)).is_err() {
                assert_eq!(after.row(r), before.row(r), "{}: absent row {r} changed", what(step));
            }
        }
    }
    // Rows never touched are bit-identical to the initial table.
    let end = dt.to_host();
    for r in touched as usize..rows {
        assert_eq!(end.row(r), init.row(r), "untouched row {r}");
    }
    assert_eq!(dt.steps(), 7);
}

fn adam(bias_correction: BiasCorrection, weight_decay: f64) -> AdamConfig {
    AdamConfig { bias_correction, weight_decay, ..AdamConfig::default() }
}

#[test]
fn steps_match_host_lazy_adam_global_bias_correction() {
    for (i, reduce) in reduces().into_iter().enumerate() {
        run_parity(adam(BiasCorrection::Global, 0.0), reduce, 10 + i as u64);
    }
}

#[test]
fn steps_match_host_lazy_adam_per_row_bias_correction() {
    for (i, reduce) in reduces().into_iter().enumerate() {
        run_parity(adam(BiasCorrection::PerRow, 0.0), reduce, 20 + i as u64);
    }
}

#[test]
fn steps_match_host_lazy_adam_without_bias_correction() {
    run_parity(adam(BiasCorrection::None, 0.0), SegmentReduce::Sequential, 30);
    run_parity(adam(BiasCorrection::None, 0.0), SegmentReduce::default(), 31);
}

#[test]
fn steps_match_host_lazy_adam_with_catch_up_weight_decay() {
    for (i, reduce) in [SegmentReduce::Sequential, SegmentReduce::Tree { width: 4 }].into_iter().enumerate() {
        run_parity(adam(BiasCorrection::Global, 0.3), reduce, 40 + i as u64);
        run_parity(adam(BiasCorrection::PerRow, 0.3), reduce, 50 + i as u64);
    }
}

#[test]
fn pending_decay_matches_host() {
    let config = adam(BiasCorrection::Global, 0.5);
    let init = table(10, 3, 7);
    let (mut host, mut opt) = (init.clone(), config.init_lazy(10, 3));
    let mut dt = DeviceTable::<B>::from_host(&init, config, &device()).with_reduce(SegmentReduce::Sequential);
    let mut grad = SparseGrad::new(3);
    for (step, bags) in [vec![&[1u32, 2][..]], vec![&[2][..]], vec![&[5, 5][..], &[1][..]]].into_iter().enumerate() {
        let batch = Batch::new(&bags);
        let d: Vec<f32> = (0..batch.len() * 3).map(|i| 0.2 + i as f32 * 0.1).collect();
        let lr = 0.05 * (step + 1) as f32;
        bag_backward(batch.bags(), Pooling::Mean, &d, &mut grad);
        opt.step(&mut host, &grad, lr);
        dt.backward_and_step(batch.bags(), Pooling::Mean, tensor2(&d, batch.len(), 3), lr);
    }
    opt.apply_pending_decay(&mut host);
    dt.apply_pending_decay();
    assert_eq!(dt.to_host(), host);
    assert_ne!(host.row(9), init.row(9), "every row decays");
}

/// One step on `batch` from the same start; returns weights, m, v.
fn one_step(batch: &Batch, pooling: Pooling, d: &[f32], reduce: SegmentReduce) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let t = table(12, 4, 9);
    let mut dt = DeviceTable::<B>::from_host(&t, adam(BiasCorrection::PerRow, 0.0), &device()).with_reduce(reduce);
    dt.backward_and_step(batch.bags(), pooling, tensor2(d, batch.len(), 4), 0.05);
    let s = dt.state();
    (dt.to_host().into_vec(), s.m, s.v)
}

#[test]
fn duplicates_equal_the_pre_summed_batch() {
    let d0 = [0.3f32, -0.7, 1.1, 0.05];
    let d1 = [0.2f32, 0.4, -0.9, 0.6];
    let add = |a: [f32; 4], b: [f32; 4]| -> [f32; 4] { std::array::from_fn(|j| a[j] + b[j]) };
    for reduce in reduces() {
        // Sum pooling: row 3 gets d0 + d0 + d1, row 5 d0, row 7 d1.
        let dup = Batch::new(&[&[3, 5, 3], &[7, 3]]);
        let d_dup: Vec<f32> = [d0, d1].concat();
        let pre = Batch::new(&[&[3], &[5], &[7]]);
        let d_pre: Vec<f32> = [add(add(d0, d0), d1), d0, d1].concat();
        let a = one_step(&dup, Pooling::Sum, &d_dup, reduce);
        let b = one_step(&pre, Pooling::Sum, &d_pre, reduce);
        assert_eq!(a, b, "{reduce:?}: sum pooling");

        // Mean pooling: bag [3, 3, 5] gives row 3 two thirds of d0, row 5 one third.
        let dup = Batch::new(&[&[3, 3, 5]]);
        let third: [f32; 4] = std::array::from_fn(|j| (1.0f32 / 3.0) * d0[j]);
        let pre = Batch::new(&[&[3], &[5]]);
        let d_pre: Vec<f32> = [add(third, third), third].concat();
        let a = one_step(&dup, Pooling::Mean, &d0, reduce);
        let b = one_step(&pre, Pooling::Sum, &d_pre, reduce);
        assert_eq!(a, b, "{reduce:?}: mean pooling");
    }
}

#[test]
fn empty_batches_advance_the_step_like_the_host() {
    let config = adam(BiasCorrection::Global, 0.1);
    let init = table(8, 2, 4);
    let (mut host, mut opt) = (init.clone(), config.init_lazy(8, 2));
    let mut dt = DeviceTable::<B>::from_host(&init, config, &device()).with_reduce(SegmentReduce::Sequential);
    let mut grad = SparseGrad::new(2);
    for bags in [vec![&[1u32][..]], vec![&[][..], &[][..]], vec![&[1, 3][..]]] {
        let batch = Batch::new(&bags);
        let d = vec![0.5f32; batch.len() * 2];
        bag_backward(batch.bags(), Pooling::Sum, &d, &mut grad);
        opt.step(&mut host, &grad, 0.1);
        dt.backward_and_step(batch.bags(), Pooling::Sum, tensor2(&d, batch.len(), 2), 0.1);
    }
    check_state(&dt, &host, &opt, SegmentReduce::Sequential, 0.0, "with an empty batch");
}

#[test]
fn state_moves_between_host_and_device_optimizers() {
    let config = adam(BiasCorrection::PerRow, 0.2);
    let (rows, dim) = (20, 3);
    let init = table(rows, dim, 6);
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let (mut host, mut opt) = (init.clone(), config.init_lazy(rows, dim));
    let mut grad = SparseGrad::new(dim);
    let mut step = |host: &mut EmbeddingTable, opt: &mut LazyAdam, rng: &mut ChaCha8Rng| {
        let batch = random_batch(rng, rows as u32, 6);
        let d = d_pooled(rng, batch.len() * dim);
        bag_backward(batch.bags(), Pooling::Mean, &d, &mut grad);
        opt.step(host, &grad, 0.02);
        (batch, d)
    };
    for _ in 0..3 {
        step(&mut host, &mut opt, &mut rng);
    }
    // Host → device, then both continue.
    let mut dt = DeviceTable::<B>::from_host(&host, config, &device()).with_reduce(SegmentReduce::Sequential);
    dt.load_state(&StateArrays(&opt.state())).unwrap();
    for _ in 0..3 {
        let (batch, d) = step(&mut host, &mut opt, &mut rng);
        dt.backward_and_step(batch.bags(), Pooling::Mean, tensor2(&d, batch.len(), dim), 0.02);
    }
    check_state(&dt, &host, &opt, SegmentReduce::Sequential, 0.0, "after moving to the device");
    // Device → host.
    let mut back = config.init_lazy(rows, dim);
    back.load_state(&dt.state()).unwrap();
    assert_eq!(back.state().iter().map(|(n, d)| (*n, d.to_le_bytes())).collect::<Vec<_>>(), opt.state().iter().map(|(n, d)| (*n, d.to_le_bytes())).collect::<Vec<_>>());

    // Mismatched sizes are refused.
    let mut small = DeviceTable::<B>::from_host(&table(5, dim, 1), config, &device());
    match small.load_state(&StateArrays(&opt.state())) {
        Err(StateError::WrongLength { name, .. }) => assert_eq!(name, "m"),
        other => panic!("expected a length error, got {other:?}"),
    }
    let state: DeviceTableState = small.state();
    assert_eq!(state.m.len(), 5 * dim);
}

#[test]
fn bytes_match_the_estimate() {
    for config in [adam(BiasCorrection::Global, 0.0), adam(BiasCorrection::PerRow, 0.0), adam(BiasCorrection::PerRow, 0.1)] {
        let dt = DeviceTable::<B>::from_host(&table(33, 7, 1), config, &device());
        let e = DeviceTable::<B>::estimate_bytes(33, 7, &config);
        assert_eq!(e.device as usize, dt.device_bytes());
        assert_eq!(e.host as usize, dt.host_bytes());
        assert_eq!(dt.bytes(), dt.device_bytes() + dt.host_bytes());
        assert_eq!(dt.device_bytes(), 3 * 33 * 7 * 4);
        // Same host-side bytes as the host optimizer's per-row state.
        let host_extra = config.state_bytes(33, 7) - 2 * 33 * 7 * 4;
        assert_eq!(e.host, host_extra);
    }
}

#[test]
#[should_panic(expected = "out of range")]
fn out_of_range_ids_are_refused() {
    let dt = DeviceTable::<B>::from_host(&table(4, 2, 1), AdamConfig::default(), &device());
    let batch = Batch::new(&[&[1, 4]]);
    dt.forward(batch.bags(), Pooling::Sum);
}

#[test]
#[should_panic(expected = "d_pooled must be [bags, dim]")]
fn wrong_gradient_shape_is_refused() {
    let mut dt = DeviceTable::<B>::from_host(&table(4, 2, 1), AdamConfig::default(), &device());
    let batch = Batch::new(&[&[1, 3]]);
    dt.backward_and_step(batch.bags(), Pooling::Sum, tensor2(&[1.0; 4], 2, 2), 0.1);
}

/// The documented use with a head under autodiff: the table on the inner
/// backend, its pooled output a leaf of the head's graph, that leaf's gradient
/// as `d_pooled`.
#[test]
fn autodiff_head_feeds_the_table_step() {
    type AD = burn::backend::Autodiff<B>;
    let (rows, dim) = (12, 3);
    let init = table(rows, dim, 8);
    let mut dt = DeviceTable::<B>::from_host(&init, AdamConfig::default(), &device()).with_reduce(SegmentReduce::Sequential);
    let batch = Batch::new(&[&[1, 4, 1], &[7], &[]]);
    let coeff: Vec<f32> = (0..batch.len() * dim).map(|i| 0.25 + i as f32 * 0.125).collect();

    let prepared = dt.prepare(batch.bags(), Pooling::Mean);
    let pooled = Tensor::<AD, 2>::from_inner(dt.forward_prepared(&prepared)).require_grad();
    let c = Tensor::<AD, 2>::from_data(TensorData::new(coeff.clone(), [batch.len(), dim]), &device());
    let grads = pooled.clone().mul(c).sum().backward();
    let d_pooled: Tensor<B, 2> = pooled.grad(&grads).expect("pooled is a leaf with a gradient");
    dt.backward_and_step_prepared(&prepared, d_pooled, 0.01);

    let (mut host, mut opt, mut grad) = (init.clone(), AdamConfig::default().init_lazy(rows, dim), SparseGrad::new(dim));
    bag_backward(batch.bags(), Pooling::Mean, &coeff, &mut grad);
    opt.step(&mut host, &grad, 0.01);
    check_state(&dt, &host, &opt, SegmentReduce::Sequential, 0.0, "autodiff head");
}

/// Timing, not a check (`cargo test --release --test device_table -- --ignored --nocapture`):
/// one training step's cost must not grow with the table's rows (updates are
/// in place: a whole-table copy per step would show up as linear growth).
#[test]
#[ignore]
fn timing_step_cost_vs_table_rows() {
    let dim = 64;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let bags: Vec<Vec<u32>> = (0..256).map(|_| (0..50).map(|_| rng.random_range(0..50_000)).collect()).collect();
    let refs: Vec<&[u32]> = bags.iter().map(|b| b.as_slice()).collect();
    let batch = Batch::new(&refs);
    let d = d_pooled(&mut rng, batch.len() * dim);
    for rows in [50_000usize, 400_000] {
        let t = EmbeddingTable::new(rows, dim, TableInit::default(), 1);
        for reduce in [SegmentReduce::Sequential, SegmentReduce::default()] {
            let mut dt = DeviceTable::<B>::from_host(&t, AdamConfig::default(), &device()).with_reduce(reduce);
            let steps = 10;
            let start = std::time::Instant::now();
            for _ in 0..steps {
                let p = dt.prepare(batch.bags(), Pooling::Mean);
                let _pooled = dt.forward_prepared(&p);
                dt.backward_and_step_prepared(&p, tensor2(&d, batch.len(), dim), 0.01);
            }
            eprintln!("rows {rows} {reduce:?}: {:.2} ms/step", start.elapsed().as_secs_f64() * 1e3 / steps as f64);
        }
        let (mut host, mut opt) = (t.clone(), AdamConfig::default().init_lazy(rows, dim));
        let mut grad = SparseGrad::new(dim);
        let mut out = vec![0.0; batch.len() * dim];
        let start = std::time::Instant::now();
        for _ in 0..10 {
            bag_forward(host.as_slice(), dim, batch.bags(), Pooling::Mean, &mut out);
            bag_backward(batch.bags(), Pooling::Mean, &d, &mut grad);
            opt.step(&mut host, &grad, 0.01);
        }
        eprintln!("rows {rows} host path: {:.2} ms/step", start.elapsed().as_secs_f64() * 1e3 / 10.0);
    }
}
