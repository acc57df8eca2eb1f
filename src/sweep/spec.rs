//! The sweep file: an experiment config with a `[sweep]` table (or any
//! experiment config plus `--grid` flags), resolved into a list of trials,
//! each a fully validated config, before anything trains.
//!
//! ```toml
//! [sweep]
//! base = "configs/quickstart.toml"  # optional: the experiment to start from
//! method = "random"                 # "grid" (default) or "random"
//! trials = 12                       # random only
//! seed = 0                          # random only: same seed, same trials
//! metric = "eval/accuracy"          # what the report sorts by
//! goal = "max"                      # default: "min" for losses and times
//! parallel = "auto"                 # or a number of runs at a time
//!
//! [sweep.params]
//! "optimizer.table.lr" = { log_uniform = [1e-3, 1e-1] }
//! "model.dim" = [32, 64, 128]       # a list: a grid axis, or a choice when random
//! ```
//!
//! Layering, last wins: the base → the file's own sections → `--set` (keys
//! under `sweep.` change the `[sweep]` table) → the trial's values →
//! `experiment.arm = "trial-NNN"`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::space::{self, Domain, Param, DISTRIBUTIONS};
use crate::compare::report::METRICS;
use crate::compare::spec::flatten;
use crate::config::{apply_override, set_path, Config};

/// How trials are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Every combination of the listed values.
    #[default]
    Grid,
    /// `trials` seeded draws from each key's distribution.
    Random,
}

/// Whether a larger or a smaller metric is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    Max,
    Min,
}

/// Runs at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallel {
    /// As many as the cores and the memory plan allow (see [`super::parallel`]).
    Auto,
    Jobs(usize),
}

impl std::str::FromStr for Parallel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Parallel::Auto),
            n => match n.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Parallel::Jobs(n)),
                _ => Err(format!("expected \"auto\" or a number of runs at least 1, got {s:?}")),
            },
        }
    }
}

/// `[sweep]` as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepSection {
    base: Option<PathBuf>,
    method: Option<Method>,
    trials: Option<usize>,
    seed: Option<u64>,
    metric: Option<String>,
    goal: Option<Goal>,
    parallel: Option<toml::Value>,
    #[serde(default)]
    params: toml::Table,
}

/// The metric the report ranks by.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metric {
    /// As the user wrote it, e.g. `eval/accuracy`.
    pub name: String,
    /// Its key among the per-run metrics (`compare::report::METRICS`), e.g. `final_accuracy`.
    pub key: String,
    pub goal: Goal,
}

/// TensorBoard's tag names for the final evaluation, as aliases.
const ALIASES: [(&str, &str); 3] = [("eval/accuracy", "final_accuracy"), ("eval/loss", "final_loss"), ("eval/top_k_accuracy", "final_top_k_accuracy")];

impl Metric {
    fn parse(source: &str, name: &str, goal: Option<Goal>) -> anyhow::Result<Metric> {
        let key = ALIASES.iter().find(|(a, _)| *a == name).map(|(_, k)| *k).or_else(|| METRICS.iter().find(|(k, _)| *k == name).map(|(k, _)| *k));
        let Some(key) = key else {
            let names: Vec<&str> = ALIASES.iter().map(|(a, _)| *a).chain(METRICS.iter().map(|(k, _)| *k)).collect();
            bail!("{source}: `sweep.metric` = {name:?} is not a metric; use one of {}", names.join(", "));
        };
        let smaller_is_better = key.contains("loss") || key.ends_with("_ms") || key.ends_with("_seconds") || key.ends_with("_bytes");
        let goal = goal.unwrap_or(if smaller_is_better { Goal::Min } else { Goal::Max });
        Ok(Metric { name: name.to_string(), key: key.to_string(), goal })
    }
}

/// One run of the sweep.
#[derive(Clone, Debug)]
pub struct Trial {
    /// `trial-001`, … in plan order: names its run directory and `experiment.arm`.
    pub name: String,
    /// The swept keys' values, in the order of [`Plan::params`].
    pub values: Vec<toml::Value>,
    pub config: Config,
}

/// A validated sweep: nothing has been trained yet.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The sweep file (or the experiment config given with `--grid`).
    pub source: PathBuf,
    /// `experiment.name`.
    pub name: String,
    pub method: Method,
    /// The seed of the random draws (unused by a grid).
    pub seed: u64,
    pub metric: Metric,
    pub parallel: Parallel,
    pub params: Vec<Param>,
    pub trials: Vec<Trial>,
    /// `<logging.dir>/<experiment.name>/sweep`: trial directories and the report go here.
    pub dir: PathBuf,
}

impl Plan {
    pub fn run_dir(&self, trial: &Trial) -> PathBuf {
        self.dir.join(&trial.name)
    }

    pub fn keys(&self) -> Vec<&str> {
        self.params.iter().map(|p| p.key.as_str()).collect()
    }
}

/// `--grid optimizer.table.lr=0.01,0.1`: the key and its values. The values
/// are read as a TOML list when they form one (`model.hidden=[],[64]`, quoted
/// strings), otherwise split at commas, each read as TOML or else as a string.
pub fn parse_grid(arg: &str) -> anyhow::Result<(String, Vec<toml::Value>)> {
    let (key, raw) = arg.split_once('=').with_context(|| format!("--grid {arg:?}: expected KEY=V1,V2,…, e.g. optimizer.table.lr=0.01,0.1"))?;
    let (key, raw) = (key.trim(), raw.trim());
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("--grid {arg:?}: bad key {key:?}");
    }
    let as_list = toml::from_str::<toml::Table>(&format!("v = [{raw}]")).ok().and_then(|mut t| t.remove("v"));
    let values = match as_list {
        Some(toml::Value::Array(values)) => values,
        _ => raw
            .split(',')
            .map(|v| {
                let v = v.trim();
                toml::from_str::<toml::Table>(&format!("v = {v}")).ok().and_then(|mut t| t.remove("v")).unwrap_or_else(|| toml::Value::String(v.to_string()))
            })
            .collect(),
    };
    if values.is_empty() || raw.is_empty() {
        bail!("--grid {key}: the list of values is empty");
    }
    Ok((key.to_string(), values))
}

/// `[sweep.params]` as (key, domain) pairs, in key order. Keys may be quoted
/// (`"optimizer.table.lr" = [...]`) or nested tables; a one-entry table named
/// like a distribution is a distribution, not a section.
fn read_params(source: &str, params: &toml::Table) -> anyhow::Result<Vec<Param>> {
    fn walk(source: &str, prefix: &str, table: &toml::Table, out: &mut Vec<Param>) -> anyhow::Result<()> {
        for (k, v) in table {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            let is_distribution = v.as_table().is_some_and(|t| t.len() == 1 && t.keys().all(|n| DISTRIBUTIONS.contains(&n.as_str())));
            match v {
                toml::Value::Table(t) if !is_distribution => walk(source, &key, t, out)?,
                _ => {
                    let domain = Domain::parse(&format!("{source}: sweep.params `{key}`"), v)?;
                    out.push(Param { key, domain });
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(source, "", params, &mut out)?;
    // Quoted and nested keys mix in a TOML table's order: sort by the full key.
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: invalid TOML: {e}", path.display()))
}

/// The value as a short label: `0.01`, `mean`, `[64, 64]`.
pub fn label(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn resolve(table: &toml::Table, what: &str) -> anyhow::Result<Config> {
    let text = toml::to_string(table).context("serialising a trial's config")?;
    Config::from_toml(&text, what, &[])
}

/// Reads and checks a sweep: every trial's config is resolved and validated
/// before anything trains. `grid` (`--grid` flags) replaces `[sweep.params]`
/// and makes the sweep a grid; `parallel` overrides `sweep.parallel`.
pub fn plan(path: &Path, overrides: &[String], grid: &[String], parallel: Option<Parallel>) -> anyhow::Result<Plan> {
    let source = path.display().to_string();
    let mut file = read_table(path)?;
    let mut sweep = match file.remove("sweep") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => bail!("{source}: `sweep` must be a section ([sweep])"),
        None if grid.is_empty() => {
            bail!("{source}: no [sweep] section and no --grid: give the keys to sweep, e.g. --grid optimizer.table.lr=0.01,0.1")
        }
        None => toml::Table::new(),
    };
    let (sweep_sets, config_sets): (Vec<&String>, Vec<&String>) = overrides.iter().partition(|o| o.trim_start().starts_with("sweep."));
    for o in sweep_sets {
        let mut wrapper = toml::Table::new();
        wrapper.insert("sweep".into(), toml::Value::Table(std::mem::take(&mut sweep)));
        apply_override(&mut wrapper, o)?;
        sweep = match wrapper.remove("sweep") {
            Some(toml::Value::Table(t)) => t,
            _ => bail!("--set {o}: `sweep` must stay a section"),
        };
    }
    let section: SweepSection = serde_path_to_error::deserialize(toml::Value::Table(sweep)).map_err(|e| anyhow::anyhow!("{source}: `sweep.{}`: {}", e.path(), e.inner()))?;

    // The experiment: the base, the file's own sections, then --set.
    let mut table = match &section.base {
        Some(b) => {
            let b = if b.is_relative() && !b.exists() { path.parent().unwrap_or(Path::new(".")).join(b) } else { b.clone() };
            read_table(&b).with_context(|| format!("{source}: `sweep.base`"))?
        }
        None => toml::Table::new(),
    };
    for (k, v) in flatten(&file) {
        set_path(&mut table, &k, v, &source)?;
    }
    for o in config_sets {
        apply_override(&mut table, o)?;
    }
    let base = resolve(&table, &source)?;

    let (method, params) = if grid.is_empty() {
        (section.method.unwrap_or_default(), read_params(&source, &section.params)?)
    } else {
        let mut params: Vec<Param> = Vec::new();
        for g in grid {
            let (key, values) = parse_grid(g)?;
            if params.iter().any(|p| p.key == key) {
                bail!("--grid {key}: the key is given twice");
            }
            params.push(Param { key, domain: Domain::Values(values) });
        }
        (Method::Grid, params)
    };
    if params.is_empty() {
        bail!("{source}: nothing to sweep: [sweep.params] is empty (or give --grid KEY=V1,V2)");
    }
    for p in &params {
        if p.key == "experiment.arm" {
            bail!("{source}: sweep.params `experiment.arm`: the sweep names each trial's arm itself (trial-NNN)");
        }
        // Each key alone on the experiment, so an unknown key or a bad value is blamed on that key.
        let value = match &p.domain {
            Domain::Values(v) => v.clone(),
            Domain::Uniform { low, high } | Domain::LogUniform { low, high } => vec![toml::Value::Float(*low), toml::Value::Float(*high)],
            Domain::Int { low, high } => vec![toml::Value::Integer(*low), toml::Value::Integer(*high)],
        };
        for v in value {
            let mut t = table.clone();
            let what = format!("{source}: sweep.params `{}` = {}", p.key, label(&v));
            set_path(&mut t, &p.key, v, &what)?;
            resolve(&t, &what)?;
        }
    }

    let seed = section.seed.unwrap_or(0);
    let combos = match method {
        Method::Grid => {
            if section.trials.is_some() && grid.is_empty() {
                bail!("{source}: `sweep.trials` is for method = \"random\"; a grid runs every combination");
            }
            space::grid(&params, &source)?
        }
        Method::Random => match section.trials {
            Some(n) if n >= 1 => space::random(&params, n, seed),
            _ => bail!("{source}: `sweep.trials` must be at least 1 for method = \"random\" (how many draws)"),
        },
    };
    let width = combos.len().to_string().len().max(3);
    let mut trials = Vec::with_capacity(combos.len());
    for (i, values) in combos.into_iter().enumerate() {
        let name = format!("trial-{:0width$}", i + 1);
        let mut t = table.clone();
        for (p, v) in params.iter().zip(&values) {
            set_path(&mut t, &p.key, v.clone(), &source)?;
        }
        set_path(&mut t, "experiment.arm", toml::Value::String(name.clone()), &source)?;
        let set: Vec<String> = params.iter().zip(&values).map(|(p, v)| format!("{} = {}", p.key, label(v))).collect();
        let mut config = resolve(&t, &format!("{source} ({name}: {})", set.join(", ")))?;
        // A disk-backed table: every trial gets its own file (trials may run at the same time).
        config.give_own_table_file(&name);
        trials.push(Trial { name, values, config });
    }

    let metric = Metric::parse(&source, section.metric.as_deref().unwrap_or("eval/accuracy"), section.goal)?;
    let parallel = match (parallel, &section.parallel) {
        (Some(p), _) => p,
        (None, None) => Parallel::Auto,
        (None, Some(toml::Value::String(s))) => s.parse().map_err(|e| anyhow::anyhow!("{source}: `sweep.parallel`: {e}"))?,
        (None, Some(toml::Value::Integer(n))) if *n >= 1 => Parallel::Jobs(*n as usize),
        (None, Some(other)) => bail!("{source}: `sweep.parallel`: expected \"auto\" or a number of runs at least 1, got {other}"),
    };
    Ok(Plan {
        source: path.to_path_buf(),
        dir: base.logging.dir.join(&base.experiment.name).join("sweep"),
        name: base.experiment.name.clone(),
        method,
        seed,
        metric,
        parallel,
        params,
        trials,
    })
}
