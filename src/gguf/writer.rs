//! Writing GGUF v3 files: metadata with explicit value types, tensor infos, aligned data.
//!
//! The whole file is written to a temporary file beside the target and renamed into place
//! when complete, so the target never holds a partial file. A failed write removes its
//! temporary file; so does Ctrl-C in a binary that called [`remove_temps_on_interrupt`]; one
//! left by a killed process is removed by the next write to the same target.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lumen_kernels::GgmlType;

/// A metadata value with its GGUF type.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    /// Homogeneous array: every element must have the same variant.
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::Str(_) => 8,
            MetaValue::Array(_) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        match self {
            MetaValue::U8(v) => out.push(*v),
            MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::Bool(v) => out.push(*v as u8),
            MetaValue::Str(s) => write_string(out, s),
            MetaValue::Array(items) => {
                let item_type = items
                    .first()
                    .map_or(MetaValue::U8(0).type_id(), MetaValue::type_id);
                out.extend_from_slice(&item_type.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    item.write_payload(out);
                }
            }
            MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A tensor to write: name, type, GGUF-order shape and its encoded bytes.
#[derive(Clone, Debug)]
pub struct TensorData {
    pub name: String,
    pub ty: GgmlType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Builds a GGUF file in memory order: header, metadata, tensor infos, aligned data.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<TensorData>,
}

pub const ALIGNMENT: usize = 32;

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_meta(&mut self, key: impl Into<String>, value: MetaValue) -> &mut Self {
        self.metadata.push((key.into(), value));
        self
    }

    pub fn add_tensor(&mut self, tensor: TensorData) -> &mut Self {
        self.tensors.push(tensor);
        self
    }

    /// The header and tensor-info section, padded to the data alignment, plus each tensor's
    /// offset relative to the data section.
    pub fn header_bytes(&self) -> (Vec<u8>, Vec<usize>) {
        let infos: Vec<TensorHeader> = self
            .tensors
            .iter()
            .map(|t| TensorHeader {
                name: &t.name,
                ty: t.ty,
                shape: &t.shape,
                n_bytes: t.data.len(),
            })
            .collect();
        encode_header(&self.metadata, &infos)
    }

    /// The complete file as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (mut out, offsets) = self.header_bytes();
        let data_start = out.len();
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off, 0);
            out.extend_from_slice(&t.data);
        }
        out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
        out
    }

    /// Writes to a temporary file next to `path`, syncs it, and renames it into place.
    pub fn write_atomic(&self, path: &Path) -> std::io::Result<()> {
        write_file_atomic(path, &self.to_bytes())
    }
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_via_temp(path, |w| w.write_all(bytes))
}

/// Temporary files this process is writing, for the interrupt handler to remove.
static TEMPS_IN_PROGRESS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Makes Ctrl-C (SIGINT) remove the temporary files of the writes in progress, then exit with
/// status 130 as a shell reports an interrupted command. For binaries whose work is writing
/// files (convert, quantize); call once at start. SIGTERM keeps its default action (the next
/// write to the same target removes what it leaves).
pub fn remove_temps_on_interrupt() -> Result<(), ctrlc::Error> {
    ctrlc::set_handler(|| {
        // Holding the lock until exit also stops a rename racing with this removal.
        let temps = TEMPS_IN_PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
        for tmp in temps.iter() {
            let _ = std::fs::remove_file(tmp);
        }
        std::process::exit(130);
    })
}

/// Registers `tmp` in [`TEMPS_IN_PROGRESS`] while it exists.
struct TempGuard(PathBuf);

impl TempGuard {
    fn new(tmp: PathBuf) -> Self {
        let mut temps = TEMPS_IN_PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
        temps.push(tmp.clone());
        Self(tmp)
    }

    /// Renames the temporary file to `path` while no interrupt handler can run its removal.
    fn rename_to(&self, path: &Path) -> std::io::Result<()> {
        let _temps = TEMPS_IN_PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::rename(&self.0, path)
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        let mut temps = TEMPS_IN_PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
        temps.retain(|t| t != &self.0);
    }
}

/// Runs `write` on a buffered temporary file beside `path`, fsyncs it, renames it into place
/// and fsyncs the directory; on any error the temporary file is removed and `path` is untouched.
fn write_via_temp(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_stale_temps(dir, &file_name);
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let guard = TempGuard::new(tmp.clone());
    let result = (|| {
        // A new file only (`O_EXCL`): a name planted at the temporary path (a symlink to
        // somewhere else) makes the write fail instead of being followed.
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        guard.rename_to(path)?;
        // The rename itself survives a crash only once the directory is synced.
        crate::download::sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes `.{file_name}.{pid}.tmp` files left in `dir` by writers that were killed (SIGKILL,
/// power loss: no chance to clean up), i.e. whose process no longer exists. Linux only (the
/// `/proc/{pid}` check); elsewhere nothing is removed.
fn remove_stale_temps(dir: &Path, file_name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{file_name}.");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// What the tensor-info section records about one tensor.
pub struct TensorHeader<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    pub shape: &'a [usize],
    pub n_bytes: usize,
}

/// Header, metadata and tensor infos, padded to [`ALIGNMENT`], with each tensor's data offset.
pub fn encode_header(
    metadata: &[(String, MetaValue)],
    tensors: &[TensorHeader],
) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        write_string(&mut out, key);
        out.extend_from_slice(&value.type_id().to_le_bytes());
        value.write_payload(&mut out);
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut next = 0usize;
    for t in tensors {
        write_string(&mut out, t.name);
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for &d in t.shape {
            out.extend_from_slice(&(d as u64).to_le_bytes());
        }
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        out.extend_from_slice(&(next as u64).to_le_bytes());
        offsets.push(next);
        next = (next + t.n_bytes).next_multiple_of(ALIGNMENT);
    }
    out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
    (out, offsets)
}

/// Writes a GGUF whose tensor bytes are produced one tensor at a time by `fill(i, out)` (which
/// must write exactly `tensors[i].n_bytes`), so files larger than memory can be written.
/// Temporary file + fsync + rename, like [`write_file_atomic`].
pub fn write_streaming(
    path: &Path,
    metadata: &[(String, MetaValue)],
    tensors: &[TensorHeader],
    mut fill: impl FnMut(usize, &mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let (header, offsets) = encode_header(metadata, tensors);
    write_via_temp(path, |w| {
        w.write_all(&header)?;
        let mut written = 0usize;
        for (i, (t, &off)) in tensors.iter().zip(&offsets).enumerate() {
            w.write_all(&vec![0u8; off - written])?;
            let mut counter = CountingWriter {
                inner: &mut *w,
                count: 0,
            };
            fill(i, &mut counter)?;
            if counter.count != t.n_bytes {
                return Err(std::io::Error::other(format!(
                    "tensor '{}': {} bytes written, {} declared",
                    t.name, counter.count, t.n_bytes
                )));
            }
            written = off + t.n_bytes;
        }
        w.write_all(&vec![0u8; written.next_multiple_of(ALIGNMENT) - written])
    })
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    count: usize,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symlink planted at the temporary path is replaced, not followed: the file it points to
    /// stays as it was (`File::create` used to truncate and write through it).
    #[test]
    fn a_symlink_at_the_temporary_path_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("lumen-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim.txt");
        std::fs::write(&victim, b"keep me").unwrap();
        let target = dir.join("out.gguf");
        let tmp = dir.join(format!(".out.gguf.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_file_atomic(&target, b"new contents").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(std::fs::read(&target).unwrap(), b"new contents");
        assert!(!tmp.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
