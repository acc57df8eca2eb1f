//! The report: per-arm statistics over seeds, paired differences against the
//! baseline, the same-batches check, and its table / Markdown / JSON / CSV forms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::runner::{RunResult, TrainPoint};
use super::spec::Plan;
use super::stats::{Paired, Summary};
use crate::train::RunOutcome;

/// Every per-run metric: key (JSON/CSV), meaning.
pub const METRICS: &[(&str, &str)] = &[
    ("final_accuracy", "eval accuracy at the end of training"),
    ("final_loss", "eval loss at the end of training"),
    ("final_top_k_accuracy", "eval top-k accuracy at the end of training"),
    ("best_accuracy", "highest eval accuracy over all evaluations"),
    ("best_loss", "lowest eval loss over all evaluations"),
    ("steps", "training steps"),
    ("step_ms", "milliseconds per step, all phases"),
    ("forward_ms", "bag forward + head forward, ms per step"),
    ("backward_ms", "head backward + bag backward, ms per step"),
    ("table_optimizer_ms", "table optimizer, ms per step"),
    ("head_optimizer_ms", "head optimizer, ms per step"),
    ("data_ms", "waiting for the next batch, ms per step"),
    ("rows_touched_per_step", "distinct table rows per step"),
    ("optimizer_state_bytes", "table optimizer state, bytes"),
    ("table_bytes", "embedding table, bytes"),
    ("peak_rss_bytes", "peak resident memory of the run's process, bytes"),
    ("examples_per_second", "training examples per second of step time"),
    ("train_seconds", "training time, evaluations excluded, s"),
    ("wall_seconds", "wall time of the run: start-up, data, training, evaluations, s"),
];

/// The values of [`METRICS`] for one finished run.
pub fn run_metrics(o: &RunOutcome, r: &RunResult) -> BTreeMap<String, f64> {
    let t = &o.step_timings;
    let best_accuracy = r.evals.iter().map(|e| e.accuracy).fold(o.final_eval.accuracy, f64::max);
    let best_loss = r.evals.iter().map(|e| e.loss).fold(o.final_eval.loss, f64::min);
    let values = [
        o.final_eval.accuracy,
        o.final_eval.loss,
        o.final_eval.top_k_accuracy,
        best_accuracy,
        best_loss,
        o.steps as f64,
        t.data_ms + t.bag_forward_ms + t.head_forward_ms + t.head_backward_ms + t.bag_backward_ms + t.table_optimizer_ms + t.head_optimizer_ms,
        t.bag_forward_ms + t.head_forward_ms,
        t.head_backward_ms + t.bag_backward_ms,
        t.table_optimizer_ms,
        t.head_optimizer_ms,
        t.data_ms,
        o.mean_rows_touched,
        o.optimizer_state_bytes as f64,
        o.table_bytes as f64,
        o.peak_rss_bytes as f64,
        o.examples_per_second,
        o.train_seconds,
        r.wall_seconds,
    ];
    METRICS.iter().zip(values).map(|((k, _), v)| (k.to_string(), v)).collect()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailedRun {
    pub seed: u64,
    pub error: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArmReport {
    pub name: String,
    /// The arm's overrides, `key` → value.
    pub set: BTreeMap<String, serde_json::Value>,
    pub seeds_ok: Vec<u64>,
    pub failed: Vec<FailedRun>,
    /// Each metric over the seeds that finished.
    pub metrics: BTreeMap<String, Summary>,
    /// arm − baseline over the seeds both finished (empty for the baseline itself).
    pub vs_baseline: BTreeMap<String, Paired>,
    /// Eval curves over seeds, for the plots.
    pub curve: Vec<CurvePoint>,
}

/// One evaluation step of an arm, over the seeds that finished.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: u64,
    pub n: usize,
    /// Mean train_seconds at this evaluation.
    pub seconds: f64,
    pub accuracy: Summary,
    pub loss: Summary,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub arm: String,
    pub seed: u64,
    pub dir: String,
    pub ok: bool,
    pub error: Option<String>,
    /// An identical earlier run was reused (`--reuse`).
    pub reused: bool,
    pub metrics: BTreeMap<String, f64>,
}

/// Whether, within one seed, every arm saw the same batches and started from the same weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedCheck {
    pub seed: u64,
    pub arms: Vec<String>,
    /// Steps logged by the reference arm and by at least one other.
    pub steps_compared: usize,
    /// Rows touched and unique-id ratio equal at every compared step (`None`: nothing to compare).
    pub same_batches: Option<bool>,
    /// Step-1 batch loss (before any update) bit-identical across arms.
    pub same_initial_loss: Option<bool>,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub config: String,
    pub base: Option<String>,
    pub dir: String,
    pub command: String,
    pub baseline: String,
    pub seeds: Vec<u64>,
    pub confidence: f64,
    /// "subprocess" (each run in its own process) or "in-process".
    pub runner: String,
    /// Runs at a time.
    pub jobs: usize,
    pub interrupted: bool,
    pub arms: Vec<ArmReport>,
    pub runs: Vec<RunReport>,
    pub batches_check: Vec<SeedCheck>,
    /// Metric key → meaning.
    pub metric_help: BTreeMap<String, String>,
}

impl Report {
    pub fn arm(&self, name: &str) -> Option<&ArmReport> {
        self.arms.iter().find(|a| a.name == name)
    }
    pub fn failed_runs(&self) -> usize {
        self.runs.iter().filter(|r| !r.ok).count()
    }
}

/// Extra facts for the report header.
pub struct Context {
    pub command: String,
    pub runner: String,
    pub jobs: usize,
    pub interrupted: bool,
}

pub fn build(plan: &Plan, results: &[RunResult], ctx: &Context) -> Report {
    let runs: Vec<RunReport> = results
        .iter()
        .map(|r| RunReport {
            arm: r.arm.clone(),
            seed: r.seed,
            dir: r.dir.display().to_string(),
            ok: r.outcome.is_ok(),
            error: r.outcome.as_ref().err().map(|e| e.to_string()),
            reused: r.reused,
            metrics: r.outcome.as_ref().map(|o| run_metrics(o, r)).unwrap_or_default(),
        })
        .collect();
    let find = |arm: &str, seed: u64| runs.iter().find(|r| r.arm == arm && r.seed == seed && r.ok);
    let mut arms = Vec::new();
    for arm in &plan.arms {
        let mine: Vec<&RunResult> = results.iter().filter(|r| r.arm == arm.name).collect();
        let seeds_ok: Vec<u64> = plan.seeds.iter().copied().filter(|&s| find(&arm.name, s).is_some()).collect();
        let failed = mine.iter().filter_map(|r| r.outcome.as_ref().err().map(|e| FailedRun { seed: r.seed, error: e.to_string() })).collect();
        let mut metrics = BTreeMap::new();
        let mut vs_baseline = BTreeMap::new();
        for (key, _) in METRICS {
            let values: Vec<f64> = seeds_ok.iter().map(|&s| find(&arm.name, s).unwrap().metrics[*key]).collect();
            if let Some(s) = Summary::of(&values) {
                metrics.insert(key.to_string(), s);
            }
            if arm.name != plan.baseline {
                let diffs: Vec<f64> = seeds_ok.iter().filter_map(|&s| Some(find(&arm.name, s)?.metrics[*key] - find(&plan.baseline, s)?.metrics[*key])).collect();
                if let Some(p) = Paired::of(&diffs, plan.confidence) {
                    vs_baseline.insert(key.to_string(), p);
                }
            }
        }
        arms.push(ArmReport {
            name: arm.name.clone(),
            set: arm.set.iter().map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(serde_json::Value::Null))).collect(),
            seeds_ok,
            failed,
            metrics,
            vs_baseline,
            curve: curve(mine.iter().copied().filter(|r| r.outcome.is_ok())),
        });
    }
    Report {
        name: plan.name.clone(),
        config: plan.source.display().to_string(),
        base: plan.base.as_ref().map(|b| b.display().to_string()),
        dir: plan.dir.display().to_string(),
        command: ctx.command.clone(),
        baseline: plan.baseline.clone(),
        seeds: plan.seeds.clone(),
        confidence: plan.confidence,
        runner: ctx.runner.clone(),
        jobs: ctx.jobs,
        interrupted: ctx.interrupted,
        batches_check: plan.seeds.iter().map(|&s| check_seed(plan, results, s)).collect(),
        arms,
        runs,
        metric_help: METRICS.iter().map(|(k, h)| (k.to_string(), h.to_string())).collect(),
    }
}

/// Mean and range over seeds at each evaluation step.
fn curve<'a>(runs: impl Iterator<Item = &'a RunResult>) -> Vec<CurvePoint> {
    let mut by_step: BTreeMap<u64, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for r in runs {
        for e in &r.evals {
            by_step.entry(e.step).or_default().push((e.train_seconds, e.accuracy, e.loss));
        }
    }
    by_step
        .into_iter()
        .map(|(step, v)| {
            let col = |f: fn(&(f64, f64, f64)) -> f64| v.iter().map(f).collect::<Vec<f64>>();
            CurvePoint {
                step,
                n: v.len(),
                seconds: super::stats::mean(&col(|p| p.0)),
                accuracy: Summary::of(&col(|p| p.1)).expect("non-empty"),
                loss: Summary::of(&col(|p| p.2)).expect("non-empty"),
            }
        })
        .collect()
}

/// Compares the batch-only facts of every arm's steps within `seed` against a
/// reference arm (the baseline, or the first arm that logged anything).
fn check_seed(plan: &Plan, results: &[RunResult], seed: u64) -> SeedCheck {
    let mut arms: Vec<(&str, &[TrainPoint])> = results.iter().filter(|r| r.seed == seed && !r.train.is_empty()).map(|r| (r.arm.as_str(), r.train.as_slice())).collect();
    if let Some(i) = arms.iter().position(|(a, _)| *a == plan.baseline) {
        arms.swap(0, i);
    }
    let names: Vec<String> = arms.iter().map(|(a, _)| a.to_string()).collect();
    if arms.len() < 2 {
        return SeedCheck {
            seed,
            arms: names,
            steps_compared: 0,
            same_batches: None,
            same_initial_loss: None,
            detail: "fewer than two arms logged steps: nothing to compare".into(),
        };
    }
    let (reference, ref_points) = arms[0];
    // Arms with another table dtype start from the same weights rounded: their step-1 loss differs.
    let dtype = |arm: &str| plan.arms.iter().find(|a| a.name == arm).and_then(|a| a.configs.first()).map(|c| c.model.table_dtype);
    let reference_by_step: BTreeMap<u64, &TrainPoint> = ref_points.iter().map(|p| (p.step, p)).collect();
    let mut compared = std::collections::BTreeSet::new();
    let mut mismatches = Vec::new();
    let mut batch_mismatches = 0;
    let mut same_initial_loss = None;
    for (arm, points) in &arms[1..] {
        for p in points.iter() {
            let Some(q) = reference_by_step.get(&p.step) else { continue };
            compared.insert(p.step);
            if p.rows_touched != q.rows_touched || p.unique_ratio.to_bits() != q.unique_ratio.to_bits() {
                batch_mismatches += 1;
                mismatches
                    .push(format!("{arm} step {}: {} rows touched (ratio {}) vs {reference}: {} ({})", p.step, p.rows_touched, p.unique_ratio, q.rows_touched, q.unique_ratio));
            }
            if p.step == 1 && dtype(arm) == dtype(reference) {
                let same = p.loss.to_bits() == q.loss.to_bits();
                same_initial_loss = Some(same_initial_loss.unwrap_or(true) && same);
                if !same {
                    mismatches.push(format!("{arm} step 1 loss {} vs {reference}: {}", p.loss, q.loss));
                }
            }
        }
    }
    let same_batches = (!compared.is_empty()).then_some(batch_mismatches == 0);
    let detail = if compared.is_empty() {
        "no step logged by two arms (logging.scalar_every?)".to_string()
    } else if mismatches.is_empty() {
        let first = reference_by_step.get(&1).map(|p| format!("; step-1 loss {} in every arm of the baseline's table dtype (same initial weights)", p.loss)).unwrap_or_default();
        format!("{} arms, {} steps: rows touched and unique-id ratio equal at every step{first}", arms.len(), compared.len())
    } else {
        let shown: Vec<&str> = mismatches.iter().take(3).map(String::as_str).collect();
        format!("MISMATCH ({} differences): {}", mismatches.len(), shown.join("; "))
    };
    SeedCheck { seed, arms: names, steps_compared: compared.len(), same_batches, same_initial_loss, detail }
}

// ---------------------------------------------------------------- formatting

/// `digits` decimals, or scientific notation for numbers too large to read that way (a diverged loss).
fn num(x: f64, digits: usize, sign: bool) -> String {
    if x.is_finite() && x.abs() >= 1e6 {
        if sign {
            format!("{x:+.2e}")
        } else {
            format!("{x:.2e}")
        }
    } else if sign {
        format!("{x:+.digits$}")
    } else {
        format!("{x:.digits$}")
    }
}

fn fmt_summary(s: Option<&Summary>, digits: usize, scale: f64) -> String {
    match s {
        None => "—".into(),
        Some(s) => match s.sd {
            Some(sd) => format!("{} ± {}", num(s.mean * scale, digits, false), num(sd * scale, digits, false)),
            None => num(s.mean * scale, digits, false),
        },
    }
}

fn fmt_mean(s: Option<&Summary>, digits: usize, scale: f64) -> String {
    s.map_or("—".into(), |s| num(s.mean * scale, digits, false))
}

fn fmt_paired(p: Option<&Paired>, digits: usize) -> String {
    match p {
        None => "—".into(),
        Some(p) => match (p.ci_low, p.ci_high) {
            (Some(lo), Some(hi)) => format!("{} [{}, {}]", num(p.mean, digits, true), num(lo, digits, true), num(hi, digits, true)),
            _ => format!("{} (n={})", num(p.mean, digits, true), p.n),
        },
    }
}

struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn markdown(&self) -> String {
        let mut s = format!("| {} |\n", self.headers.join(" | "));
        s += &format!("|{}\n", self.headers.iter().enumerate().map(|(i, _)| if i == 0 { " --- |" } else { " ---: |" }).collect::<String>());
        for r in &self.rows {
            s += &format!("| {} |\n", r.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "));
        }
        s
    }

    fn text(&self) -> String {
        let w: Vec<usize> = (0..self.headers.len()).map(|i| self.rows.iter().map(|r| r[i].chars().count()).chain([self.headers[i].chars().count()]).max().unwrap_or(0)).collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let pad = w[i] - c.chars().count();
                    if i == 0 {
                        format!("{c}{}", " ".repeat(pad))
                    } else {
                        format!("{}{c}", " ".repeat(pad))
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut s = line(&self.headers) + "\n";
        for r in &self.rows {
            s += &(line(r) + "\n");
        }
        s
    }
}

fn quality_table(r: &Report) -> Table {
    let pct = (r.confidence * 100.0).round();
    let b = &r.baseline;
    let headers = vec![
        "arm".to_string(),
        "seeds".into(),
        "final acc".into(),
        format!("Δ final acc vs {b} [{pct}% CI]"),
        "best acc".into(),
        format!("Δ best acc [{pct}% CI]"),
        "final loss".into(),
        format!("Δ final loss [{pct}% CI]"),
        "best loss".into(),
    ];
    let rows = r
        .arms
        .iter()
        .map(|a| {
            let m = |k: &str| a.metrics.get(k);
            let d = |k: &str| if a.name == *b { "(baseline)".to_string() } else { fmt_paired(a.vs_baseline.get(k), 4) };
            vec![
                a.name.clone(),
                format!("{}/{}", a.seeds_ok.len(), a.seeds_ok.len() + a.failed.len()),
                fmt_summary(m("final_accuracy"), 4, 1.0),
                d("final_accuracy"),
                fmt_summary(m("best_accuracy"), 4, 1.0),
                d("best_accuracy"),
                fmt_summary(m("final_loss"), 4, 1.0),
                d("final_loss"),
                fmt_summary(m("best_loss"), 4, 1.0),
            ]
        })
        .collect();
    Table { headers, rows }
}

fn cost_table(r: &Report) -> Table {
    let headers =
        ["arm", "ms/step", "forward", "backward", "table opt", "head opt", "data", "rows/step", "opt state MB", "peak RSS MB", "train s", "wall s"].map(String::from).to_vec();
    let rows = r
        .arms
        .iter()
        .map(|a| {
            let m = |k: &str| a.metrics.get(k);
            vec![
                a.name.clone(),
                fmt_summary(m("step_ms"), 3, 1.0),
                fmt_mean(m("forward_ms"), 3, 1.0),
                fmt_mean(m("backward_ms"), 3, 1.0),
                fmt_mean(m("table_optimizer_ms"), 3, 1.0),
                fmt_mean(m("head_optimizer_ms"), 3, 1.0),
                fmt_mean(m("data_ms"), 3, 1.0),
                fmt_mean(m("rows_touched_per_step"), 0, 1.0),
                fmt_mean(m("optimizer_state_bytes"), 1, 1e-6),
                fmt_mean(m("peak_rss_bytes"), 1, 1e-6),
                fmt_summary(m("train_seconds"), 2, 1.0),
                fmt_summary(m("wall_seconds"), 2, 1.0),
            ]
        })
        .collect();
    Table { headers, rows }
}

fn runs_table(r: &Report) -> Table {
    let headers = ["arm", "seed", "status", "final acc", "final loss", "best acc", "steps", "ms/step", "train s", "wall s"].map(String::from).to_vec();
    let rows = r
        .runs
        .iter()
        .map(|run| {
            let m = |k: &str, d: usize| run.metrics.get(k).map_or("—".into(), |v| num(*v, d, false));
            let status = if run.ok {
                if run.reused {
                    "ok (reused)"
                } else {
                    "ok"
                }
            } else {
                "FAILED"
            };
            vec![
                run.arm.clone(),
                run.seed.to_string(),
                status.into(),
                m("final_accuracy", 4),
                m("final_loss", 4),
                m("best_accuracy", 4),
                m("steps", 0),
                m("step_ms", 3),
                m("train_seconds", 2),
                m("wall_seconds", 2),
            ]
        })
        .collect();
    Table { headers, rows }
}

fn header_line(r: &Report) -> String {
    let runner = if r.runner == "subprocess" { "each run in its own process" } else { "runs in one process (peak RSS is process-wide)" };
    let jobs = if r.jobs == 1 { "one at a time".to_string() } else { format!("{} at a time (runs shared the CPU: timings are not those of a lone run)", r.jobs) };
    format!(
        "{} arm{} × {} seed{} ({}), baseline `{}`; {runner}, {jobs}",
        r.arms.len(),
        if r.arms.len() == 1 { "" } else { "s" },
        r.seeds.len(),
        if r.seeds.len() == 1 { "" } else { "s" },
        r.seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
        r.baseline
    )
}

fn check_lines(r: &Report) -> Vec<String> {
    r.batches_check
        .iter()
        .map(|c| {
            let mark = match (c.same_batches, c.same_initial_loss) {
                (Some(true), Some(false)) | (Some(false), _) => "✗",
                (Some(true), _) => "✓",
                (None, _) => "–",
            };
            format!("seed {}: {mark} {}", c.seed, c.detail)
        })
        .collect()
}

/// The report as printed on the terminal.
pub fn text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "compare {}: {}", r.name, header_line(r));
    let _ = writeln!(s, "\nquality (mean ± sd over seeds; Δ = arm − baseline, paired over seeds, Student t):\n{}", quality_table(r).text());
    let _ = writeln!(s, "cost (mean over seeds; ms per step):\n{}", cost_table(r).text());
    let _ = writeln!(s, "same batches and initial weights within each seed:");
    for l in check_lines(r) {
        let _ = writeln!(s, "  {l}");
    }
    for run in r.runs.iter().filter(|r| !r.ok) {
        let _ = writeln!(s, "FAILED {} seed {}: {}", run.arm, run.seed, run.error.as_deref().unwrap_or(""));
    }
    s
}

pub fn markdown(r: &Report, plots: &[(String, String)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Compare `{}`\n", r.name);
    let _ = writeln!(s, "`{}`\n", r.command);
    let base = r.base.as_ref().map(|b| format!(", base `{b}`")).unwrap_or_default();
    let _ = writeln!(s, "Config `{}`{base}. {}.", r.config, header_line(r));
    if r.interrupted {
        let _ = writeln!(s, "\n**Interrupted**: runs that had not finished are missing or failed.");
    }
    let _ = writeln!(s, "\n## Arms\n");
    for a in &r.arms {
        let set: Vec<String> = a.set.iter().map(|(k, v)| format!("`{k} = {v}`")).collect(); // JSON values read as TOML here
        let set = if set.is_empty() { "(the base config)".to_string() } else { set.join(", ") };
        let _ = writeln!(s, "- `{}`{}: {set}", a.name, if a.name == r.baseline { " (baseline)" } else { "" });
    }
    let pct = (r.confidence * 100.0).round();
    let _ = writeln!(s, "\n## Quality\n");
    let _ = writeln!(
        s,
        "Mean ± sample sd over the seeds that finished. Δ = arm − `{}`, paired over the seeds both finished, with a {pct}% Student-t interval on n − 1 degrees of freedom. Best = highest accuracy / lowest loss over all evaluations.\n",
        r.baseline
    );
    s += &quality_table(r).markdown();
    let _ = writeln!(s, "\n## Cost\n\nMean over seeds. ms per training step: forward = bag + head forward, backward = head + bag backward; rows/step = distinct table rows touched per step; opt state = table optimizer state; peak RSS = the run's process; wall = the whole run including start-up and evaluations.\n");
    s += &cost_table(r).markdown();
    let _ = writeln!(s, "\n## Same batches and initial weights\n\nWithin a seed, the rows touched and the unique-id ratio of each step depend only on that step's batch, and the step-1 loss only on the first batch and the initial weights; they are compared across arms from each run's metrics.jsonl.\n");
    for l in check_lines(r) {
        let _ = writeln!(s, "- {l}");
    }
    let failed: Vec<&RunReport> = r.runs.iter().filter(|r| !r.ok).collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "\n## Failed runs\n");
        for run in failed {
            let _ = writeln!(s, "- `{}` seed {}: {} (`{}`)", run.arm, run.seed, run.error.as_deref().unwrap_or(""), run.dir);
        }
    }
    if !plots.is_empty() {
        let _ = writeln!(s, "\n## Plots\n\nMean over seeds; the band spans the lowest to the highest seed.\n");
        for (title, file) in plots {
            let _ = writeln!(s, "![{title}]({file})\n");
        }
    }
    let _ = writeln!(s, "## Runs\n");
    s += &runs_table(r).markdown();
    let _ = writeln!(s, "\nTensorBoard: `tensorboard --logdir {}`", r.dir);
    s
}

pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Long format: one row per arm × metric.
pub fn csv(r: &Report) -> String {
    let mut s = String::from("arm,baseline,metric,n,mean,sd,min,max,diff_n,diff_mean,diff_sd,diff_ci_low,diff_ci_high,diff_p_value,confidence\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for a in &r.arms {
        for (key, _) in METRICS {
            let Some(m) = a.metrics.get(*key) else { continue };
            let d = a.vs_baseline.get(*key);
            let _ = writeln!(
                s,
                "{},{},{key},{},{},{},{},{},{},{},{},{},{},{},{}",
                csv_field(&a.name),
                csv_field(&r.baseline),
                m.n,
                m.mean,
                opt(m.sd),
                m.min,
                m.max,
                d.map_or(String::new(), |d| d.n.to_string()),
                opt(d.map(|d| d.mean)),
                opt(d.and_then(|d| d.sd)),
                opt(d.and_then(|d| d.ci_low)),
                opt(d.and_then(|d| d.ci_high)),
                opt(d.and_then(|d| d.p_value)),
                r.confidence
            );
        }
    }
    s
}

/// Writes report.md, report.json and report.csv into `dir`.
pub fn write(r: &Report, dir: &Path, plots: &[(String, String)]) -> anyhow::Result<()> {
    use std::io::Write;
    crate::io::write_atomic(&dir.join("report.json"), |w| serde_json::to_writer_pretty(&mut *w, r).map_err(std::io::Error::other).and_then(|_| w.write_all(b"\n")))?;
    crate::io::write_atomic(&dir.join("report.md"), |w| w.write_all(markdown(r, plots).as_bytes()))?;
    crate::io::write_atomic(&dir.join("report.csv"), |w| w.write_all(csv(r).as_bytes()))?;
    Ok(())
}
