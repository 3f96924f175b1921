//! Opening and validating a GGUF file: header and metadata through gguf-rs, tensor data as
//! zero-copy views into one memory map (or one aligned in-memory copy with `--no-mmap`).
//!
//! gguf-rs parses the header through a reader; it does not validate tensor data offsets against
//! the file, does not know which types Lumen can compute with, and silently truncates metadata
//! arrays past its cap. Those checks are owned here.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use lumen_kernels::GgmlType;
use serde_json::Value;

use super::keys;
use super::metadata::Metadata;
use super::GgufError;

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Smallest possible header: magic, version, tensor count, kv count.
const HEADER_BYTES: u64 = 4 + 4 + 8 + 8;
/// A tensor-info record is at least: name length (8) + dim count (4) + one dim (8) + type (4) +
/// offset (8). Counts above file_len / this are impossible and rejected before parsing.
const MIN_TENSOR_INFO_BYTES: u64 = 32;
/// A key/value record is at least: key length (8) + value type (4) + a 1-byte value.
const MIN_KV_BYTES: u64 = 13;
/// Hard caps, far above any real model (Llama-3-405B has ~1,100 tensors and ~40 keys).
const MAX_TENSORS: u64 = 1 << 20;
const MAX_KVS: u64 = 1 << 16;
/// Longest metadata array accepted (a 1M-entry vocabulary or merge list fits with room).
/// gguf-rs truncates arrays at its cap without saying so: we ask it for one more than this and
/// treat an array that reaches the cap as an error.
pub const MAX_ARRAY_LEN: usize = 1 << 22;

/// Options for [`GgufFile::open_with`].
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// Map the file (default) or read it whole into memory.
    pub mmap: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { mmap: true }
    }
}

/// One tensor's description, validated against the file.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// GGUF order: innermost (contiguous) dimension first.
    pub shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    pub n_bytes: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

enum Storage {
    Mapped(memmap2::Mmap),
    /// `u64` words so block structs (alignment ≤ 8) can be viewed in place.
    Owned {
        words: Vec<u64>,
        len: usize,
    },
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned { words, len } => &bytemuck::cast_slice(words)[..*len],
        }
    }
}

/// An opened, validated GGUF file.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    alignment: usize,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    storage: Storage,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        Self::open_with(path, OpenOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: OpenOptions) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let header = read_header(&mut file, &path, file_len)?;
        check_lengths_fit(&mut file, &path, file_len, &header)?;

        // gguf-rs continues from just after the magic.
        file.seek(SeekFrom::Start(4)).map_err(io)?;
        let reader = BufReader::with_capacity(1 << 16, file);
        let mut container = gguf_rs::GGUFContainer::new(
            gguf_rs::ByteOrder::LE,
            Box::new(reader),
            MAX_ARRAY_LEN as u64 + 1,
        );
        let model = container.decode().map_err(|e| GgufError::Parse {
            path: path.clone(),
            message: format!("{e:#}"),
        })?;

        if model.metadata().len() as u64 != header.n_kv {
            return Err(GgufError::Parse {
                path,
                message: format!(
                    "the header announces {} metadata keys but {} distinct keys were read (a key appears twice)",
                    header.n_kv,
                    model.metadata().len()
                ),
            });
        }
        check_array_lengths(&path, model.metadata())?;
        let metadata = Metadata::new(path.clone(), model.metadata().clone());
        let alignment = usize::try_from(model.alignment()).unwrap_or(usize::MAX);
        let data_offset = model.data_offset();
        if data_offset > file_len {
            return Err(GgufError::Truncated {
                path,
                what: "tensor data section".into(),
                needed: data_offset,
                file_len,
            });
        }
        let tensors = model
            .tensors()
            .iter()
            .map(|t| validate_tensor(&path, t, data_offset, alignment as u64, file_len))
            .collect::<Result<Vec<_>, _>>()?;
        let by_name = index_by_name(&path, &tensors)?;
        check_no_overlap(&path, &tensors)?;

        let storage = if options.mmap {
            let file = File::open(&path).map_err(io)?;
            // SAFETY: the map is read-only. If another process truncates the file while it is
            // mapped, reads past the new end fault (SIGBUS); replacing the file by rename (how
            // downloads and our own tools write) leaves this mapping on the old inode, intact.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
            Storage::Mapped(map)
        } else {
            let mut file = File::open(&path).map_err(io)?;
            let len = file_len as usize;
            let mut words = vec![0u64; len.div_ceil(8)];
            file.read_exact(&mut bytemuck::cast_slice_mut(&mut words)[..len])
                .map_err(io)?;
            Storage::Owned { words, len }
        };
        if storage.bytes().len() as u64 != file_len {
            return Err(GgufError::Parse {
                path,
                message: "file changed size while it was being opened".into(),
            });
        }

        Ok(Self {
            path,
            version: header.version,
            alignment,
            metadata,
            tensors,
            by_name,
            storage,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> usize {
        self.alignment
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Total number of weights over every tensor.
    pub fn n_params(&self) -> usize {
        self.tensors.iter().map(TensorInfo::n_elements).sum()
    }

    /// Tensor types by how many tensors use them, most used first: `"Q4_1 x210, F32 x61"`.
    pub fn type_mix(&self) -> String {
        let mut counts: Vec<(GgmlType, usize)> = Vec::new();
        for t in &self.tensors {
            match counts.iter_mut().find(|(ty, _)| *ty == t.ty) {
                Some((_, n)) => *n += 1,
                None => counts.push((t.ty, 1)),
            }
        }
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        let parts: Vec<String> = counts
            .iter()
            .map(|(ty, n)| format!("{} x{n}", ty.name()))
            .collect();
        parts.join(", ")
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }

    /// Total size of the file (mapped or read).
    pub fn file_len(&self) -> usize {
        self.storage.bytes().len()
    }

    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.metadata.get_str(keys::GENERAL_ARCHITECTURE)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A required tensor, or an error naming it and the file.
    pub fn require(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// The tensor's bytes: a view into the map, never a copy.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        self.bytes_at(info.offset, info.n_bytes)
    }

    /// A byte range of the file. Tensor ranges were checked against the file length when it
    /// was opened; other ranges panic if out of bounds.
    pub fn bytes_at(&self, offset: usize, len: usize) -> &[u8] {
        &self.storage.bytes()[offset..offset + len]
    }

    /// Tells the OS that the mapped pages of `offset..offset + len` are not needed for now
    /// (after a load-time copy such as a packed layout), so they stop counting in the resident
    /// set. The bytes stay readable: the kernel reads them from the file again if touched.
    /// Nothing happens for a file read into memory.
    pub fn release_range(&self, offset: usize, len: usize) {
        let Storage::Mapped(map) = &self.storage else {
            return;
        };
        // Whole pages inside the range only: a neighbour's bytes may share the edge pages.
        let page = PAGE;
        let start = offset.div_ceil(page) * page;
        let end = (offset + len) / page * page;
        if end > start {
            // SAFETY: the map is a read-only, file-backed mapping; DONTNEED drops clean pages,
            // which later reads fault back in from the file, so no slice ever sees other data.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
}

impl GgufFile {
    /// Bytes of the whole pages inside `offset..offset + len` that this process has mapped in
    /// (present in its page table, `/proc/self/pagemap` bit 63 — what its resident set counts;
    /// `mincore` would report the page cache, which keeps a released file page): tests check
    /// with it that a load-time copy let go of the mapped original.
    #[cfg(test)]
    pub(crate) fn resident_bytes(&self, offset: usize, len: usize) -> usize {
        use std::io::{Read, Seek, SeekFrom};
        let Storage::Mapped(map) = &self.storage else {
            return len;
        };
        let page = PAGE;
        let base = map.as_ptr() as usize;
        let (first, end) = ((base + offset).div_ceil(page), (base + offset + len) / page);
        if end <= first {
            return 0;
        }
        let mut entries = vec![0u8; (end - first) * 8];
        let mut pagemap = File::open("/proc/self/pagemap").unwrap();
        pagemap.seek(SeekFrom::Start(first as u64 * 8)).unwrap();
        pagemap.read_exact(&mut entries).unwrap();
        let present = entries
            .chunks_exact(8)
            .filter(|e| u64::from_le_bytes((*e).try_into().unwrap()) >> 63 == 1)
            .count();
        present * page
    }
}

/// Memory page size the resident-set bookkeeping assumes (x86-64 Linux base pages).
const PAGE: usize = 4096;

struct Header {
    version: u32,
    n_tensors: u64,
    n_kv: u64,
}

fn read_header(file: &mut File, path: &Path, file_len: u64) -> Result<Header, GgufError> {
    if file_len < HEADER_BYTES {
        return Err(GgufError::Truncated {
            path: path.to_path_buf(),
            what: "header".into(),
            needed: HEADER_BYTES,
            file_len,
        });
    }
    let mut raw = [0u8; HEADER_BYTES as usize];
    file.read_exact(&mut raw).map_err(|source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if &raw[0..4] != GGUF_MAGIC {
        return Err(GgufError::BadMagic {
            path: path.to_path_buf(),
            found: raw[0..4].try_into().unwrap_or_default(),
        });
    }
    let version = u32::from_le_bytes(raw[4..8].try_into().unwrap_or_default());
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    let n_tensors = u64::from_le_bytes(raw[8..16].try_into().unwrap_or_default());
    let n_kv = u64::from_le_bytes(raw[16..24].try_into().unwrap_or_default());
    let body = file_len - HEADER_BYTES;
    check_count(
        path,
        "tensor count",
        n_tensors,
        MAX_TENSORS,
        body / MIN_TENSOR_INFO_BYTES,
    )?;
    check_count(
        path,
        "metadata key count",
        n_kv,
        MAX_KVS,
        body / MIN_KV_BYTES,
    )?;
    Ok(Header {
        version,
        n_tensors,
        n_kv,
    })
}

fn check_count(
    path: &Path,
    what: &'static str,
    count: u64,
    cap: u64,
    fits: u64,
) -> Result<(), GgufError> {
    let limit = cap.min(fits);
    if count > limit {
        return Err(GgufError::AbsurdCount {
            path: path.to_path_buf(),
            what,
            count,
            limit,
        });
    }
    Ok(())
}

fn check_array_lengths(path: &Path, kv: &BTreeMap<String, Value>) -> Result<(), GgufError> {
    for (key, value) in kv {
        if let Value::Array(items) = value {
            if items.len() > MAX_ARRAY_LEN {
                return Err(GgufError::BadValue {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    message: format!("array longer than the cap of {MAX_ARRAY_LEN} entries"),
                });
            }
        }
    }
    Ok(())
}

fn validate_tensor(
    path: &Path,
    t: &gguf_rs::Tensor,
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<TensorInfo, GgufError> {
    let bad = |message: String| GgufError::BadTensor {
        path: path.to_path_buf(),
        name: t.name.clone(),
        message,
    };
    let ty = GgmlType::from_id(t.kind).ok_or_else(|| GgufError::UnsupportedType {
        path: path.to_path_buf(),
        name: t.name.clone(),
        id: t.kind,
    })?;
    if t.shape.is_empty() || t.shape.len() > 4 {
        return Err(bad(format!(
            "{} dimensions (1 to 4 allowed)",
            t.shape.len()
        )));
    }
    let mut n_elements: u64 = 1;
    for &d in &t.shape {
        n_elements = n_elements
            .checked_mul(d)
            .ok_or_else(|| bad(format!("shape {:?} overflows", t.shape)))?;
    }
    let row = t.shape[0] as usize;
    if !(t.shape[0] as usize).is_multiple_of(ty.block_elems()) {
        return Err(bad(format!(
            "row length {row} is not a multiple of the {} block size {}",
            ty.name(),
            ty.block_elems()
        )));
    }
    let n_bytes = (n_elements / ty.block_elems() as u64)
        .checked_mul(ty.block_bytes() as u64)
        .ok_or_else(|| bad(format!("byte size of shape {:?} overflows", t.shape)))?;
    if !t.offset.is_multiple_of(alignment) {
        return Err(bad(format!(
            "data offset {} is not aligned to {alignment}",
            t.offset
        )));
    }
    let start = data_offset
        .checked_add(t.offset)
        .ok_or_else(|| bad("data offset overflows".into()))?;
    let end = start
        .checked_add(n_bytes)
        .ok_or_else(|| bad("data end overflows".into()))?;
    if end > file_len {
        return Err(GgufError::Truncated {
            path: path.to_path_buf(),
            what: format!("tensor '{}' (bytes {start}..{end})", t.name),
            needed: end,
            file_len,
        });
    }
    let to_usize = |v: u64| usize::try_from(v).map_err(|_| bad("does not fit in memory".into()));
    Ok(TensorInfo {
        name: t.name.clone(),
        ty,
        shape: t
            .shape
            .iter()
            .map(|&d| to_usize(d))
            .collect::<Result<_, _>>()?,
        offset: to_usize(start)?,
        n_bytes: to_usize(n_bytes)?,
    })
}

fn index_by_name(path: &Path, tensors: &[TensorInfo]) -> Result<HashMap<String, usize>, GgufError> {
    let mut by_name = HashMap::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if by_name.insert(t.name.clone(), i).is_some() {
            return Err(GgufError::BadTensor {
                path: path.to_path_buf(),
                name: t.name.clone(),
                message: "the name appears twice".into(),
            });
        }
    }
    Ok(by_name)
}

fn check_no_overlap(path: &Path, tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut spans: Vec<(usize, usize, &str)> = tensors
        .iter()
        .map(|t| (t.offset, t.offset + t.n_bytes, t.name.as_str()))
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        let ((_, end_a, name_a), (start_b, _, name_b)) = (pair[0], pair[1]);
        if start_b < end_a {
            return Err(GgufError::BadTensor {
                path: path.to_path_buf(),
                name: name_b.to_string(),
                message: format!("its data overlaps tensor '{name_a}'"),
            });
        }
    }
    Ok(())
}

/// Walks the metadata and tensor-info sections once, checking every announced string length and
/// array length against the bytes left in the file, before gguf-rs reads them: gguf-rs
/// allocates a string's announced length (up to 1 GiB) before reading it, which aborts the
/// process where memory is limited, and loops over an array's announced length until EOF.
fn check_lengths_fit(
    file: &mut File,
    path: &Path,
    file_len: u64,
    header: &Header,
) -> Result<(), GgufError> {
    file.seek(SeekFrom::Start(HEADER_BYTES))
        .map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let mut scan = LengthScan {
        reader: BufReader::with_capacity(1 << 16, file),
        pos: HEADER_BYTES,
        file_len,
        path,
    };
    for i in 0..header.n_kv {
        let key = scan.key(&format!("metadata key #{i}"))?;
        let value_type = scan.u32(&format!("type of metadata key '{key}'"))?;
        scan.value(&key, value_type)?;
    }
    for i in 0..header.n_tensors {
        let name = scan.key(&format!("name of tensor #{i}"))?;
        let n_dims = scan.u32(&format!("tensor '{name}' dimension count"))?;
        if n_dims > 4 {
            return Err(GgufError::BadTensor {
                path: path.to_path_buf(),
                name,
                message: format!("{n_dims} dimensions (GGUF allows at most 4)"),
            });
        }
        scan.skip(8 * n_dims as u64, &format!("tensor '{name}' dimensions"))?;
        // gguf-rs panics on a type id past its table (e.g. 40): check it before it decodes.
        let id = scan.u32(&format!("tensor '{name}' type"))?;
        if GgmlType::from_id(id).is_none() {
            return Err(GgufError::UnsupportedType {
                path: path.to_path_buf(),
                name,
                id,
            });
        }
        // The offset: checked by `validate_tensor`.
        scan.skip(8, &format!("tensor '{name}' offset"))?;
    }
    Ok(())
}

/// GGUF metadata value types with a fixed size, by type id.
fn scalar_size(value_type: u32) -> Option<u64> {
    match value_type {
        0 | 1 | 7 => Some(1), // u8, i8, bool
        2 | 3 => Some(2),     // u16, i16
        4..=6 => Some(4),     // u32, i32, f32
        10..=12 => Some(8),   // u64, i64, f64
        _ => None,
    }
}
const VALUE_TYPE_STRING: u32 = 8;
const VALUE_TYPE_ARRAY: u32 = 9;
/// Keys and tensor names longer than this are not kept for error messages.
const MAX_NAME_BYTES: u64 = 1024;

struct LengthScan<'a, R> {
    reader: R,
    pos: u64,
    file_len: u64,
    path: &'a Path,
}

impl<R: Read> LengthScan<'_, R> {
    fn truncated(&self, what: &str, needed: u64) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            what: what.to_string(),
            needed,
            file_len: self.file_len,
        }
    }

    /// Fails unless `n` more bytes exist after the current position.
    fn ensure(&self, n: u64, what: &str) -> Result<(), GgufError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.file_len => Ok(()),
            end => Err(self.truncated(what, end.unwrap_or(u64::MAX))),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), GgufError> {
        self.ensure(buf.len() as u64, what)?;
        self.reader
            .read_exact(buf)
            .map_err(|source| GgufError::Io {
                path: self.path.to_path_buf(),
                source,
            })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        self.ensure(n, what)?;
        let copied = std::io::copy(&mut (&mut self.reader).take(n), &mut std::io::sink()).map_err(
            |source| GgufError::Io {
                path: self.path.to_path_buf(),
                source,
            },
        )?;
        if copied != n {
            return Err(self.truncated(what, self.pos + n));
        }
        self.pos += n;
        Ok(())
    }

    /// A string's length, checked against the rest of the file.
    fn string_len(&mut self, what: &str) -> Result<u64, GgufError> {
        let len = self.u64(&format!("{what} length"))?;
        self.ensure(
            len,
            &format!("{what} (a {len}-byte string at byte {})", self.pos),
        )?;
        Ok(len)
    }

    /// A key or tensor name, kept (lossily) when short enough to quote in later errors.
    fn key(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.string_len(what)?;
        if len > MAX_NAME_BYTES {
            self.skip(len, what)?;
            return Ok(what.to_string());
        }
        let mut bytes = vec![0u8; len as usize];
        self.read_exact(&mut bytes, what)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn value(&mut self, key: &str, value_type: u32) -> Result<(), GgufError> {
        let what = format!("value of metadata key '{key}'");
        if let Some(size) = scalar_size(value_type) {
            return self.skip(size, &what);
        }
        match value_type {
            VALUE_TYPE_STRING => {
                let len = self.string_len(&what)?;
                self.skip(len, &what)
            }
            VALUE_TYPE_ARRAY => self.array(key),
            other => Err(self.bad_value(key, format!("unknown value type {other}"))),
        }
    }

    fn array(&mut self, key: &str) -> Result<(), GgufError> {
        let elem_type = self.u32(&format!("element type of metadata array '{key}'"))?;
        let len = self.u64(&format!("length of metadata array '{key}'"))?;
        let min_elem = match (scalar_size(elem_type), elem_type) {
            (Some(size), _) => size,
            (None, VALUE_TYPE_STRING) => 8,
            (None, VALUE_TYPE_ARRAY) => {
                return Err(self.bad_value(key, "arrays of arrays are not supported".into()))
            }
            (None, other) => {
                return Err(self.bad_value(key, format!("unknown array element type {other}")))
            }
        };
        let what = format!("metadata array '{key}' of {len} entries");
        self.ensure(len.saturating_mul(min_elem), &what)?;
        // gguf-rs keeps every entry as a 32-byte JSON value: a long array of bytes would cost
        // 32× its size in memory.
        if len > MAX_ARRAY_LEN as u64 {
            return Err(self.bad_value(
                key,
                format!("array of {len} entries is longer than the cap of {MAX_ARRAY_LEN}"),
            ));
        }
        if elem_type != VALUE_TYPE_STRING {
            return self.skip(len * min_elem, &what);
        }
        // Vocabularies have 10⁵ entries: the message is only formatted for a bad one.
        let entry = |i: u64| format!("entry {i} of metadata array '{key}'");
        for i in 0..len {
            let mut b = [0u8; 8];
            if self.read_exact(&mut b, "").is_err() {
                return Err(self.truncated(&format!("{} length", entry(i)), self.pos + 8));
            }
            let n = u64::from_le_bytes(b);
            if self.ensure(n, "").is_err() {
                let what = format!("{} (a {n}-byte string at byte {})", entry(i), self.pos);
                return Err(self.truncated(&what, self.pos.saturating_add(n)));
            }
            self.skip(n, "")?;
        }
        Ok(())
    }

    fn bad_value(&self, key: &str, message: String) -> GgufError {
        GgufError::BadValue {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message,
        }
    }
}

/// Files for the tests of load-time copies.
#[cfg(test)]
pub(crate) mod test_files {
    use super::GgufFile;
    use crate::gguf::writer::{GgufWriter, TensorData};
    use lumen_kernels::GgmlType;

    /// A mapped GGUF holding one `rows × cols` tensor named "w" (the directory keeps it).
    pub(crate) fn one_tensor(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> (tempfile::TempDir, GgufFile) {
        let mut w = GgufWriter::new();
        w.add_tensor(TensorData {
            name: "w".into(),
            ty,
            shape: vec![cols, rows],
            data,
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.gguf");
        w.write_atomic(&path).unwrap();
        let file = GgufFile::open(&path).unwrap();
        (dir, file)
    }

    /// Reads every byte of the range, checks that its pages are now resident (so a later
    /// "released" finding means something), and returns the bytes' sum.
    pub(crate) fn touch(file: &GgufFile, offset: usize, len: usize) -> u64 {
        // black_box: a sum nobody reads would be optimised away, and the pages never touched.
        let sum = std::hint::black_box(file.bytes_at(offset, len).iter().map(|&b| b as u64).sum());
        let resident = file.resident_bytes(offset, len);
        assert!(
            resident + 2 * super::PAGE >= len,
            "{resident} of {len} bytes resident after reading"
        );
        sum
    }
}
