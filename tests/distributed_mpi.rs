//! Distributed training across processes: `mpirun -np 2` and `-np 4
//! --oversubscribe` on the built binary, against a one-process run; a killed
//! rank stops the job, and `--resume` continues it bit-identically.
//! Needs `--features mpi` and Open MPI's `mpirun` (skipped, saying so, without it).
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sparseburn::distributed::model_of_run;
use sparseburn::train::checkpoint::Checkpoint;
use sparseburn::train::RunOutcome;

const BIN: &str = env!("CARGO_BIN_EXE_sparseburn");
const SETS: [&str; 5] = ["logging.quiet=true", "logging.tensorboard=false", "vocab.buckets=20000", "train.epochs=2", "train.threads=1"];

fn mpirun_available() -> bool {
    let ok = Command::new("mpirun").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: `mpirun` is not installed (Debian/Ubuntu: apt-get install libopenmpi-dev openmpi-bin libclang-dev)");
    }
    ok
}

/// `mpirun -np n` (oversubscribed: the CI machine has 2 cores) running `sparseburn args`.
fn mpirun(n: usize, args: &[String]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-np", &n.to_string(), "--oversubscribe", BIN]).args(args);
    // Open MPI refuses root, and containers lack its single-copy shared memory.
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1").env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    c
}

fn train_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["train".to_string(), "configs/quickstart.toml".into(), "--run-dir".into(), dir.display().to_string()];
    for s in SETS.iter().chain(extra) {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args
}

fn check(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn model(dir: &Path) -> (Vec<f32>, Vec<f32>) {
    let ckpt = Checkpoint::open_latest(dir).unwrap();
    let (table, head) = model_of_run(dir, &ckpt).unwrap();
    (table.as_slice().to_vec(), head.layers.iter().flat_map(|l| l.weight.iter().chain(&l.bias).copied()).collect())
}

fn summary(dir: &Path) -> RunOutcome {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap()
}

/// ‖a − b‖ / ‖b‖ in f64, for the failure message.
fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    (diff / b.iter().map(|&y| (y as f64).powi(2)).sum::<f64>()).sqrt()
}

#[test]
fn both_modes_on_two_and_four_processes_match_one_process() {
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let single = tmp.path().join("single");
    check(&Command::new(BIN).args(train_args(&single, &[])).output().unwrap(), "the one-process run");
    let (want_table, want_head) = model(&single);
    let want = summary(&single);
    for n in [2, 4] {
        let mut models = Vec::new();
        for mode in ["replicated", "row_sharded"] {
            let dir = tmp.path().join(format!("{mode}-{n}"));
            let set = format!("distributed.mode={mode}");
            check(&mpirun(n, &train_args(&dir, &[&set])).output().unwrap(), &format!("mpirun -np {n} ({mode})"));
            let (table, head) = model(&dir);
            // No value is a sum over ranks (tests/distributed.rs says why): one process's bits.
            let differing = |a: &[f32], b: &[f32]| a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            let (dt, dh) = (differing(&table, &want_table), differing(&head, &want_head));
            assert!(
                table.len() == want_table.len() && dt == 0 && dh == 0,
                "{mode} -np {n}: {dt} table and {dh} head values differ from one process's (relative L2 {:e}, {:e})",
                relative_l2(&table, &want_table),
                relative_l2(&head, &want_head)
            );
            let got = summary(&dir);
            assert_eq!(got.steps, want.steps);
            assert_eq!(
                (got.final_eval.loss.to_bits(), got.final_eval.accuracy.to_bits(), got.final_eval.top_k_accuracy.to_bits()),
                (want.final_eval.loss.to_bits(), want.final_eval.accuracy.to_bits(), want.final_eval.top_k_accuracy.to_bits()),
                "{mode} -np {n}: evaluation {:?} differs from one process's {:?}",
                got.final_eval,
                want.final_eval
            );
            let stats = got.distributed.expect("rank 0 reports its traffic");
            assert_eq!(stats.world_size, n);
            if mode == "replicated" {
                for r in 1..n {
                    assert_eq!(model(&dir.join(format!("ranks/rank-{r}"))), (table.clone(), head.clone()), "{mode} -np {n}: rank {r} differs from rank 0");
                }
            }
            models.push((table, head));
        }
        assert!(models[0] == models[1], "-np {n}: row_sharded differs from replicated");
    }
}

#[test]
fn a_killed_rank_stops_the_job_within_seconds_and_resume_finishes_it_bit_identically() {
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let extra = ["distributed.mode=row_sharded", "checkpoint.every=20", "train.epochs=40"];
    let whole = tmp.path().join("whole");
    check(&mpirun(2, &train_args(&whole, &extra)).output().unwrap(), "the uninterrupted run");

    let dir = tmp.path().join("killed");
    let mut job = mpirun(2, &train_args(&dir, &extra)).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Rank 1 holds its run directory's lock file, which names its PID; wait for a checkpoint first.
    let lock = dir.join("ranks/rank-1/.lock");
    let started = Instant::now();
    while !(dir.join("ranks/rank-1/checkpoints/LATEST").is_file() && std::fs::read_to_string(&lock).is_ok_and(|p| p.trim().parse::<u32>().is_ok())) {
        assert!(started.elapsed() < Duration::from_secs(120), "rank 1 never checkpointed");
        assert!(job.try_wait().unwrap().is_none(), "the job ended before rank 1 could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = std::fs::read_to_string(&lock).unwrap().trim().to_string();
    let killed = Instant::now();
    assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    let out = job.wait_with_output().unwrap();
    let took = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the job must fail when a rank dies");
    assert!(took < Duration::from_secs(30), "the job took {took:?} to stop after rank 1 died");
    assert!(stderr.contains("signal 9") || stderr.contains("Killed") || stderr.contains("exited"), "mpirun should say a rank died:\n{stderr}");
    eprintln!("the job stopped {took:?} after rank 1 was killed; mpirun said:\n{stderr}");

    let resumed = mpirun(2, &["train".into(), "--resume".into(), dir.display().to_string()]).output().unwrap();
    check(&resumed, "the resumed run");
    assert_eq!(model(&dir), model(&whole), "the resumed run must end bit-identical to the uninterrupted one");
    assert_eq!(summary(&dir).final_eval.loss.to_bits(), summary(&whole).final_eval.loss.to_bits());

    // A different number of ranks is refused, naming both.
    let out = mpirun(3, &["train".into(), "--resume".into(), dir.display().to_string(), "--set".into(), "train.epochs=41".into()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("2 ranks") && stderr.contains("not 3"), "{stderr}");
}
