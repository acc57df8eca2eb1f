//! `sparseburn sweep`: the trial list (grid product, seeded random draws,
//! checked against independent computations), bad input, and real sweeps on
//! the bundled sample whose reports are checked against each trial's own
//! files, read back here with other readers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sparseburn::sweep::{self, Parallel};

#[path = "support/cli.rs"]
mod cli;
use cli::{read_json, sparseburn, text, BIN};

/// A sweep file in `dir` on the quickstart sample: `sweep` is the body of the
/// `[sweep]` table, `params` of `[sweep.params]`; quiet, `epochs` epochs.
fn write_sweep(dir: &Path, sweep: &str, params: &str, epochs: usize) -> PathBuf {
    let text = format!(
        r#"[sweep]
base = "configs/quickstart.toml"
{sweep}

[sweep.params]
{params}

[train]
epochs = {epochs}

[logging]
dir = "{}"
quiet = true
histogram_every = 0
projector_words = 0
"#,
        dir.join("runs").display()
    );
    let path = dir.join("sweep.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn plan(path: &Path) -> anyhow::Result<sweep::Plan> {
    sweep::plan(path, &[], &[], Some(Parallel::Jobs(1)))
}

/// A key of a run's saved config.toml, parsed here as plain TOML.
fn saved(dir: &Path, key: &str) -> toml::Value {
    let text = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    let mut v = toml::Value::Table(toml::from_str(&text).unwrap());
    for part in key.split('.') {
        v = v.get(part).unwrap_or_else(|| panic!("{}: no {key}", dir.display())).clone();
    }
    v
}

#[test]
fn grid_expands_to_the_full_product_in_a_stable_order() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_sweep(
        tmp.path(),
        r#"method = "grid""#,
        r#""optimizer.table.lr" = [0.01, 0.05, 0.1]
"model.dim" = [16, 32]
model.pooling = ["mean", "sum"]"#,
        1,
    );
    let p = plan(&path).unwrap();
    // Keys in name order, the first slowest: nested loops written out here.
    assert_eq!(p.keys(), ["model.dim", "model.pooling", "optimizer.table.lr"]);
    let mut want = Vec::new();
    for dim in [16usize, 32] {
        for pooling in ["mean", "sum"] {
            for lr in [0.01, 0.05, 0.1] {
                want.push((dim, pooling.to_string(), lr));
            }
        }
    }
    let got: Vec<(usize, String, f64)> = p.trials.iter().map(|t| (t.config.model.dim, t.config.model.pooling.name().to_string(), t.config.optimizer.table.lr())).collect();
    assert_eq!(got, want);
    for (i, t) in p.trials.iter().enumerate() {
        assert_eq!(t.name, format!("trial-{:03}", i + 1));
        assert_eq!(t.config.experiment.arm, t.name);
        assert_eq!(p.run_dir(t), tmp.path().join("runs/quickstart/sweep").join(&t.name));
    }
    // Planning again gives the same list.
    let again: Vec<_> = plan(&path).unwrap().trials.into_iter().map(|t| t.config).collect();
    assert_eq!(again, p.trials.iter().map(|t| t.config.clone()).collect::<Vec<_>>());
    // A disk-backed table: each trial gets its own file beside the configured one.
    let table = tmp.path().join("t.bin");
    let storage = ["model.table_storage=\"mmap\"".to_string(), format!("model.table_path={:?}", table.display().to_string())];
    let mapped = sweep::plan(&path, &storage, &[], Some(Parallel::Jobs(1))).unwrap();
    for t in &mapped.trials {
        assert_eq!(t.config.model.table_path, Some(tmp.path().join(format!("t-{}.bin", t.name))));
    }
}

#[test]
fn random_search_is_reproducible_by_seed_and_within_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    let params = r#""optimizer.table.lr" = { log_uniform = [1e-4, 1e-1] }
"optimizer.head.beta1" = { uniform = [0.8, 0.95] }
"model.dim" = { int = [8, 24] }
"model.pooling" = { choice = ["mean", "sum"] }"#;
    let draws = |seed: u64| {
        let path = write_sweep(tmp.path(), &format!("method = \"random\"\ntrials = 200\nseed = {seed}"), params, 1);
        plan(&path).unwrap().trials.into_iter().map(|t| t.config).collect::<Vec<_>>()
    };
    let a = draws(7);
    assert_eq!(a.len(), 200);
    assert_eq!(a, draws(7), "the same seed must give the same trials");
    let b = draws(8);
    assert_ne!(a.iter().map(|c| c.optimizer.table.lr()).collect::<Vec<_>>(), b.iter().map(|c| c.optimizer.table.lr()).collect::<Vec<_>>());

    let lrs: Vec<f64> = a.iter().map(|c| c.optimizer.table.lr()).collect();
    assert!(lrs.iter().all(|&x| (1e-4..=1e-1).contains(&x)), "lr out of bounds");
    // Log-uniform: half the draws below the geometric mean 10^-2.5 (200 draws: ±0.1 is > 2.8 sd).
    let below = lrs.iter().filter(|&&x| x.log10() < -2.5).count() as f64 / 200.0;
    assert!((below - 0.5).abs() < 0.1, "fraction below 10^-2.5: {below}");
    // Uniform, not log-uniform, would put only ~3% of them below 10^-2.5.
    let betas: Vec<f64> = a.iter().map(|c| c.optimizer.head.beta1).collect();
    assert!(betas.iter().all(|&x| (0.8..=0.95).contains(&x)));
    let mean = betas.iter().sum::<f64>() / 200.0;
    assert!((mean - 0.875).abs() < 0.015, "beta1 mean {mean}");
    let dims: Vec<usize> = a.iter().map(|c| c.model.dim).collect();
    assert!(dims.iter().all(|d| (8..=24).contains(d)));
    assert!((8..=24).all(|d| dims.contains(&d)), "every integer of [8, 24] drawn at least once in 200");
    let sums = a.iter().filter(|c| c.model.pooling.name() == "sum").count();
    assert!((60..=140).contains(&sums), "choice: {sums} of 200 are sum");
}

#[test]
fn bad_input_gets_an_error_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (r#"method = "grid""#, r#""optimizer.table.lrr" = [0.1]"#, "optimizer.table.lrr"),
        (r#"method = "grid""#, r#""train.epochs" = []"#, "train.epochs"),
        (
            r#"method = "random"
trials = 3"#,
            r#""optimizer.table.lr" = { log_uniform = [0.1, 0.01] }"#,
            "optimizer.table.lr",
        ),
        (
            r#"method = "random"
trials = 3"#,
            r#""optimizer.table.lr" = { log_uniform = [0, 0.1] }"#,
            "optimizer.table.lr",
        ),
        (
            r#"method = "random"
trials = 3"#,
            r#""model.dim" = { int = [1.5, 4] }"#,
            "model.dim",
        ),
        (r#"method = "grid""#, r#""optimizer.table.lr" = { uniform = [0.01, 0.1] }"#, "optimizer.table.lr"),
        (r#"method = "grid""#, r#""model.dim" = [16, 0]"#, "model.dim"),
        (r#"method = "random""#, r#""model.dim" = [16]"#, "sweep.trials"),
        (r#"metric = "eval/acc""#, r#""model.dim" = [16]"#, "sweep.metric"),
        (r#"methd = "grid""#, r#""model.dim" = [16]"#, "methd"),
    ];
    for (sweep, params, key) in cases {
        let path = write_sweep(tmp.path(), sweep, params, 1);
        let err = format!("{:#}", plan(&path).expect_err(params));
        assert!(err.contains(key), "{params}: error does not name {key}: {err}");
        assert!(err.contains("sweep.toml"), "{params}: error does not name the file: {err}");
    }
    let o = sparseburn(&["sweep", "configs/quickstart.toml", "--grid", "model.dim="]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--grid model.dim"), "{}", text(&o));
    let o = sparseburn(&["sweep", "configs/quickstart.toml"]);
    assert!(!o.status.success() && text(&o).contains("--grid"), "{}", text(&o));
}

/// The report of a finished sweep checked against every trial's own files.
fn check_report(sweep_dir: &Path, keys: &[&str], trials: usize) -> Value {
    let report = read_json(&sweep_dir.join("sweep.json"));
    let rows = report["trials"].as_array().unwrap();
    assert_eq!(rows.len(), trials);
    let mut previous = f64::INFINITY;
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["status"], "ok", "{row}");
        assert_eq!(row["rank"].as_u64(), Some(i as u64 + 1));
        let dir = sweep_dir.join(row["trial"].as_str().unwrap());
        let summary = read_json(&dir.join("summary.json"));
        let accuracy = summary["final_eval"]["accuracy"].as_f64().unwrap();
        assert_eq!(row["metric"].as_f64(), Some(accuracy), "{}: metric vs summary.json", dir.display());
        assert_eq!(row["metrics"]["final_loss"].as_f64(), summary["final_eval"]["loss"].as_f64());
        assert_eq!(row["metrics"]["steps"].as_f64(), summary["steps"].as_f64());
        assert!(accuracy <= previous, "not sorted by accuracy, best first");
        previous = accuracy;
        for key in keys {
            let want = saved(&dir, key);
            let got = &row["params"][*key];
            match want {
                toml::Value::Float(x) => assert_eq!(got.as_f64(), Some(x), "{key}"),
                toml::Value::Integer(x) => assert_eq!(got.as_i64(), Some(x), "{key}"),
                toml::Value::String(s) => assert_eq!(got.as_str(), Some(s.as_str()), "{key}"),
                other => panic!("{key}: unexpected {other}"),
            }
        }
        assert_eq!(saved(&dir, "experiment.arm").as_str(), row["trial"].as_str());
        let events = std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("events.out.tfevents.")).count();
        assert_eq!(events, 1, "{}: one TensorBoard event file", dir.display());
    }
    // The CSV has the same trials in the same order with the same metric.
    let csv = std::fs::read_to_string(sweep_dir.join("sweep.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let (trial_col, metric_col) = (header.iter().position(|h| *h == "trial").unwrap(), header.iter().position(|h| *h == "eval/accuracy").unwrap());
    for (line, row) in lines.zip(rows) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[trial_col], row["trial"].as_str().unwrap());
        assert_eq!(cells[metric_col].parse::<f64>().ok(), row["metric"].as_f64());
    }
    let md = std::fs::read_to_string(sweep_dir.join("sweep.md")).unwrap();
    assert!(rows.iter().all(|r| md.contains(r["trial"].as_str().unwrap())));
    for ext in ["svg", "png"] {
        let plot = sweep_dir.join(format!("sweep_metric_vs_params.{ext}"));
        assert!(std::fs::metadata(&plot).map(|m| m.len() > 1000).unwrap_or(false), "{}", plot.display());
    }
    report
}

#[test]
fn a_real_random_sweep_reports_what_each_trial_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_sweep(
        tmp.path(),
        "method = \"random\"\ntrials = 3\nseed = 5\nparallel = 2",
        r#""optimizer.table.lr" = { log_uniform = [0.005, 0.2] }
"model.dim" = { choice = [16, 32] }"#,
        2,
    );
    let o = sparseburn(&["sweep", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let report = check_report(&tmp.path().join("runs/quickstart/sweep"), &["optimizer.table.lr", "model.dim"], 3);
    assert_eq!(report["parallel"], 2);
    // The trials are the ones the plan draws with that seed.
    let p = plan(&path).unwrap();
    for t in &p.trials {
        let dir = tmp.path().join("runs/quickstart/sweep").join(&t.name);
        assert_eq!(saved(&dir, "optimizer.table.lr").as_float(), Some(t.config.optimizer.table.lr()));
        assert_eq!(saved(&dir, "train.epochs").as_integer(), Some(2));
    }
}

#[test]
fn the_grid_flag_sweeps_any_config() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    let o = sparseburn(&[
        "sweep",
        "configs/quickstart.toml",
        "--grid",
        "optimizer.table.lr=0.02,0.04",
        "--grid",
        "model.pooling=mean,sum",
        "--set",
        "train.epochs=1",
        "--set",
        "logging.quiet=true",
        "--set",
        "logging.projector_words=0",
        "--set",
        &format!("logging.dir={}", logs.display()),
        "--parallel",
        "1",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let dir = logs.join("quickstart/sweep");
    check_report(&dir, &["optimizer.table.lr", "model.pooling"], 4);
    // Flag order: the first --grid key varies slowest.
    let want = [(0.02, "mean"), (0.02, "sum"), (0.04, "mean"), (0.04, "sum")];
    for (i, (lr, pooling)) in want.iter().enumerate() {
        let run = dir.join(format!("trial-{:03}", i + 1));
        assert_eq!(saved(&run, "optimizer.table.lr").as_float(), Some(*lr));
        assert_eq!(saved(&run, "model.pooling").as_str(), Some(*pooling));
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_keeps_finished_trials_in_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_sweep(tmp.path(), r#"method = "grid""#, r#""optimizer.table.lr" = [0.01, 0.02, 0.03, 0.04]"#, 30);
    let child = Command::new(BIN).args(["sweep", path.to_str().unwrap(), "--parallel", "1"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let sweep_dir = tmp.path().join("runs/quickstart/sweep");
    // Interrupt once trial-002 is training: trial-001 is then finished.
    let second = sweep_dir.join("trial-002/metrics.jsonl");
    let start = Instant::now();
    while !second.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "trial-002 did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGINT to the sweep process alone (one positive pid): no new trial starts,
    // the one training finishes, and the report is written.
    let status = Command::new("kill").args(["-s", "INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "an interrupted sweep exits with an error");
    assert!(text(&out).contains("interrupted"), "{}", text(&out));
    let report = read_json(&sweep_dir.join("sweep.json"));
    assert_eq!(report["interrupted"], true);
    let rows = report["trials"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let row = |t: &str| rows.iter().find(|r| r["trial"] == t).unwrap().clone();
    for t in ["trial-001", "trial-002"] {
        assert_eq!(row(t)["status"], "ok", "{t}");
        let summary = read_json(&sweep_dir.join(t).join("summary.json"));
        assert_eq!(row(t)["metric"].as_f64(), summary["final_eval"]["accuracy"].as_f64(), "{t}");
    }
    for t in ["trial-003", "trial-004"] {
        assert_eq!(row(t)["status"], "not run", "{t}");
        assert!(!sweep_dir.join(t).exists(), "{t} was started");
    }
    assert_eq!(rows[0]["rank"], 1);
    assert_eq!(rows[2]["rank"], Value::Null);

    // --reuse keeps the finished trials (their summaries untouched) and trains the rest.
    let before = std::fs::read(sweep_dir.join("trial-001/summary.json")).unwrap();
    let o = sparseburn(&["sweep", path.to_str().unwrap(), "--parallel", "1", "--reuse"]);
    assert!(o.status.success(), "{}", text(&o));
    let report = read_json(&sweep_dir.join("sweep.json"));
    let rows = report["trials"].as_array().unwrap();
    let row = |t: &str| rows.iter().find(|r| r["trial"] == t).unwrap().clone();
    for (t, reused) in [("trial-001", true), ("trial-002", true), ("trial-003", false), ("trial-004", false)] {
        assert_eq!(row(t)["status"], "ok", "{t}");
        assert_eq!(row(t)["reused"], reused, "{t}");
    }
    assert_eq!(std::fs::read(sweep_dir.join("trial-001/summary.json")).unwrap(), before);
}

#[test]
fn auto_parallel_stays_within_the_cores_and_the_memory() {
    use sweep::parallel::decide;
    let tmp = tempfile::tempdir().unwrap();
    let path = write_sweep(tmp.path(), r#"method = "grid""#, r#""optimizer.table.lr" = [0.01, 0.02, 0.03, 0.04, 0.05]"#, 1);
    let auto = sweep::plan(&path, &[], &[], Some(Parallel::Auto)).unwrap();
    // Plenty of memory: the cores decide, and each run gets its share of them.
    let d = decide(&auto, 4, Some(u64::MAX)).unwrap();
    assert_eq!((d.workers, d.threads_per_run), (4, Some(1)));
    let d = decide(&auto, 64, Some(u64::MAX)).unwrap();
    assert_eq!((d.workers, d.threads_per_run), (5, Some(12)), "never more runs than trials");
    // Memory for less than two runs' plans (the table alone is 200000+ rows × 64 × 4 bytes): one at a time.
    let table_bytes = 200_000u64 * 64 * 4;
    let d = decide(&auto, 64, Some(table_bytes)).unwrap();
    assert_eq!((d.workers, d.threads_per_run), (1, None));
    // Trials with their own thread count take that many cores each.
    let threads = sweep::plan(&path, &["train.threads=2".into()], &[], Some(Parallel::Auto)).unwrap();
    assert_eq!(decide(&threads, 5, Some(u64::MAX)).unwrap().workers, 2);
    // An explicit number is kept (up to the trials).
    let fixed = sweep::plan(&path, &[], &[], Some(Parallel::Jobs(3))).unwrap();
    assert_eq!(decide(&fixed, 1, Some(1)).unwrap().workers, 3);
}
