//! The compare config: which experiment every arm starts from, the arms
//! (each a set of `optimizer.*` overrides), the seeds and the baseline.
//!
//! ```toml
//! [compare]
//! name = "lazy_vs_dense"            # runs go to <logging.dir>/<name>/<arm>/seed-<k>/
//! base = "configs/quickstart.toml"  # the experiment every arm starts from
//! seeds = [1, 2, 3]
//! baseline = "lazy_adam"            # default: the first arm
//!
//! [[compare.arms]]
//! name = "lazy_adam"
//! set = { "optimizer.table.kind" = "lazy_adam" }
//!
//! [[compare.arms]]
//! name = "dense_adam"
//! set = { "optimizer.table.kind" = "dense_adam" }
//!
//! [train]                           # any other section overrides the base, for every arm
//! epochs = 10
//! ```
//!
//! Layering, last wins: the base file → the compare file's own sections →
//! `--set` (keys under `compare.` change the compare section instead) → the
//! arm's `set` → `experiment.{name, arm, seed}`. Arms may differ only in
//! `optimizer.*` and `model.table_dtype` (the same initial weights, rounded
//! to the arm's dtype): anything else would change the data, the batches or
//! the initial weights, and the comparison would no longer be paired.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::config::{apply_override, set_path, Config};

/// `[compare]` as written in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareSection {
    name: Option<String>,
    base: Option<PathBuf>,
    #[serde(default)]
    seeds: Vec<u64>,
    baseline: Option<String>,
    #[serde(default)]
    arms: Vec<ArmSection>,
    /// Confidence level of the paired intervals (default 0.95).
    #[serde(default)]
    confidence: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArmSection {
    name: String,
    #[serde(default)]
    set: toml::Table,
}

/// One arm of the comparison: its overrides and its config for every seed.
#[derive(Clone, Debug)]
pub struct Arm {
    pub name: String,
    /// The arm's overrides as flattened `key = value` pairs, in key order.
    pub set: Vec<(String, toml::Value)>,
    /// The fully resolved config of each seed, in the order of [`Plan::seeds`].
    pub configs: Vec<Config>,
}

/// A validated comparison: nothing has been trained yet.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The compare file.
    pub source: PathBuf,
    pub name: String,
    /// The base experiment file, if the compare file names one.
    pub base: Option<PathBuf>,
    pub seeds: Vec<u64>,
    pub baseline: String,
    pub confidence: f64,
    pub arms: Vec<Arm>,
    /// `<logging.dir>/<name>`: run directories and the report go here.
    pub dir: PathBuf,
}

impl Plan {
    /// `<dir>/<arm>/seed-<seed>`.
    pub fn run_dir(&self, arm: &str, seed: u64) -> PathBuf {
        self.dir.join(arm).join(format!("seed-{seed}"))
    }

    pub fn baseline_index(&self) -> usize {
        self.arms.iter().position(|a| a.name == self.baseline).expect("validated baseline")
    }

    pub fn runs(&self) -> usize {
        self.arms.len() * self.seeds.len()
    }
}

/// Leaves of a TOML table as `a.b.c` → value; arrays are leaves.
pub fn flatten(table: &toml::Table) -> BTreeMap<String, toml::Value> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
        for (k, v) in table {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(t) => walk(&key, t, out),
                other => {
                    out.insert(key, other.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", table, &mut out);
    out
}

/// Merges every leaf of `over` into `base`.
fn merge(base: &mut toml::Table, over: &toml::Table, what: &str) -> anyhow::Result<()> {
    for (k, v) in flatten(over) {
        set_path(base, &k, v, what)?;
    }
    Ok(())
}

fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: invalid TOML: {e}", path.display()))
}

/// Names that are safe as one directory name and in every report format.
fn check_arm_name(source: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) && !name.starts_with('.');
    if !ok {
        bail!("{source}: arm name {name:?} must be 1-64 characters of letters, digits, `_`, `-` or `.` (it names a directory)");
    }
    Ok(())
}

/// Reads and checks a compare file: every arm's config for every seed is
/// resolved and validated, and arms that differ outside `optimizer.*` are
/// rejected, all before anything trains.
pub fn plan(path: &Path, overrides: &[String]) -> anyhow::Result<Plan> {
    let source = path.display().to_string();
    let mut file = read_table(path)?;
    let mut compare = match file.remove("compare") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => bail!("{source}: `compare` must be a section ([compare])"),
        None => bail!("{source}: no [compare] section: this is not a compare config (to train one experiment use `sparseburn train`)"),
    };
    let (compare_sets, base_sets): (Vec<&String>, Vec<&String>) = overrides.iter().partition(|o| o.trim_start().starts_with("compare."));
    for o in compare_sets {
        let mut wrapper = toml::Table::new();
        wrapper.insert("compare".into(), toml::Value::Table(std::mem::take(&mut compare)));
        apply_override(&mut wrapper, o)?;
        compare = match wrapper.remove("compare") {
            Some(toml::Value::Table(t)) => t,
            _ => unreachable!("apply_override keeps sections"),
        };
    }
    let section: CompareSection = serde_path_to_error::deserialize(toml::Value::Table(compare)).map_err(|e| anyhow::anyhow!("{source}: `compare.{}`: {}", e.path(), e.inner()))?;

    let name = match &section.name {
        Some(n) => n.clone(),
        None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "compare".into()),
    };
    check_arm_name(&source, &name).map_err(|_| anyhow::anyhow!("{source}: `compare.name` {name:?} must be 1-64 characters of letters, digits, `_`, `-` or `.`"))?;
    if section.seeds.is_empty() {
        bail!("{source}: `compare.seeds` is empty: give at least one seed, e.g. seeds = [1, 2, 3]");
    }
    let mut seen = HashSet::new();
    if let Some(s) = section.seeds.iter().find(|s| !seen.insert(**s)) {
        bail!("{source}: `compare.seeds` lists seed {s} twice");
    }
    if section.arms.is_empty() {
        bail!("{source}: no arms: add [[compare.arms]] sections with a name and a `set` of optimizer overrides");
    }
    let mut seen = HashSet::new();
    for arm in &section.arms {
        check_arm_name(&source, &arm.name)?;
        if !seen.insert(arm.name.as_str()) {
            bail!("{source}: two arms are named {:?}", arm.name);
        }
    }
    let baseline = section.baseline.clone().unwrap_or_else(|| section.arms[0].name.clone());
    if !section.arms.iter().any(|a| a.name == baseline) {
        let names: Vec<&str> = section.arms.iter().map(|a| a.name.as_str()).collect();
        bail!("{source}: `compare.baseline` = {baseline:?} is not an arm; the arms are {}", names.join(", "));
    }
    let confidence = section.confidence.unwrap_or(0.95);
    if !(confidence > 0.0 && confidence < 1.0) {
        bail!("{source}: `compare.confidence` must be in (0, 1), got {confidence}");
    }

    // The base experiment, then the compare file's own sections, then --set.
    let base = match &section.base {
        Some(b) => {
            let resolved = if b.is_relative() && !b.exists() {
                // Like data paths, `base` is relative to the working directory;
                // fall back to the compare file's folder.
                let beside = path.parent().unwrap_or(Path::new(".")).join(b);
                if !beside.exists() {
                    bail!("{source}: `compare.base`: {} not found (relative to the working directory, or to {})", b.display(), beside.display());
                }
                beside
            } else {
                b.clone()
            };
            Some(resolved)
        }
        None => None,
    };
    let mut table = match &base {
        Some(b) => read_table(b).with_context(|| format!("{source}: `compare.base`"))?,
        None => toml::Table::new(),
    };
    merge(&mut table, &file, &source)?;
    for o in base_sets {
        apply_override(&mut table, o)?;
    }

    let mut arms = Vec::new();
    for arm in &section.arms {
        let set = flatten(&arm.set);
        let mut configs = Vec::new();
        for &seed in &section.seeds {
            let mut t = table.clone();
            for (k, v) in &set {
                set_path(&mut t, k, v.clone(), &format!("{source}: arm {:?}", arm.name))?;
            }
            for (k, v) in [
                ("experiment.name", toml::Value::String(name.clone())),
                ("experiment.arm", toml::Value::String(arm.name.clone())),
                ("experiment.seed", toml::Value::Integer(i64::try_from(seed).with_context(|| format!("{source}: seed {seed} is too large"))?)),
            ] {
                set_path(&mut t, k, v, &source)?;
            }
            let text = toml::to_string(&t).context("serialising an arm's config")?;
            let what = format!("{source} (arm {:?}, seed {seed})", arm.name);
            configs.push(Config::from_toml(&text, &what, &[])?);
        }
        arms.push(Arm { name: arm.name.clone(), set: set.into_iter().collect(), configs });
    }

    let mut plan = Plan { source: path.to_path_buf(), dir: arms[0].configs[0].logging.dir.join(&name), name, base, seeds: section.seeds.clone(), baseline, confidence, arms };
    check_only_optimizer_differs(&plan)?;
    // A disk-backed table: every run gets its own file (the arms share everything else).
    for arm in &mut plan.arms {
        for (config, seed) in arm.configs.iter_mut().zip(&plan.seeds) {
            config.give_own_table_file(&format!("{}-seed-{seed}", arm.name));
        }
    }
    Ok(plan)
}

/// Keys of a config outside `optimizer.*`, `model.table_dtype` and `experiment.arm`, flattened.
fn shared_keys(config: &Config) -> BTreeMap<String, toml::Value> {
    let table: toml::Table = toml::from_str(&config.to_toml()).expect("a config's TOML parses");
    flatten(&table).into_iter().filter(|(k, _)| !k.starts_with("optimizer.") && k != "experiment.arm" && k != "model.table_dtype").collect()
}

/// Every arm must resolve to the baseline's config except for `optimizer.*`.
fn check_only_optimizer_differs(plan: &Plan) -> anyhow::Result<()> {
    let base_arm = &plan.arms[plan.baseline_index()];
    for (i, &seed) in plan.seeds.iter().enumerate() {
        let want = shared_keys(&base_arm.configs[i]);
        for arm in &plan.arms {
            let got = shared_keys(&arm.configs[i]);
            let keys: std::collections::BTreeSet<&String> = want.keys().chain(got.keys()).collect();
            let show = |v: Option<&toml::Value>| v.map_or("(unset)".to_string(), |v| v.to_string());
            let diffs: Vec<String> = keys
                .into_iter()
                .filter(|k| want.get(*k) != got.get(*k))
                .map(|k| format!("{k} = {} (baseline {:?}: {})", show(got.get(k)), plan.baseline, show(want.get(k))))
                .collect();
            if !diffs.is_empty() {
                bail!(
                    "{}: arm {:?} differs from the baseline arm {:?} outside optimizer.* (seed {seed}): {}. Arms may differ only in optimizer.* settings and model.table_dtype, so that within a seed every arm sees the same data, batches and initial weights; put shared settings in the base or in the compare file's own sections",
                    plan.source.display(),
                    arm.name,
                    plan.baseline,
                    diffs.join("; ")
                );
            }
        }
    }
    Ok(())
}
