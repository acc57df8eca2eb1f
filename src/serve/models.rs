//! Which version of a model is served: the highest numbered folder under the
//! base path that loads, swapped in atomically when a newer one appears.
//!
//! A version that fails to load is logged, remembered (with its folder's
//! modification time, so a replaced folder is tried again) and skipped: the
//! version already loaded keeps serving (even when its own folder was replaced
//! by a bad one). Removing the served version's folder falls back to the
//! highest remaining one that loads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use super::metrics::Metrics;
use super::predictor::{LoadOptions, Predictor};
use crate::export::versions;

/// A loaded version.
pub struct Loaded {
    pub version: u64,
    pub predictor: Predictor,
    /// Modification time of the version folder when it was loaded.
    stamp: Option<SystemTime>,
}

/// A version that failed to load, and why.
#[derive(Clone, Debug)]
pub struct Failure {
    pub error: String,
    stamp: Option<SystemTime>,
}

pub struct ModelStore {
    pub base: PathBuf,
    pub name: String,
    options: LoadOptions,
    current: RwLock<Option<Arc<Loaded>>>,
    failures: Mutex<BTreeMap<u64, Failure>>,
    /// Serialises polls (the background poller and explicit calls).
    poll_lock: Mutex<()>,
}

/// The latest modification time of a version folder and the files in it: a
/// folder replaced, or files still being copied in, show up as a change.
fn stamp(dir: &Path) -> Option<SystemTime> {
    let mut latest = std::fs::metadata(dir).and_then(|m| m.modified()).ok()?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
            latest = latest.max(t);
        }
    }
    Some(latest)
}

impl ModelStore {
    pub fn new(base: PathBuf, name: String, options: LoadOptions) -> Self {
        ModelStore { base, name, options, current: RwLock::new(None), failures: Mutex::default(), poll_lock: Mutex::new(()) }
    }

    /// The version being served (a cheap `Arc` clone: requests never wait on a load).
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn failures(&self) -> BTreeMap<u64, Failure> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Scans the base folder and loads a newer (or replacement) version if
    /// there is one. Returns the version served afterwards.
    pub fn poll(&self, metrics: &Metrics) -> Option<u64> {
        let _guard = self.poll_lock.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current();
        let found = match versions(&self.base) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("{e:#}");
                return current.map(|c| c.version);
            }
        };
        for (version, dir) in found {
            let now_stamp = stamp(&dir);
            if let Some(c) = &current {
                if c.version == version && c.stamp == now_stamp {
                    break; // the highest loadable version is already served
                }
                if version < c.version && c.predictor.dir().exists() {
                    break; // never downgrade while the served version's folder is there
                }
            }
            if self.failures.lock().unwrap_or_else(|e| e.into_inner()).get(&version).is_some_and(|f| f.stamp == now_stamp) {
                continue; // known bad, unchanged
            }
            let started = Instant::now();
            match Predictor::load_with(&dir, &self.options) {
                Ok(predictor) => {
                    log::info!(
                        "model {} version {version} loaded from {} in {:.1} ms ({} rows × {}, {} labels)",
                        self.name,
                        dir.display(),
                        started.elapsed().as_secs_f64() * 1e3,
                        predictor.rows(),
                        predictor.dim(),
                        predictor.labels().len()
                    );
                    let loaded = Arc::new(Loaded { version, predictor, stamp: now_stamp });
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(loaded);
                    self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&version);
                    metrics.loads.fetch_add(1, Relaxed);
                    return Some(version);
                }
                Err(e) => {
                    let served = current.as_ref().map_or("nothing".to_string(), |c| format!("version {}", c.version));
                    log::error!("model {} version {version} failed to load (still serving {served}): {e:#}", self.name);
                    metrics.load_failures.fetch_add(1, Relaxed);
                    self.failures.lock().unwrap_or_else(|e| e.into_inner()).insert(version, Failure { error: format!("{e:#}"), stamp: now_stamp });
                }
            }
        }
        self.current().map(|c| c.version)
    }
}
