//! File-backed storage for a table and its optimizer state
//! (`model.table_storage = "mmap"`).
//!
//! One file holds a header page and then one region per array (the table's
//! rows, then each optimizer state array), each mapped on its own with
//! `MADV_RANDOM`: rows are touched at random, so read-ahead would only fill
//! the page cache with neighbours nobody asked for. The kernel keeps the hot
//! rows cached and writes dirty pages back, so a table larger than RAM trains.
//!
//! Layout: state arrays are separate regions, not interleaved with each row.
//! Interleaving would need the table and every optimizer to know a shared
//! row stride; separate regions keep [`AlignedVec`](super::AlignedVec) the
//! only seam. For the optimizers meant for tables beyond RAM (rowwise_adagrad:
//! 4 bytes of state per row, 1/64 of a 256-byte row) the state region is small
//! enough to stay in the page cache, so a touched row still costs one read from
//! disk (its table page); lazy_adam's m and v would cost three.
//!
//! The whole file is reserved with `fallocate` when it is created: a write to
//! a mapped page can then never meet a full disk (which would kill the process
//! with SIGBUS), and a table that does not fit is refused before any row is written.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use memmap2::{Advice, MmapMut, MmapOptions};
use serde::{Deserialize, Serialize};

/// The first line of every table file; the JSON [`Header`] follows, padded to [`HEADER_BYTES`].
pub const MAGIC: &str = "sparseburn-table-file 1\n";
/// Bytes before the first region: the magic line and the JSON header, padded with spaces.
pub const HEADER_BYTES: u64 = 64 * 1024;
/// Regions start on a page boundary (mmap offsets must), which also keeps rows cache-line aligned.
const REGION_ALIGN: u64 = 4096;

/// What the header says about the file: who owns it, and where each array lies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The run (its folder) or tool that created the file: only it may overwrite it.
    pub owner: String,
    /// Free text for readers (e.g. which ids the table's rows are).
    pub note: String,
    pub regions: Vec<Region>,
}

/// One array in the file: `bytes` at `offset`, elements of `elem_bytes` (little-endian).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// `table`, or `state.<name>` for an optimizer array (as in checkpoints); `region<i>` until named.
    pub name: String,
    pub offset: u64,
    pub bytes: u64,
    pub elem_bytes: usize,
    /// `[rows, width]` once named.
    pub shape: Vec<u64>,
}

/// The bytes a file holding arrays of these sizes takes on disk.
pub fn file_bytes(array_bytes: &[u64]) -> u64 {
    array_bytes.iter().fold(HEADER_BYTES, |end, &b| end.saturating_add(b.next_multiple_of(REGION_ALIGN)))
}

/// An open, locked table file that hands out mapped regions.
pub struct TableFile {
    file: Arc<File>,
    path: PathBuf,
    header: Header,
    /// End of the last region.
    end: u64,
    /// Bytes reserved with fallocate (regions past it grow the reservation).
    reserved: u64,
    /// Start address of each region's mapping and its index in the header, for [`TableFile::name_region`].
    addresses: Vec<(usize, usize)>,
}

impl TableFile {
    /// Creates the file at `path` for `owner`, reserving `reserve` bytes (see
    /// [`file_bytes`]). An existing file is taken over only if its header
    /// names the same owner (a run writing into its own folder again, e.g. on
    /// resume); any other file is refused, since it may be another run's table
    /// or unrelated data. `key` names the setting in errors (`model.table_path`).
    pub fn create(path: &Path, owner: &str, reserve: u64, key: &str) -> anyhow::Result<TableFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("{key}: cannot create the folder {}", dir.display()))?;
        }
        let existed = path.exists();
        if existed {
            match read_header(path) {
                Ok(Some(h)) if h.owner == owner => {}
                Ok(Some(h)) => bail!("{key}: {} holds the table of {}; refusing to overwrite it (delete it, or choose another {key})", path.display(), h.owner),
                Ok(None) => bail!("{key}: {} exists and is not a sparseburn table file; refusing to overwrite it", path.display()),
                Err(e) => bail!("{key}: {} exists and cannot be read as a table file ({e:#}); refusing to overwrite it", path.display()),
            }
        }
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).with_context(|| format!("{key}: cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => bail!("{key}: {} is in use by another process", path.display()),
            Err(std::fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("{key}: cannot lock {}", path.display())),
        }
        // Our own earlier file is truncated below: its blocks count as free.
        let reclaimed = if existed { file.metadata().map(|m| m.blocks() * 512).unwrap_or(0) } else { 0 };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let free = free_bytes(dir).with_context(|| format!("{key}: free space on {}", dir.display()))?;
        if reserve > free.saturating_add(reclaimed) {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            bail!(
                "{key}: the table and its optimizer state need {} on disk, but {} has {} free{}; choose a {key} on a larger disk, or fewer rows",
                crate::mem::size(reserve),
                dir.display(),
                crate::mem::size(free),
                if reclaimed > 0 { format!(" (+ {} of the earlier file replaced)", crate::mem::size(reclaimed)) } else { String::new() }
            );
        }
        // Fresh contents: every region must read as zeros.
        if let Err(e) = zero_file(&file, reserve.max(HEADER_BYTES)) {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            return Err(e).with_context(|| format!("{key}: cannot reserve {} at {}", crate::mem::size(reserve), path.display()));
        }
        let tf = TableFile {
            file: Arc::new(file),
            path: path.to_path_buf(),
            header: Header { owner: owner.to_string(), ..Header::default() },
            end: HEADER_BYTES,
            reserved: reserve.max(HEADER_BYTES),
            addresses: Vec::new(),
        };
        tf.write_header().with_context(|| format!("{key}: cannot write {}", path.display()))?;
        Ok(tf)
    }

    /// Maps a new zero-filled region of `bytes` bytes at the end of the file.
    fn map_region(&mut self, bytes: u64, elem_bytes: usize) -> std::io::Result<MappedRegion> {
        let offset = self.end;
        let end = offset + bytes.next_multiple_of(REGION_ALIGN);
        if end > self.reserved {
            reserve_space(&self.file, self.reserved, end - self.reserved)?;
            self.reserved = end;
        }
        // SAFETY: the file is ours and locked (other sparseburn processes refuse it);
        // its size never shrinks while mapped (reserve_space only grows it), so
        // every page of the mapping stays backed. Another program truncating the
        // file behind our lock would make accesses fault, as for any mapped file.
        let map = unsafe { MmapOptions::new().offset(offset).len(bytes as usize).map_mut(&*self.file)? };
        map.advise(Advice::Random)?;
        self.end = end;
        let i = self.header.regions.len();
        self.header.regions.push(Region { name: format!("region{i}"), offset, bytes, elem_bytes, shape: Vec::new() });
        self.addresses.push((map.as_ptr() as usize, i));
        Ok(MappedRegion { map, _file: self.file.clone() })
    }

    /// Names the region that starts at `ptr` (e.g. `table` or `state.sum_sq`),
    /// so that readers of the header can find it. Returns false if no region
    /// starts there (the array is not in this file).
    pub fn name_region(&mut self, ptr: *const u8, name: &str, shape: &[u64]) -> bool {
        let addr = ptr as usize;
        let Some(&(_, i)) = self.addresses.iter().find(|&&(a, _)| a == addr) else { return false };
        let r = &mut self.header.regions[i];
        r.name = name.to_string();
        r.shape = shape.to_vec();
        true
    }

    pub fn set_note(&mut self, note: &str) {
        self.header.note = note.to_string();
    }

    /// Writes the header (magic line + JSON, padded) at the start of the file.
    pub fn write_header(&self) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(&self.header)?;
        let mut page = format!("{MAGIC}{json}\n").into_bytes();
        if page.len() > HEADER_BYTES as usize {
            bail!("{}: the table file header ({} bytes) does not fit in {HEADER_BYTES} bytes", self.path.display(), page.len());
        }
        page.resize(HEADER_BYTES as usize, b' ');
        self.file.write_all_at(&page, 0)?;
        Ok(())
    }
}

/// Reads the header of a table file; `None` if the file is not one.
pub fn read_header(path: &Path) -> anyhow::Result<Option<Header>> {
    let mut page = Vec::with_capacity(HEADER_BYTES as usize);
    File::open(path)?.take(HEADER_BYTES).read_to_end(&mut page)?;
    let Some(rest) = page.strip_prefix(MAGIC.as_bytes()) else { return Ok(None) };
    let json = std::str::from_utf8(rest).context("header is not UTF-8")?.trim_end();
    Ok(Some(serde_json::from_str(json).context("header JSON")?))
}

/// Bytes an unprivileged process may still write on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Makes `file` `len` bytes of zeros, all allocated. An earlier file is
/// zeroed in place (`FALLOC_FL_ZERO_RANGE`: its blocks become unwritten
/// extents, no data is written) rather than truncated: freeing gigabytes of
/// blocks on a filesystem mounted with `discard` waits for the device to
/// discard them (minutes for tens of GB on the VM we measured).
fn zero_file(file: &File, len: u64) -> std::io::Result<()> {
    let old = file.metadata()?.len();
    if old > 0 {
        let keep = old.min(len);
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::ZERO_RANGE, 0, keep) {
            Ok(()) => {
                if old > len {
                    file.set_len(len)?;
                }
                return if len > keep { reserve_space(file, keep, len - keep) } else { Ok(()) };
            }
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => file.set_len(0)?,
            Err(e) => return Err(e.into()),
        }
    }
    reserve_space(file, 0, len)
}

/// Allocates `[offset, offset + len)` of `file` (zero-filled, growing the
/// file), so later writes through a mapping never run out of space. On
/// filesystems without fallocate the file is only extended (sparse).
fn reserve_space(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => file.set_len(offset + len),
        Err(e) => Err(e.into()),
    }
}

/// A mapped region and the file it keeps open (and locked) while it lives.
pub(crate) struct MappedRegion {
    map: MmapMut,
    _file: Arc<File>,
}

impl MappedRegion {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }
}

thread_local! {
    /// The file that [`AlignedVec::zeroed`](super::AlignedVec::zeroed) allocates from on this thread, if any.
    static TARGET: RefCell<Option<TableFile>> = const { RefCell::new(None) };
}

/// Runs `f` with every non-empty [`AlignedVec::zeroed`](super::AlignedVec::zeroed)
/// on this thread placed in `file` instead of anonymous memory: the table
/// and optimizer constructors need not know where their arrays live.
/// Returns `f`'s result and the file (with its new regions in the header).
pub fn place_in<R>(file: TableFile, f: impl FnOnce() -> R) -> anyhow::Result<(R, TableFile)> {
    TARGET.with(|t| *t.borrow_mut() = Some(file));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let file = TARGET.with(|t| t.borrow_mut().take()).expect("the table file is in place while allocating");
    match result {
        Ok(r) => {
            file.write_header()?;
            Ok((r, file))
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A zero-filled region of `bytes` from the file in place on this thread, if any.
/// Panics if the mapping fails: the space was reserved up front, so this is
/// an address-space or mapping-count limit, not a full disk.
pub(crate) fn zeroed_region(bytes: usize, elem_bytes: usize) -> Option<MappedRegion> {
    if bytes == 0 {
        return None;
    }
    TARGET.with(|t| {
        let mut t = t.borrow_mut();
        let file = t.as_mut()?;
        Some(file.map_region(bytes as u64, elem_bytes).unwrap_or_else(|e| panic!("cannot map {} of {}: {e}", crate::mem::size(bytes as u64), file.path.display())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::AlignedVec;

    fn f32_at(bytes: &[u8], region: &Region, i: usize) -> f32 {
        let at = region.offset as usize + i * 4;
        f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    /// Arrays made inside `place_in` are zero-filled regions of the file: what
    /// is written through them is what a plain read of the file returns, at
    /// the offsets the header gives; arrays made outside stay in memory.
    #[test]
    fn arrays_placed_in_a_file_are_its_regions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("t.table");
        let file = TableFile::create(&path, "test", file_bytes(&[4000, 400]), "test.path").unwrap();
        let ((mut a, mut b), mut file) = place_in(file, || (AlignedVec::<f32>::zeroed(1000), AlignedVec::<u32>::zeroed(100))).unwrap();
        // Made outside place_in: anonymous memory, not a third region.
        let heap = AlignedVec::<f32>::zeroed(1000);
        assert!(a.iter().all(|&x| x == 0.0) && b.iter().all(|&x| x == 0));
        assert_eq!(a.as_ptr() as usize % crate::mem::ALIGN_BYTES, 0);
        a[0] = 1.5;
        a[999] = -2.0;
        b[7] = 9;
        assert!(file.name_region(a.as_ptr().cast(), "table", &[250, 4]));
        assert!(!file.name_region(heap.as_ptr().cast(), "heap", &[1000]), "an array outside the file has no region");
        file.write_header().unwrap();

        let header = read_header(&path).unwrap().expect("a table file");
        assert_eq!(header.owner, "test");
        assert_eq!(header.regions.len(), 2);
        drop(heap);
        let (t, s) = (&header.regions[0], &header.regions[1]);
        assert_eq!((t.name.as_str(), t.offset, t.bytes, t.shape.as_slice()), ("table", HEADER_BYTES, 4000, &[250u64, 4][..]));
        assert_eq!((s.name.as_str(), s.offset % REGION_ALIGN, s.bytes, s.elem_bytes), ("region1", 0, 400, 4));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((f32_at(&bytes, t, 0), f32_at(&bytes, t, 1), f32_at(&bytes, t, 999)), (1.5, 0.0, -2.0));
        assert_eq!(u32::from_le_bytes(bytes[s.offset as usize + 28..s.offset as usize + 32].try_into().unwrap()), 9);
        // A clone outside place_in is a copy in memory.
        let c = a.clone();
        a[0] = 0.0;
        assert_eq!(c[0], 1.5);
        assert_eq!(c.into_vec()[999], -2.0);
    }

    #[test]
    fn a_file_is_taken_over_only_by_its_owner_and_comes_back_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.table");
        {
            let file = TableFile::create(&path, "run A", file_bytes(&[64]), "k").unwrap();
            let (mut a, _file) = place_in(file, || AlignedVec::<f32>::zeroed(16)).unwrap();
            a.fill(3.0);
            // In use: a second open is refused while the first holds the lock.
            let e = TableFile::create(&path, "run A", file_bytes(&[64]), "k").err().unwrap();
            assert!(format!("{e:#}").contains("in use by another process"), "{e:#}");
        }
        let e = TableFile::create(&path, "run B", file_bytes(&[64]), "k").err().unwrap();
        assert!(format!("{e:#}").contains("holds the table of run A"), "{e:#}");
        let file = TableFile::create(&path, "run A", file_bytes(&[64]), "k").unwrap();
        let (a, _file) = place_in(file, || AlignedVec::<f32>::zeroed(16)).unwrap();
        assert!(a.iter().all(|&x| x == 0.0), "a taken-over file starts from zeros");

        let other = dir.path().join("data.bin");
        std::fs::write(&other, b"not a table").unwrap();
        let e = TableFile::create(&other, "run A", 4096, "k").err().unwrap();
        assert!(format!("{e:#}").contains("not a sparseburn table file"), "{e:#}");
        assert_eq!(std::fs::read(&other).unwrap(), b"not a table");
    }

    #[test]
    fn a_file_larger_than_the_free_space_is_refused_with_the_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.table");
        let free = free_bytes(dir.path()).unwrap();
        let want = free + 10_000_000_000;
        let e = TableFile::create(&path, "run", want, "model.table_path").err().unwrap();
        let msg = format!("{e:#}");
        assert!(msg.starts_with("model.table_path: the table and its optimizer state need"), "{msg}");
        assert!(msg.contains(&crate::mem::size(want)) && msg.contains("free"), "{msg}");
        assert!(!path.exists(), "the refused file is removed");
    }
}
