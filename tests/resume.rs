//! Resuming a finished run, extending one, and what may change on resume.

use std::path::Path;
use std::process::{Command, Output};

#[path = "support/checkpoint_state.rs"]
mod checkpoint_state;
use checkpoint_state::restored;

const BIN: &str = env!("CARGO_BIN_EXE_sparseburn");

fn sparseburn(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run sparseburn")
}

fn train_fresh(dir: &Path, extra: &[&str]) {
    let d = dir.display().to_string();
    let mut args = vec!["train", "configs/quickstart.toml", "--run-dir", &d];
    for s in ["logging.quiet=true", "vocab.buckets=20000", "checkpoint.every=10"].iter().chain(extra) {
        args.extend(["--set", s]);
    }
    let out = sparseburn(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Occurrences of `needle` in the run's TensorBoard event files (raw bytes: tags are stored verbatim).
fn occurrences_in_events(dir: &Path, needle: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("events.out"))
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            bytes.windows(needle.len()).filter(|w| *w == needle.as_bytes()).count()
        })
        .sum()
}

#[test]
fn a_finished_run_is_left_unchanged_extended_on_request_and_other_changes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (two, three) = (tmp.path().join("two"), tmp.path().join("three"));
    train_fresh(&two, &["train.epochs=2"]);
    train_fresh(&three, &["train.epochs=3"]);
    let dir = two.display().to_string();
    let summary = std::fs::read(two.join("summary.json")).unwrap();
    let metrics = std::fs::read(two.join("metrics.jsonl")).unwrap();

    let out = sparseburn(&["train", "--resume", &dir]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("already complete"), "{stderr}");
    assert_eq!(std::fs::read(two.join("summary.json")).unwrap(), summary, "summary.json must not change");
    assert_eq!(std::fs::read(two.join("metrics.jsonl")).unwrap(), metrics, "metrics.jsonl must not change");

    let out = sparseburn(&["train", "--resume", &dir, "--set", "optimizer.table.lr=0.5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("optimizer.table.lr") && stderr.contains("--resume"), "{stderr}");

    // Extending a 2-epoch run by one epoch is the 3-epoch run, bit for bit.
    let out = sparseburn(&["train", "--resume", &dir, "--set", "train.epochs=3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(restored(&two) == restored(&three), "the extended run differs from a 3-epoch run");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(two.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 45);
    assert!(summary["examples_per_second"].as_f64().unwrap() > 0.0);
    // One graph and one HParams session per run, however often it was resumed.
    assert_eq!(occurrences_in_events(&two, "_hparams_/session_start_info"), 1);
    assert_eq!(occurrences_in_events(&three, "_hparams_/session_start_info"), 1);
}

#[test]
fn eval_every_replaces_the_per_epoch_evaluation_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train_fresh(&run, &["train.epochs=2", "train.eval_every=10"]);
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let evals: Vec<u64> =
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).filter(|v| v["kind"] == "eval").map(|v| v["step"].as_u64().unwrap()).collect();
    // 15 steps an epoch: every 10 steps, and once at the end (not at step 15).
    assert_eq!(evals, vec![10, 20, 30]);
}

#[test]
fn resuming_on_changed_data_is_refused_naming_the_file_and_changing_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data.tsv"), tmp.path().join("run"));
    let original = std::fs::read_to_string("examples/data/sotu_era_600.tsv").unwrap();
    std::fs::write(&data, &original).unwrap();
    let set = format!("data.train={:?}", data.display().to_string());
    let r = run.display().to_string();
    let out = sparseburn(&[
        "train",
        "configs/quickstart.toml",
        "--run-dir",
        &r,
        "--set",
        "logging.quiet=true",
        "--set",
        "vocab.buckets=20000",
        "--set",
        "train.epochs=2",
        "--set",
        &set,
        "--set",
        "train.max_steps=20",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vocab = std::fs::read(run.join("vocab.txt")).unwrap();
    // One label's lines removed: labels would shift onto other outputs.
    let first_label = original.lines().next().unwrap().split('\t').next().unwrap().to_string();
    let kept: String = original.lines().filter(|l| !l.starts_with(&format!("{first_label}\t"))).map(|l| format!("{l}\n")).collect();
    std::fs::write(&data, kept).unwrap();
    let out = sparseburn(&["train", "--resume", &r, "--set", "train.max_steps=30"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "resuming on changed data must fail");
    assert!(stderr.contains(&data.display().to_string()) && stderr.contains("refusing to resume"), "{stderr}");
    assert_eq!(std::fs::read(run.join("vocab.txt")).unwrap(), vocab, "run files must not change before the check");
}

#[test]
fn a_reused_run_directory_a_refused_plan_and_a_non_utf8_path_start_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // A fresh run in a folder holding another run's checkpoints would continue them under new settings.
    let run = tmp.path().join("run");
    train_fresh(&run, &["train.max_steps=10"]);
    let r = run.display().to_string();
    let out = sparseburn(&["train", "configs/quickstart.toml", "--run-dir", &r, "--set", "optimizer.table.lr=0.5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--resume") && stderr.contains("earlier run"), "{stderr}");

    // A memory plan that is refused leaves no empty run folder behind.
    let logs = tmp.path().join("logs");
    let l = format!("logging.dir={:?}", logs.display().to_string());
    let out = sparseburn(&["train", "configs/quickstart.toml", "--set", &l, "--set", "vocab.buckets=50000000", "--set", "memory.host_max_gb=1", "--set", "memory.table_rows=all"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("memory.host_max_gb"));
    let experiment = logs.join("quickstart");
    let left: Vec<_> = std::fs::read_dir(&experiment).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");

    // A run directory whose path is not UTF-8 is refused before training.
    use std::os::unix::ffi::OsStrExt;
    let bad = tmp.path().join(std::ffi::OsStr::from_bytes(b"run-\xff"));
    let out = Command::new(BIN).args(["train", "configs/quickstart.toml", "--run-dir"]).arg(&bad).args(["--set", "logging.quiet=true"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("UTF-8"), "{stderr}");
    assert!(!bad.join("checkpoints").exists(), "nothing was trained");
}
