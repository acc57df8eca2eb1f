//! What every table optimizer's config provides to the registry: its learning
//! rate, its own validation, state size, constructor and hparams.

use super::TableOptimizer;

/// One kind's `[optimizer.table]` keys (besides `kind`), e.g. [`super::LazyAdamConfig`].
///
/// A config is a serde struct with `#[serde(default, deny_unknown_fields)]`,
/// so a kind accepts only its own keys, each with a documented default.
pub trait OptimizerConfig {
    /// Peak learning rate; the schedule scales it each step.
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    /// Checks the ranges serde cannot; the error names the key.
    fn validate(&self) -> Result<(), InvalidKey>;
    /// Bytes of state [`OptimizerConfig::init`] allocates for a `rows × dim`
    /// table (equal to the optimizer's `state_bytes()`; tested for every kind).
    fn state_bytes(&self, rows: usize, dim: usize) -> u64;
    /// Builds the optimizer for a `rows × dim` table, allocating its state.
    fn init(&self, rows: usize, dim: usize) -> Box<dyn TableOptimizer>;
    /// The config for TensorBoard's HParams, keys and string values spelled as in the config.
    fn hparams(&self) -> Vec<(&'static str, HParam)>;
}

/// A hyper-parameter value for TensorBoard's HParams dashboard.
#[derive(Clone, Debug, PartialEq)]
pub enum HParam {
    Num(f64),
    /// An enum value, spelled as in the config (e.g. `per_row`).
    Str(&'static str),
}

/// A bad value in `[optimizer.table]`: the key (without the section) and what is wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("`optimizer.table.{key}`: {message}")]
pub struct InvalidKey {
    pub key: &'static str,
    pub message: String,
}

impl InvalidKey {
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        InvalidKey { key, message: message.into() }
    }
}

/// `key` must be finite and > 0 (a learning rate, an ε).
pub fn positive(key: &'static str, v: f64) -> Result<(), InvalidKey> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(InvalidKey::new(key, format!("must be a positive number, got {v}")))
    }
}

/// `key` must be in [0, 1) (a β).
pub fn unit(key: &'static str, v: f64) -> Result<(), InvalidKey> {
    if (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(InvalidKey::new(key, format!("must be in [0, 1), got {v}")))
    }
}

/// Decoupled weight decay multiplies by `1 − lr·wd` each step: that must stay in (0, 1].
pub fn weight_decay(lr: f64, wd: f64) -> Result<(), InvalidKey> {
    unit("weight_decay", wd * lr).map_err(|_| InvalidKey::new("weight_decay", format!("must be >= 0 with lr × weight_decay < 1, got {wd} (lr {lr})")))
}
