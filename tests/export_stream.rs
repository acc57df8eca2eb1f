//! Export streams the table a range of rows at a time (`TableSource`):
//! every range equals the same rows of `Checkpoint::model`, which builds the
//! whole table in memory with the optimizer's own decay code, for each
//! optimizer's state, decay still owed, half rows and delta chains; and the
//! exported bundle's table, read back by the safetensors crate, is those bytes.

use std::path::Path;

use safetensors::SafeTensors;
use sparseburn::config::Config;
use sparseburn::export::{self, ExportOptions};
use sparseburn::train::checkpoint::{self, Checkpoint, TableSource};
use sparseburn::train::eval::evaluate;
use sparseburn::train::prepare::prepare;
use sparseburn::train::{self, TrainOptions, Trainer};

fn quickstart(extra: &[&str]) -> Config {
    let mut overrides: Vec<String> = [
        "logging.quiet=true",
        "logging.tensorboard=false",
        "vocab.buckets=3000",
        "train.epochs=2",
        "checkpoint.every=5",
        "checkpoint.max_chain=4",
        "checkpoint.compact_ratio=100",
        "checkpoint.keep=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    overrides.extend(extra.iter().map(|s| s.to_string()));
    Config::load(Path::new("configs/quickstart.toml"), &overrides).expect("quickstart config loads")
}

const CASES: [&[&str]; 6] = [
    // Owed decay with per-row bias correction and a schedule; only the reached rows are held.
    &["optimizer.table.kind=lazy_adam", "optimizer.table.weight_decay=0.05", "optimizer.table.bias_correction=per_row", "train.schedule=linear"],
    // Half rows: decay is rounded stochastically, keyed by the row's number in the whole table.
    &["optimizer.table.kind=lazy_adam", "optimizer.table.weight_decay=0.05", "model.table_dtype=bf16"],
    &["optimizer.table.kind=rowwise_adagrad", "optimizer.table.weight_decay=0.05", "model.table_dtype=f16", "memory.table_rows=all"],
    &["optimizer.table.kind=partial_rowwise_adam", "optimizer.table.weight_decay=0.05"],
    // Every row in every link.
    &["optimizer.table.kind=dense_adam", "optimizer.table.weight_decay=0.05"],
    &["optimizer.table.kind=sgd"],
];

fn ranges_of(source: &TableSource, chunk: usize) -> Vec<u8> {
    let rows = source.recipe().rows;
    let mut out = Vec::new();
    for start in (0..rows).step_by(chunk) {
        out.extend_from_slice(source.read(start..(start + chunk).min(rows)).unwrap().as_bytes());
    }
    out
}

#[test]
fn every_range_and_the_bundle_equal_the_whole_table_built_in_memory() {
    for extra in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        train::train(&quickstart(extra), &TrainOptions { run_dir: Some(run.clone()), ..Default::default() }).unwrap();
        let mut folders: Vec<_> = std::fs::read_dir(checkpoint::checkpoints_dir(&run))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("step-"))
            .collect();
        folders.sort();
        let mut saw_delta = false;
        for folder in &folders {
            let ckpt = Checkpoint::open(folder).unwrap();
            saw_delta |= ckpt.chain_steps().len() > 1;
            let (table, _) = ckpt.model().unwrap();
            let whole = table.as_bytes();
            let source = TableSource::new(&ckpt).unwrap();
            // Ranges of one row, of a size that divides nothing, and the whole table.
            for chunk in [1, 7, 999, table.rows()] {
                assert!(ranges_of(&source, chunk) == whole, "{extra:?} {}: ranges of {chunk} rows differ from the whole table", folder.display());
            }

            let bundle = export::export_with(&run, &tmp.path().join(folder.file_name().unwrap()), &ExportOptions { checkpoint: Some(folder.clone()), force: false }).unwrap();
            let bytes = std::fs::read(bundle.join("model.safetensors")).unwrap();
            let tensors = SafeTensors::deserialize(&bytes).unwrap();
            let exported = tensors.tensor("table").unwrap();
            assert_eq!(exported.shape(), [table.rows(), table.dim()]);
            assert!(exported.data() == whole, "{extra:?} {}: the bundle's table differs from the whole table", folder.display());
        }
        assert!(saw_delta, "{extra:?}: no checkpoint was a delta chain");
    }
}

#[test]
fn a_range_past_the_table_is_refused_naming_the_table_size() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train::train(&quickstart(&[]), &TrainOptions { run_dir: Some(run.clone()), ..Default::default() }).unwrap();
    let source = TableSource::new(&Checkpoint::open_latest(&run).unwrap()).unwrap();
    let rows = source.recipe().rows;
    let e = source.read(rows - 1..rows + 1).err().unwrap().to_string();
    assert!(e.contains(&format!("outside the table's {rows}")), "{e}");
}

/// A lazy table (`memory.table_rows = "all"`) owing weight decay ends training
/// decaying only the rows it holds, not writing the whole table: the final
/// evaluation must still be that of the weights export builds, and the
/// in-memory model (which materialises and decays the rest) must be them.
#[test]
fn a_lazy_table_owing_decay_ends_training_with_the_weights_export_builds() {
    for dtype in ["f32", "bf16"] {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let dtype_set = format!("model.table_dtype={dtype}");
        // Enough buckets that most rows are never materialised.
        let config = quickstart(&["optimizer.table.kind=lazy_adam", "optimizer.table.weight_decay=0.05", "memory.table_rows=all", "vocab.buckets=100000", &dtype_set]);
        let trained = Trainer::new(config.clone()).unwrap().run_dir(run.clone()).train().unwrap();
        let (table, head) = Checkpoint::open_latest(&run).unwrap().model().unwrap();
        assert!(trained.model.table().as_bytes() == table.as_bytes(), "{dtype}: the in-memory model differs from the checkpoint's weights");
        // Evaluated independently on those weights, from freshly prepared data.
        let data = prepare(&config).unwrap();
        let want = evaluate(&table, &head, config.model.pooling, &data.test, config.train.top_k);
        assert_eq!(trained.outcome.final_eval, want, "{dtype}: the final evaluation did not see the decayed weights");
    }
}
