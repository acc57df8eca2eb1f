//! Sparse and delta checkpoints: what they store, that resuming from any of
//! them is bit-identical to never stopping, that checkpointing does not change
//! training, and what happens to a corrupt chain or a second process.

use std::path::{Path, PathBuf};
use std::process::Command;

use sparseburn::config::Config;
use sparseburn::train::checkpoint::{self, Checkpoint};
use sparseburn::train::{self, TrainOptions};

#[path = "support/checkpoint_state.rs"]
mod checkpoint_state;
use checkpoint_state::restored;

const BIN: &str = env!("CARGO_BIN_EXE_sparseburn");

fn quickstart(extra: &[&str]) -> Config {
    let mut overrides: Vec<String> =
        ["logging.quiet=true", "logging.tensorboard=false", "vocab.buckets=20000", "train.epochs=3", "model.hidden=[8]"].iter().map(|s| s.to_string()).collect();
    overrides.extend(extra.iter().map(|s| s.to_string()));
    Config::load(Path::new("configs/quickstart.toml"), &overrides).expect("quickstart config loads")
}

fn train_in(dir: &Path, config: &Config, stop_after_step: Option<u64>) -> train::RunOutcome {
    train::train(config, &TrainOptions { run_dir: Some(dir.to_path_buf()), stop_after_step, ..Default::default() }).unwrap()
}

const OPTIMIZERS: [&[&str]; 4] = [
    &["optimizer.table.kind=lazy_adam"],
    &["optimizer.table.kind=lazy_adam", "optimizer.table.bias_correction=per_row", "optimizer.table.weight_decay=0.01", "train.schedule=linear"],
    &["optimizer.table.kind=dense_adam", "optimizer.table.weight_decay=0.01"],
    &["optimizer.table.kind=sgd"],
];

#[test]
fn resuming_from_a_delta_chain_is_bit_identical_and_checkpointing_does_not_change_training() {
    for extra in OPTIMIZERS {
        let mut args = vec!["checkpoint.every=5", "checkpoint.max_chain=4", "checkpoint.compact_ratio=100", "checkpoint.keep=2"];
        args.extend_from_slice(extra);
        let config = quickstart(&args);
        let tmp = tempfile::tempdir().unwrap();
        let (whole, broken, final_only, all_bases) = (tmp.path().join("whole"), tmp.path().join("broken"), tmp.path().join("final"), tmp.path().join("bases"));
        let full = train_in(&whole, &config, None);
        let want = restored(&whole);

        // Interrupted between checkpoints, then resumed from the chain.
        let stopped = train_in(&broken, &config, Some(23));
        assert!(stopped.interrupted && stopped.steps == 23);
        let resumed = train::train(&config, &TrainOptions { resume: Some(broken.clone()), ..Default::default() }).unwrap();
        assert_eq!(resumed.steps, full.steps);
        assert!(restored(&broken) == want, "{extra:?}: resumed state differs from the uninterrupted run");
        assert_eq!(resumed.final_eval.accuracy, full.final_eval.accuracy);

        // Checkpoint settings never change what is trained: only a final one, or only bases, written in the foreground.
        let mut c = config.clone();
        c.checkpoint.every = 0;
        train_in(&final_only, &c, None);
        assert!(restored(&final_only) == want, "{extra:?}: training changed with checkpoint.every");
        let mut c = config.clone();
        (c.checkpoint.max_chain, c.checkpoint.background) = (0, false);
        let bases = train_in(&all_bases, &c, None);
        assert!(restored(&all_bases) == want, "{extra:?}: training changed with max_chain/background");
        assert_eq!(bases.checkpoint.deltas, 0);

        // A background checkpoint copies its rows first; a foreground one picks
        // them from the live table while writing: the same bytes, link by link.
        let foreground = tmp.path().join("foreground");
        let mut c = config.clone();
        c.checkpoint.background = false;
        train_in(&foreground, &c, None);
        let links = |dir: &Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(checkpoint::checkpoints_dir(dir))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("step-"))
                .collect();
            names.sort();
            names
        };
        assert_eq!(links(&foreground), links(&whole));
        for name in links(&whole) {
            let file = |dir: &Path| std::fs::read(checkpoint::checkpoints_dir(dir).join(&name).join("rows.safetensors")).unwrap();
            assert!(file(&foreground) == file(&whole), "{extra:?}: {name}'s rows differ between a background (copied) and a foreground (picked) write");
        }

        let lazy = !extra[0].ends_with("dense_adam");
        let latest = Checkpoint::open_latest(&whole).unwrap();
        if lazy {
            assert!(full.checkpoint.deltas > 0 && full.checkpoint.bases > 1, "{extra:?}: {:?}", full.checkpoint);
            assert!(latest.chain_steps().len() > 1, "the latest checkpoint is a delta on an older one");
            // 9 checkpoints, a chain at most 5 long (a base and 4 deltas): the final one is the 3rd delta on the base at step 30.
            assert_eq!(latest.chain_steps(), vec![30, 35, 40, 45]);
            // The chain stores exactly the rows some training example uses (every
            // example is in every epoch), not the test set's or the rest of the table.
            let stored = latest.stored_rows().unwrap().expect("a lazy run stores a subset of rows");
            let mut used = train::prepare::prepare(&config).unwrap().train.ids.all().into_owned();
            used.sort_unstable();
            used.dedup();
            assert_eq!(stored, used);
            assert!(stored.len() < latest.recipe().rows);
        } else {
            assert_eq!(latest.stored_rows().unwrap(), None, "a dense optimizer changes every row");
        }
    }
}

/// Flipping one byte of a middle link makes every checkpoint after it
/// unusable: resume must warn naming the file, fall back to the newest
/// checkpoint before it, and still end bit-identical.
#[test]
fn a_corrupt_middle_link_falls_back_to_the_previous_valid_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, dir) = (tmp.path().join("reference"), tmp.path().join("corrupt"));
    let args = |d: &Path| {
        let mut a: Vec<String> = vec!["train".into(), "configs/quickstart.toml".into(), "--run-dir".into(), d.display().to_string()];
        for s in
            ["logging.quiet=true", "vocab.buckets=20000", "train.epochs=3", "checkpoint.every=5", "checkpoint.max_chain=20", "checkpoint.compact_ratio=100", "checkpoint.keep=20"]
        {
            a.extend(["--set".to_string(), s.to_string()]);
        }
        a
    };
    for d in [&reference, &dir] {
        let out = Command::new(BIN).args(args(d)).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let want = restored(&reference);
    let chain = Checkpoint::open_latest(&dir).unwrap().chain_steps();
    assert!(chain.len() >= 5, "chain {chain:?}");
    let middle = chain[chain.len() / 2];
    let victim = checkpoint::checkpoints_dir(&dir).join(format!("step-{middle:08}")).join("rows.safetensors");
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() - 7;
    bytes[at] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();

    let out = Command::new(BIN).args(["train", "--resume", &dir.display().to_string()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning") && stderr.contains(&victim.display().to_string()) && stderr.contains("checksum mismatch"), "{stderr}");
    let fallback = format!("step-{:08}", chain[chain.len() / 2 - 1]);
    assert!(stderr.contains(&format!("falling back to {}", checkpoint::checkpoints_dir(&dir).join(&fallback).display())), "{stderr}");
    assert!(restored(&dir) == want, "after falling back and training on, the state differs from the reference");
}

#[test]
fn a_dangling_latest_falls_back_and_export_still_works() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let config = quickstart(&["checkpoint.every=5", "checkpoint.keep=3"]);
    train_in(&dir, &config, None);
    let root = checkpoint::checkpoints_dir(&dir);
    let newest = checkpoint::latest(&dir).unwrap();
    std::fs::rename(&newest, root.join("elsewhere")).unwrap();
    let found = checkpoint::latest(&dir).unwrap();
    assert!(found < newest && found.starts_with(&root), "{found:?}");
    let out = Command::new(BIN).args(["export", &dir.display().to_string(), "--out", &tmp.path().join("bundle").display().to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_second_process_on_the_same_run_directory_is_refused_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut first = Command::new(BIN)
        .args(["train", "configs/quickstart.toml", "--run-dir", &dir.display().to_string(), "--set", "logging.quiet=true", "--set", "train.epochs=100000"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !dir.join("metrics.jsonl").exists() {
        assert!(std::time::Instant::now() < deadline, "training never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = Command::new(BIN).args(["train", "--resume", &dir.display().to_string()]).output().unwrap();
    let _ = first.kill();
    first.wait().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("in use by process") && stderr.contains(&first.id().to_string()), "{stderr}");
}

/// Every link of a chain names its parent, and pruning keeps whole chains:
/// with `keep = 1` the newest delta's base and intermediate links survive.
#[test]
fn pruning_never_removes_a_link_a_kept_checkpoint_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let config = quickstart(&["checkpoint.every=4", "checkpoint.keep=1", "checkpoint.max_chain=50", "checkpoint.compact_ratio=100"]);
    train_in(&dir, &config, None);
    let latest = Checkpoint::open_latest(&dir).unwrap();
    let chain = latest.chain_steps();
    let on_disk: Vec<PathBuf> = std::fs::read_dir(checkpoint::checkpoints_dir(&dir)).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    assert_eq!(on_disk.len(), chain.len(), "exactly the latest chain is kept: {on_disk:?} vs {chain:?}");
    assert!(chain.len() > 2);
}

/// A lazy optimizer's trainer holds only the rows the data reaches
/// (`memory.table_rows = "reached"`, the default): the weights, optimizer
/// state and metrics must be exactly those of holding every row, and resuming
/// a reached-rows run must be bit-identical too.
#[test]
fn holding_only_the_reached_rows_trains_exactly_what_holding_all_rows_does() {
    let kinds: [&[&str]; 4] =
        [OPTIMIZERS[0], OPTIMIZERS[1], &["optimizer.table.kind=rowwise_adagrad", "optimizer.table.weight_decay=0.01"], &["optimizer.table.kind=partial_rowwise_adam"]];
    for extra in kinds {
        let tmp = tempfile::tempdir().unwrap();
        let with = |rows: &str| {
            // Many buckets: most rows are never reached, as in a real hashed table.
            let mut args = vec!["checkpoint.every=7", "checkpoint.max_chain=3", "vocab.buckets=200000"];
            args.extend_from_slice(extra);
            let setting = format!("memory.table_rows={rows}");
            args.push(&setting);
            quickstart(&args)
        };
        let (reached_dir, all_dir, resumed_dir) = (tmp.path().join("reached"), tmp.path().join("all"), tmp.path().join("resumed"));
        let reached = train_in(&reached_dir, &with("reached"), None);
        let all = train_in(&all_dir, &with("all"), None);
        assert!(reached.resident_rows < reached.table_rows / 2, "{extra:?}: {} of {} rows held", reached.resident_rows, reached.table_rows);
        assert_eq!(all.resident_rows, all.table_rows);
        assert!(reached.table_bytes < all.table_bytes && reached.optimizer_state_bytes < all.optimizer_state_bytes);
        let want = restored(&all_dir);
        assert!(restored(&reached_dir) == want, "{extra:?}: the reached-rows run trained other weights or state");
        assert_eq!(reached.final_eval.loss.to_bits(), all.final_eval.loss.to_bits(), "{extra:?}");
        assert_eq!(reached.final_eval.accuracy, all.final_eval.accuracy);

        let stopped = train_in(&resumed_dir, &with("reached"), Some(17));
        assert!(stopped.interrupted);
        train::train(&with("reached"), &TrainOptions { resume: Some(resumed_dir.clone()), ..Default::default() }).unwrap();
        assert!(restored(&resumed_dir) == want, "{extra:?}: resuming a reached-rows run changed training");
    }
}

/// `memory.examples = "disk"` keeps the encoded examples in an unlinked file,
/// read through the page cache a batch at a time: the weights, optimizer state
/// and metrics must be exactly those of holding them in memory, with resident
/// rows and with every row, the run directory must hold the same files (no
/// file of examples left behind), and resuming must be bit-identical too.
#[test]
fn examples_on_disk_train_exactly_what_examples_in_memory_do() {
    for rows in ["reached", "all"] {
        let tmp = tempfile::tempdir().unwrap();
        let with = |home: &str| {
            let (rows, home) = (format!("memory.table_rows={rows}"), format!("memory.examples={home}"));
            quickstart(&["checkpoint.every=7", "optimizer.table.weight_decay=0.01", &rows, &home])
        };
        let (ram_dir, disk_dir, resumed_dir) = (tmp.path().join("ram"), tmp.path().join("disk"), tmp.path().join("resumed"));
        let ram = train_in(&ram_dir, &with("ram"), None);
        let disk = train_in(&disk_dir, &with("disk"), None);
        let want = restored(&ram_dir);
        assert!(restored(&disk_dir) == want, "{rows}: examples on disk trained other weights or state");
        assert_eq!(disk.final_eval.loss.to_bits(), ram.final_eval.loss.to_bits(), "{rows}");
        assert_eq!((disk.final_eval.accuracy, disk.final_eval.top_k_accuracy), (ram.final_eval.accuracy, ram.final_eval.top_k_accuracy));
        let names = |dir: &Path| {
            let mut n: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            n.sort();
            n
        };
        assert_eq!(names(&disk_dir), names(&ram_dir), "{rows}: the run directories differ");
        // What stays in memory: offsets (8 bytes) and labels (4) per example, not the ids.
        let p = train::prepare::prepare(&with("ram")).unwrap();
        let examples = (p.train.len() + 1 + p.test.len() + 1) * 8 + (p.train.len() + p.test.len()) * 4;
        assert_eq!(ram.examples_in_memory_bytes as usize, examples + (p.train.ids.len() + p.test.ids.len()) * 4, "{rows}");
        assert_eq!(disk.examples_in_memory_bytes as usize, examples, "{rows}");

        let stopped = train_in(&resumed_dir, &with("disk"), Some(17));
        assert!(stopped.interrupted);
        train::train(&with("disk"), &TrainOptions { resume: Some(resumed_dir.clone()), ..Default::default() }).unwrap();
        assert!(restored(&resumed_dir) == want, "{rows}: resuming with examples on disk changed training");
    }
}
