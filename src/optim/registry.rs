//! The table-optimizer registry: [`table_optimizers!`] turns one line per
//! optimizer into the `[optimizer.table]` config enum, internally tagged by
//! `kind`, and its dispatch to each kind's [`OptimizerConfig`].
//!
//! (De)serialisation is written out rather than derived so that a missing
//! `kind` means the default kind (configs that set only `lr` keep working),
//! and so that each kind's own struct, with `deny_unknown_fields`, decides
//! which keys it accepts: `sgd` refuses `beta1`, naming the key.

use serde::de::{DeserializeSeed, Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::config::{HParam, InvalidKey, OptimizerConfig};
use super::{TableOptimizer, TableOptimizerConfig};

/// Generates, from `module: Variant(Config),` lines: `mod module; pub use
/// module::*;`, the enum `TableOptimizerConfig { Variant(Config), .. }` and
/// its per-kind dispatch. Attributes (e.g. `#[cfg(test)]`) apply to the whole line.
macro_rules! table_optimizers {
    ($($(#[$attr:meta])* $module:ident: $variant:ident($config:ident),)+) => {
        $($(#[$attr])* mod $module;)+
        $($(#[$attr])* pub use $module::*;)+

        /// `[optimizer.table]`: the table optimizer, selected by `kind`, with
        /// that kind's keys only (see each config struct for keys and defaults).
        #[derive(Clone, Debug, PartialEq)]
        pub enum TableOptimizerConfig {
            $($(#[$attr])* $variant($config),)+
        }

        impl TableOptimizerConfig {
            /// The registered kinds, as `kind` spells them (the first is the default).
            // One push per registered kind, some behind cfg(test): not a vec![] literal.
            #[allow(clippy::vec_init_then_push)]
            pub fn kinds() -> Vec<&'static str> {
                #[allow(unused_mut)]
                let mut kinds = Vec::new();
                $($(#[$attr])* kinds.push(stringify!($module));)+
                kinds
            }

            /// This config's `kind`, e.g. `"lazy_adam"`.
            pub fn name(&self) -> &'static str {
                match self {
                    $($(#[$attr])* TableOptimizerConfig::$variant(_) => stringify!($module),)+
                }
            }

            fn spec(&self) -> &dyn OptimizerConfig {
                match self {
                    $($(#[$attr])* TableOptimizerConfig::$variant(c) => c,)+
                }
            }

            fn spec_mut(&mut self) -> &mut dyn OptimizerConfig {
                match self {
                    $($(#[$attr])* TableOptimizerConfig::$variant(c) => c,)+
                }
            }

            /// The kind's keys (besides `kind`) as a TOML table.
            fn keys_table(&self) -> toml::Table {
                let table = match self {
                    $($(#[$attr])* TableOptimizerConfig::$variant(c) => toml::Table::try_from(c),)+
                };
                table.expect("optimizer configs serialise to TOML")
            }

            /// Reads kind `kind`'s keys from `keys`; unknown keys are refused.
            fn from_keys(kind: &str, keys: toml::Table) -> Result<Self, String> {
                $(
                    $(#[$attr])*
                    if kind == stringify!($module) {
                        return $crate::optim::registry::kind_from_keys::<$config>(kind, keys).map(TableOptimizerConfig::$variant);
                    }
                )+
                Err($crate::optim::registry::unknown_kind(kind))
            }
        }
    };
}
pub(super) use table_optimizers;

/// The message for a `kind` that is not registered.
pub(super) fn unknown_kind(kind: &str) -> String {
    format!("unknown table optimizer `{kind}`, expected one of: {}", TableOptimizerConfig::kinds().join(", "))
}

/// Deserialises one kind's config from its keys, naming the key that is wrong.
pub(super) fn kind_from_keys<C: OptimizerConfig + Default + Serialize + serde::de::DeserializeOwned>(kind: &str, keys: toml::Table) -> Result<C, String> {
    let known = toml::Table::try_from(C::default()).expect("optimizer configs serialise to TOML");
    if let Some(key) = keys.keys().find(|k| !known.contains_key(*k)) {
        let list: Vec<&str> = known.keys().map(|k| k.as_str()).collect();
        return Err(format!("`{key}` is not a key of kind = \"{kind}\" (its keys: kind, {})", list.join(", ")));
    }
    serde_path_to_error::deserialize(toml::Value::Table(keys)).map_err(|e| {
        let path = e.path().to_string();
        format!("`{path}`: {}", e.into_inner())
    })
}

impl Default for TableOptimizerConfig {
    fn default() -> Self {
        let kinds = TableOptimizerConfig::kinds();
        TableOptimizerConfig::from_keys(kinds[0], toml::Table::new()).expect("the default kind's defaults are valid")
    }
}

impl TableOptimizerConfig {
    /// The default config of kind `kind` (e.g. from `--optimizers lazy_adam`).
    pub fn named(kind: &str) -> anyhow::Result<Self> {
        Self::from_keys(kind, toml::Table::new()).map_err(anyhow::Error::msg)
    }

    /// Peak learning rate; the schedule scales it each step.
    pub fn lr(&self) -> f64 {
        self.spec().lr()
    }
    pub fn set_lr(&mut self, lr: f64) {
        self.spec_mut().set_lr(lr)
    }

    /// Checks the ranges serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        self.spec().validate()
    }

    /// Whether a step changes only the rows in its gradient (a lazy optimizer),
    /// so rows no batch reaches never move (asked of an empty instance).
    pub fn updates_only_grad_rows(&self) -> bool {
        self.init(0, 1).updates_only_grad_rows()
    }

    /// Bytes of state the optimizer will allocate for a `rows × dim` table.
    pub fn state_bytes(&self, rows: usize, dim: usize) -> u64 {
        self.spec().state_bytes(rows, dim)
    }

    /// Builds the optimizer for a `rows × dim` table, allocating (and pre-faulting) its state.
    pub fn init(&self, rows: usize, dim: usize) -> Box<dyn TableOptimizer> {
        self.spec().init(rows, dim)
    }

    /// The kind's hyper-parameters for TensorBoard, spelled as in the config.
    pub fn hparams(&self) -> Vec<(&'static str, HParam)> {
        self.spec().hparams()
    }

    /// Whether this kind has `key` (e.g. `weight_decay`).
    pub fn has_key(&self, key: &str) -> bool {
        self.keys_table().contains_key(key)
    }

    /// Sets one of the kind's keys, checked like a config file's.
    pub fn set(&mut self, key: &str, value: toml::Value) -> anyhow::Result<()> {
        let mut keys = self.keys_table();
        keys.insert(key.to_string(), value);
        *self = Self::from_keys(self.name(), keys).map_err(anyhow::Error::msg)?;
        Ok(())
    }
}

impl Serialize for TableOptimizerConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut table = toml::Table::new();
        table.insert("kind".into(), self.name().into());
        table.extend(self.keys_table());
        table.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TableOptimizerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ConfigVisitor)
    }
}

struct ConfigVisitor;

impl<'de> Visitor<'de> for ConfigVisitor {
    type Value = TableOptimizerConfig;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a table with `kind` ({}) and that kind's keys", TableOptimizerConfig::kinds().join(", "))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kind = None;
        let mut keys = toml::Table::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "kind" {
                // Checked here, inside the value, so errors carry the key `kind`.
                kind = Some(map.next_value_seed(KindName)?);
            } else {
                let value: toml::Value = map.next_value()?;
                keys.insert(key, value);
            }
        }
        let kind = kind.unwrap_or(TableOptimizerConfig::kinds()[0]);
        TableOptimizerConfig::from_keys(kind, keys).map_err(A::Error::custom)
    }
}

/// A registered kind's name.
struct KindName;

impl<'de> DeserializeSeed<'de> for KindName {
    type Value = &'static str;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let name = String::deserialize(deserializer)?;
        TableOptimizerConfig::kinds().into_iter().find(|k| *k == name).ok_or_else(|| D::Error::custom(unknown_kind(&name)))
    }
}
