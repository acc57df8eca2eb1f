//! The checkpoint protocol crash-tested the way file-system crash checkers
//! do: the process aborts right after its k-th durable operation (create,
//! write, fsync, rename, remove) for every k of every save of a run, two of
//! them on the background thread. After each crash the newest valid
//! checkpoint exports, and resuming ends bit-identical to a run never stopped.

use std::path::Path;
use std::process::{Command, Output};

use sparseburn::train::checkpoint::Checkpoint;

#[path = "support/checkpoint_state.rs"]
mod checkpoint_state;
use checkpoint_state::restored;

const BIN: &str = env!("CARGO_BIN_EXE_sparseburn");

fn train(dir: &Path, env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["train", "configs/quickstart.toml", "--run-dir", &dir.display().to_string()]);
    for s in ["logging.quiet=true", "vocab.buckets=20000", "train.epochs=2", "checkpoint.every=10", "checkpoint.keep=1", "logging.tensorboard=false"] {
        cmd.args(["--set", s]);
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd.output().expect("run sparseburn")
}

#[test]
fn a_crash_after_any_durable_operation_of_any_save_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let out = train(&reference, &[("SPARSEBURN_COUNT_OPS", "1".into())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ops: Vec<String> = String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.starts_with("durable-op ")).map(str::to_string).collect();
    // Three saves (steps 10 and 20 in the background, 30 at the end), each tens of operations.
    assert!(ops.len() >= 60, "{ops:#?}");
    assert!(ops.iter().any(|l| l.contains("step-00000010")) && ops.iter().any(|l| l.contains("step-00000030")));
    let want = restored(&reference);

    let trial = |k: usize| -> Result<(), String> {
        let dir = tmp.path().join(format!("crash-{k}"));
        let out = train(&dir, &[("SPARSEBURN_CRASH_AFTER_OP", k.to_string())]);
        if out.status.success() {
            return Err(format!("k={k}: the run did not crash"));
        }
        if Checkpoint::open_latest(&dir).is_ok() {
            let bundle = tmp.path().join(format!("bundle-{k}"));
            let e = Command::new(BIN).args(["export", &dir.display().to_string(), "--out", &bundle.display().to_string()]).output().unwrap();
            if !e.status.success() {
                return Err(format!("k={k} ({}): export failed: {}", ops[k - 1], String::from_utf8_lossy(&e.stderr)));
            }
            let r = Command::new(BIN).args(["train", "--resume", &dir.display().to_string()]).output().unwrap();
            if !r.status.success() {
                return Err(format!("k={k} ({}): resume failed: {}", ops[k - 1], String::from_utf8_lossy(&r.stderr)));
            }
        } else {
            // Crashed before the first checkpoint was complete: start again in the same folder.
            let r = Command::new(BIN).args(["train", "--resume", &dir.display().to_string()]).output().unwrap();
            let again = if r.status.success() { r } else { train(&dir, &[]) };
            if !again.status.success() {
                return Err(format!("k={k} ({}): starting again failed: {}", ops[k - 1], String::from_utf8_lossy(&again.stderr)));
            }
        }
        if restored(&dir) != want {
            return Err(format!("k={k} ({}): the resumed run differs from the uninterrupted one", ops[k - 1]));
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    };
    let (trial, n) = (&trial, ops.len());
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2).map(|t| s.spawn(move || (1..=n).filter(|k| k % 2 == t).filter_map(|k| trial(k).err()).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "{} of {} crash points failed:\n{}", failures.len(), ops.len(), failures.join("\n"));
    eprintln!("{} crash points, each exported and resumed bit-identically", ops.len());
}
