//! The trainer end to end: config parsing and its errors, accuracy on the
//! bundled sample, bit-identical resume, and bad data lines.

use std::path::{Path, PathBuf};

use sparseburn::config::Config;
use sparseburn::data::reader::read_examples;
use sparseburn::data::DataFormat;
use sparseburn::train::{self, TrainOptions};

#[path = "support/checkpoint_state.rs"]
mod checkpoint_state;

fn quickstart(extra: &[&str]) -> Config {
    let mut overrides = vec!["logging.quiet=true".to_string(), "logging.tensorboard=false".to_string()];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    Config::load(Path::new("configs/quickstart.toml"), &overrides).expect("quickstart config loads")
}

fn config_error(toml_text: &str, overrides: &[&str]) -> String {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    format!("{:#}", Config::from_toml(toml_text, "test.toml", &overrides).expect_err("config must be rejected"))
}

const MINIMAL: &str = "[data]\ntrain = \"examples/data/sotu_era_600.tsv\"\n";

#[test]
fn config_round_trips_through_toml() {
    let c = quickstart(&[]);
    let again = Config::from_toml(&c.to_toml(), "resolved.toml", &[]).unwrap();
    assert_eq!(c, again);
}

#[test]
fn overrides_are_typed_and_validated_like_the_file() {
    let c = quickstart(&["optimizer.table.lr=0.25", "model.hidden=[16, 8]", "optimizer.table.kind=dense_adam"]);
    assert_eq!(c.optimizer.table.lr(), 0.25);
    assert_eq!(c.model.hidden, vec![16, 8]);
    assert_eq!(c.optimizer.table.name(), "dense_adam");
    let both = quickstart(&["optimizer.lr=0.003"]);
    assert_eq!((both.optimizer.table.lr(), both.optimizer.head.lr), (0.003, 0.003));
    let e = config_error(MINIMAL, &["train.batch_size=lots"]);
    assert!(e.contains("train.batch_size"), "{e}");
}

#[test]
fn every_config_error_names_the_file_and_key() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("[model]\ndimension = 3\n", &[], &["test.toml", "model", "dimension"]),
        ("[model]\ndim = \"big\"\n", &[], &["test.toml", "model.dim"]),
        ("[data]\ntrain = \"no/such/file.tsv\"\n", &[], &["data.train", "no/such/file.tsv"]),
        ("[train]\nbatch_size = 1\n", &[], &["data.train", "missing"]),
        (MINIMAL, &["train.batch_size=0"], &["train.batch_size", "at least 1"]),
        (MINIMAL, &["optimizer.table.lr=-0.1"], &["optimizer.table.lr", "positive"]),
        (MINIMAL, &["optimizer.table.kind=\"adagrad\""], &["optimizer.table.kind", "adagrad"]),
        (MINIMAL, &["placement.dense=\"tpu\""], &["placement.dense"]),
        ("[model\n", &[], &["test.toml", "invalid TOML"]),
    ];
    for (text, overrides, needles) in cases {
        let e = config_error(text, overrides);
        for n in *needles {
            assert!(e.contains(n), "error for {text:?} {overrides:?} should mention {n:?}: {e}");
        }
    }
}

#[test]
fn a_table_that_does_not_fit_is_refused_with_the_numbers() {
    // Holding every row, 50M buckets do not fit in 1 GB.
    let c = quickstart(&["vocab.buckets=50000000", "memory.host_max_gb=1", "memory.table_rows=all"]);
    let dir = tempfile::tempdir().unwrap();
    let e = format!("{:#}", train::train(&c, &TrainOptions { run_dir: Some(dir.path().join("run")), ..Default::default() }).unwrap_err());
    assert!(e.contains("vocab.buckets") && e.contains("memory.host_max_gb") && e.contains("embedding table 12.801 GB"), "{e}");

    // Holding only the rows the data reaches (the default for a lazy optimizer), they do.
    let c = quickstart(&["vocab.buckets=50000000", "memory.host_max_gb=1", "train.epochs=1"]);
    let out = train::train(&c, &TrainOptions { run_dir: Some(dir.path().join("reached")), ..Default::default() }).unwrap();
    assert!(out.table_rows > 50_000_000 && out.resident_rows < 100_000, "{} of {} rows held", out.resident_rows, out.table_rows);
    assert!(out.table_bytes + out.optimizer_state_bytes < 100_000_000 && out.peak_rss_bytes < 1_000_000_000, "{out:?}");
}

#[test]
fn quickstart_trains_well_above_the_majority_class() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = train::train(&quickstart(&[]), &TrainOptions { run_dir: Some(dir.path().join("run")), ..Default::default() }).unwrap();
    // 5 balanced classes: majority 0.20; a linear SVM gets 0.65.
    assert!(outcome.final_eval.accuracy >= 0.45, "accuracy {}", outcome.final_eval.accuracy);
    assert_eq!(outcome.final_eval.examples, 120);
    for f in ["config.toml", "labels.txt", "vocab.txt", "metrics.jsonl", "summary.json"] {
        assert!(dir.path().join("run").join(f).is_file(), "{f} missing");
    }
    // The saved config is the resolved one and loads back to the same experiment.
    let saved = train::run_dir::read_config(&dir.path().join("run")).unwrap();
    assert_eq!(saved, quickstart(&[]));
}

/// Weights and table-optimizer state as the latest checkpoint restores them. (Burn's
/// head-optimizer record serialises a HashMap, so its bytes vary run to run; equal head
/// weights after resuming show its state was restored.)
fn checkpoint_bytes(run: &Path) -> Vec<(String, Vec<u8>)> {
    checkpoint_state::restored(run)
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    for extra in [&["optimizer.table.kind=lazy_adam"][..], &["optimizer.table.kind=dense_adam", "optimizer.table.weight_decay=0.01", "train.schedule=linear"]] {
        let mut args = vec!["train.epochs=3", "checkpoint.every=7", "optimizer.table.bias_correction=per_row", "model.hidden=[8]"];
        args.extend_from_slice(extra);
        let config = quickstart(&args);
        let dir = tempfile::tempdir().unwrap();
        let (whole, broken) = (dir.path().join("whole"), dir.path().join("broken"));
        let full = train::train(&config, &TrainOptions { run_dir: Some(whole.clone()), ..Default::default() }).unwrap();
        // Interrupt mid-epoch, between checkpoints, then resume from the run directory.
        let stopped = train::train(&config, &TrainOptions { run_dir: Some(broken.clone()), stop_after_step: Some(23), ..Default::default() }).unwrap();
        assert!(stopped.interrupted && stopped.steps == 23);
        let resumed = train::train(&config, &TrainOptions { resume: Some(broken.clone()), ..Default::default() }).unwrap();
        assert_eq!(resumed.steps, full.steps);
        for ((name, a), (_, b)) in checkpoint_bytes(&whole).iter().zip(checkpoint_bytes(&broken)) {
            assert!(*a == b, "{extra:?}: {name} differs between the uninterrupted and the resumed run");
        }
        assert_eq!(full.final_eval, resumed.final_eval);
    }
}

#[test]
fn same_seed_is_deterministic_and_other_seeds_differ() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let c = quickstart(&["train.epochs=2", seed]);
        train::train(&c, &TrainOptions { run_dir: Some(dir.path().join(name)), ..Default::default() }).unwrap();
        checkpoint_bytes(&dir.path().join(name))
    };
    let (a, b, c) = (run("a", "experiment.seed=5"), run("b", "experiment.seed=5"), run("c", "experiment.seed=6"));
    assert!(a == b, "same seed must give identical checkpoints");
    assert!(a[1] != c[1], "another seed must give other weights"); // [0] is the step
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn bad_data_lines_are_counted_with_line_numbers_or_rejected_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"a\tgood text one\nno tab here\nb\t   \n\n\tmissing label\nc\t\xff\xfe broken utf8\nb\tgood text two\n";
    let path = write(dir.path(), "train.tsv", data);
    let mut good = Vec::new();
    let stats = read_examples(&path, DataFormat::Tsv, false, |e| good.push(e.label)).unwrap();
    assert_eq!(good, ["a", "b"]);
    assert_eq!((stats.lines, stats.examples, stats.bad), (7, 2, 4));
    let lines: Vec<u64> = stats.bad_samples.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [2, 3, 5, 6]);
    let e = format!("{:#}", read_examples(&path, DataFormat::Tsv, true, |_| {}).unwrap_err());
    assert!(e.contains("train.tsv:2") && e.contains("no TAB"), "{e}");

    // Through the trainer: a file with only bad lines is a clear error.
    let only_bad = write(dir.path(), "bad.tsv", b"nothing\nuseful\n");
    let mut c = quickstart(&[]);
    c.data.train = only_bad;
    let e = format!("{:#}", train::train(&c, &TrainOptions { run_dir: Some(dir.path().join("r")), ..Default::default() }).unwrap_err());
    assert!(e.contains("bad.tsv") && e.contains("no usable examples"), "{e}");
}

#[test]
fn test_labels_never_seen_in_training_count_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let train_file = write(dir.path(), "train.tsv", b"x\talpha beta\ny\tgamma delta\nx\talpha alpha\ny\tdelta gamma\n");
    let test_file = write(dir.path(), "test.tsv", b"x\talpha beta\nz\tnever seen label\n");
    let mut c = quickstart(&["train.epochs=50", "train.batch_size=2", "train.top_k=1"]);
    c.data.train = train_file;
    c.data.test = Some(test_file);
    let out = train::train(&c, &TrainOptions { run_dir: Some(dir.path().join("r")), ..Default::default() }).unwrap();
    assert_eq!(out.final_eval.unknown_labels, 1);
    assert_eq!(out.final_eval.examples, 2);
    assert!(out.final_eval.accuracy <= 0.5, "the unseen label can never be right");
}

#[test]
fn a_bad_set_flag_is_blamed_on_the_flag_not_the_file() {
    // An unknown key, a wrong type and a bad value, each set by a flag.
    for (flag, key) in [("train.epoch=3", "train.epoch"), ("model.dim=\"big\"", "model.dim"), ("train.batch_size=0", "train.batch_size")] {
        let e = config_error(MINIMAL, &[flag]);
        assert!(e.starts_with(&format!("--set {flag}: `{key}`")), "{flag}: {e}");
        assert!(!e.contains("test.toml"), "{flag}: the file is not to blame: {e}");
    }
    // The same mistakes in the file are still the file's, even next to an unrelated flag.
    let e = config_error("[data]\ntrain = \"examples/data/sotu_era_600.tsv\"\n[train]\nepoch = 3\n", &["model.dim=8"]);
    assert!(e.starts_with("test.toml: `train.epoch`"), "{e}");
    let e = config_error("[data]\ntrain = \"examples/data/sotu_era_600.tsv\"\n[train]\nbatch_size = 0\n", &["train.epochs=2"]);
    assert!(e.starts_with("test.toml: `train.batch_size`"), "{e}");
}

#[test]
fn names_that_would_leave_the_log_dir_and_absurd_thread_counts_are_refused() {
    for name in ["../../x", "a/b", "..", ".", "", "a\\\\b"] {
        let e = config_error(MINIMAL, &[&format!("experiment.name=\"{name}\"")]);
        assert!(e.contains("`experiment.name`") && e.contains("plain folder name"), "{name:?}: {e}");
    }
    let e = config_error(MINIMAL, &["experiment.arm=\"../up\""]);
    assert!(e.contains("`experiment.arm`"), "{e}");
    assert!(Config::from_toml(MINIMAL, "test.toml", &["experiment.name=\"my-exp_1.v2\"".into()]).is_ok());

    let e = config_error(MINIMAL, &["train.threads=100000"]);
    assert!(e.contains("`train.threads`") && e.contains("100000") && e.contains("4096"), "{e}");
    assert_eq!(Config::from_toml(MINIMAL, "test.toml", &["train.threads=4096".into()]).unwrap().train.threads, 4096);
}

#[test]
fn sizes_that_overflow_are_refused_by_the_memory_plan_not_a_panic() {
    let huge = 1u64 << 62;
    for (flag, what) in [(format!("model.dim={huge}"), "embedding table"), (format!("model.hidden=[{huge}]"), "head parameters")] {
        let c = quickstart(&[&flag]);
        let dir = tempfile::tempdir().unwrap();
        let options = TrainOptions { run_dir: Some(dir.path().join("run")), ..Default::default() };
        let result = std::panic::catch_unwind(|| train::train(&c, &options));
        let e = format!("{:#}", result.unwrap_or_else(|_| panic!("{flag}: panicked")).expect_err("must be refused"));
        assert!(e.contains("memory plan") && e.contains(what) && e.contains(&huge.to_string()), "{flag}: {e}");
    }
}
