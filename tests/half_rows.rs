//! Half-precision table rows (`model.table_dtype = "bf16" | "f16"`): a lazy
//! optimizer step against an f64 reference within one rounding, independence
//! from the thread count, checkpoint/resume bit identity, and export read back
//! by another reader and served.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::Dtype;
use sparseburn::config::Config;
use sparseburn::data::{Featurizer, Tokenizer, Vocab};
use sparseburn::export::{self, ExportOptions};
use sparseburn::model::{EmbeddingTable, SparseGrad, TableDtype, TableInit, TableRecipe, TableView};
use sparseburn::optim::{LazyAdamConfig, TableOptimizerConfig};
use sparseburn::serve::Predictor;
use sparseburn::train::eval::{logits, Scratch};
use sparseburn::train::{self, checkpoint, run_dir, TrainOptions};

#[path = "support/checkpoint_state.rs"]
mod checkpoint_state;
use checkpoint_state::restored;

const BIN: &str = env!("CARGO_BIN_EXE_sparseburn");

fn recipe(rows: usize, dim: usize, dtype: TableDtype) -> TableRecipe {
    TableRecipe { rows, dim, init: TableInit::Uniform { scale: Some(0.5) }, seed: 5, dtype }
}

/// Bit pattern of the nearest value, and the value of a bit pattern.
type Codec = (fn(f32) -> u16, fn(u16) -> f64);

/// The representable neighbours of `x` (f64) in `dtype`, found by stepping bit patterns.
fn neighbours(x: f64, dtype: TableDtype) -> (f64, f64) {
    let (to, back): Codec = match dtype {
        TableDtype::Bf16 => (|v| bf16::from_f32(v).to_bits(), |b| bf16::from_bits(b).to_f64()),
        TableDtype::F16 => (|v| f16::from_f32(v).to_bits(), |b| f16::from_bits(b).to_f64()),
        TableDtype::F32 => unreachable!(),
    };
    let near = to(x as f32);
    let mut cands: Vec<f64> = vec![back(near)];
    for d in [1u16, 2] {
        cands.push(back(near.wrapping_add(d)));
        cands.push(back(near.wrapping_sub(d)));
    }
    // Across zero the bit patterns of the other sign are the neighbours.
    cands.push(back(near ^ 0x8000));
    cands.push(back((near ^ 0x8000).wrapping_add(1)));
    let lo = cands.iter().copied().filter(|&c| c <= x).fold(f64::NEG_INFINITY, f64::max);
    let hi = cands.iter().copied().filter(|&c| c >= x).fold(f64::INFINITY, f64::min);
    (lo, hi)
}

fn random_grad(rng: &mut ChaCha8Rng, rows: usize, dim: usize, n: usize) -> SparseGrad {
    let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..rows as u32)).collect();
    let values: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-0.1f32..0.1)).collect();
    SparseGrad::from_duplicates(dim, &ids, &values)
}

/// LazyAdam on bf16 and f16 rows: each updated value is one of the two
/// neighbours (in the dtype) of the update computed in f64 from the stored
/// row, untouched rows keep their bits, and the rounding is unbiased given
/// where the value lies between its neighbours: the mean error (in gaps) is
/// within 5 standard errors of 0 both for values in the lower half of their
/// gap and for those in the upper half. Rounding to nearest would give about
/// -1/4 and +1/4, truncation -1/4 in one of them.
#[test]
fn lazy_adam_on_half_rows_matches_an_f64_reference_within_one_rounding() {
    let (rows, dim, lr) = (3000, 16, 0.01);
    for dtype in [TableDtype::Bf16, TableDtype::F16] {
        let mut table = EmbeddingTable::eager(recipe(rows, dim, dtype));
        let c = LazyAdamConfig { lr, ..Default::default() };
        let (b1, b2, eps) = (c.beta1, c.beta2, c.epsilon);
        let mut opt = TableOptimizerConfig::LazyAdam(c).init(rows, dim);
        let (mut m, mut v) = (vec![0f64; rows * dim], vec![0f64; rows * dim]);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        // Error sums and counts for values in the lower / upper half of their gap.
        let (mut err_sum, mut err_n, mut moved) = ([0f64; 2], [0usize; 2], 0usize);
        for t in 1..=6 {
            let grad = random_grad(&mut rng, rows, dim, 1500);
            let before = table.to_f32_vec();
            opt.step(&mut table, &grad, lr as f32);
            let after = table.to_f32_vec();
            let step_size = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
            let grads: BTreeMap<usize, &[f32]> = grad.rows().iter().map(|&r| r as usize).zip(grad.values().chunks(dim)).collect();
            for r in 0..rows {
                let span = r * dim..(r + 1) * dim;
                let Some(g) = grads.get(&r) else {
                    assert_eq!(
                        after[span.clone()].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        before[span].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        "{dtype:?}: absent row {r} moved"
                    );
                    continue;
                };
                for (j, i) in span.enumerate() {
                    let g = g[j] as f64;
                    m[i] = b1 * m[i] + (1.0 - b1) * g;
                    v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                    let want = before[i] as f64 - step_size * m[i] / (v[i].sqrt() + eps);
                    let (lo, hi) = neighbours(want, dtype);
                    // f32 arithmetic differs from f64 by far less than a half ulp: allow it.
                    let slack = want.abs() * 1e-6 + 1e-12;
                    let got = after[i] as f64;
                    assert!(got >= lo - slack && got <= hi + slack, "{dtype:?} step {t} row {r}[{j}]: {got} outside [{lo}, {hi}] around {want}");
                    if hi > lo && (want - lo).abs() > slack && (hi - want).abs() > slack {
                        let half = ((want - lo) / (hi - lo) >= 0.5) as usize;
                        err_sum[half] += (got - want) / (hi - lo);
                        err_n[half] += 1;
                        moved += (got != before[i] as f64) as usize;
                    }
                }
            }
        }
        // Each error is a two-point variable with |e| < 1, so its sd is at most 1/2.
        assert!(err_n[0] > 5_000 && err_n[1] > 5_000 && moved > (err_n[0] + err_n[1]) / 2, "{dtype:?}: too few values checked ({err_n:?}, {moved} moved)");
        for h in 0..2 {
            let mean = err_sum[h] / err_n[h] as f64;
            let bound = 5.0 * 0.5 / (err_n[h] as f64).sqrt();
            assert!(mean.abs() < bound, "{dtype:?}: mean rounding error {mean} gaps over {} values in gap half {h} exceeds {bound}", err_n[h]);
        }
    }
}

/// The rounding's random stream is keyed by (seed, step, row), so the rows
/// after a run of steps are the same bits on 1 and on 4 threads.
#[test]
fn half_row_updates_do_not_depend_on_the_thread_count() {
    let (rows, dim) = (50_000, 32);
    let run = |threads: usize, dtype: TableDtype, kind: &str| -> Vec<u8> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut table = EmbeddingTable::lazy(recipe(rows, dim, dtype));
            let mut opt = TableOptimizerConfig::named(kind).unwrap().init(rows, dim);
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            for _ in 0..8 {
                let grad = random_grad(&mut rng, rows, dim, 4000);
                table.materialize(grad.rows());
                opt.step(&mut table, &grad, 0.05);
            }
            table.materialize_all();
            table.view().as_bytes().to_vec()
        })
    };
    for dtype in [TableDtype::Bf16, TableDtype::F16] {
        for kind in ["lazy_adam", "rowwise_adagrad"] {
            let one = run(1, dtype, kind);
            assert_eq!(one.len(), rows * dim * 2);
            assert!(one == run(4, dtype, kind), "{dtype:?} {kind}: 1 and 4 threads differ");
        }
    }
}

/// Initial half rows are the f32 rows rounded to nearest, whether generated
/// eagerly, lazily or for resident rows.
#[test]
fn initial_half_rows_are_the_f32_rows_rounded_to_nearest() {
    let (rows, dim) = (9000, 8);
    let f32_table = EmbeddingTable::eager(recipe(rows, dim, TableDtype::F32));
    for dtype in [TableDtype::Bf16, TableDtype::F16] {
        let eager = EmbeddingTable::eager(recipe(rows, dim, dtype));
        let want: Vec<f32> = f32_table
            .as_slice()
            .iter()
            .map(|&x| match dtype {
                TableDtype::Bf16 => bf16::from_f32(x).to_f32(),
                _ => f16::from_f32(x).to_f32(),
            })
            .collect();
        assert_eq!(eager.to_f32_vec(), want, "{dtype:?} eager");
        assert_eq!(eager.bytes(), rows * dim * 2);
        let mut lazy = EmbeddingTable::lazy(recipe(rows, dim, dtype));
        lazy.materialize(&[7, 8999, 4100]);
        lazy.materialize(&(0..2000).collect::<Vec<u32>>());
        lazy.materialize_all();
        assert_eq!(lazy, eager, "{dtype:?} lazy");
        let ids = [5u32, 4097, 8998];
        let resident = EmbeddingTable::from_recipe_rows(recipe(rows, dim, dtype), &ids);
        let mut row = vec![0f32; dim];
        for (k, &id) in ids.iter().enumerate() {
            resident.row_into(k, &mut row);
            assert_eq!(row, want[id as usize * dim..(id as usize + 1) * dim], "{dtype:?} resident row {id}");
        }
    }
}

fn sparseburn_train(dir: &Path, extra: &[&str]) {
    let d = dir.display().to_string();
    let mut args = vec!["train", "configs/quickstart.toml", "--run-dir", &d];
    for s in ["logging.quiet=true", "vocab.buckets=20000", "checkpoint.every=10", "model.table_dtype=bf16"].iter().chain(extra) {
        args.extend(["--set", s]);
    }
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A bf16 run resumed half way is the uninterrupted run bit for bit, and its
/// checkpoints store the rows as BF16 (half the bytes of f32).
#[test]
fn a_resumed_bf16_run_equals_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (half, whole) = (tmp.path().join("half"), tmp.path().join("whole"));
    sparseburn_train(&half, &["train.epochs=1"]);
    sparseburn_train(&whole, &["train.epochs=2"]);
    let out = Command::new(BIN).args(["train", "--resume", &half.display().to_string(), "--set", "train.epochs=2"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(restored(&half) == restored(&whole), "the resumed bf16 run differs from the uninterrupted one");

    let ckpt = checkpoint::Checkpoint::open_latest(&whole).unwrap();
    assert_eq!(ckpt.recipe().dtype, TableDtype::Bf16);
    let (table, _) = ckpt.model().unwrap();
    assert_eq!(table.dtype(), TableDtype::Bf16);
    let rows_file = std::fs::read(ckpt.dir.join("rows.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&rows_file).unwrap();
    let t = st.tensor("table").unwrap();
    assert_eq!(t.dtype(), Dtype::BF16);
    assert_eq!(t.data().len(), t.shape()[0] * t.shape()[1] * 2);
    // Training moved rows away from their initial values (rounding did not freeze them).
    let initial = EmbeddingTable::eager(ckpt.recipe());
    let changed = (0..table.rows()).filter(|&r| table.view().as_bytes()[r * 128..(r + 1) * 128] != initial.view().as_bytes()[r * 128..(r + 1) * 128]).count();
    assert!(changed > 1000, "only {changed} rows changed");

    // A checkpoint cannot be resumed as another dtype.
    let out = Command::new(BIN).args(["train", "--resume", &whole.display().to_string(), "--set", "model.table_dtype=f32", "--set", "train.epochs=3"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("table_dtype"), "{err}");
}

/// The bundle of an f16 and of a bf16 run holds the table in its dtype,
/// exactly the checkpoint's bits (read with the safetensors crate, and by
/// Python when the project's venv is there), and the predictor serving it
/// gives evaluation's logits bit for bit.
#[test]
fn half_bundles_store_their_dtype_and_serve_evaluations_logits() {
    let tmp = tempfile::tempdir().unwrap();
    for (dtype, st_dtype) in [(TableDtype::Bf16, Dtype::BF16), (TableDtype::F16, Dtype::F16)] {
        let overrides: Vec<String> = ["logging.quiet=true", "logging.tensorboard=false", "train.epochs=1", "vocab.buckets=20000", &format!("model.table_dtype={}", dtype.name())]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let config = Config::load(Path::new("configs/quickstart.toml"), &overrides).unwrap();
        let run = tmp.path().join(dtype.name());
        train::train(&config, &TrainOptions { run_dir: Some(run.clone()), ..Default::default() }).unwrap();
        let bundle = export::export_with(&run, &tmp.path().join(format!("model-{}/1", dtype.name())), &ExportOptions { checkpoint: None, force: false }).unwrap();

        let (table, head) = checkpoint::Checkpoint::open_latest(&run).unwrap().model().unwrap();
        let bytes = std::fs::read(bundle.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("table").unwrap();
        assert_eq!((t.dtype(), t.shape()), (st_dtype, &[table.rows(), 64][..]));
        assert_eq!(t.data(), table.view().as_bytes());
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["model"]["table_dtype"], dtype.name());

        for copy_table_max_bytes in [u64::MAX, 0] {
            let predictor = Predictor::load_with(&bundle, &sparseburn::serve::LoadOptions { copy_table_max_bytes, ..Default::default() }).unwrap();
            assert_eq!(predictor.table_dtype(), dtype);
            let cfg = run_dir::read_config(&run).unwrap();
            let featurizer = Featurizer::new(Tokenizer::new(cfg.tokenizer.clone()), Vocab::read(&run.join("vocab.txt")).unwrap(), &cfg.vocab);
            let mut scratch = Scratch::new(&head);
            let text = std::fs::read_to_string("examples/data/sotu_era_600.tsv").unwrap();
            for line in text.lines().take(200) {
                let words = line.split_once('\t').unwrap().1;
                let z = logits(&table, &head, cfg.model.pooling, &featurizer.features(words), &mut scratch).to_vec();
                assert_eq!(predictor.logits(words), z, "{dtype:?}: logits differ for {words:?}");
            }
        }
        python_reads_the_table(&bundle, &table);
    }
}

/// Python's reader (examples/python/predict.py's loader) sees the same f32
/// values as the Rust table, when the venv CI uses is present.
fn python_reads_the_table(bundle: &Path, table: &EmbeddingTable) {
    let venv =
        std::env::var_os("SPARSEBURN_PY_VENV").map(std::path::PathBuf::from).unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/sparseburn-pyvenv"));
    let python = venv.join("bin/python");
    if !python.exists() {
        eprintln!("skipping the Python read-back: no venv at {} (.ci/run creates it)", venv.display());
        return;
    }
    let out_path = bundle.join("python-table.f32");
    let script = "import sys, numpy as np; sys.path.insert(0, 'examples/python'); import predict; \
                  t = predict.load_table(sys.argv[1]); np.ascontiguousarray(t, dtype='<f4').tofile(sys.argv[2])";
    let out = Command::new(&python).args(["-c", script, &bundle.display().to_string(), &out_path.display().to_string()]).output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    let read: Vec<f32> = bytemuck::pod_collect_to_vec(&std::fs::read(&out_path).unwrap());
    let want = match table.view() {
        TableView::F32(v) => v.to_vec(),
        _ => table.to_f32_vec(),
    };
    assert!(read.iter().map(|x| x.to_bits()).eq(want.iter().map(|x| x.to_bits())), "Python's table differs from the Rust table");
}
