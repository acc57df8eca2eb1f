//! `[optimizer.table]`: a config per kind, selected by `kind`, read the way a
//! user writes it (TOML through `Config::from_toml`), and each kind's state
//! size, validation and hparams checked against the optimizer it builds.

use sparseburn::config::Config;
use sparseburn::optim::{HParam, TableOptimizerConfig};

const DATA: &str = "[data]\ntrain = \"examples/data/sotu_era_600.tsv\"\n";

fn load(table: &str) -> anyhow::Result<Config> {
    Config::from_toml(&format!("{DATA}[optimizer.table]\n{table}\n"), "x.toml", &[])
}

fn error(table: &str) -> String {
    format!("{:#}", load(table).expect_err(table))
}

#[test]
fn each_kind_accepts_only_its_own_keys_and_names_the_one_it_refuses() {
    let e = error("kind = \"sgd\"\nlr = 0.1\nbeta1 = 0.9");
    assert!(e.starts_with("x.toml: `optimizer.table`"), "{e}");
    assert!(e.contains("`beta1`") && e.contains("\"sgd\"") && e.contains("lr"), "{e}");
    let e = error("kind = \"rowwise_adagrad\"\nbias_correction = \"per_row\"");
    assert!(e.contains("`bias_correction`") && e.contains("rowwise_adagrad"), "{e}");
    // The same key is fine where the kind has it.
    let c = load("kind = \"partial_rowwise_adam\"\nbias_correction = \"per_row\"").unwrap();
    assert_eq!(c.optimizer.table.hparams().iter().find(|(k, _)| *k == "bias_correction").unwrap().1, HParam::Str("per_row"));
    // A wrong type names the key.
    let e = error("kind = \"sgd\"\nlr = \"fast\"");
    assert!(e.contains("`lr`") && e.contains("invalid type"), "{e}");
}

#[test]
fn an_unknown_kind_lists_the_registered_ones() {
    let e = error("kind = \"adagrad\"");
    assert!(e.contains("`optimizer.table.kind`") && e.contains("adagrad"), "{e}");
    for kind in TableOptimizerConfig::kinds() {
        assert!(e.contains(kind), "{e} lacks {kind}");
    }
}

#[test]
fn kind_defaults_to_lazy_adam_and_lr_shorthand_reaches_every_kind() {
    let c = load("lr = 0.05").unwrap();
    assert_eq!((c.optimizer.table.name(), c.optimizer.table.lr()), ("lazy_adam", 0.05));
    assert_eq!(TableOptimizerConfig::default().name(), TableOptimizerConfig::kinds()[0]);
    for kind in TableOptimizerConfig::kinds() {
        let c = Config::from_toml(DATA, "x.toml", &[format!("optimizer.table.kind={kind}"), "optimizer.lr=0.02".into()]).unwrap();
        assert_eq!((c.optimizer.table.name(), c.optimizer.table.lr()), (kind, 0.02));
    }
}

#[test]
fn validation_names_the_key_in_the_documented_style() {
    for kind in TableOptimizerConfig::kinds() {
        let e = error(&format!("kind = \"{kind}\"\nlr = -0.1"));
        assert_eq!(e, "x.toml: `optimizer.table.lr`: must be a positive number, got -0.1");
    }
    let e = error("kind = \"rowwise_adagrad\"\nepsilon = 0");
    assert_eq!(e, "x.toml: `optimizer.table.epsilon`: must be a positive number, got 0");
    let e = error("kind = \"partial_rowwise_adam\"\nbeta2 = 1.0");
    assert_eq!(e, "x.toml: `optimizer.table.beta2`: must be in [0, 1), got 1");
    let e = error("kind = \"rowwise_adagrad\"\nlr = 0.5\nweight_decay = 4");
    assert!(e.starts_with("x.toml: `optimizer.table.weight_decay`"), "{e}");
}

/// Every kind with each of its optional per-row arrays on and off.
fn variants() -> Vec<TableOptimizerConfig> {
    let mut out = Vec::new();
    for kind in TableOptimizerConfig::kinds() {
        for wd in [0.0, 0.01] {
            for bias in ["global", "per_row", "none"] {
                let mut c = TableOptimizerConfig::named(kind).unwrap();
                if c.has_key("weight_decay") {
                    c.set("weight_decay", wd.into()).unwrap();
                }
                if c.has_key("bias_correction") {
                    c.set("bias_correction", bias.into()).unwrap();
                }
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    out
}

#[test]
fn each_kind_plans_exactly_the_state_it_allocates() {
    for c in variants() {
        for (rows, dim) in [(1, 1), (33, 7), (1000, 64)] {
            let opt = c.init(rows, dim);
            assert_eq!(c.state_bytes(rows, dim), opt.state_bytes() as u64, "{c:?} at {rows}×{dim}");
            assert_eq!(opt.name(), c.name());
            // Per-row arrays named by the optimizer really are one record per row.
            for (name, data) in opt.state() {
                if opt.per_row_state().contains(&name) {
                    assert_eq!(data.len() % rows, 0, "{c:?}: {name}");
                    assert!(data.to_le_bytes().iter().all(|&b| b == 0), "{c:?}: {name} must start at zero");
                } else {
                    assert_eq!(data.len(), 1, "{c:?}: global {name}");
                }
            }
        }
    }
}

#[test]
fn configs_round_trip_through_toml_and_hparams_spell_values_as_the_config() {
    for c in variants() {
        let text = toml::to_string(&c).unwrap();
        let back: TableOptimizerConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c, "{text}");
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table["kind"].as_str(), Some(c.name()));
        for (key, value) in c.hparams() {
            match value {
                HParam::Num(x) => assert_eq!(table[key].as_float(), Some(x), "{key} in {text}"),
                HParam::Str(s) => assert_eq!(table[key].as_str(), Some(s), "{key} in {text}"),
            }
        }
        assert!(c.hparams().iter().any(|(k, _)| *k == "lr"));
    }
}
