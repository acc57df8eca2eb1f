//! sparseburn: text classifiers with huge, sparsely-updated embedding tables.
//!
//! Data flows one way: `config` → `data` → `model` → `optim` → `train` →
//! `summary` → `export` → `serve`. The `sparseburn` binary is a thin CLI over this library.

pub mod bench;
pub mod compare;
pub mod config;
pub mod data;
pub mod device;
pub mod durable;
pub mod export;
pub mod io;
pub mod jobs;
pub mod memory;
pub mod model;
pub mod optim;
pub mod serve;
pub mod staging;
pub mod summary;
pub mod sweep;
pub mod sys;
pub mod train;
