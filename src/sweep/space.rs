//! The search space: each swept key's values (a grid list) or distribution
//! (random search), the grid's full product, and seeded random draws.

use anyhow::bail;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What one key may take.
#[derive(Clone, Debug, PartialEq)]
pub enum Domain {
    /// Exactly these values (a grid list, or `{ choice = [...] }`).
    Values(Vec<toml::Value>),
    /// A float drawn uniformly from `[low, high]`.
    Uniform { low: f64, high: f64 },
    /// A float whose logarithm is drawn uniformly from `[ln low, ln high]`.
    LogUniform { low: f64, high: f64 },
    /// An integer drawn uniformly from `low..=high`.
    Int { low: i64, high: i64 },
}

/// One swept key and its domain.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// A config key, e.g. `optimizer.table.lr`.
    pub key: String,
    pub domain: Domain,
}

/// The names a distribution table may use.
pub const DISTRIBUTIONS: [&str; 4] = ["log_uniform", "uniform", "int", "choice"];

fn number(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Float(f) => Some(*f),
        toml::Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

/// `[low, high]` of a distribution, checked (`what` names the key in errors).
fn bounds(what: &str, name: &str, v: &toml::Value) -> anyhow::Result<(f64, f64)> {
    let pair = v.as_array().filter(|a| a.len() == 2);
    let (Some(low), Some(high)) = (pair.and_then(|a| number(&a[0])), pair.and_then(|a| number(&a[1]))) else {
        bail!("{what}: `{name}` needs two numbers [low, high], got {v}");
    };
    if !(low.is_finite() && high.is_finite() && low < high) {
        bail!("{what}: `{name}` bounds must be finite with low < high, got [{low}, {high}]");
    }
    Ok((low, high))
}

impl Domain {
    /// Reads a grid list, or a one-key distribution table such as
    /// `{ log_uniform = [1e-4, 1e-1] }`. `what` names the key in errors.
    pub fn parse(what: &str, v: &toml::Value) -> anyhow::Result<Domain> {
        let domain = match v {
            toml::Value::Array(values) => Domain::Values(values.clone()),
            toml::Value::Table(t) if t.len() == 1 => {
                let (name, arg) = t.iter().next().expect("one entry");
                match name.as_str() {
                    "choice" => match arg {
                        toml::Value::Array(values) => Domain::Values(values.clone()),
                        other => bail!("{what}: `choice` needs a list of values, got {other}"),
                    },
                    "uniform" => {
                        let (low, high) = bounds(what, name, arg)?;
                        Domain::Uniform { low, high }
                    }
                    "log_uniform" => {
                        let (low, high) = bounds(what, name, arg)?;
                        if low <= 0.0 {
                            bail!("{what}: `log_uniform` bounds must be positive, got [{low}, {high}]");
                        }
                        Domain::LogUniform { low, high }
                    }
                    "int" => {
                        let pair = arg.as_array().filter(|a| a.len() == 2);
                        let (Some(low), Some(high)) = (pair.and_then(|a| a[0].as_integer()), pair.and_then(|a| a[1].as_integer())) else {
                            bail!("{what}: `int` needs two integers [low, high], got {arg}");
                        };
                        if low > high {
                            bail!("{what}: `int` bounds must have low <= high, got [{low}, {high}]");
                        }
                        Domain::Int { low, high }
                    }
                    other => bail!("{what}: unknown distribution `{other}` (use one of {})", DISTRIBUTIONS.join(", ")),
                }
            }
            other => bail!("{what}: expected a list of values, e.g. [0.01, 0.1], or a distribution such as {{ log_uniform = [1e-4, 1e-1] }}, got {other}"),
        };
        if let Domain::Values(values) = &domain
            && values.is_empty()
        {
            bail!("{what}: the list of values is empty");
        }
        Ok(domain)
    }

    /// The values a grid takes: lists as given, `int` ranges expanded; a
    /// continuous distribution has no grid.
    pub fn grid_values(&self, what: &str) -> anyhow::Result<Vec<toml::Value>> {
        match self {
            Domain::Values(v) => Ok(v.clone()),
            Domain::Int { low, high } => Ok((*low..=*high).map(toml::Value::Integer).collect()),
            Domain::Uniform { .. } | Domain::LogUniform { .. } => {
                bail!("{what}: a grid needs a list of values; uniform and log_uniform are for method = \"random\"")
            }
        }
    }

    /// One draw.
    pub fn sample(&self, rng: &mut impl Rng) -> toml::Value {
        match self {
            Domain::Values(v) => v[rng.random_range(0..v.len())].clone(),
            Domain::Uniform { low, high } => toml::Value::Float(rng.random_range(*low..=*high)),
            Domain::LogUniform { low, high } => toml::Value::Float(rng.random_range(low.ln()..=high.ln()).exp().clamp(*low, *high)),
            Domain::Int { low, high } => toml::Value::Integer(rng.random_range(*low..=*high)),
        }
    }
}

/// Every combination of the keys' values: the first key varies slowest, the
/// last fastest (like nested loops in key order).
/// `source` names the file in errors.
pub fn grid(params: &[Param], source: &str) -> anyhow::Result<Vec<Vec<toml::Value>>> {
    let mut combos: Vec<Vec<toml::Value>> = vec![Vec::new()];
    for p in params {
        let values = p.domain.grid_values(&format!("{source}: sweep.params `{}`", p.key))?;
        combos = combos.into_iter().flat_map(|c| values.iter().map(move |v| [c.clone(), vec![v.clone()]].concat())).collect();
    }
    Ok(combos)
}

/// `trials` draws of every key, in key order within a trial, from one
/// ChaCha8 stream seeded with `seed`: the same seed gives the same list.
pub fn random(params: &[Param], trials: usize, seed: u64) -> Vec<Vec<toml::Value>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..trials).map(|_| params.iter().map(|p| p.domain.sample(&mut rng)).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(text: &str) -> anyhow::Result<Domain> {
        let t: toml::Table = toml::from_str(&format!("v = {text}")).unwrap();
        Domain::parse("k", &t["v"])
    }

    #[test]
    fn bad_bounds_and_empty_lists_are_refused() {
        for bad in ["[]", "{ uniform = [1, 0] }", "{ log_uniform = [0, 1] }", "{ int = [3, 1] }", "{ normal = [0, 1] }", "{ uniform = [0] }", "3"] {
            assert!(domain(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(domain("{ int = [1, 3] }").unwrap().grid_values("k").unwrap().len(), 3);
    }
}
