//! Distributed training over the in-process (threads) collective: both
//! modes at W = 2 and 4 against one process on the same global batches;
//! replicated ranks bit-identical; resume and refused shapes.

use std::path::{Path, PathBuf};

use sparseburn::config::{Config, DistributedMode};
use sparseburn::distributed::{model_of_run, Group};
use sparseburn::train::checkpoint::Checkpoint;
use sparseburn::train::{train, RunOutcome, TrainOptions};

fn config(mode: DistributedMode, extra: &[&str]) -> Config {
    let mut sets: Vec<String> =
        ["logging.quiet=true", "logging.tensorboard=false", "vocab.buckets=20000", "train.epochs=2", "train.threads=1"].iter().map(|s| s.to_string()).collect();
    sets.push(format!("distributed.mode={}", mode.name()));
    sets.extend(extra.iter().map(|s| s.to_string()));
    Config::load(Path::new("configs/quickstart.toml"), &sets).unwrap()
}

fn options(dir: &Path) -> TrainOptions {
    TrainOptions { run_dir: Some(dir.to_path_buf()), ..Default::default() }
}

/// Runs every rank of a `w`-rank job on its own thread; outcomes in rank order.
fn run_group(config: &Config, w: usize, options: &TrainOptions) -> Vec<anyhow::Result<RunOutcome>> {
    let handles: Vec<_> = Group::threads(w)
        .into_iter()
        .map(|group| {
            let (config, options) = (config.clone(), TrainOptions { group: Some(group), ..options.clone() });
            std::thread::spawn(move || train(&config, &options))
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("a rank panicked")).collect()
}

fn model(dir: &Path) -> (Vec<f32>, Vec<f32>) {
    let ckpt = Checkpoint::open_latest(dir).unwrap();
    let (table, head) = model_of_run(dir, &ckpt).unwrap();
    (table.as_slice().to_vec(), head.layers.iter().flat_map(|l| l.weight.iter().chain(&l.bias).copied()).collect())
}

/// ‖a − b‖ / ‖b‖ over all the weights, in f64.
fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

fn single(tmp: &Path, extra: &[&str]) -> (PathBuf, RunOutcome) {
    let dir = tmp.join("single");
    let outcome = train(&config(DistributedMode::None, extra), &options(&dir)).unwrap();
    (dir, outcome)
}

/// Trains `mode` on `w` ranks, checks it against the one-process run, and returns its weights.
fn check_against_single(mode: DistributedMode, w: usize, single_dir: &Path, single: &RunOutcome, tmp: &Path, extra: &[&str]) -> (Vec<f32>, Vec<f32>) {
    let dir = tmp.join(format!("{}-{w}", mode.name()));
    let outcomes: Vec<RunOutcome> = run_group(&config(mode, extra), w, &options(&dir)).into_iter().map(Result::unwrap).collect();
    let (table, head) = model(&dir);
    let (want_table, want_head) = model(single_dir);
    // The same global batches, and no value is a sum over ranks (the head runs
    // on the gathered batch; each row's gradient is summed by one rank in
    // example order): the one-process weights and metrics, bit for bit.
    let differing = |a: &[f32], b: &[f32]| a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    let (dt, dh) = (differing(&table, &want_table), differing(&head, &want_head));
    assert!(
        table.len() == want_table.len() && dt == 0 && dh == 0,
        "{} W={w}: {dt} of {} table values and {dh} of {} head values differ from one process's (relative L2 {:e}, {:e})",
        mode.name(),
        table.len(),
        head.len(),
        relative_l2(&table, &want_table),
        relative_l2(&head, &want_head)
    );
    for o in &outcomes {
        assert_eq!(o.steps, single.steps);
        let (e, want) = (&o.final_eval, &single.final_eval);
        assert_eq!((e.examples, e.k), (want.examples, want.k));
        assert_eq!(
            (e.accuracy.to_bits(), e.top_k_accuracy.to_bits(), e.loss.to_bits()),
            (want.accuracy.to_bits(), want.top_k_accuracy.to_bits(), want.loss.to_bits()),
            "{} W={w}: evaluation {e:?} differs from one process's {want:?}",
            mode.name()
        );
        let stats = o.distributed.as_ref().expect("a distributed run reports its traffic");
        assert_eq!((stats.mode, stats.world_size), (mode, w));
        assert!(stats.bytes_sent_per_step > 0.0);
    }
    if mode == DistributedMode::Replicated {
        // Every replica applied the same updates: bit-identical weights and optimizer state.
        let rank0 = std::fs::read(Checkpoint::open_latest(&dir).unwrap().dir.join("rows.safetensors")).unwrap();
        for r in 1..w {
            let other = dir.join(format!("ranks/rank-{r}"));
            assert_eq!(model(&other), (table.clone(), head.clone()), "rank {r}'s weights differ from rank 0's");
            let rows = std::fs::read(Checkpoint::open_latest(&other).unwrap().dir.join("rows.safetensors")).unwrap();
            assert!(rows == rank0, "rank {r}'s checkpoint (rows and optimizer state) differs from rank 0's");
        }
    }
    (table, head)
}

#[test]
fn replicated_and_row_sharded_match_one_process_at_two_and_four_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let (single_dir, single) = single(tmp.path(), &[]);
    for w in [2, 4] {
        let replicated = check_against_single(DistributedMode::Replicated, w, &single_dir, &single, tmp.path(), &[]);
        let sharded = check_against_single(DistributedMode::RowSharded, w, &single_dir, &single, tmp.path(), &[]);
        assert!(replicated == sharded, "W={w}: row_sharded differs from replicated");
    }
}

#[test]
fn row_sharded_with_every_row_held_and_hidden_layers_matches_one_process() {
    // memory.table_rows = "all": ids are global rows; a hidden layer: the head is more than one matmul.
    let tmp = tempfile::tempdir().unwrap();
    let extra = ["memory.table_rows=\"all\"", "model.hidden=[16]", "train.epochs=1"];
    let (single_dir, single) = single(tmp.path(), &extra);
    let sharded = check_against_single(DistributedMode::RowSharded, 3, &single_dir, &single, tmp.path(), &extra);
    let replicated = check_against_single(DistributedMode::Replicated, 3, &single_dir, &single, tmp.path(), &extra);
    assert!(replicated == sharded, "row_sharded differs from replicated");
}

#[test]
fn a_row_sharded_rank_holds_a_quarter_of_the_rows_and_its_examples_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, single) = single(tmp.path(), &["train.max_steps=2"]);
    let outcomes: Vec<RunOutcome> =
        run_group(&config(DistributedMode::RowSharded, &["train.max_steps=2"]), 4, &options(&tmp.path().join("sharded"))).into_iter().map(Result::unwrap).collect();
    let held: usize = outcomes.iter().map(|o| o.resident_rows).sum();
    assert_eq!(held, single.resident_rows, "the shards partition the rows");
    for o in &outcomes {
        assert!(o.resident_rows.abs_diff(single.resident_rows / 4) <= 1, "{} of {}", o.resident_rows, single.resident_rows);
        assert!(
            (o.optimizer_state_bytes as f64) <= single.optimizer_state_bytes as f64 / 4.0 * 1.01,
            "state {} bytes, one process {}",
            o.optimizer_state_bytes,
            single.optimizer_state_bytes
        );
        // Every rank reads every example: their ids stay on disk (memory.examples = "auto").
        assert!(o.examples_in_memory_bytes * 5 < single.examples_in_memory_bytes, "examples {} bytes, one process {}", o.examples_in_memory_bytes, single.examples_in_memory_bytes);
    }
}

#[test]
fn an_interrupted_distributed_run_resumes_bit_identically_and_needs_the_same_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in [DistributedMode::Replicated, DistributedMode::RowSharded] {
        let c = config(mode, &["checkpoint.every=7"]);
        let whole = tmp.path().join(format!("{}-whole", mode.name()));
        run_group(&c, 2, &options(&whole)).into_iter().for_each(|r| drop(r.unwrap()));
        let parts = tmp.path().join(format!("{}-parts", mode.name()));
        let stopped = run_group(&c, 2, &TrainOptions { stop_after_step: Some(11), ..options(&parts) });
        assert!(stopped.into_iter().all(|r| r.unwrap().interrupted));
        // Resumed by a different number of ranks: refused, naming both.
        let wrong = run_group(&c, 3, &TrainOptions { resume: Some(parts.clone()), ..Default::default() });
        let e = format!("{:#}", wrong.into_iter().next().unwrap().unwrap_err());
        assert!(e.contains("2 ranks") && e.contains("not 3"), "{e}");
        let resumed = run_group(&c, 2, &TrainOptions { resume: Some(parts.clone()), ..Default::default() });
        resumed.into_iter().for_each(|r| drop(r.unwrap()));
        assert_eq!(model(&parts), model(&whole), "{}: resumed run differs from the uninterrupted one", mode.name());
        // The same evaluations, at the same steps, with the same results (times aside).
        let evals = |d: &Path| -> Vec<serde_json::Value> {
            let text = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|r| r["kind"] == "eval")
                .map(|mut r| {
                    r.as_object_mut().unwrap().remove("train_seconds");
                    r
                })
                .collect()
        };
        assert!(!evals(&whole).is_empty());
        assert_eq!(evals(&parts), evals(&whole), "{}: evaluations differ after resume", mode.name());
    }
}

#[test]
fn refused_set_ups_say_why() {
    let tmp = tempfile::tempdir().unwrap();
    // A batch smaller than the ranks.
    let c = config(DistributedMode::Replicated, &["train.batch_size=3"]);
    let e = format!("{:#}", run_group(&c, 4, &options(&tmp.path().join("small"))).into_iter().next().unwrap().unwrap_err());
    assert!(e.contains("train.batch_size = 3") && e.contains("4 ranks"), "{e}");
    // No group and (in this test binary) no MPI launch.
    let e = format!("{:#}", train(&config(DistributedMode::RowSharded, &[]), &options(&tmp.path().join("alone"))).unwrap_err());
    assert!(e.contains("row_sharded") && e.contains("mpirun"), "{e}");
    // An unknown mode names the key.
    let e = format!("{:#}", Config::load(Path::new("configs/quickstart.toml"), &["distributed.mode=sharded".into()]).unwrap_err());
    assert!(e.contains("distributed.mode") && e.contains("row_sharded"), "{e}");
}

#[test]
fn a_cancel_on_one_rank_stops_every_rank_at_the_same_step() {
    let tmp = tempfile::tempdir().unwrap();
    let c = config(DistributedMode::RowSharded, &[]);
    let stop = sparseburn::cancel::CancelToken::new();
    stop.cancel();
    let handles: Vec<_> = Group::threads(3)
        .into_iter()
        .enumerate()
        .map(|(rank, group)| {
            // Only rank 2 is told to stop (as Ctrl-C may reach one process).
            let cancel = if rank == 2 { stop.clone() } else { Default::default() };
            let (c, options) = (c.clone(), TrainOptions { group: Some(group), cancel, ..options(&tmp.path().join("cancelled")) });
            std::thread::spawn(move || train(&c, &options))
        })
        .collect();
    for (rank, h) in handles.into_iter().enumerate() {
        let outcome = h.join().unwrap().unwrap();
        assert!(outcome.interrupted && outcome.steps == 1, "rank {rank}: interrupted {} after {} steps", outcome.interrupted, outcome.steps);
    }
}
