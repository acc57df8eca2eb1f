//! Which version of a model is served: the highest numbered folder under the
//! base path that loads, swapped in atomically when a newer one appears.
//!
//! A version that fails to load is logged, remembered (with its folder's
//! modification time, so a replaced folder is tried again) and skipped: the
//! version already loaded keeps serving (even when its own folder was replaced
//! by a bad one). Removing the served version's folder falls back to the
//! highest remaining one that loads.
//!
//! The served version's files are also watched for changes in place (size,
//! times or inode, on every poll): a version that changed is reloaded if it
//! still verifies; if not, the version as loaded keeps serving (a table read
//! into memory is what was verified), except that a memory-mapped table whose
//! own file changed is unloaded (503 until another version loads) rather than
//! serve changed or vanishing weights. Each of these is logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use super::metrics::Metrics;
use super::predictor::{FileStamp, LoadOptions, Predictor};
use crate::export::versions;

/// A loaded version.
pub struct Loaded {
    pub version: u64,
    pub predictor: Predictor,
    /// The version folder's stamp when it was loaded.
    stamp: Option<Stamp>,
    /// The last change in place already logged (logged once, not every poll).
    reported: Mutex<Option<String>>,
}

/// A version that failed to load, and why.
#[derive(Clone, Debug)]
pub struct Failure {
    pub error: String,
    stamp: Option<Stamp>,
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

/// What a version folder and its files look like on disk (inode, size, times):
/// a folder replaced, files still being copied in, or a file changed in place
/// all show up as a different stamp.
type Stamp = Vec<(std::ffi::OsString, FileStamp)>;

fn stamp(dir: &Path) -> Option<Stamp> {
    let mut out = vec![(std::ffi::OsString::new(), FileStamp::of(&std::fs::metadata(dir).ok()?))];
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        if let Ok(meta) = entry.metadata() {
            out.push((entry.file_name(), FileStamp::of(&meta)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

impl ModelStore {
    pub fn new(base: PathBuf, name: String, options: LoadOptions) -> Self {
        ModelStore { base, name, options, current: RwLock::new(None), failures: Mutex::default(), poll_lock: Mutex::new(()) }
    }

    /// The version being served (a cheap `Arc` clone: requests never wait on a load).
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops serving `version` (if it is the one served) because its files changed
    /// under it; the next poll loads whatever loads. Returns whether it was served.
    pub fn unload(&self, version: u64, why: &str) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|c| c.version == version) {
            log::error!("model {} version {version} unloaded: {why}", self.name);
            *current = None;
            return true;
        }
        false
    }

    pub fn failures(&self) -> BTreeMap<u64, Failure> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Scans the base folder and loads a newer (or replacement) version if
    /// there is one. Returns the version served afterwards.
    pub fn poll(&self, metrics: &Metrics) -> Option<u64> {
        let _guard = self.poll_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut current = self.current();
        if let Some(c) = current.clone() {
            if let Some(change) = c.predictor.table_file_changed() {
                // The map would show the new bytes (or fault): never serve from it again.
                self.unload(c.version, &format!("its memory-mapped table changed on disk ({change})"));
                current = None;
            } else if let Some(change) = c.predictor.files_changed() {
                // What is served was read into memory when verified: it keeps serving while the new files are tried.
                let mut reported = c.reported.lock().unwrap_or_else(|e| e.into_inner());
                if reported.as_deref() != Some(change.as_str()) {
                    log::warn!("model {} version {}: files changed on disk ({change}); reloading it, serving the version as loaded meanwhile", self.name, c.version);
                    *reported = Some(change);
                }
            }
        }
        let found = match versions(&self.base) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("{e:#}");
                return current.map(|c| c.version);
            }
        };
        for (version, dir) in found {
            let now_stamp = stamp(&dir);
            let now_stamp = &now_stamp;
            if let Some(c) = &current {
                if c.version == version && c.stamp == *now_stamp && c.predictor.files_changed().is_none() {
                    break; // the highest loadable version is already served
                }
                if version < c.version && c.predictor.dir().exists() {
                    break; // never downgrade while the served version's folder is there
                }
            }
            if self.failures.lock().unwrap_or_else(|e| e.into_inner()).get(&version).is_some_and(|f| f.stamp == *now_stamp) {
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
                    let loaded = Arc::new(Loaded { version, predictor, stamp: now_stamp.clone(), reported: Mutex::new(None) });
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(loaded);
                    self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&version);
                    metrics.loads.fetch_add(1, Relaxed);
                    return Some(version);
                }
                Err(e) => {
                    let served = current.as_ref().map_or("nothing".to_string(), |c| format!("version {} (as loaded)", c.version));
                    log::error!("model {} version {version} failed to load (still serving {served}): {e:#}", self.name);
                    metrics.load_failures.fetch_add(1, Relaxed);
                    self.failures.lock().unwrap_or_else(|e| e.into_inner()).insert(version, Failure { error: format!("{e:#}"), stamp: now_stamp.clone() });
                }
            }
        }
        self.current().map(|c| c.version)
    }
}
