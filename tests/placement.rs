//! Memory plan against what is really allocated, and the device-placement log.
//! (One test binary of its own: it measures this process's resident memory.)

use std::path::Path;
use std::process::Command;

use sparseburn::config::Config;
use sparseburn::device::{DenseDevice, TABLE_DEVICE};
use sparseburn::memory::MemoryPlan;
use sparseburn::model::{EmbeddingTable, HeadConfig, SparseGrad, TableInit};

fn config(extra: &[&str]) -> Config {
    let overrides: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    Config::load(Path::new("configs/quickstart.toml"), &overrides).unwrap()
}

#[test]
fn memory_plan_matches_measured_allocations() {
    for extra in [
        &["optimizer.table.kind=lazy_adam"][..],
        &["optimizer.table.kind=dense_adam", "optimizer.table.bias_correction=per_row", "optimizer.table.weight_decay=0.01"],
        &["optimizer.table.kind=sgd"],
    ] {
        let c = config(extra);
        let rows = 2_000_000;
        let head = HeadConfig { input: c.model.dim, hidden: vec![], classes: 5 };
        let plan = MemoryPlan::new(&c, rows, &head, 0, DenseDevice::Cpu);
        let planned = |what: &str| plan.items.iter().find(|i| i.what == what).unwrap().bytes;

        // A gradient on every 16th row: one row in every 4 KiB page of every per-row array.
        let dim = c.model.dim;
        let ids: Vec<u32> = (0..rows as u32).step_by(16).collect();
        let grad = SparseGrad::from_duplicates(dim, &ids, &vec![0.5; ids.len() * dim]);
        let before = sparseburn::sys::rss_bytes().unwrap();
        let mut table = EmbeddingTable::new(rows, dim, TableInit::default(), 1);
        let mut optimizer = c.optimizer.table.init(rows, dim);
        // State pages are mapped when rows are first updated (not pre-faulted): a run's
        // memory follows the rows it touches; one step here touches every page.
        optimizer.step(&mut table, &grad, 1e-3);
        let grown = sparseburn::sys::rss_bytes().unwrap() - before;

        assert_eq!(planned("embedding table"), table.bytes() as u64);
        assert_eq!(planned("table optimizer state"), optimizer.state_bytes() as u64, "{extra:?}");
        // Every page touched: resident memory grows by the plan.
        let want = (planned("embedding table") + planned("table optimizer state")) as f64;
        let ratio = grown as f64 / want;
        assert!((0.97..1.05).contains(&ratio), "{extra:?}: RSS grew {grown} bytes for a plan of {want} ({ratio:.3})");
        assert!(plan.bytes_on(TABLE_DEVICE) >= want as u64);
        drop((table, optimizer));
    }
}

#[test]
fn placement_log_names_every_part_and_its_device() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sparseburn"))
        .args(["train", "configs/quickstart.toml", "--set", "logging.quiet=false", "--set", "train.epochs=1", "--set", "logging.log_device_placement=true"])
        .args(["--set", "model.hidden=[16]", "--set", "logging.tensorboard=false", "--set"])
        .arg(format!("logging.dir={}", dir.path().display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    for line in [
        "embedding/table [205788, 64] f32, 256 B/row (+ lazy_adam state): /device:CPU:0",
        "embedding/bag_pool (mean) and its sparse backward: /device:CPU:0",
        "head/linear_0 weight [64, 16], bias [16]: /device:CPU:0",
        "head/linear_1 weight [16, 5], bias [5]: /device:CPU:0",
        "loss/softmax_cross_entropy, optimizer/adam: /device:CPU:0",
    ] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }
    assert!(log.contains("memory plan:") && log.contains("/device:CPU:0: "), "{log}");
}
