//! The file-system operations that make a checkpoint durable, counted so that
//! tests can crash the process right after any one of them.
//!
//! With `SPARSEBURN_CRASH_AFTER_OP=k` in the environment, the process aborts
//! (no destructors, no flush: like `kill -9` or a power cut after the kernel
//! has the data) right after the k-th operation made through this module.
//! `SPARSEBURN_COUNT_OPS=1` prints each operation to stderr as
//! `durable-op N KIND PATH`, so a test learns how many a save takes.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use anyhow::Context;

static OPS: AtomicU64 = AtomicU64::new(0);

fn crash_after() -> Option<u64> {
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    *AT.get_or_init(|| std::env::var("SPARSEBURN_CRASH_AFTER_OP").ok().and_then(|v| v.parse().ok()))
}

fn counting() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SPARSEBURN_COUNT_OPS").is_some())
}

/// Records one completed operation; aborts here if a test asked for it.
fn done(kind: &str, path: &Path) {
    let n = OPS.fetch_add(1, Ordering::SeqCst) + 1;
    if counting() {
        eprintln!("durable-op {n} {kind} {}", path.display());
    }
    if crash_after() == Some(n) {
        eprintln!("SPARSEBURN_CRASH_AFTER_OP={n}: aborting after {kind} {}", path.display());
        std::process::abort();
    }
}

pub fn create_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir(path).with_context(|| format!("cannot create {}", path.display()))?;
    done("mkdir", path);
    Ok(())
}

/// Creates `path` (which must not exist), lets `write` fill it, then fsyncs it.
pub fn write_file(path: &Path, write: impl FnOnce(&mut std::io::BufWriter<&File>) -> std::io::Result<()>) -> anyhow::Result<()> {
    let file = File::options().write(true).create_new(true).open(path).with_context(|| format!("cannot create {}", path.display()))?;
    done("create", path);
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &file);
        write(&mut w).and_then(|_| w.flush()).with_context(|| format!("writing {}", path.display()))?;
    }
    done("write", path);
    file.sync_all().with_context(|| format!("syncing {}", path.display()))?;
    done("fsync", path);
    Ok(())
}

/// Makes the entries of a folder (creations, renames, removals) durable.
pub fn sync_dir(path: &Path) -> anyhow::Result<()> {
    File::open(path).and_then(|d| d.sync_all()).with_context(|| format!("syncing folder {}", path.display()))?;
    done("fsync-dir", path);
    Ok(())
}

pub fn rename(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::rename(from, to).with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
    done("rename", to);
    Ok(())
}

/// Swaps two existing paths in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`):
/// at every instant each name holds one of the two folders.
pub fn exchange(a: &Path, b: &Path) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(std::io::Error::from).with_context(|| format!("cannot swap {} and {}", a.display(), b.display()))?;
    }
    #[cfg(not(target_os = "linux"))]
    anyhow::bail!("replacing {} in one step needs Linux's renameat2 (swapping with {})", b.display(), a.display());
    #[allow(unreachable_code)]
    {
        done("exchange", b);
        Ok(())
    }
}

pub fn remove_dir_all(path: &Path) -> anyhow::Result<()> {
    std::fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))?;
    done("remove", path);
    Ok(())
}

pub fn remove_file(path: &Path) -> anyhow::Result<()> {
    std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    done("remove", path);
    Ok(())
}

/// Replaces `path` with `bytes` through a temporary file and a rename.
pub fn replace_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    write_file(&tmp, |w| w.write_all(bytes))?;
    rename(&tmp, path)?;
    sync_dir(dir)
}
