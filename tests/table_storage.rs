//! `model.table_storage = "mmap"`: a table (and its optimizer state) in a
//! mapped file trains exactly as in memory, the file holds the trained rows
//! for any other reader, checkpoints stay sparse, and files it must not use
//! (someone else's, too large for the disk) are refused with the reason.

use std::path::Path;

use sparseburn::config::Config;
use sparseburn::train::checkpoint::Checkpoint;
use sparseburn::train::{self, TrainOptions};

#[path = "support/checkpoint_state.rs"]
mod checkpoint_state;
use checkpoint_state::restored;

fn quickstart(extra: &[String]) -> Config {
    let mut overrides: Vec<String> =
        ["logging.quiet=true", "logging.tensorboard=false", "vocab.buckets=20000", "train.epochs=3", "model.hidden=[8]"].iter().map(|s| s.to_string()).collect();
    overrides.extend(extra.iter().cloned());
    Config::load(Path::new("configs/quickstart.toml"), &overrides).expect("quickstart config loads")
}

fn mmap_at(path: &Path) -> Vec<String> {
    vec!["model.table_storage=\"mmap\"".into(), format!("model.table_path={:?}", path.display().to_string())]
}

fn train_in(dir: &Path, config: &Config, stop_after_step: Option<u64>) -> anyhow::Result<train::RunOutcome> {
    train::train(config, &TrainOptions { run_dir: Some(dir.to_path_buf()), stop_after_step, ..Default::default() })
}

/// The table file read with plain file reads (not a mapping): its header's
/// JSON and the bytes of region `name`, with the region's shape.
fn read_region(path: &Path, name: &str) -> (Vec<u64>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let magic = b"sparseburn-table-file 1\n";
    assert!(bytes.starts_with(magic), "{} does not start with the magic line", path.display());
    let header: serde_json::Value = serde_json::from_str(std::str::from_utf8(&bytes[magic.len()..64 * 1024]).unwrap().trim_end()).unwrap();
    let region = header["regions"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no region {name} in {header}"));
    let (offset, len) = (region["offset"].as_u64().unwrap() as usize, region["bytes"].as_u64().unwrap() as usize);
    let shape = region["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    (shape, bytes[offset..offset + len].to_vec())
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn a_mapped_table_trains_bit_identically_and_the_file_holds_the_trained_rows() {
    for (optimizer, table_rows) in [("lazy_adam", "all"), ("rowwise_adagrad", "all"), ("lazy_adam", "reached"), ("dense_adam", "all")] {
        let extra = vec![format!("optimizer.table.kind={optimizer:?}"), format!("memory.table_rows={table_rows:?}"), "checkpoint.every=7".into()];
        let tmp = tempfile::tempdir().unwrap();
        let memory = train_in(&tmp.path().join("memory"), &quickstart(&extra), None).unwrap();
        let file = tmp.path().join("tables").join("quickstart.table");
        let mapped_config = quickstart(&[extra.clone(), mmap_at(&file)].concat());
        let mapped = train_in(&tmp.path().join("mmap"), &mapped_config, None).unwrap();
        let what = format!("{optimizer}, memory.table_rows = {table_rows}");
        assert!(restored(&tmp.path().join("mmap")) == restored(&tmp.path().join("memory")), "{what}: the mapped run trained other weights");
        assert_eq!(mapped.final_eval.accuracy, memory.final_eval.accuracy, "{what}");
        let counts = |o: &train::RunOutcome| (o.checkpoint.written, o.checkpoint.bases, o.checkpoint.deltas);
        assert_eq!(counts(&mapped), counts(&memory), "{what}: other checkpoints were written");
        // The same rows are stored (the sizes differ only by the run folder's name in the records).
        assert!(mapped.checkpoint.bytes.abs_diff(memory.checkpoint.bytes) < 64, "{what}: {} vs {} checkpoint bytes", mapped.checkpoint.bytes, memory.checkpoint.bytes);

        // Every row the checkpoint stores is in the file, as read back without the mapping.
        let ckpt = Checkpoint::open_latest(&tmp.path().join("mmap")).unwrap();
        let (table, _) = ckpt.model().unwrap();
        let (shape, bytes) = read_region(&file, "table");
        let rows = f32s(&bytes);
        let dim = table.dim();
        assert_eq!(shape[1], dim as u64);
        let stored = ckpt.stored_rows().unwrap().unwrap_or_else(|| (0..table.rows() as u32).collect());
        assert!(!stored.is_empty());
        // With reached rows the file's row i is the i-th reached id; the stored ids are among them.
        let reached = (table_rows == "reached").then(|| {
            let data = train::prepare::prepare(&mapped_config).unwrap();
            let mut ids: Vec<u32> = data.train.ids.all().iter().chain(data.test.ids.all().iter()).copied().collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        });
        let file_row = |global: u32| -> usize { reached.as_ref().map_or(global as usize, |ids| ids.binary_search(&global).unwrap()) };
        let probe: Vec<u32> = stored.iter().copied().step_by((stored.len() / 50).max(1)).collect();
        for g in probe {
            let r = file_row(g);
            assert_eq!(&rows[r * dim..(r + 1) * dim], table.row(g as usize), "{what}: row {g} in the file");
        }
        if optimizer == "rowwise_adagrad" {
            let (shape, bytes) = read_region(&file, "state.sum_sq");
            let state = ckpt.table_optimizer().unwrap();
            let want = state.state().into_iter().find(|(n, _)| *n == "sum_sq").unwrap().1;
            let sparseburn::optim::StateData::F32(want) = want else { panic!("sum_sq is f32") };
            assert_eq!(shape, vec![table.rows() as u64, 1]);
            assert_eq!(f32s(&bytes), want, "{what}: the accumulator in the file");
        }
    }
}

#[test]
fn resuming_a_mapped_run_reuses_its_own_file_and_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("t.table");
    let config = quickstart(&[mmap_at(&file), vec!["checkpoint.every=5".into(), "optimizer.table.kind=\"rowwise_adagrad\"".into()]].concat());
    train_in(&tmp.path().join("whole"), &quickstart(&["checkpoint.every=5".into(), "optimizer.table.kind=\"rowwise_adagrad\"".into()]), None).unwrap();
    let stopped = train_in(&tmp.path().join("broken"), &config, Some(23)).unwrap();
    assert!(stopped.interrupted);
    // The file now holds rows trained past the step-20 checkpoint: the resumed run must not trust them.
    train::train(&config, &TrainOptions { resume: Some(tmp.path().join("broken")), ..Default::default() }).unwrap();
    assert!(restored(&tmp.path().join("broken")) == restored(&tmp.path().join("whole")), "resumed mapped run differs from an uninterrupted in-memory one");

    // Another run may not take the file over.
    let err = train_in(&tmp.path().join("other"), &config, None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("model.table_path") && msg.contains("holds the table of run") && msg.contains("broken"), "{msg}");
}

#[test]
fn the_first_checkpoint_of_a_mapped_lazy_table_stores_only_touched_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("t.table");
    let config =
        quickstart(&[mmap_at(&file), vec!["vocab.buckets=400000".into(), "memory.table_rows=\"all\"".into(), "checkpoint.every=0".into(), "train.epochs=1".into()]].concat());
    let out = train_in(&tmp.path().join("run"), &config, None).unwrap();
    assert_eq!(out.checkpoint.written, 1);
    let ckpt = Checkpoint::open_latest(&tmp.path().join("run")).unwrap();
    let stored = ckpt.stored_rows().unwrap().expect("a lazy table's first checkpoint stores a subset of rows");
    let rows = ckpt.recipe().rows;
    let table_bytes = (rows * 64 * 4) as u64;
    assert!(stored.len() * 10 < rows, "{} of {rows} rows stored", stored.len());
    // lazy_adam: a row of the table, m and v (3 × 256 bytes) per stored row, plus the small head.
    let row_bytes = 3 * 64 * 4;
    assert!(out.checkpoint.bytes < (stored.len() * row_bytes) as u64 + 1_000_000, "first checkpoint {} bytes for {} stored rows", out.checkpoint.bytes, stored.len());
    assert!(out.checkpoint.bytes * 8 < 3 * table_bytes, "first checkpoint {} bytes for a {}-byte table + state", out.checkpoint.bytes, 3 * table_bytes);
    // The file itself is the whole table (reserved up front).
    assert!(std::fs::metadata(&file).unwrap().len() >= table_bytes);
}

#[test]
fn files_the_run_must_not_use_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Not a table file: left as it was.
    let foreign = tmp.path().join("notes.txt");
    std::fs::write(&foreign, "keep me").unwrap();
    let err = train_in(&tmp.path().join("a"), &quickstart(&mmap_at(&foreign)), None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("model.table_path") && msg.contains("not a sparseburn table file"), "{msg}");
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "keep me");

    // More than the disk holds: 100M rows with lazy_adam need ~77 GB; refused
    // with the numbers before anything is written, and no file is left behind.
    let file = tmp.path().join("huge.table");
    let big = quickstart(&[mmap_at(&file), vec!["vocab.buckets=100000000".into(), "memory.table_rows=\"all\"".into()]].concat());
    let dir = tmp.path().join("b");
    let free = {
        let s = rustix::fs::statvfs(tmp.path()).unwrap();
        s.f_bavail * s.f_frsize
    };
    let need = 100_000_000u64 * 64 * 4 * 3;
    if need > free {
        let msg = format!("{:#}", train_in(&dir, &big, None).unwrap_err());
        assert!(msg.contains("model.table_path") && msg.contains("need 76.") && msg.contains("free"), "{msg}");
        assert!(!file.exists(), "a refused table file is removed");
    } else {
        eprintln!("skipped the free-space refusal: {free} bytes free on the temp filesystem hold a {need}-byte table");
    }
}

#[test]
fn table_storage_settings_are_checked() {
    let load = |extra: &[&str]| {
        let o: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Config::load(Path::new("configs/quickstart.toml"), &o).map(|_| ()).map_err(|e| format!("{e:#}"))
    };
    let e = load(&["model.table_storage=\"mmap\""]).unwrap_err();
    assert!(e.contains("`model.table_path`") && e.contains("required"), "{e}");
    let e = load(&["model.table_path=\"x.table\""]).unwrap_err();
    assert!(e.contains("`model.table_path`") && e.contains("only used with"), "{e}");
    let e = load(&["model.table_storage=\"disk\""]).unwrap_err();
    assert!(e.contains("model.table_storage") && e.contains("mmap"), "{e}");
    let e = load(&["model.table_storage=\"mmap\"", "model.table_path=\"src\""]).unwrap_err();
    assert!(e.contains("`model.table_path`") && e.contains("must name a file"), "{e}");
    load(&["model.table_storage=\"mmap\"", "model.table_path=\"x.table\""]).unwrap();
}
