//! Where an encoded dataset's row ids live while a model trains: on the heap,
//! or in an unlinked temporary file (`memory.examples = "disk"`), read with
//! positional reads into the caller's buffer. On disk they cost the process
//! no memory of its own: the OS keeps the file in its page cache (or reads it
//! back), and the process holds only the ids of the batch it is gathering.
//!
//! Not a memory map: on Linux 6.x a fault on a file mapping maps the page
//! cache's whole large folio, so gathering one batch of 64 scattered examples
//! from a mapped 24 MB file made 23 MiB resident (Debian sections, W = 4),
//! nearly the file. A read copies exactly the bytes asked for.

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

/// The row ids of every example of a dataset, one after another (CSR values).
#[derive(Clone, Default)]
pub struct RowIds {
    storage: Storage,
}

#[derive(Clone)]
enum Storage {
    Heap(Vec<u32>),
    /// An unlinked file of `len` little-endian ids in `dir`. Shared by clones;
    /// the OS frees it when the last handle closes.
    File {
        file: Arc<File>,
        len: usize,
        dir: PathBuf,
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

impl std::fmt::Debug for RowIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = if self.on_disk() { "on disk" } else { "on the heap" };
        write!(f, "RowIds({} ids {place})", self.len())
    }
}

impl PartialEq for RowIds {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.all() == other.all()
    }
}

/// Ids read per call of [`RowIds::chunks`]: 4 MiB.
const CHUNK_IDS: usize = 1 << 20;

impl RowIds {
    pub fn len(&self) -> usize {
        match &self.storage {
            Storage::Heap(ids) => ids.len(),
            Storage::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

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

    /// Ids `range`: borrowed from the heap, or read from the file.
    pub fn slice(&self, range: Range<usize>) -> Cow<'_, [u32]> {
        match &self.storage {
            Storage::Heap(ids) => Cow::Borrowed(&ids[range]),
            Storage::File { .. } => {
                let mut out = Vec::with_capacity(range.len());
                self.extend_into(range, &mut out);
                Cow::Owned(out)
            }
        }
    }

    /// Every id (read whole from the file when on disk).
    pub fn all(&self) -> Cow<'_, [u32]> {
        self.slice(0..self.len())
    }

    /// Every id, [`CHUNK_IDS`] at a time: memory for one chunk when on disk.
    pub fn chunks(&self) -> impl Iterator<Item = Cow<'_, [u32]>> {
        (0..self.len()).step_by(CHUNK_IDS).map(|start| self.slice(start..(start + CHUNK_IDS).min(self.len())))
    }

    /// Appends ids `range` to `out`.
    ///
    /// Panics if the temporary file cannot be read: it is this process's own
    /// unlinked file, so that is a failing disk, with nothing to retry.
    pub fn extend_into(&self, range: Range<usize>, out: &mut Vec<u32>) {
        match &self.storage {
            Storage::Heap(ids) => out.extend_from_slice(&ids[range]),
            Storage::File { file, len, dir } => {
                assert!(range.end <= *len, "ids {range:?} of {len}");
                let at = out.len();
                out.resize(at + range.len(), 0);
                let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut out[at..]);
                if let Err(e) = file.read_exact_at(bytes, range.start as u64 * 4) {
                    panic!("{}: reading encoded examples back from their temporary file (memory.examples = \"disk\"): {e}", dir.display());
                }
                // The file holds little-endian ids (see `move_to_disk`).
                out[at..].iter_mut().for_each(|id| *id = u32::from_le(*id));
            }
        }
    }

    /// Moves the ids into an unlinked temporary file in `dir`; the heap copy
    /// is freed. Nothing to clean up: the file has no name, and the OS frees
    /// it when the process ends, however it ends.
    pub fn move_to_disk(&mut self, dir: &Path) -> anyhow::Result<()> {
        let Storage::Heap(ids) = &self.storage else { return Ok(()) };
        if ids.is_empty() {
            return Ok(());
        }
        let bytes = ids.len() * 4;
        let what = || format!("{}: writing {bytes} bytes of encoded examples to a temporary file (memory.examples = \"disk\")", dir.display());
        let mut file = tempfile::tempfile_in(dir).with_context(what)?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        for id in ids {
            writer.write_all(&id.to_le_bytes()).with_context(what)?;
        }
        writer.flush().with_context(what)?;
        drop(writer);
        self.storage = Storage::File { len: ids.len(), file: Arc::new(file), dir: dir.to_path_buf() };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_on_disk_read_back_as_written() {
        let values: Vec<u32> = (0..3_000_000u32).map(|i| i.wrapping_mul(2_654_435_761) >> 3).collect();
        let mut ids = RowIds::from(values.clone());
        let dir = tempfile::tempdir().unwrap();
        ids.move_to_disk(dir.path()).unwrap();
        assert!(ids.on_disk());
        assert_eq!(ids.len(), values.len());
        // Unlinked: the folder stays empty.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(&ids.all()[..], &values[..]);
        for range in [0..0, 0..1, 5..6, 1_048_575..1_048_577, 2_999_000..3_000_000] {
            assert_eq!(&ids.slice(range.clone())[..], &values[range]);
        }
        let mut out = vec![7];
        ids.extend_into(10..13, &mut out);
        assert_eq!(out, [7, values[10], values[11], values[12]]);
        let chunks: Vec<u32> = ids.chunks().flat_map(|c| c.into_owned()).collect();
        assert_eq!(chunks, values);
        assert_eq!(ids.chunks().count(), 3);
        // Clones share the file.
        assert_eq!(ids.clone().slice(1_234_567..1_234_568)[0], values[1_234_567]);
        assert!(ids == RowIds::from(values));
    }

    #[test]
    fn empty_ids_stay_on_the_heap_and_unwritable_folders_are_named() {
        let mut empty = RowIds::default();
        empty.move_to_disk(Path::new("/nonexistent/folder")).unwrap();
        assert!(!empty.on_disk());
        let mut ids = RowIds::from(vec![1, 2, 3]);
        let e = format!("{:#}", ids.move_to_disk(Path::new("/nonexistent/folder")).unwrap_err());
        assert!(e.contains("/nonexistent/folder") && e.contains("12 bytes"), "{e}");
        assert_eq!(&ids.all()[..], &[1, 2, 3]);
    }
}
