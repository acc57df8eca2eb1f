//! sparseburn: text classifiers with huge, sparsely-updated embedding tables.
//!
//! # Using the library
//!
//! * Train from code: [`train::Trainer`] validates a [`config::Config`], reads
//!   examples from files or from any iterator of `(label, text)`, reports
//!   progress and metrics to [`train::Observer`]s, stops on a
//!   [`cancel::CancelToken`], and returns a [`train::Trained`]: the outcome,
//!   the model in memory ([`train::TrainedModel::predict`]) and the run
//!   directory, if one was kept. `examples/train_from_code.rs` shows it all.
//! * What a run directory holds, and how to read it back:
//!   [`train::run_dir`] (file names, `metrics.jsonl` records, `summary.json`).
//! * Export a run as a bundle ([`export`]) and predict or serve it ([`serve`]).
//! * A/B comparisons of table optimizers ([`compare`]); the optimizers
//!   themselves ([`optim`]) and the model's parts ([`model`]).
//!
//! The library prints nothing: it logs through the `log` crate and reports
//! training through observers. The `sparseburn` binary (the default `cli`
//! feature) adds argument parsing, the progress display, Ctrl-C handling
//! and log output; `default-features = false` builds the library without them.
//!
//! # Layers
//!
//! Data flows one way: `config` → `data` → `model` → `optim` → `train` →
//! `summary` → `export` → `serve`; `mem` and `par` (aligned buffers, parallel
//! row loops) sit below `model` and `optim`. The device-resident table and its
//! LazyAdam live in `optim::device_table`, beside the host optimizers whose
//! bookkeeping they share. Training across processes (`distributed`) is a
//! part of the training step, so it lives in `train::distributed`.

pub mod bench;
pub mod cancel;
pub mod compare;
pub mod config;
pub mod data;
pub mod device;
pub mod durable;
pub mod export;
pub mod io;
pub mod jobs;
pub(crate) mod mem;
pub mod memory;
pub mod model;
pub mod optim;
pub(crate) mod par;
pub mod serve;
pub mod staging;
pub mod summary;
pub mod sweep;
pub mod sys;
pub mod train;

/// Training across processes and machines ([`train::distributed`]; the path users and tests know).
pub use train::distributed;
