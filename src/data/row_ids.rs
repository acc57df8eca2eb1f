//! Where an encoded dataset's row ids live while a model trains: on the heap,
//! or in an unlinked temporary file mapped read-only (`memory.examples =
//! "disk"`). On disk they cost the process no memory of its own: the OS keeps
//! the file's pages in its page cache (or reads them back), and readers drop
//! the pages they have read from the process after each batch
//! ([`RowIds::release_read_pages`]), so resident memory holds one batch's ids,
//! not the dataset's.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use memmap2::Mmap;

/// The row ids of every example of a dataset, one after another (CSR values).
#[derive(Clone, Default)]
pub struct RowIds {
    storage: Storage,
}

#[derive(Clone)]
enum Storage {
    Heap(Vec<u32>),
    /// An unlinked file holding `len` ids, little-endian, mapped whole. Shared
    /// by clones; the file disappears with the last mapping.
    File {
        map: Arc<Mmap>,
        len: usize,
    },
}

impl Default for Storage {
    fn default() -> Self {
        Storage::Heap(Vec::new())
    }
}

impl From<Vec<u32>> for RowIds {
    fn from(ids: Vec<u32>) -> Self {
        RowIds { storage: Storage::Heap(ids) }
    }
}

impl std::ops::Deref for RowIds {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        match &self.storage {
            Storage::Heap(ids) => ids,
            // The mapping is page-aligned and holds exactly `len` u32s (checked when made).
            Storage::File { map, len } => &bytemuck::cast_slice(&map[..])[..*len],
        }
    }
}

impl std::fmt::Debug for RowIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = if self.on_disk() { "on disk" } else { "on the heap" };
        write!(f, "RowIds({} ids {place})", self.len())
    }
}

impl PartialEq for RowIds {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl RowIds {
    pub fn on_disk(&self) -> bool {
        matches!(self.storage, Storage::File { .. })
    }

    /// The ids as a growable vector, to rewrite or extend them in place.
    /// Panics once they are on disk: they are read-only there.
    pub fn heap_mut(&mut self) -> &mut Vec<u32> {
        match &mut self.storage {
            Storage::Heap(ids) => ids,
            Storage::File { .. } => panic!("row ids moved to disk are read-only"),
        }
    }

    /// Moves the ids into an unlinked temporary file in `dir` and maps it; the
    /// heap copy is freed. Nothing to clean up: the file has no name, and the
    /// OS frees it when the process ends, however it ends.
    pub fn move_to_disk(&mut self, dir: &Path) -> anyhow::Result<()> {
        let Storage::Heap(ids) = &self.storage else { return Ok(()) };
        if ids.is_empty() {
            return Ok(());
        }
        let bytes: &[u8] = bytemuck::cast_slice(ids);
        let what = || format!("{}: writing {} bytes of encoded examples to a temporary file (memory.examples = \"disk\")", dir.display(), bytes.len());
        let mut file = tempfile::tempfile_in(dir).with_context(what)?;
        file.write_all(bytes).with_context(what)?;
        // SAFETY: the file has no name, so no other process can open it, and
        // this handle is dropped right after mapping: nothing writes it again.
        let map = unsafe { Mmap::map(&file) }.with_context(what)?;
        anyhow::ensure!(map.len() == bytes.len(), "{}: the temporary file of encoded examples holds {} bytes, not {}", dir.display(), map.len(), bytes.len());
        // Reads are scattered over the file (shuffled examples): read ahead nothing.
        let _ = map.advise(memmap2::Advice::Random);
        self.storage = Storage::File { len: ids.len(), map: Arc::new(map) };
        Ok(())
    }

    /// Drops the file's pages that readers touched from this process's
    /// resident memory (they stay in the OS page cache); on the heap, nothing.
    /// Call after each batch is gathered or evaluated.
    pub fn release_read_pages(&self) {
        if let Storage::File { map, .. } = &self.storage {
            // SAFETY: the mapping is read-only and its file is never written
            // after mapping, so dropping pages only makes the next read fetch
            // the same bytes again; no slice can observe a change. A failed
            // advice only leaves the pages resident.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident KiB of the mapping that holds `ids`, from /proc/self/smaps
    /// (the process's own pages; the page cache is not counted).
    fn resident_kib(ids: &RowIds) -> usize {
        let at = ids.as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        while let Some(line) = lines.next() {
            let Some((range, _)) = line.split_once(' ') else { continue };
            let Some((a, b)) = range.split_once('-') else { continue };
            let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else { continue };
            if (a..b).contains(&at) {
                let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
                return rss.split_whitespace().nth(1).unwrap().parse().unwrap();
            }
        }
        panic!("no mapping holds the ids")
    }

    #[test]
    fn ids_on_disk_read_back_as_written_and_release_their_pages() {
        let values: Vec<u32> = (0..3_000_000u32).map(|i| i.wrapping_mul(2_654_435_761) >> 7).collect();
        let mut ids = RowIds::from(values.clone());
        let dir = tempfile::tempdir().unwrap();
        ids.move_to_disk(dir.path()).unwrap();
        assert!(ids.on_disk());
        // Unlinked: the folder stays empty.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(&ids[..], &values[..]);
        let read = resident_kib(&ids);
        assert!(read >= 11_000, "reading 11.7 MiB of ids left only {read} KiB resident");
        ids.release_read_pages();
        let released = resident_kib(&ids);
        assert!(released < 100, "{released} KiB still resident after the release");
        // Still readable after the release, and clones share the file.
        let clone = ids.clone();
        assert_eq!(clone[1_234_567], values[1_234_567]);
    }

    #[test]
    fn empty_ids_stay_on_the_heap_and_unwritable_folders_are_named() {
        let mut empty = RowIds::default();
        empty.move_to_disk(Path::new("/nonexistent/folder")).unwrap();
        assert!(!empty.on_disk());
        let mut ids = RowIds::from(vec![1, 2, 3]);
        let e = format!("{:#}", ids.move_to_disk(Path::new("/nonexistent/folder")).unwrap_err());
        assert!(e.contains("/nonexistent/folder") && e.contains("12 bytes"), "{e}");
        assert_eq!(&ids[..], &[1, 2, 3]);
    }
}
