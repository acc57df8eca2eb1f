//! `sparseburn compare` end to end: a small comparison on the bundled sample,
//! its report recomputed from the runs' own files, identical batches and
//! initial weights across arms, bad configs, and failing or crashing arms.
//!
//! Every comparison runs the real binary (each run in a child process, as a
//! user's would) with `logging.dir` in a temporary directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sparseburn::compare;

#[path = "support/cli.rs"]
mod cli;
use cli::{read_json, sparseburn, text, BIN};

/// Two-sided 95% Student-t critical value for 1 degree of freedom (two seeds), from tables.
const T_975_DF1: f64 = 12.706205;

/// A compare file in `dir` on the quickstart sample: `arms` is the TOML of the
/// `[[compare.arms]]` sections; training is cut to `epochs` and made quiet.
fn write_compare(dir: &Path, name: &str, seeds: &str, arms: &str, extra: &str, epochs: usize) -> PathBuf {
    let logs = dir.join("runs");
    let text = format!(
        r#"[compare]
name = "{name}"
base = "configs/quickstart.toml"
seeds = {seeds}
{extra}

{arms}

[train]
epochs = {epochs}

[logging]
dir = "{}"
quiet = true
histogram_every = 0
projector_words = 0
"#,
        logs.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn sd(xs: &[f64]) -> f64 {
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// What the test itself reads from one run directory.
struct Run {
    summary: Value,
    records: Vec<Value>,
}

impl Run {
    fn load(dir: &Path) -> Run {
        Run { summary: read_json(&dir.join("summary.json")), records: read_jsonl(&dir.join("metrics.jsonl")) }
    }
    fn kind(&self, kind: &str) -> Vec<&Value> {
        self.records.iter().filter(|r| r["kind"] == kind).collect()
    }
    /// The metrics the report claims to compute, recomputed from the files.
    fn metric(&self, key: &str) -> f64 {
        let s = &self.summary;
        let evals = self.kind("eval");
        let t = &s["step_timings"];
        let ms = |k: &str| t[k].as_f64().unwrap();
        match key {
            "final_accuracy" => s["final_eval"]["accuracy"].as_f64().unwrap(),
            "final_loss" => s["final_eval"]["loss"].as_f64().unwrap(),
            "best_accuracy" => evals.iter().map(|e| e["accuracy"].as_f64().unwrap()).fold(self.metric("final_accuracy"), f64::max),
            "best_loss" => evals.iter().map(|e| e["loss"].as_f64().unwrap()).fold(self.metric("final_loss"), f64::min),
            "forward_ms" => ms("bag_forward_ms") + ms("head_forward_ms"),
            "backward_ms" => ms("head_backward_ms") + ms("bag_backward_ms"),
            "table_optimizer_ms" => ms("table_optimizer_ms"),
            "head_optimizer_ms" => ms("head_optimizer_ms"),
            "step_ms" => {
                ["data_ms", "bag_forward_ms", "head_forward_ms", "head_backward_ms", "bag_backward_ms", "table_optimizer_ms", "head_optimizer_ms"].iter().map(|k| ms(k)).sum()
            }
            "rows_touched_per_step" => s["mean_rows_touched"].as_f64().unwrap(),
            "optimizer_state_bytes" => s["optimizer_state_bytes"].as_f64().unwrap(),
            "peak_rss_bytes" => s["peak_rss_bytes"].as_f64().unwrap(),
            "train_seconds" => s["train_seconds"].as_f64().unwrap(),
            "steps" => s["steps"].as_f64().unwrap(),
            other => panic!("test does not recompute {other}"),
        }
    }
    /// Per step: (rows touched, unique-id ratio), which depend on the batch alone.
    fn batch_facts(&self) -> Vec<(u64, u64, f64)> {
        self.kind("train").iter().map(|r| (r["step"].as_u64().unwrap(), r["rows_touched"].as_u64().unwrap(), r["unique_ratio"].as_f64().unwrap())).collect()
    }
    fn step_loss(&self, step: u64) -> f64 {
        self.kind("train").iter().find(|r| r["step"] == step).unwrap()["loss"].as_f64().unwrap()
    }
    /// metrics.jsonl without the fields that measure time.
    fn records_without_timing(&self) -> Vec<Value> {
        self.records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                for k in ["train_seconds", "examples_per_second"] {
                    r.as_object_mut().unwrap().remove(k);
                }
                r
            })
            .collect()
    }
}

const SMALL_ARMS: &str = r#"
[[compare.arms]]
name = "lazy_adam"
set = { "optimizer.table.kind" = "lazy_adam" }

[[compare.arms]]
name = "dense_adam"
set = { optimizer = { table = { kind = "dense_adam" } } }

# The baseline's settings under another name: must train bit-identically.
[[compare.arms]]
name = "lazy_adam_again"
set = { "optimizer.table.kind" = "lazy_adam" }
"#;

#[test]
fn small_comparison_report_matches_the_runs_and_arms_see_the_same_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_compare(tmp.path(), "small", "[1, 2]", SMALL_ARMS, "baseline = \"lazy_adam\"", 2);
    let out = sparseburn(&["compare", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    for needle in ["lazy_adam", "dense_adam", "final acc", "Δ final acc vs lazy_adam", "ms/step", "seed 1: ✓", "seed 2: ✓"] {
        assert!(printed.contains(needle), "printed report lacks {needle:?}:\n{printed}");
    }

    // Layout: <logging.dir>/<name>/<arm>/seed-<k>/, each a complete run with TensorBoard files.
    let dir = tmp.path().join("runs").join("small");
    let arms = ["lazy_adam", "dense_adam", "lazy_adam_again"];
    let seeds = [1u64, 2];
    let mut runs: BTreeMap<(&str, u64), Run> = BTreeMap::new();
    for arm in arms {
        for seed in seeds {
            let d = dir.join(arm).join(format!("seed-{seed}"));
            let config = std::fs::read_to_string(d.join("config.toml")).unwrap();
            assert!(config.contains(&format!("arm = \"{arm}\"")) && config.contains(&format!("seed = {seed}")) && config.contains("name = \"small\""), "{config}");
            assert!(std::fs::read_dir(&d).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("events.out.tfevents.")), "no TensorBoard file in {}", d.display());
            runs.insert((arm, seed), Run::load(&d));
        }
    }
    for f in ["report.md", "report.json", "report.csv", "compare.toml"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    for plot in ["accuracy_vs_step", "accuracy_vs_time", "loss_vs_step"] {
        let png = std::fs::read(dir.join(format!("{plot}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{plot}.png");
        let svg = std::fs::read_to_string(dir.join(format!("{plot}.svg"))).unwrap();
        assert!(svg.contains("<svg") && arms.iter().all(|a| svg.contains(a)), "{plot}.svg lacks the legend");
    }

    // The arms really differ: dense Adam reports the dense optimizer and ends elsewhere.
    assert_eq!(runs[&("dense_adam", 1)].summary["table_optimizer"], "dense_adam");
    assert_eq!(runs[&("lazy_adam", 1)].summary["table_optimizer"], "lazy_adam");
    assert_ne!(runs[&("dense_adam", 1)].metric("final_loss"), runs[&("lazy_adam", 1)].metric("final_loss"));

    // Same batches in the same order: rows touched and the unique-id ratio of a step are functions of
    // that step's batch only (not of the weights), so equal sequences over every step mean the arms
    // drew the same batches. The step-1 loss is computed from the first batch and the initial weights,
    // before any update, so equal step-1 losses mean the same initial weights. Different seeds must
    // give different sequences and losses, or the check would prove nothing.
    for seed in seeds {
        let base = &runs[&("lazy_adam", seed)];
        let facts = base.batch_facts();
        assert_eq!(facts.len() as f64, base.metric("steps"), "a train record per step");
        for arm in arms {
            let r = &runs[&(arm, seed)];
            assert_eq!(r.batch_facts(), facts, "{arm} seed {seed} saw other batches than lazy_adam");
            assert_eq!(r.step_loss(1).to_bits(), base.step_loss(1).to_bits(), "{arm} seed {seed} started from other weights");
        }
        // An arm with the baseline's optimizer under another name is the same run, bit for bit.
        let again = &runs[&("lazy_adam_again", seed)];
        assert_eq!(again.records_without_timing(), base.records_without_timing());
        assert_eq!(again.summary["final_eval"], base.summary["final_eval"]);
    }
    assert_ne!(runs[&("lazy_adam", 1)].batch_facts(), runs[&("lazy_adam", 2)].batch_facts());
    assert_ne!(runs[&("lazy_adam", 1)].step_loss(1), runs[&("lazy_adam", 2)].step_loss(1));

    // The report's numbers, recomputed from each run's summary.json and metrics.jsonl.
    let report = read_json(&dir.join("report.json"));
    assert_eq!(report["baseline"], "lazy_adam");
    assert_eq!(report["runner"], "subprocess");
    for c in report["batches_check"].as_array().unwrap() {
        assert_eq!(c["same_batches"], true, "{c}");
        assert_eq!(c["same_initial_loss"], true, "{c}");
    }
    let arm_report = |name: &str| report["arms"].as_array().unwrap().iter().find(|a| a["name"] == name).unwrap().clone();
    let keys = [
        "final_accuracy",
        "final_loss",
        "best_accuracy",
        "best_loss",
        "forward_ms",
        "backward_ms",
        "table_optimizer_ms",
        "head_optimizer_ms",
        "step_ms",
        "rows_touched_per_step",
        "optimizer_state_bytes",
        "peak_rss_bytes",
        "train_seconds",
    ];
    for arm in arms {
        let a = arm_report(arm);
        assert_eq!(a["seeds_ok"], serde_json::json!([1, 2]));
        for key in keys {
            let values: Vec<f64> = seeds.iter().map(|&s| runs[&(arm, s)].metric(key)).collect();
            let m = &a["metrics"][key];
            assert!(close(m["mean"].as_f64().unwrap(), mean(&values)), "{arm} {key} mean: {m} vs {values:?}");
            assert!(close(m["sd"].as_f64().unwrap(), sd(&values)), "{arm} {key} sd: {m} vs {values:?}");
            assert_eq!(m["n"], 2);
            if arm == "lazy_adam" {
                assert!(a["vs_baseline"].as_object().unwrap().is_empty());
                continue;
            }
            let diffs: Vec<f64> = seeds.iter().map(|&s| runs[&(arm, s)].metric(key) - runs[&("lazy_adam", s)].metric(key)).collect();
            let d = &a["vs_baseline"][key];
            let half = T_975_DF1 * sd(&diffs) / 2f64.sqrt();
            assert!(close(d["mean"].as_f64().unwrap(), mean(&diffs)), "{arm} {key} diff: {d} vs {diffs:?}");
            let (lo, hi) = (d["ci_low"].as_f64().unwrap(), d["ci_high"].as_f64().unwrap());
            assert!((lo - (mean(&diffs) - half)).abs() <= 1e-6 * (1.0 + half), "{arm} {key} ci_low {lo} vs {}", mean(&diffs) - half);
            assert!((hi - (mean(&diffs) + half)).abs() <= 1e-6 * (1.0 + half), "{arm} {key} ci_high {hi} vs {}", mean(&diffs) + half);
        }
        // The identical arm's quality differences are exactly zero.
        if arm == "lazy_adam_again" {
            for key in ["final_accuracy", "final_loss", "best_accuracy", "best_loss"] {
                assert_eq!(a["vs_baseline"][key]["mean"].as_f64().unwrap(), 0.0, "{key}");
            }
        }
    }

    // The eval curves behind the plots: mean over seeds at each evaluation step.
    let curve = arm_report("dense_adam")["curve"].as_array().unwrap().clone();
    let evals: Vec<Vec<&Value>> = seeds.iter().map(|&s| runs[&("dense_adam", s)].kind("eval")).collect();
    assert_eq!(curve.len(), evals[0].len());
    for (i, p) in curve.iter().enumerate() {
        let accs: Vec<f64> = evals.iter().map(|e| e[i]["accuracy"].as_f64().unwrap()).collect();
        assert_eq!(p["step"], evals[0][i]["step"]);
        assert!(close(p["accuracy"]["mean"].as_f64().unwrap(), mean(&accs)));
        assert!(close(p["accuracy"]["min"].as_f64().unwrap(), accs.iter().copied().fold(f64::INFINITY, f64::min)));
    }

    // CSV: one row per arm × metric, agreeing with the JSON.
    let csv = std::fs::read_to_string(dir.join("report.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let row = csv.lines().find(|l| l.starts_with("dense_adam,lazy_adam,final_accuracy,")).expect("dense_adam final_accuracy row");
    let cells: BTreeMap<&str, &str> = header.iter().copied().zip(row.split(',')).collect();
    let a = arm_report("dense_adam");
    assert!(close(cells["mean"].parse().unwrap(), a["metrics"]["final_accuracy"]["mean"].as_f64().unwrap()));
    assert!(close(cells["diff_ci_high"].parse().unwrap(), a["vs_baseline"]["final_accuracy"]["ci_high"].as_f64().unwrap()));

    // Markdown: the tables, the check and the plots.
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for needle in ["## Quality", "## Cost", "| dense_adam |", "(baseline)", "![", "accuracy_vs_time.svg", "seed 2: ✓"] {
        assert!(md.contains(needle), "report.md lacks {needle:?}");
    }
}

#[test]
fn failing_arm_is_reported_and_the_others_finish() {
    let tmp = tempfile::tempdir().unwrap();
    // lr = 1e39 overflows f32: the first update writes inf/NaN into the table, so the loss of step 2 is NaN.
    let arms = r#"
[[compare.arms]]
name = "ok"

[[compare.arms]]
name = "diverges"
set = { "optimizer.table.lr" = 1e39 }
"#;
    let cfg = write_compare(tmp.path(), "failing", "[1, 2]", arms, "", 1);
    let out = sparseburn(&["compare", cfg.to_str().unwrap(), "--jobs", "2"]);
    assert!(!out.status.success(), "failed runs must fail the command:\n{}", text(&out));
    assert!(text(&out).contains("2 of 4 runs failed"), "{}", text(&out));
    let dir = tmp.path().join("runs").join("failing");
    let report = read_json(&dir.join("report.json"));
    let arm = |name: &str| report["arms"].as_array().unwrap().iter().find(|a| a["name"] == name).unwrap().clone();
    let ok = arm("ok");
    assert_eq!(ok["seeds_ok"], serde_json::json!([1, 2]));
    assert!(ok["metrics"]["final_accuracy"]["mean"].as_f64().unwrap() > 0.3);
    let bad = arm("diverges");
    assert_eq!(bad["seeds_ok"], serde_json::json!([]));
    assert!(bad["metrics"].as_object().unwrap().is_empty());
    let failed = bad["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2);
    for f in failed {
        assert!(f["error"].as_str().unwrap().contains("NaN"), "{f}");
    }
    // Its step 1 ran before the divergence: same batch and weights as the ok arm there.
    for c in report["batches_check"].as_array().unwrap() {
        assert_eq!(c["same_initial_loss"], true, "{c}");
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("## Failed runs") && md.contains("`diverges` seed 1") && md.contains("NaN"), "{md}");

    // --reuse keeps the finished runs; --allow-failures reports and exits 0.
    let out = sparseburn(&["compare", cfg.to_str().unwrap(), "--reuse", "--allow-failures"]);
    assert!(out.status.success(), "{}", text(&out));
    let report = read_json(&dir.join("report.json"));
    for r in report["runs"].as_array().unwrap() {
        assert_eq!(r["reused"], r["arm"] == "ok", "{r}");
        assert_eq!(r["ok"], r["arm"] == "ok", "{r}");
    }
}

#[cfg(unix)]
#[test]
fn arms_of_a_disk_backed_table_each_train_in_a_file_of_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let arms = "[[compare.arms]]\nname = \"lazy\"\n[[compare.arms]]\nname = \"adagrad\"\nset = { \"optimizer.table.kind\" = \"rowwise_adagrad\", \"optimizer.table.lr\" = 0.2 }\n";
    let table = tmp.path().join("t.bin");
    let extra = format!("[model]\ntable_storage = \"mmap\"\ntable_path = {:?}\n[vocab]\nbuckets = 20000\n", table.display().to_string());
    let cfg = write_compare(tmp.path(), "mapped", "[1]", arms, &extra, 1);
    // Two at a time, too: neither run may take the other's file.
    let out = sparseburn(&["compare", cfg.to_str().unwrap(), "--jobs", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    for run in ["lazy-seed-1", "adagrad-seed-1"] {
        let file = tmp.path().join(format!("t-{run}.bin"));
        assert!(std::fs::metadata(&file).is_ok_and(|m| m.len() > 0), "{} missing:\n{}", file.display(), text(&out));
    }
    assert!(!table.exists(), "the configured path itself is only the pattern");
}

#[test]
fn crashing_run_is_isolated_in_its_process() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // A stand-in trainer that dies by SIGKILL (as the OOM killer would) for the sgd arm.
    let wrapper = tmp.path().join("trainer.sh");
    std::fs::write(&wrapper, format!("#!/bin/sh\nif grep -q 'kind = \"sgd\"' \"$2\"; then kill -9 $$; fi\nexec '{BIN}' \"$@\"\n")).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let arms = r#"
[[compare.arms]]
name = "lazy"

[[compare.arms]]
name = "sgd"
set = { "optimizer.table.kind" = "sgd" }
"#;
    let cfg = write_compare(tmp.path(), "crash", "[3]", arms, "", 1);
    let out = sparseburn(&["compare", cfg.to_str().unwrap(), "--exe", wrapper.to_str().unwrap()]);
    assert!(!out.status.success());
    let report = read_json(&tmp.path().join("runs/crash/report.json"));
    let runs = report["runs"].as_array().unwrap();
    let sgd = runs.iter().find(|r| r["arm"] == "sgd").unwrap();
    assert!(sgd["error"].as_str().unwrap().contains("signal 9"), "{sgd}");
    let lazy = runs.iter().find(|r| r["arm"] == "lazy").unwrap();
    assert_eq!(lazy["ok"], true, "{lazy}");
}

fn plan_error(dir: &Path, arms: &str, extra: &str) -> String {
    let cfg = write_compare(dir, "bad", "[1, 2]", arms, extra, 1);
    format!("{:#}", compare::plan(&cfg, &[]).expect_err("the plan must be rejected"))
}

#[test]
fn bad_configs_are_rejected_before_anything_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "[[compare.arms]]\nname = \"a\"\n[[compare.arms]]\nname = \"b\"\nset = { \"model.dim\" = 32 }\n",
            "",
            &["arm \"b\"", "differs from the baseline", "model.dim = 32", "64", "optimizer.*"],
        ),
        ("[[compare.arms]]\nname = \"a\"\n[[compare.arms]]\nname = \"b\"\nset = { \"data.train\" = \"./examples/data/sotu_era_600.tsv\" }\n", "", &["arm \"b\"", "data.train"]),
        ("[[compare.arms]]\nname = \"a\"\n[[compare.arms]]\nname = \"b\"\nset = { \"train.batch_size\" = 16 }\n", "", &["train.batch_size = 16"]),
        (
            "[[compare.arms]]\nname = \"lazy\"\n[[compare.arms]]\nname = \"dense\"\n",
            "baseline = \"lazy_adam\"",
            &["compare.baseline", "\"lazy_adam\" is not an arm", "lazy, dense"],
        ),
        ("[[compare.arms]]\nname = \"a\"\n[[compare.arms]]\nname = \"a\"\n", "", &["two arms are named \"a\""]),
        ("[[compare.arms]]\nname = \"a/b\"\n", "", &["arm name", "a/b"]),
        ("[[compare.arms]]\nname = \"a\"\nset = { \"optimizer.table.kindd\" = \"sgd\" }\n", "", &["arm \"a\"", "kindd"]),
        ("[[compare.arms]]\nname = \"a\"\nset = { \"optimizer.table.kind\" = \"adagrad\" }\n", "", &["arm \"a\"", "optimizer.table.kind", "adagrad"]),
        ("", "", &["no arms"]),
    ];
    for (arms, extra, needles) in cases {
        let e = plan_error(tmp.path(), arms, extra);
        for n in *needles {
            assert!(e.contains(n), "error for {arms:?} should mention {n:?}: {e}");
        }
    }
    let e = {
        let cfg = write_compare(tmp.path(), "noseeds", "[]", "[[compare.arms]]\nname = \"a\"\n", "", 1);
        format!("{:#}", compare::plan(&cfg, &[]).unwrap_err())
    };
    assert!(e.contains("compare.seeds"), "{e}");

    // Through the CLI: a clear error, and no run directory was made.
    let cfg = write_compare(tmp.path(), "bad_cli", "[1]", "[[compare.arms]]\nname = \"a\"\n[[compare.arms]]\nname = \"b\"\nset = { \"model.dim\" = 8 }\n", "", 1);
    let out = sparseburn(&["compare", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("differs from the baseline"), "{}", text(&out));
    assert!(!tmp.path().join("runs").join("bad_cli").exists(), "nothing may be written before the config is valid");
    let out = sparseburn(&["compare", "configs/quickstart.toml"]);
    assert!(!out.status.success() && text(&out).contains("no [compare] section"), "{}", text(&out));
}

#[test]
fn overrides_layer_onto_the_base_and_each_run_gets_its_arm_and_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let arms = "[[compare.arms]]\nname = \"lazy\"\n[[compare.arms]]\nname = \"dense\"\nset = { \"optimizer.table.kind\" = \"dense_adam\", \"optimizer.table.lr\" = 0.01 }\n";
    let cfg = write_compare(tmp.path(), "layers", "[1, 2]", arms, "", 3);
    let overrides = ["compare.seeds=[7, 8, 9]".to_string(), "train.epochs=1".to_string(), "optimizer.table.lr=0.2".to_string()];
    let plan = compare::plan(&cfg, &overrides).unwrap();
    assert_eq!(plan.seeds, vec![7, 8, 9]);
    assert_eq!(plan.baseline, "lazy", "the first arm is the default baseline");
    assert_eq!(plan.dir, tmp.path().join("runs").join("layers"));
    assert_eq!(plan.run_dir("dense", 8), tmp.path().join("runs/layers/dense/seed-8"));
    for arm in &plan.arms {
        assert_eq!(arm.configs.len(), 3);
        for (c, seed) in arm.configs.iter().zip([7, 8, 9]) {
            assert_eq!((c.experiment.name.as_str(), c.experiment.arm.as_str(), c.experiment.seed), ("layers", arm.name.as_str(), seed));
            assert_eq!(c.train.epochs, 1, "--set beats the compare file's own sections");
            assert_eq!(c.model.dim, 64, "the base's settings carry through");
            assert!(c.logging.quiet);
        }
    }
    // A disk-backed table gives every run its own file beside the configured one.
    let table = tmp.path().join("tables/t.bin");
    let storage = ["model.table_storage=\"mmap\"".to_string(), format!("model.table_path={:?}", table.display().to_string())];
    let mapped = compare::plan(&cfg, &storage).unwrap();
    let paths: Vec<PathBuf> = mapped.arms.iter().flat_map(|a| a.configs.iter().map(|c| c.model.table_path.clone().unwrap())).collect();
    assert_eq!(paths, ["lazy-seed-1", "lazy-seed-2", "dense-seed-1", "dense-seed-2"].map(|run| tmp.path().join(format!("tables/t-{run}.bin"))).to_vec());
    assert!(plan.arms.iter().all(|a| a.configs.iter().all(|c| c.model.table_path.is_none())), "memory storage keeps no table file");
    // --set applies to the base; the arm's own set wins over it.
    assert_eq!(plan.arms[0].configs[0].optimizer.table.lr(), 0.2);
    assert_eq!(plan.arms[1].configs[0].optimizer.table.lr(), 0.01);
    assert_eq!(plan.arms[1].configs[0].optimizer.table.name(), "dense_adam");
}

#[test]
fn t_quantiles_and_paired_interval() {
    use compare::stats::{t_quantile, Paired};
    assert!((t_quantile(0.975, 2.0) - 4.302653).abs() < 1e-6);
    assert!((t_quantile(0.975, 4.0) - 2.776445).abs() < 1e-6);
    assert!((t_quantile(0.975, 1.0) - T_975_DF1).abs() < 1e-6);
    // Five paired differences: mean 0.02, sd 0.01 → half-width 2.776445 · 0.01 / √5.
    let p = Paired::of(&[0.01, 0.03, 0.02, 0.03, 0.01], 0.95).unwrap();
    assert!((p.sd.unwrap() - 0.01).abs() < 1e-12);
    assert!((p.ci_high.unwrap() - (0.02 + 2.776445 * 0.01 / 5f64.sqrt())).abs() < 1e-8);
}

#[test]
fn shipped_compare_configs_are_valid() {
    let plan = compare::plan(Path::new("configs/lazy_vs_dense.toml"), &[]).unwrap();
    let names: Vec<&str> = plan.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["lazy_adam", "lazy_adam_per_row", "dense_adam"]);
    assert_eq!(plan.seeds.len(), 3);
    if Path::new("data/debian_sections/train.tsv").is_file() {
        let plan = compare::plan(Path::new("configs/debian_sections_ab.toml"), &[]).unwrap();
        assert_eq!(plan.arms.len(), 3);
    }
}
