//! `kind = "toy_sign_sgd"` (tests only): sign SGD, `w ← w − lr·sign(g)` for
//! the rows in the batch, with a per-row count of updates. It exists to show
//! what adding an optimizer takes: this file and one registration line in
//! `src/optim/mod.rs`; the config, `--set`, validation, memory plan, hparams,
//! checkpoints and `bench optim --optimizers` then know it.

use serde::{Deserialize, Serialize};

use super::config::{self, HParam, InvalidKey, OptimizerConfig};
use super::rows::{for_each_grad_row, PerRowMut, TableRowsMut};
use super::state::{StateData, StateError, StateSource};
use super::TableOptimizer;
use crate::model::{EmbeddingTable, SparseGrad};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToySignSgdConfig {
    /// Peak learning rate (default 1e-3).
    pub lr: f64,
}

impl Default for ToySignSgdConfig {
    fn default() -> Self {
        ToySignSgdConfig { lr: 1e-3 }
    }
}

impl OptimizerConfig for ToySignSgdConfig {
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn validate(&self) -> Result<(), InvalidKey> {
        config::positive("lr", self.lr)
    }
    fn state_bytes(&self, rows: usize, _dim: usize) -> u64 {
        rows as u64 * 4 + 8
    }
    fn init(&self, rows: usize, _dim: usize) -> Box<dyn TableOptimizer> {
        Box::new(ToySignSgd { step: 0, updates: vec![0; rows] })
    }
    fn hparams(&self) -> Vec<(&'static str, HParam)> {
        vec![("lr", HParam::Num(self.lr))]
    }
}

pub struct ToySignSgd {
    step: u64,
    updates: Vec<u32>,
}

impl TableOptimizer for ToySignSgd {
    fn name(&self) -> &'static str {
        "toy_sign_sgd"
    }
    fn step(&mut self, table: &mut EmbeddingTable, grad: &SparseGrad, lr: f32) {
        self.step += 1;
        let arrays = (TableRowsMut::new(table), PerRowMut::new(&mut self.updates));
        for_each_grad_row(grad, arrays, |(w, updates), g| {
            *updates += 1;
            for (w, g) in w.iter_mut().zip(g) {
                *w -= lr * g.signum();
            }
        });
    }
    fn steps(&self) -> u64 {
        self.step
    }
    fn per_row_state(&self) -> &'static [&'static str] {
        &["updates"]
    }
    fn state(&self) -> Vec<(&'static str, StateData<'_>)> {
        vec![("step", StateData::U64(std::slice::from_ref(&self.step))), ("updates", StateData::U32(&self.updates))]
    }
    fn load_state(&mut self, source: &dyn StateSource) -> Result<(), StateError> {
        source.read_u64("step", std::slice::from_mut(&mut self.step))?;
        source.read_u32("updates", &mut self.updates)
    }
}

#[cfg(test)]
mod tests {
    use crate::optim::TableOptimizerConfig;

    /// Used the way a user would: a TOML `[optimizer.table]`, then a step.
    #[test]
    fn the_toy_is_a_registered_kind() {
        let config: TableOptimizerConfig = toml::from_str("kind = \"toy_sign_sgd\"\nlr = 0.5").unwrap();
        assert!(TableOptimizerConfig::kinds().contains(&"toy_sign_sgd"));
        assert!(toml::from_str::<TableOptimizerConfig>("kind = \"toy_sign_sgd\"\nbeta1 = 0.9").is_err());
        let mut table = crate::model::EmbeddingTable::from_vec(3, 2, vec![0.0; 6]);
        let mut opt = config.init(3, 2);
        opt.step(&mut table, &crate::model::SparseGrad::from_duplicates(2, &[2, 2], &[0.25, -3.0, 0.5, 1.0]), 0.5);
        assert_eq!(table.as_slice(), &[0.0, 0.0, 0.0, 0.0, -0.5, 0.5]);
        assert_eq!(config.state_bytes(3, 2), opt.state_bytes() as u64);
        assert_eq!(crate::optim::TableOptimizerConfig::named("toy_sign_sgd").unwrap().name(), "toy_sign_sgd");
    }
}
