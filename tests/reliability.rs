//! Faults a user causes by accident: SIGKILL at random points, Ctrl-C, corrupt
//! or truncated checkpoints, a full disk, a diverging loss. None may lose work:
//! the latest complete checkpoint always loads, and resuming ends bit-identical
//! to a run that was never interrupted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sparseburn::train::checkpoint::{self, Checkpoint};

#[path = "support/checkpoint_state.rs"]
mod checkpoint_state;
use checkpoint_state::restored;

const BIN: &str = env!("CARGO_BIN_EXE_sparseburn");

/// A small, fast quickstart that checkpoints often (20k buckets keep checkpoints small).
fn train_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["train", "configs/quickstart.toml"].iter().map(|s| s.to_string()).collect();
    for set in ["logging.quiet=true", "vocab.buckets=20000", "train.epochs=12", "checkpoint.every=7", "checkpoint.keep=2", "logging.histogram_every=10"].iter().chain(extra) {
        args.push("--set".into());
        args.push(set.to_string());
    }
    args
}

fn spawn(args: &[String]) -> Child {
    Command::new(BIN).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start sparseburn")
}

fn run(args: &[String]) -> Output {
    Command::new(BIN).args(args).output().expect("run sparseburn")
}

fn fresh(dir: &Path) -> Vec<String> {
    let mut a = train_args(&[]);
    a.extend(["--run-dir".to_string(), dir.display().to_string()]);
    a
}

fn resume(dir: &Path) -> Vec<String> {
    vec!["train".into(), "--resume".into(), dir.display().to_string()]
}

/// The final weights and table-optimizer state, as bytes.
fn final_state(dir: &Path) -> Vec<(String, Vec<u8>)> {
    restored(dir)
}

fn has_checkpoint(dir: &Path) -> bool {
    checkpoint::latest(dir).is_ok()
}

/// Deterministic pseudo-random numbers for kill times (a test must be repeatable).
struct Lcg(u64);
impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn sigkill_at_random_points_then_resume_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let started = Instant::now();
    let out = run(&fresh(&reference));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let duration = started.elapsed();
    let want = final_state(&reference);

    let mut rng = Lcg(2024);
    let (mut kills, mut during_checkpoint, mut before_first_checkpoint) = (0, 0, 0);
    // At least 10 trials and 10 kills (a kill can miss a run that already finished), at most 30 trials.
    let mut trials = 0;
    while (trials < 10 || kills < 10) && trials < 30 {
        let trial = trials;
        trials += 1;
        let dir = tmp.path().join(format!("trial-{trial}"));
        // Up to two kills per trial at random times, then let it finish.
        for attempt in 0..3 {
            let args = if has_checkpoint(&dir) { resume(&dir) } else { fresh(&dir) };
            let mut child = spawn(&args);
            if attempt < 2 {
                std::thread::sleep(duration.mul_f64(rng.next_f64() * 0.9));
                if child.try_wait().unwrap().is_none() {
                    child.kill().unwrap(); // SIGKILL
                    kills += 1;
                }
                child.wait().unwrap();
                let tmp_dirs = std::fs::read_dir(dir.join("checkpoints")).map_or(0, |d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-")).count());
                during_checkpoint += (tmp_dirs > 0) as usize;
                before_first_checkpoint += (!has_checkpoint(&dir)) as usize;
                // Whatever happened, the latest checkpoint (if any) is complete and verifies.
                if let Ok(latest) = checkpoint::latest(&dir) {
                    let c = Checkpoint::open(&latest).unwrap_or_else(|e| panic!("trial {trial}: latest checkpoint unreadable after kill: {e:#}"));
                    c.model().unwrap();
                }
            } else {
                let out = child.wait_with_output().unwrap();
                assert!(out.status.success(), "trial {trial}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        assert!(final_state(&dir) == want, "trial {trial}: resumed weights differ from the uninterrupted run");
    }
    eprintln!("{trials} trials, {kills} SIGKILLs ({during_checkpoint} left a half-written checkpoint folder, {before_first_checkpoint} came before the first checkpoint): all resumed bit-identical");
    assert!(kills >= 10);
}

#[test]
fn ctrl_c_writes_a_final_checkpoint_and_resume_continues_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, dir) = (tmp.path().join("reference"), tmp.path().join("interrupted"));
    assert!(run(&fresh(&reference)).status.success());
    let mut child = spawn(&fresh(&dir));
    // Wait until training is under way, then send SIGINT.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(dir.join("metrics.jsonl")).map_or(0, |m| m.lines().count()) < 20 {
        assert!(Instant::now() < deadline, "training never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C must end the run cleanly, got {status}");
    let stopped = Checkpoint::open(&checkpoint::latest(&dir).unwrap()).unwrap();
    assert!(stopped.state.step < 180, "interrupted at step {}", stopped.state.step);
    // TensorBoard files were flushed: the event file holds more than its header.
    let events = std::fs::read_dir(&dir).unwrap().flatten().find(|e| e.file_name().to_string_lossy().starts_with("events.out")).unwrap();
    assert!(events.metadata().unwrap().len() > 1000);
    assert!(run(&resume(&dir)).status.success());
    assert!(final_state(&dir) == final_state(&reference));
}

fn latest_file(dir: &Path, name: &str) -> PathBuf {
    checkpoint::latest(dir).unwrap().join(name)
}

fn resume_error(dir: &Path) -> String {
    let out = run(&resume(dir));
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn corrupt_checkpoints_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    // One checkpoint only (no older one to fall back to).
    assert!(run(&[fresh(&dir), ["train.epochs=1", "checkpoint.every=0"].iter().flat_map(|s| ["--set".to_string(), s.to_string()]).collect()].concat()).status.success());
    let latest_name = std::fs::read_to_string(dir.join("checkpoints/LATEST")).unwrap();
    let rows = latest_file(&dir, "rows.safetensors");
    let original = std::fs::read(&rows).unwrap();

    // A flipped byte in the middle of the stored rows.
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    std::fs::write(&rows, &flipped).unwrap();
    let e = resume_error(&dir);
    assert!(e.contains("rows.safetensors") && e.contains("checksum mismatch") && e.contains("no complete checkpoint"), "{e}");

    // Truncated.
    std::fs::write(&rows, &original[..original.len() / 3]).unwrap();
    let e = resume_error(&dir);
    assert!(e.contains("rows.safetensors") && e.contains("checksum mismatch"), "{e}");
    std::fs::write(&rows, &original).unwrap();

    // A checkpoint from another format version says so.
    let manifest = latest_file(&dir, "MANIFEST.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"format_version\": 2", "\"format_version\": 99")).unwrap();
    let e = resume_error(&dir);
    assert!(e.contains("format version 99") && e.contains("not supported"), "{e}");
    std::fs::write(&manifest, &text).unwrap();

    // A corrupt manifest.
    std::fs::write(&manifest, "{ not json").unwrap();
    let e = resume_error(&dir);
    assert!(e.contains("MANIFEST.json") && e.contains("corrupt manifest"), "{e}");
    std::fs::write(&manifest, &text).unwrap();

    // A LATEST pointing nowhere falls back to the checkpoint that is there, with a warning.
    std::fs::write(dir.join("checkpoints/LATEST"), "step-99999999").unwrap();
    let out = run(&resume(&dir));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{e}");
    assert!(e.contains("warning") && e.contains("step-99999999") && e.contains(latest_name.trim()), "{e}");

    // A corrupt saved config names the file and the problem.
    std::fs::write(dir.join("config.toml"), "[train]\nbatch_size = \"x\"\n").unwrap();
    let e = resume_error(&dir);
    assert!(e.contains("config.toml") && e.contains("train.batch_size"), "{e}");
}

#[test]
fn a_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut first = fresh(&dir);
    first.extend(["--set".into(), "train.epochs=1".into(), "--set".into(), "vocab.buckets=200000".into()]);
    assert!(run(&first).status.success());
    let before = checkpoint::latest(&dir).unwrap();
    let before_bytes = final_state(&dir);
    // Resume with a 4 MB file-size limit: the next checkpoint (the rows an epoch touches, > 4 MB) cannot be written.
    // SIGXFSZ is ignored so the write fails with EFBIG instead of killing the process.
    // Extend the run by one epoch (resume reads the saved config).
    let config = dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("epochs = 1", "epochs = 2");
    std::fs::write(&config, text).unwrap();
    let out = Command::new("bash").arg("-c").arg(format!("trap '' XFSZ; ulimit -f 4096; exec {BIN} train --resume {}", dir.display())).output().unwrap();
    assert!(!out.status.success(), "the checkpoint cannot fit, so the run must fail");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("rows.safetensors") && (e.contains("File too large") || e.contains("No space")), "{e}");
    // The previous checkpoint is still the latest, complete and unchanged.
    assert_eq!(checkpoint::latest(&dir).unwrap(), before);
    Checkpoint::open(&before).unwrap();
    assert!(final_state(&dir) == before_bytes);
}

#[test]
fn a_diverging_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut args = fresh(&dir);
    // Huge head steps overflow f32 within a few steps.
    args.extend(["--set".into(), "optimizer.head.lr=3e38".into(), "--set".into(), "optimizer.table.lr=3e38".into(), "--set".into(), "checkpoint.every=1".into()]);
    let out = run(&args);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("loss became") && e.contains("at step"), "{e}");
    let latest = checkpoint::latest(&dir).expect("a checkpoint before the divergence");
    assert!(e.contains(&latest.display().to_string()), "the message names the last good checkpoint: {e}");
    Checkpoint::open(&latest).unwrap().model().unwrap();
}

/// Predictions of the bundle at `dir` for a few texts, after loading it with
/// every checksum verified (panics if the bundle is incomplete or corrupt).
fn bundle_predictions(dir: &Path) -> Vec<(Vec<String>, Vec<f32>)> {
    let p = sparseburn::serve::Predictor::load(dir).unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
    ["the railroads of the west", "war and peace", ""].iter().map(|t| p.predict_one(t, 3)).map(|p| (p.labels, p.scores)).collect()
}

fn staging_folders(base: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(base).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with(".tmp-export-")).collect()
}

#[test]
fn sigkill_during_export_never_leaves_a_missing_or_partial_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    // A 205k-row table (≈53 MB bundle), so that kills land while it is written and hashed.
    let mut args = fresh(&dir);
    args.extend(["--set".into(), "train.epochs=1".into(), "--set".into(), "vocab.buckets=200000".into()]);
    assert!(run(&args).status.success());
    let base = tmp.path().join("models");
    let v1 = base.join("1");
    let export = |extra: &[&str]| -> Vec<String> { ["export", dir.to_str().unwrap()].iter().chain(extra).map(|s| s.to_string()).collect() };
    let started = Instant::now();
    let out = run(&export(&["--out", v1.to_str().unwrap()]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let duration = started.elapsed();
    let want = bundle_predictions(&v1);

    let mut rng = Lcg(77);
    let (mut kills, mut left_staging) = (0, 0);
    let mut trials = 0;
    // At least 12 trials, and more (up to 40) until 6 kills landed: how long an
    // export takes varies with the machine's load, so some kills come too late.
    for trial in 0..40 {
        if trial >= 12 && kills >= 6 {
            break;
        }
        trials += 1;
        // Alternate: replace version 1 in place, or add the next version.
        let args = if trial % 2 == 0 { export(&["--out", v1.to_str().unwrap(), "--force"]) } else { export(&["--base", base.to_str().unwrap()]) };
        let mut child = spawn(&args);
        std::thread::sleep(duration.mul_f64(rng.next_f64() * 1.1));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        left_staging += staging_folders(&base).len().min(1);
        // Version 1 is never missing nor partial, whatever was replacing it;
        // every numbered version that exists is complete.
        assert_eq!(bundle_predictions(&v1), want, "trial {trial}: version 1");
        for (v, path) in sparseburn::export::versions(&base).unwrap() {
            assert_eq!(bundle_predictions(&path), want, "trial {trial}: version {v}");
        }
    }
    // A completed export removes what killed ones left behind.
    let out = run(&export(&["--base", base.to_str().unwrap()]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(staging_folders(&base), Vec::<PathBuf>::new(), "stale staging folders are removed");
    eprintln!("{trials} exports, {kills} SIGKILLs ({left_staging} left a staging folder): every bundle complete");
    assert!(kills >= 6, "too few kills landed ({kills}): the export finished first");
    assert!(left_staging >= 1, "no kill landed during a write");
}
