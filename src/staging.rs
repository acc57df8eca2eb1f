//! A folder written beside its destination and renamed into place, so that a
//! reader sees either nothing or the whole folder, never part of one.
//!
//! Each staging folder is `flock`ed by the process writing it. A process that
//! dies (SIGKILL, power loss) leaves its folder behind unlocked, and the next
//! [`StagingDir::new`] in the same parent removes it. A lock on the parent
//! folder is held while a staging folder is created and locked, and while
//! stale ones are looked for, so a folder is never seen between its creation
//! and its lock.

use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context};

pub struct StagingDir {
    dir: Option<tempfile::TempDir>,
    /// Held until the folder is published or dropped.
    _lock: File,
}

impl StagingDir {
    /// Creates `<parent>/<prefix>XXXXXX` (creating `parent` too), locked for
    /// this process, after removing folders with the same prefix whose writer is gone.
    pub fn new(parent: &Path, prefix: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        // The parent folder itself is the guard: no lock file is left beside the bundles.
        let guard = File::open(parent).with_context(|| format!("cannot open {}", parent.display()))?;
        guard.lock().with_context(|| format!("cannot lock {}", parent.display()))?;
        remove_stale(parent, prefix);
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent).with_context(|| format!("cannot create a folder in {}", parent.display()))?;
        let lock = File::open(dir.path()).with_context(|| format!("cannot open {}", dir.path().display()))?;
        lock.try_lock().with_context(|| format!("cannot lock {}", dir.path().display()))?;
        drop(guard);
        Ok(StagingDir { dir: Some(dir), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).expect("not yet published")
    }

    /// Renames the folder to `out`, which must not exist.
    pub fn publish(&mut self, out: &Path) -> anyhow::Result<()> {
        let Some(dir) = self.dir.take() else { bail!("already published") };
        if out.exists() {
            self.dir = Some(dir);
            bail!("{} already exists", out.display());
        }
        if let Err(e) = std::fs::rename(dir.path(), out) {
            self.dir = Some(dir);
            return Err(e).with_context(|| format!("cannot rename {} into {}", self.path().display(), out.display()));
        }
        let _ = dir.keep(); // renamed away: nothing left to delete
        sync_parent(out);
        Ok(())
    }

    /// Puts the folder at `out` in place of the existing folder there in one
    /// atomic step (Linux `renameat2(RENAME_EXCHANGE)`): at every instant
    /// `out` is the old folder or the new one. The old one is then deleted.
    pub fn replace(&mut self, out: &Path) -> anyhow::Result<()> {
        let Some(dir) = &self.dir else { bail!("already published") };
        exchange(dir.path(), out).with_context(|| format!("cannot swap {} into {}", dir.path().display(), out.display()))?;
        sync_parent(out);
        // The staging path now holds the old folder: dropping it deletes that.
        self.dir = None;
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other(format!("replacing {} in one step needs Linux's renameat2; remove it first", b.display())))
}

/// Makes a rename durable.
fn sync_parent(path: &Path) {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
}

/// Removes `<parent>/<prefix>*` folders nobody holds a lock on.
fn remove_stale(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_name().to_string_lossy().starts_with(prefix) || !path.is_dir() {
            continue;
        }
        let Ok(f) = File::open(&path) else { continue };
        if f.try_lock().is_ok() {
            log::warn!("removing {}, left by an interrupted export", path.display());
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_folders_are_removed_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let live = StagingDir::new(tmp.path(), ".tmp-x-").unwrap();
        // A folder left by a dead writer: exists, nobody locks it.
        let dead = tmp.path().join(".tmp-x-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("half"), b"partial").unwrap();
        let other = tmp.path().join("1");
        std::fs::create_dir(&other).unwrap();
        let second = StagingDir::new(tmp.path(), ".tmp-x-").unwrap();
        assert!(!dead.exists(), "a folder nobody locks is stale");
        assert!(live.path().exists(), "a locked folder belongs to a live export");
        assert!(other.exists(), "other folders are never touched");
        drop((live, second));
    }

    #[test]
    fn publish_renames_and_replace_swaps_whole_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("1");
        let mut a = StagingDir::new(tmp.path(), ".tmp-x-").unwrap();
        std::fs::write(a.path().join("f"), b"first").unwrap();
        a.publish(&out).unwrap();
        assert_eq!(std::fs::read(out.join("f")).unwrap(), b"first");

        let mut b = StagingDir::new(tmp.path(), ".tmp-x-").unwrap();
        std::fs::write(b.path().join("f"), b"second").unwrap();
        assert!(b.publish(&out).is_err(), "publish never overwrites");
        b.replace(&out).unwrap();
        drop(b);
        assert_eq!(std::fs::read(out.join("f")).unwrap(), b"second");
        let left: Vec<String> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(left, vec!["1".to_string()], "nothing but the bundle is left");
    }
}
