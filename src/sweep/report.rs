//! The sweep report: one row per trial, best first by the chosen metric, as
//! sweep.md, sweep.json and sweep.csv.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::spec::{label, Goal, Method, Plan};
use crate::compare::report::{csv_field, run_metrics};
use crate::compare::runner::RunFailure;
use crate::compare::RunResult;

/// One trial's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrialRow {
    /// 1 = best; none for a trial without a result.
    pub rank: Option<usize>,
    pub trial: String,
    /// The run directory.
    pub dir: String,
    /// The swept keys' values.
    pub params: BTreeMap<String, serde_json::Value>,
    /// The chosen metric (null without a result).
    pub metric: Option<f64>,
    /// "ok", "failed", "interrupted" or "not run".
    pub status: String,
    pub error: Option<String>,
    /// Every per-run metric of `compare`'s report (final_accuracy, best_loss, wall_seconds, …).
    pub metrics: BTreeMap<String, f64>,
    /// The finished run was kept from an earlier identical sweep (`--reuse`).
    pub reused: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub command: String,
    pub source: String,
    pub method: Method,
    /// Seed of the random draws (a grid ignores it).
    pub seed: u64,
    /// e.g. `eval/accuracy`.
    pub metric: String,
    /// Its key in `metrics`, e.g. `final_accuracy`.
    pub metric_key: String,
    pub goal: Goal,
    /// The swept keys, in plan order.
    pub keys: Vec<String>,
    /// Runs at a time.
    pub parallel: usize,
    pub interrupted: bool,
    /// Best first; trials without a result last, in plan order.
    pub trials: Vec<TrialRow>,
}

impl Report {
    pub fn best(&self) -> Option<&TrialRow> {
        self.trials.first().filter(|t| t.rank == Some(1))
    }

    pub fn failed(&self) -> usize {
        self.trials.iter().filter(|t| t.status == "failed").count()
    }
}

fn status_of(error: &RunFailure) -> &'static str {
    match error {
        RunFailure::NotRun => "not run",
        RunFailure::Interrupted => "interrupted",
        RunFailure::Failed(_) => "failed",
    }
}

/// Builds the report from the results, one per trial in plan order.
pub fn build(plan: &Plan, results: &[RunResult], command: &str, parallel: usize, interrupted: bool) -> Report {
    let metric = &plan.metric;
    let mut rows: Vec<TrialRow> = plan
        .trials
        .iter()
        .zip(results)
        .map(|(t, r)| {
            let params = plan.params.iter().zip(&t.values).map(|(p, v)| (p.key.clone(), serde_json::to_value(v).unwrap_or(serde_json::Value::Null))).collect();
            let (metrics, status, error) = match &r.outcome {
                Ok(o) => (run_metrics(o, r), "ok".to_string(), None),
                Err(e) => (BTreeMap::new(), status_of(e).to_string(), Some(e.to_string())),
            };
            let value = metrics.get(&metric.key).copied().filter(|v| v.is_finite());
            TrialRow { rank: None, trial: t.name.clone(), dir: r.dir.display().to_string(), params, metric: value, status, error, metrics, reused: r.reused }
        })
        .collect();
    // Best first, ties in plan order (a stable sort); rows without a value last.
    rows.sort_by(|a, b| match (a.metric, b.metric) {
        (Some(x), Some(y)) => match metric.goal {
            Goal::Max => y.total_cmp(&x),
            Goal::Min => x.total_cmp(&y),
        },
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    for (i, row) in rows.iter_mut().filter(|r| r.metric.is_some()).enumerate() {
        row.rank = Some(i + 1);
    }
    Report {
        name: plan.name.clone(),
        command: command.to_string(),
        source: plan.source.display().to_string(),
        method: plan.method,
        seed: plan.seed,
        metric: metric.name.clone(),
        metric_key: metric.key.clone(),
        goal: metric.goal,
        keys: plan.keys().into_iter().map(String::from).collect(),
        parallel,
        interrupted,
        trials: rows,
    }
}

/// The columns after the swept keys, besides the chosen metric.
const COLUMNS: [(&str, &str); 6] =
    [("final_accuracy", "accuracy"), ("final_loss", "loss"), ("best_accuracy", "best acc."), ("steps", "steps"), ("train_seconds", "train s"), ("wall_seconds", "wall s")];

/// A value for people: strings bare, fractions to 4 significant digits
/// (random draws have 17); the JSON and CSV keep every digit.
fn param_label(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            format!("{}", format!("{x:.3e}").parse::<f64>().unwrap_or(x))
        }
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) if v.is_finite() => format!("{v:.4}"),
        _ => "–".into(),
    }
}

/// The Markdown report, with `plots` as (title, file) pairs.
pub fn markdown(r: &Report, plots: &[(String, String)]) -> String {
    let mut s = String::new();
    let goal = match r.goal {
        Goal::Max => "higher is better",
        Goal::Min => "lower is better",
    };
    let _ = writeln!(s, "# Sweep {}\n", r.name);
    let method = match r.method {
        Method::Grid => "grid".to_string(),
        Method::Random => format!("random search (seed {})", r.seed),
    };
    let _ = writeln!(s, "`{}`\n", r.command);
    let _ = writeln!(s, "{} trials, {method} over {}; {} at a time. Sorted by **{}** ({goal}).\n", r.trials.len(), r.keys.join(", "), r.parallel, r.metric);
    if r.interrupted {
        let _ = writeln!(s, "**Interrupted**: the table covers the trials that finished.\n");
    }
    if let Some(b) = r.best() {
        let set: Vec<String> = r.keys.iter().map(|k| format!("`{k} = {}`", param_label(b.params.get(k)))).collect();
        let _ = writeln!(s, "Best: **{}** with {} = {}: {}\n", b.trial, r.metric, num(b.metric), set.join(", "));
    }
    let mut header: Vec<String> = vec!["rank".into(), "trial".into()];
    header.extend(r.keys.iter().map(|k| format!("`{k}`")));
    header.push(format!("**{}**", r.metric));
    header.extend(COLUMNS.iter().filter(|(k, _)| *k != r.metric_key).map(|(_, h)| h.to_string()));
    header.push("status".into());
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(s, "|{}", header.iter().map(|_| "---|").collect::<String>());
    for t in &r.trials {
        let mut cells: Vec<String> = vec![t.rank.map_or("–".into(), |k| k.to_string()), t.trial.clone()];
        cells.extend(r.keys.iter().map(|k| param_label(t.params.get(k))));
        cells.push(num(t.metric));
        cells.extend(COLUMNS.iter().filter(|(k, _)| *k != r.metric_key).map(|(k, _)| num(t.metrics.get(*k).copied())));
        let status = match &t.error {
            Some(e) => format!("{}: {}", t.status, e.replace('|', "\\|").replace('\n', " ")),
            None if t.reused => "ok (reused)".into(),
            None => t.status.clone(),
        };
        cells.push(status);
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    for (title, file) in plots {
        let _ = writeln!(s, "\n## {title}\n\n![{title}]({file})");
    }
    let _ = writeln!(s, "\nEach trial's run directory has its resolved `config.toml`, `summary.json` and TensorBoard events: `tensorboard --logdir .` shows every trial as its own HParams session.");
    s
}

/// One row per trial, best first: rank, trial, the keys, the metric, the other metrics.
pub fn csv(r: &Report) -> String {
    let mut s = String::new();
    let mut header: Vec<String> = vec!["rank".into(), "trial".into()];
    header.extend(r.keys.iter().cloned());
    header.push(r.metric.clone());
    let metric_keys: Vec<&str> = crate::compare::report::METRICS.iter().map(|(k, _)| *k).collect();
    header.extend(metric_keys.iter().map(|k| k.to_string()));
    header.extend(["status".into(), "error".into(), "dir".into()]);
    let _ = writeln!(s, "{}", header.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(","));
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for t in &r.trials {
        let mut cells: Vec<String> = vec![t.rank.map_or(String::new(), |k| k.to_string()), t.trial.clone()];
        cells.extend(r.keys.iter().map(|k| match t.params.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }));
        cells.push(opt(t.metric));
        cells.extend(metric_keys.iter().map(|k| opt(t.metrics.get(*k).copied())));
        cells.extend([t.status.clone(), t.error.clone().unwrap_or_default(), t.dir.clone()]);
        let _ = writeln!(s, "{}", cells.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
    }
    s
}

/// The best few rows, for the terminal.
pub fn text(r: &Report, max_rows: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "sweep {}: {} trials, sorted by {}", r.name, r.trials.len(), r.metric);
    for t in r.trials.iter().take(max_rows) {
        let set: Vec<String> = r.keys.iter().map(|k| format!("{k}={}", param_label(t.params.get(k)))).collect();
        let what = match &t.error {
            Some(e) => format!("{}: {e}", t.status),
            None => format!("{} {}", r.metric, num(t.metric)),
        };
        let _ = writeln!(s, "  {:>3} {} {what}  [{}]", t.rank.map_or("–".into(), |k| k.to_string()), t.trial, set.join(", "));
    }
    if r.trials.len() > max_rows {
        let _ = writeln!(s, "  … {} more in the report", r.trials.len() - max_rows);
    }
    s
}

/// Writes sweep.md, sweep.json and sweep.csv into `dir`, each through a temp file and rename.
pub fn write(r: &Report, dir: &Path, plots: &[(String, String)]) -> anyhow::Result<()> {
    use std::io::Write;
    crate::io::write_atomic(&dir.join("sweep.json"), |w| serde_json::to_writer_pretty(&mut *w, r).map_err(std::io::Error::other).and_then(|_| w.write_all(b"\n")))?;
    crate::io::write_atomic(&dir.join("sweep.md"), |w| w.write_all(markdown(r, plots).as_bytes()))?;
    crate::io::write_atomic(&dir.join("sweep.csv"), |w| w.write_all(csv(r).as_bytes()))?;
    Ok(())
}

/// The trial's values as `key = value` labels (for logs).
pub fn describe(plan: &Plan, values: &[toml::Value]) -> String {
    let short = |v: &toml::Value| match v {
        toml::Value::Float(x) => param_label(serde_json::Number::from_f64(*x).map(serde_json::Value::Number).as_ref()),
        other => label(other),
    };
    plan.params.iter().zip(values).map(|(p, v)| format!("{} = {}", p.key, short(v))).collect::<Vec<_>>().join(", ")
}
