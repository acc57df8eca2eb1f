//! File helpers shared by checkpoints and exports: atomic writes, checksums,
//! and safetensors files read through a memory map.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

use crate::optim::{StateData, StateError, StateSource};

/// Writes a file through a temporary file in the same directory, then renames
/// it into place, so a crash never leaves a half-written file under `path`.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> std::io::Result<()>) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot create a file in {}", dir.display()))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file());
        write(&mut w).and_then(|_| w.flush()).with_context(|| format!("writing {}", path.display()))?;
    }
    tmp.as_file().sync_all().with_context(|| format!("syncing {}", path.display()))?;
    tmp.persist(path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Lowercase hex SHA-256 of a file's bytes.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// `2024-05-01T12:34:56Z` for whole seconds since the Unix epoch (UTC).
pub fn rfc3339_utc_seconds(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| format!("{secs} s after the Unix epoch"), |t| t.to_string())
}

/// Lowercase hex BLAKE3 of a file's bytes, hashed on all cores.
///
/// Read in blocks rather than mapped: a mapping would hold every page of the
/// file in the process's resident memory until it is unmapped, so verifying a
/// multi-GB checkpoint would raise the peak RSS of export and resume by its size.
pub fn blake3_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut block = vec![0u8; HASH_BLOCK_BYTES];
    loop {
        let n = (&mut file).take(HASH_BLOCK_BYTES as u64).read(&mut block).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update_rayon(&block[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Bytes hashed per parallel BLAKE3 update (see [`blake3_file`]).
const HASH_BLOCK_BYTES: usize = 8 << 20;

/// A writer that hashes (BLAKE3) every byte on its way to `inner`, so a file's
/// checksum costs no second pass over it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: blake3::Hasher::new() }
    }
    /// The hex BLAKE3 of everything written so far.
    pub fn hex(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Streams a safetensors file (8-byte header length, JSON header, then the
/// tensors' bytes in the given order) to `w` without building it in memory
/// first; the safetensors crate reads it back.
pub fn write_safetensors_to(w: &mut impl Write, tensors: &[TensorOut<'_>], metadata: &HashMap<String, String>) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        // Sorted: the same metadata gives the same bytes (a HashMap's order changes per process).
        let sorted: std::collections::BTreeMap<_, _> = metadata.iter().collect();
        header.insert("__metadata__".into(), serde_json::to_value(sorted)?);
    }
    let mut offset = 0;
    for t in tensors {
        let info = safetensors::tensor::TensorInfo { dtype: t.dtype, shape: t.shape.clone(), data_offsets: (offset, offset + t.len()) };
        offset += t.len();
        header.insert(t.name.clone(), serde_json::to_value(info)?);
    }
    let mut header = serde_json::to_vec(&header)?;
    header.resize(header.len().next_multiple_of(8), b' ');
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    for t in tensors {
        match t.data {
            TensorData::Bytes(bytes) => w.write_all(bytes)?,
            TensorData::Picked(bytes, RowPick { ids, row_bytes }) => {
                if let Some(&r) = ids.iter().max().filter(|&&r| (r as usize + 1) * row_bytes > bytes.len()) {
                    return Err(std::io::Error::other(format!("tensor {}: row {r} is past its {} bytes", t.name, bytes.len())));
                }
                // Gathered a chunk at a time: large writes keep the hash on its fast path.
                for chunk in ids.chunks((PICK_CHUNK_BYTES / row_bytes.max(1)).max(1)) {
                    w.write_all(&gather_rows(bytes, row_bytes, chunk))?;
                }
            }
            TensorData::Streamed(stream) => {
                let mut counted = CountingWriter { inner: &mut *w, written: 0 };
                stream.write_to(&mut counted)?;
                if counted.written != stream.len() {
                    return Err(std::io::Error::other(format!("tensor {}: wrote {} bytes, its header says {}", t.name, counted.written, stream.len())));
                }
            }
        }
    }
    Ok(())
}

/// Counts what passes through, to check a stream against its announced length.
struct CountingWriter<W> {
    inner: W,
    written: usize,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Rows `ids` of a row-major byte array with rows of `row_size` bytes, copied in parallel.
pub fn gather_rows(bytes: &[u8], row_size: usize, ids: &[u32]) -> Vec<u8> {
    let mut out = vec![0u8; ids.len() * row_size];
    if row_size == 0 {
        return out;
    }
    out.par_chunks_mut(row_size * 256).enumerate().for_each(|(c, chunk)| {
        for (k, row) in chunk.chunks_mut(row_size).enumerate() {
            let r = ids[c * 256 + k] as usize;
            row.copy_from_slice(&bytes[r * row_size..(r + 1) * row_size]);
        }
    });
    out
}

/// Bytes of picked rows gathered per write (see [`RowPick`]).
const PICK_CHUNK_BYTES: usize = 1 << 20;

/// Some whole rows of a row-major tensor, gathered while writing: a
/// checkpoint of a live table stores its touched rows without first copying
/// them into a buffer as large as the rows.
#[derive(Clone, Copy, Debug)]
pub struct RowPick<'a> {
    pub ids: &'a [u32],
    pub row_bytes: usize,
}

/// A tensor's bytes produced while it is written: for a tensor too large to
/// hold in memory at once (a whole table put together for export).
pub trait TensorStream: Sync {
    /// Bytes it writes (the header announces them first).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn write_to(&self, w: &mut dyn Write) -> std::io::Result<()>;
}

/// Where a tensor's bytes come from.
#[derive(Clone, Copy)]
pub enum TensorData<'a> {
    /// All of these bytes.
    Bytes(&'a [u8]),
    /// Only some rows of these bytes, in the pick's order.
    Picked(&'a [u8], RowPick<'a>),
    /// Bytes produced while the file is written.
    Streamed(&'a dyn TensorStream),
}

/// One tensor to write: little-endian bytes with dtype and shape.
pub struct TensorOut<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: TensorData<'a>,
}

impl<'a> TensorOut<'a> {
    /// Bytes the tensor takes in the file.
    pub fn len(&self) -> usize {
        match self.data {
            TensorData::Bytes(bytes) => bytes.len(),
            TensorData::Picked(_, p) => p.ids.len() * p.row_bytes,
            TensorData::Streamed(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn f32(name: impl Into<String>, shape: Vec<usize>, values: &'a [f32]) -> Self {
        TensorOut { name: name.into(), dtype: Dtype::F32, shape, data: TensorData::Bytes(bytemuck::cast_slice(values)) }
    }
}

/// Optimizer state as a safetensors dtype and its little-endian bytes.
pub fn state_bytes(data: StateData<'_>) -> (Dtype, &[u8]) {
    match data {
        StateData::F32(x) => (Dtype::F32, bytemuck::cast_slice(x)),
        StateData::U32(x) => (Dtype::U32, bytemuck::cast_slice(x)),
        StateData::F64(x) => (Dtype::F64, bytemuck::cast_slice(x)),
        StateData::U64(x) => (Dtype::U64, bytemuck::cast_slice(x)),
    }
}

/// A safetensors file, memory-mapped: opening a multi-GB table is instant and
/// pages are read on first touch.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the file is only read; files we write are replaced by rename, never modified in place.
        let mmap = unsafe { Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
        SafeTensors::deserialize(&mmap).with_context(|| format!("{}: not a valid safetensors file (truncated or corrupt?)", path.display()))?;
        Ok(SafetensorsFile { path: path.to_path_buf(), mmap })
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.mmap).expect("validated in open")
    }

    pub fn metadata(&self) -> HashMap<String, String> {
        SafeTensors::read_metadata(&self.mmap).ok().and_then(|(_, m)| m.metadata().clone()).unwrap_or_default()
    }

    /// Raw little-endian bytes and shape of tensor `name`, checked against `dtype`.
    pub fn raw(&self, name: &str, dtype: Dtype) -> anyhow::Result<(&[u8], Vec<usize>)> {
        let t = self.tensors().tensor(name).map_err(|_| anyhow::anyhow!("{}: tensor {name:?} is missing", self.path.display()))?;
        if t.dtype() != dtype {
            bail!("{}: tensor {name:?} has dtype {:?}, expected {dtype:?}", self.path.display(), t.dtype());
        }
        // Re-slice from our own mmap so the lifetime is tied to self.
        let data = t.data();
        let start = data.as_ptr() as usize - self.mmap.as_ptr() as usize;
        Ok((&self.mmap[start..start + data.len()], t.shape().to_vec()))
    }

    /// Drops the pages of `bytes` (a slice of this file's tensors) from the
    /// process's memory once read: a table streamed through in order then
    /// costs resident memory for the part being read, not for the file.
    pub fn release(&self, bytes: &[u8]) {
        let start = bytes.as_ptr() as usize - self.mmap.as_ptr() as usize;
        debug_assert!(start + bytes.len() <= self.mmap.len(), "release of bytes outside the file");
        // SAFETY: the mapping is read-only and its file is never modified in
        // place (we replace files by rename), so dropping pages only makes a
        // later read fetch the same bytes from the file again; no slice can
        // observe a change. A failed advice only leaves the pages resident.
        let _ = unsafe { self.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, bytes.len()) };
    }

    /// Whether the file holds tensor `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors().tensor(name).is_ok()
    }

    /// Tensor `name` as u32 values (copied).
    pub fn u32(&self, name: &str) -> anyhow::Result<(Vec<u32>, Vec<usize>)> {
        let (bytes, shape) = self.raw(name, Dtype::U32)?;
        Ok((bytemuck::pod_collect_to_vec(bytes), shape))
    }

    /// Tensor `name` as f32 values (copied; safetensors offsets need not be aligned).
    pub fn f32(&self, name: &str) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
        let (bytes, shape) = self.raw(name, Dtype::F32)?;
        Ok((bytemuck::pod_collect_to_vec(bytes), shape))
    }

    pub(crate) fn read_into<T: bytemuck::Pod>(&self, name: &str, dtype: Dtype, into: &mut [T]) -> Result<(), StateError> {
        let (bytes, _) = self.raw(name, dtype).map_err(|e| match self.tensors().tensor(name) {
            Err(_) => StateError::Missing(name.to_string()),
            Ok(t) => StateError::WrongType { name: name.to_string(), expected: dtype_name(dtype), found: format!("{:?} ({e})", t.dtype()) },
        })?;
        let found = bytes.len() / std::mem::size_of::<T>();
        if found != into.len() {
            return Err(StateError::WrongLength { name: name.to_string(), expected: into.len(), found });
        }
        bytemuck::cast_slice_mut::<T, u8>(into).copy_from_slice(bytes);
        Ok(())
    }
}

/// The safetensors dtype of a table stored as `dtype`.
pub fn table_tensor_dtype(dtype: crate::model::TableDtype) -> Dtype {
    match dtype {
        crate::model::TableDtype::F32 => Dtype::F32,
        crate::model::TableDtype::Bf16 => Dtype::BF16,
        crate::model::TableDtype::F16 => Dtype::F16,
    }
}

fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "F32",
        Dtype::U32 => "U32",
        Dtype::F64 => "F64",
        Dtype::U64 => "U64",
        _ => "other",
    }
}

impl StateSource for SafetensorsFile {
    fn read_f32(&self, name: &str, into: &mut [f32]) -> Result<(), StateError> {
        self.read_into(name, Dtype::F32, into)
    }
    fn read_u32(&self, name: &str, into: &mut [u32]) -> Result<(), StateError> {
        self.read_into(name, Dtype::U32, into)
    }
    fn read_f64(&self, name: &str, into: &mut [f64]) -> Result<(), StateError> {
        self.read_into(name, Dtype::F64, into)
    }
    fn read_u64(&self, name: &str, into: &mut [u64]) -> Result<(), StateError> {
        self.read_into(name, Dtype::U64, into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_tensors_and_metadata_give_the_same_bytes() {
        let values = [1.0f32, 2.0, 3.0];
        let write = |keys: &[usize]| {
            // Two maps with their own random hash keys, filled in different orders.
            let metadata: HashMap<String, String> = keys.iter().map(|k| (format!("key{k}"), format!("value{k}"))).collect();
            let mut out = Vec::new();
            write_safetensors_to(&mut out, &[TensorOut::f32("x", vec![3], &values)], &metadata).unwrap();
            out
        };
        let forward: Vec<usize> = (0..12).collect();
        let backward: Vec<usize> = (0..12).rev().collect();
        let a = write(&forward);
        assert_eq!(a, write(&backward));
        // And a different reader (the safetensors crate) sees every key.
        let (_, meta) = safetensors::SafeTensors::read_metadata(&a).unwrap();
        assert_eq!(meta.metadata().as_ref().map(|m| m.len()), Some(12));
    }
}
