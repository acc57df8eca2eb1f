//! `sparseburn bench dump-ids CONFIG --out DIR`: the encoded datasets as raw
//! little-endian arrays plus `meta.json`, so a PyTorch script can train the
//! same model on exactly the same row ids (no re-implementation of the
//! tokenizer and hashing needed).
//!
//! Files: `{train,test}_ids.u32`, `{train,test}_offsets.u64` (len + 1 entries),
//! `{train,test}_labels.u32` (`u32::MAX` = a test label unseen in training).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::data::Dataset;
use crate::train::prepare::prepare;

#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct DumpArgs {
    /// Experiment config (TOML).
    pub config: PathBuf,
    /// Output folder.
    #[cfg_attr(feature = "cli", arg(long))]
    pub out: PathBuf,
    /// Config overrides, `key.path=value` (repeatable).
    #[cfg_attr(feature = "cli", arg(long = "set"))]
    pub set: Vec<String>,
}

fn write_raw<T: bytemuck::Pod>(path: &Path, values: &[T]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?);
    // x86-64 and aarch64 are little-endian, which is the documented format.
    f.write_all(bytemuck::cast_slice(values))?;
    f.flush()?;
    Ok(())
}

fn write_set(dir: &Path, name: &str, d: &Dataset) -> anyhow::Result<()> {
    let offsets: Vec<u64> = d.offsets.iter().map(|&o| o as u64).collect();
    write_raw(&dir.join(format!("{name}_ids.u32")), &d.ids.all())?;
    write_raw(&dir.join(format!("{name}_offsets.u64")), &offsets)?;
    write_raw(&dir.join(format!("{name}_labels.u32")), &d.labels)
}

pub fn run(args: DumpArgs) -> anyhow::Result<()> {
    const { assert!(cfg!(target_endian = "little"), "dump-ids writes native (little-endian) arrays") };
    let config = Config::load(&args.config, &args.set)?;
    let data = prepare(&config)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    write_set(&args.out, "train", &data.train)?;
    write_set(&args.out, "test", &data.test)?;
    let t = &config.optimizer.table;
    // The kind's own keys (null where the kind has none, e.g. sgd's beta1).
    let table_key = |key: &str| serde_json::to_value(t).ok().and_then(|v| v.get(key).cloned()).unwrap_or(serde_json::Value::Null);
    let h = &config.optimizer.head;
    let meta = serde_json::json!({
        "config": args.config,
        "rows": data.featurizer.rows(),
        "dim": config.model.dim,
        "pooling": config.model.pooling.name(),
        "hidden": config.model.hidden,
        "classes": data.labels.len(),
        "labels": data.labels.names(),
        "train_examples": data.train.len(),
        "test_examples": data.test.len(),
        "train_tokens": data.train.ids.len(),
        "batch_size": config.train.batch_size,
        "epochs": config.train.epochs,
        "seed": config.experiment.seed,
        "table_optimizer": t.name(),
        "table_lr": t.lr(), "table_beta1": table_key("beta1"), "table_beta2": table_key("beta2"), "table_epsilon": table_key("epsilon"),
        "head_lr": h.lr, "head_beta1": h.beta1, "head_beta2": h.beta2, "head_epsilon": h.epsilon,
        "top_k": config.train.top_k,
    });
    super::write_json(&args.out.join("meta.json"), &meta)?;
    println!(
        "{}: {} train / {} test examples, {} rows × {}, {} labels",
        args.out.display(),
        data.train.len(),
        data.test.len(),
        data.featurizer.rows(),
        config.model.dim,
        data.labels.len()
    );
    Ok(())
}
