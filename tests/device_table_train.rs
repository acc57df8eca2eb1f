//! Training with the device table (`placement.embedding = "burn-cpu"`: Burn
//! tensors on the CPU backend) against the host path (`"cpu"`).
//!
//! Tolerance: none. On a CPU backend the trainer sums segments with
//! `SegmentReduce::Sequential`, which adds a bag's rows and a row's gradients
//! in the host's order with the host's f32 operations, and the per-row Adam
//! scalars are computed on the host in f64 exactly as the host LazyAdam does
//! (tests/device_table.rs checks one step at a time). So a whole run, its
//! checkpoints and its evaluations must equal the host run's bit for bit; any
//! difference is a bug in the wiring (a missed step, a stale host copy, a
//! wrong row id), not rounding.

use std::path::Path;
use std::process::Command;

use sparseburn::config::Config;
use sparseburn::device::TABLE_DEVICE;
use sparseburn::memory::MemoryPlan;
use sparseburn::model::HeadConfig;
use sparseburn::serve::Predictor;
use sparseburn::train::{self, TrainOptions, Trainer};

#[path = "support/checkpoint_state.rs"]
mod checkpoint_state;
use checkpoint_state::restored;

const BIN: &str = env!("CARGO_BIN_EXE_sparseburn");
const DEVICE: &str = "placement.embedding=burn-cpu";

fn quickstart(extra: &[&str]) -> Config {
    let mut overrides: Vec<String> = ["logging.quiet=true", "logging.tensorboard=false"].iter().map(|s| s.to_string()).collect();
    overrides.extend(extra.iter().map(|s| s.to_string()));
    Config::load(Path::new("configs/quickstart.toml"), &overrides).expect("quickstart config loads")
}

/// The `(kind, loss)` of every metrics record, in order (train and eval).
fn losses(run: &Path) -> Vec<(String, u32)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["kind"].as_str().unwrap().to_string(), (v["loss"].as_f64().unwrap() as f32).to_bits()))
        .collect()
}

#[test]
fn the_device_table_trains_the_quickstart_to_the_host_paths_accuracy_bit_for_bit() {
    let short = ["vocab.buckets=20000", "train.epochs=3", "model.hidden=[8]"];
    let options: [&[&str]; 4] = [
        // The quickstart as shipped (30 epochs, reached rows).
        &[],
        // Every row held, a hidden layer.
        &["memory.table_rows=all", "vocab.buckets=20000", "train.epochs=3", "model.hidden=[8]"],
        // Per-row bias correction, catch-up weight decay (owed decay applied at the end), a schedule.
        &["optimizer.table.bias_correction=per_row", "optimizer.table.weight_decay=0.01", "train.schedule=linear", short[0], short[1], short[2]],
        &["optimizer.table.bias_correction=none", "model.pooling=sqrtn", short[0], short[1]],
    ];
    for extra in options {
        let tmp = tempfile::tempdir().unwrap();
        let (host_dir, device_dir) = (tmp.path().join("host"), tmp.path().join("device"));
        let host = Trainer::new(quickstart(extra)).unwrap().run_dir(&host_dir).train().unwrap();
        let mut with_device = extra.to_vec();
        with_device.push(DEVICE);
        let device = Trainer::new(quickstart(&with_device)).unwrap().run_dir(&device_dir).train().unwrap();

        assert_eq!(device.outcome.steps, host.outcome.steps);
        // Guessing among the 5 labels scores about 0.2.
        assert!(host.outcome.final_eval.accuracy > 0.3, "{extra:?}: the host run itself did not learn ({:?})", host.outcome.final_eval);
        assert_eq!(device.outcome.final_eval.accuracy, host.outcome.final_eval.accuracy, "{extra:?}");
        assert_eq!(device.outcome.final_eval.loss.to_bits(), host.outcome.final_eval.loss.to_bits(), "{extra:?}");
        assert_eq!(losses(&device_dir), losses(&host_dir), "{extra:?}: a step or an evaluation differs");
        assert!(restored(&device_dir) == restored(&host_dir), "{extra:?}: the checkpoints differ");
        // The models returned in memory predict alike.
        for text in ["the state of the union is strong", "congress and the people", ""] {
            assert_eq!(device.model.logits(text), host.model.logits(text), "{extra:?}: {text:?}");
        }
    }
}

#[test]
fn resuming_a_device_table_run_is_bit_identical_to_never_stopping() {
    for extra in [&[][..], &["optimizer.table.bias_correction=per_row", "optimizer.table.weight_decay=0.01", "train.schedule=linear"]] {
        let mut args = vec![DEVICE, "vocab.buckets=20000", "train.epochs=4", "model.hidden=[8]", "checkpoint.every=5", "checkpoint.max_chain=3"];
        args.extend_from_slice(extra);
        let config = quickstart(&args);
        let tmp = tempfile::tempdir().unwrap();
        let (whole, broken) = (tmp.path().join("whole"), tmp.path().join("broken"));
        let full = train::train(&config, &TrainOptions { run_dir: Some(whole.clone()), ..Default::default() }).unwrap();
        assert_eq!(full.steps, 60);

        // N/2 steps, then the rest from the checkpoint written at the stop.
        let stopped = train::train(&config, &TrainOptions { run_dir: Some(broken.clone()), stop_after_step: Some(30), ..Default::default() }).unwrap();
        assert!(stopped.interrupted && stopped.steps == 30);
        let resumed = train::train(&config, &TrainOptions { resume: Some(broken.clone()), ..Default::default() }).unwrap();
        assert_eq!(resumed.steps, 60);
        assert!(restored(&broken) == restored(&whole), "{extra:?}: the resumed run's table, head or optimizer state differs");
        assert_eq!(resumed.final_eval.loss.to_bits(), full.final_eval.loss.to_bits());
        assert_eq!(losses(&broken), losses(&whole), "{extra:?}");
    }
}

#[test]
fn an_exported_device_table_run_predicts_like_the_model_in_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let trained = Trainer::new(quickstart(&[DEVICE, "vocab.buckets=20000", "train.epochs=3"])).unwrap().run_dir(&run).train().unwrap();
    let bundle = tmp.path().join("bundle");
    // Through the CLI, as a user exports.
    let out = Command::new(BIN).args(["export", run.to_str().unwrap(), "--out", bundle.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let predictor = Predictor::load(&bundle).unwrap();
    let texts = ["the state of the union is strong", "war and peace", "taxes, tariffs and the national debt", "zzqx unseen words only", ""];
    for text in texts {
        assert_eq!(predictor.logits(text), trained.model.logits(text), "{text:?}");
    }
    let predictions = predictor.predict(&texts, 1);
    for (text, p) in texts.iter().zip(&predictions) {
        assert_eq!(p.labels[0], trained.model.predict(text, 1)[0].0, "{text:?}");
    }
}

#[test]
fn the_placement_log_and_memory_plan_show_the_device_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["train", "configs/quickstart.toml", "--set", "train.epochs=1", "--set", "logging.log_device_placement=true", "--set", DEVICE])
        .args(["--set", "logging.tensorboard=false", "--set"])
        .arg(format!("logging.dir={}", dir.path().display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("embedding/table [205788, 64] f32, 256 B/row (+ lazy_adam state): /device:CPU:0 (Burn device table on burn-cpu"), "{log}");
    assert!(log.contains("host copy of the table") && log.contains("host copy of the optimizer state"), "{log}");

    // The plan counts the table and its state on the table's device and, for
    // the host copy, again in host memory (both are the CPU here).
    let head = HeadConfig { input: 64, hidden: vec![], classes: 5 };
    let on_host = |c: &Config| MemoryPlan::new(c, 1_000_000, &head, 0, sparseburn::device::DenseDevice::Cpu);
    let (host, device) = (on_host(&quickstart(&[])), on_host(&quickstart(&[DEVICE])));
    // Weights, m and v in f32, and LazyAdam's u64 step counter.
    let table_and_state = 3 * 1_000_000 * 64 * 4 + 8;
    assert_eq!(device.bytes_on(TABLE_DEVICE) - host.bytes_on(TABLE_DEVICE), table_and_state);
}

#[test]
fn bad_placements_are_refused_naming_the_keys() {
    let err = |extra: &[&str]| format!("{:#}", Config::load(Path::new("configs/quickstart.toml"), &extra.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err());
    let e = err(&["placement.embedding=tpu"]);
    assert!(e.contains("placement.embedding") && e.contains("burn-cpu") && e.contains("\"tpu\""), "{e}");
    let e = err(&[DEVICE, "optimizer.table.kind=sgd"]);
    assert!(e.contains("optimizer.table.kind") && e.contains("burn-cpu") && e.contains("lazy_adam") && e.contains("sgd"), "{e}");
    let e = err(&[DEVICE, "optimizer.table.kind=rowwise_adagrad"]);
    assert!(e.contains("optimizer.table.kind") && e.contains("rowwise_adagrad"), "{e}");
    #[cfg(not(feature = "cuda"))]
    {
        let e = err(&["placement.embedding=cuda:0", "placement.dense=cpu"]);
        assert!(e.contains("placement.embedding") && e.contains("--features cuda"), "{e}");
    }
    #[cfg(feature = "cuda")]
    {
        let e = err(&["placement.embedding=cuda:0"]);
        assert!(e.contains("placement.dense") && e.contains("cuda:0"), "{e}");
        let c = Config::load(Path::new("configs/quickstart.toml"), &["placement.embedding=cuda:0".into(), "placement.dense=cuda:0".into()]).unwrap();
        assert_eq!(c.placement.embedding, "cuda:0");
    }
}

/// With `--features cuda` the plan puts the table, m and v on the GPU and
/// `memory.gpu_max_gb` refuses them (no GPU is needed: no driver call).
#[cfg(feature = "cuda")]
#[test]
fn the_memory_plan_checks_a_cuda_table_against_gpu_max_gb() {
    let c = quickstart(&["placement.embedding=cuda:0", "placement.dense=cuda:0", "memory.gpu_max_gb=0.5"]);
    let head = HeadConfig { input: 64, hidden: vec![], classes: 5 };
    let dense = sparseburn::device::DenseDevice::Cuda(0);
    let plan = MemoryPlan::new(&c, 1_000_000, &head, 0, dense);
    // 1M rows × 64 × 4 bytes × (table, m, v) = 0.768 GB on the GPU.
    assert!(plan.bytes_on("/device:GPU:0") >= 3 * 1_000_000 * 64 * 4);
    let e = format!("{:#}", plan.check(&c, dense).unwrap_err());
    assert!(e.contains("memory.gpu_max_gb") && e.contains("cuda:0"), "{e}");
    MemoryPlan::new(&c, 200_000, &head, 0, dense).check(&c, dense).expect("0.154 GB fits in 0.5 GB");
}
