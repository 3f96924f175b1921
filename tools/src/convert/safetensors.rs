//! A checkpoint's weights: one `model.safetensors`, or the shards listed in
//! `model.safetensors.index.json`, each memory-mapped and its header checked by the
//! `safetensors` crate before any byte of tensor data is read.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use serde_json::Value;

use super::hf::JsonFile;
use super::ConvertError;

pub const INDEX_FILE: &str = "model.safetensors.index.json";
pub const SINGLE_FILE: &str = "model.safetensors";

/// The element types the converter reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrcDtype {
    F32,
    F16,
    BF16,
}

impl SrcDtype {
    pub fn size(self) -> usize {
        match self {
            SrcDtype::F32 => 4,
            SrcDtype::F16 | SrcDtype::BF16 => 2,
        }
    }

    pub fn ggml(self) -> lumen::kernels::GgmlType {
        use lumen::kernels::GgmlType;
        match self {
            SrcDtype::F32 => GgmlType::F32,
            SrcDtype::F16 => GgmlType::F16,
            SrcDtype::BF16 => GgmlType::BF16,
        }
    }
}

/// One tensor of the checkpoint: where its bytes are and what they hold.
#[derive(Clone, Debug)]
pub struct SrcTensor {
    pub shard: usize,
    /// `Err(name)` for a dtype the converter cannot read; reported only if the tensor is used.
    pub dtype: Result<SrcDtype, String>,
    /// PyTorch order (outermost first).
    pub shape: Vec<usize>,
    /// Absolute byte range in the shard.
    pub range: Range<usize>,
}

struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// All shards of a checkpoint, mapped, with every tensor's location.
pub struct Checkpoint {
    shards: Vec<Shard>,
    /// Shard order, then tensor name: the order llama.cpp's converter visits tensors in.
    pub tensors: BTreeMap<(usize, String), SrcTensor>,
}

impl Checkpoint {
    /// Opens `dir`'s sharded (index) or single-file safetensors checkpoint.
    pub fn open(dir: &Path) -> Result<Self, ConvertError> {
        let index_path = dir.join(INDEX_FILE);
        let (files, weight_map) = if index_path.is_file() {
            let (files, map) = read_index(dir, &index_path)?;
            (files, Some((index_path, map)))
        } else if dir.join(SINGLE_FILE).is_file() {
            (vec![SINGLE_FILE.to_string()], None)
        } else {
            return Err(ConvertError::NoWeights {
                dir: dir.to_path_buf(),
            });
        };
        let mut ckpt = Self {
            shards: Vec::new(),
            tensors: BTreeMap::new(),
        };
        for file in &files {
            ckpt.add_shard(&dir.join(file))?;
        }
        if let Some((index_path, map)) = weight_map {
            ckpt.check_against_index(&index_path, &files, &map)?;
        }
        Ok(ckpt)
    }

    fn add_shard(&mut self, path: &Path) -> Result<(), ConvertError> {
        let io = |source| ConvertError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; like every mmap-based reader we rely on nobody
        // truncating the checkpoint while we convert it (the header checks below cover a file
        // that was truncated before we started).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (header_len, metadata) = read_header(path, &map)?;
        let shard = self.shards.len();
        let data_start = 8 + header_len;
        for (name, info) in metadata.tensors() {
            let (s, e) = info.data_offsets;
            self.tensors.insert(
                (shard, name),
                SrcTensor {
                    shard,
                    dtype: src_dtype(info.dtype),
                    shape: info.shape.clone(),
                    range: data_start + s..data_start + e,
                },
            );
        }
        self.shards.push(Shard {
            path: path.to_path_buf(),
            map,
        });
        Ok(())
    }

    /// Every tensor the index lists must be in the shard it names, and vice versa.
    fn check_against_index(
        &self,
        index_path: &Path,
        files: &[String],
        weight_map: &BTreeMap<String, String>,
    ) -> Result<(), ConvertError> {
        for (tensor, file) in weight_map {
            let shard = files.iter().position(|f| f == file).unwrap_or(usize::MAX);
            if !self.tensors.contains_key(&(shard, tensor.clone())) {
                return Err(ConvertError::IndexMismatch {
                    index: index_path.to_path_buf(),
                    message: format!(
                        "tensor '{tensor}' is listed in shard '{file}' but is not in it"
                    ),
                });
            }
        }
        if let Some((_, name)) = self
            .tensors
            .keys()
            .find(|(_, n)| !weight_map.contains_key(n))
        {
            return Err(ConvertError::IndexMismatch {
                index: index_path.to_path_buf(),
                message: format!("tensor '{name}' is in a shard but not in the index"),
            });
        }
        Ok(())
    }

    pub fn shard_paths(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    pub fn shard_path(&self, t: &SrcTensor) -> &Path {
        &self.shards[t.shard].path
    }

    /// The tensor's bytes (ranges were checked against the map when the header was read).
    pub fn bytes(&self, t: &SrcTensor) -> &[u8] {
        &self.shards[t.shard].map[t.range.clone()]
    }

    /// Finds a tensor by name in any shard.
    pub fn find(&self, name: &str) -> Option<&SrcTensor> {
        self.tensors
            .iter()
            .find(|((_, n), _)| n == name)
            .map(|(_, t)| t)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|(_, n)| n.as_str())
    }
}

fn src_dtype(d: Dtype) -> Result<SrcDtype, String> {
    match d {
        Dtype::F32 => Ok(SrcDtype::F32),
        Dtype::F16 => Ok(SrcDtype::F16),
        Dtype::BF16 => Ok(SrcDtype::BF16),
        other => Err(format!("{other:?}")),
    }
}

/// The shard files the index names (sorted, like llama.cpp) and its tensor → file map; a
/// listed shard that does not exist is an error naming it.
fn read_index(
    dir: &Path,
    index_path: &Path,
) -> Result<(Vec<String>, BTreeMap<String, String>), ConvertError> {
    let json = JsonFile::read(index_path)?;
    let Some(Value::Object(map)) = json.get("weight_map") else {
        return Err(json.bad("weight_map", "missing or not an object"));
    };
    let mut weight_map = BTreeMap::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .filter(|f| is_plain_file_name(f))
            .ok_or_else(|| json.bad(&format!("weight_map.{tensor}"), "not a file name"))?;
        weight_map.insert(tensor.clone(), file.to_string());
    }
    let mut files: Vec<String> = weight_map.values().cloned().collect();
    files.sort();
    files.dedup();
    for file in &files {
        let path = dir.join(file);
        if !path.is_file() {
            let tensor = weight_map
                .iter()
                .find(|(_, f)| *f == file)
                .map(|(t, _)| t.clone())
                .unwrap_or_default();
            return Err(ConvertError::MissingShard {
                index: index_path.to_path_buf(),
                shard: path,
                tensor,
            });
        }
    }
    Ok((files, weight_map))
}

/// Shard names must stay inside the model directory.
fn is_plain_file_name(f: &str) -> bool {
    !f.is_empty() && !f.contains('/') && !f.contains('\\') && f != "." && f != ".."
}

/// The `safetensors` crate's cap on the header JSON (its `MAX_HEADER_SIZE`, not exported).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The safetensors crate's header check, its errors turned into ones that name the file, the
/// tensor and the sizes.
fn read_header(path: &Path, bytes: &[u8]) -> Result<(usize, Metadata), ConvertError> {
    SafeTensors::read_metadata(bytes).map_err(|e| explain_header_error(path, bytes, e))
}

fn explain_header_error(path: &Path, bytes: &[u8], err: SafeTensorError) -> ConvertError {
    let file_len = bytes.len() as u64;
    let bad = |message: String| ConvertError::BadHeader {
        path: path.to_path_buf(),
        message,
    };
    let truncated = |needed: u64| ConvertError::TruncatedShard {
        path: path.to_path_buf(),
        needed,
        file_len,
    };
    let header_len = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    match err {
        SafeTensorError::HeaderTooSmall => truncated(8),
        // Checked before the length is compared with the file, so say which applies.
        SafeTensorError::HeaderTooLarge => match header_len {
            Some(n) if n.saturating_add(8) > file_len => truncated(n.saturating_add(8)),
            _ => bad(format!(
                "header length {} is over the safetensors limit of {MAX_HEADER_BYTES} bytes",
                header_len.unwrap_or(0)
            )),
        },
        SafeTensorError::InvalidHeaderLength => match header_len {
            Some(n) if n.saturating_add(8) > file_len => truncated(n.saturating_add(8)),
            _ => bad(format!("header length {header_len:?} is invalid")),
        },
        SafeTensorError::MetadataIncompleteBuffer => {
            let needed = header_len.unwrap_or(0) + 8 + data_end(bytes).unwrap_or(0);
            if needed > file_len {
                truncated(needed)
            } else {
                bad(format!(
                    "the tensors' data_offsets end at byte {needed} but the file has {file_len} \
                     bytes: the header does not describe the file"
                ))
            }
        }
        SafeTensorError::InvalidOffset(name) => bad(format!(
            "tensor '{name}': data_offsets overlap or leave a gap after the previous tensor"
        )),
        SafeTensorError::TensorInvalidInfo => bad(size_disagreement(bytes)
            .unwrap_or_else(|| "a tensor's data_offsets disagree with its dtype and shape".into())),
        other => bad(format!("{other:?}")),
    }
}

/// The header's JSON entries, parsed without the crate's checks (for error messages only).
fn raw_entries(bytes: &[u8]) -> Option<serde_json::Map<String, Value>> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    match serde_json::from_slice(header).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn offsets(entry: &Value) -> Option<(u64, u64)> {
    let o = entry.get("data_offsets")?.as_array()?;
    Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?))
}

/// Where the header says the data section ends.
fn data_end(bytes: &[u8]) -> Option<u64> {
    raw_entries(bytes)?
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| offsets(v).map(|(_, e)| e))
        .max()
}

/// Names the first tensor whose byte range does not match dtype × shape.
fn size_disagreement(bytes: &[u8]) -> Option<String> {
    raw_entries(bytes)?.iter().find_map(|(name, v)| {
        let (s, e) = offsets(v)?;
        let dtype: Dtype = serde_json::from_value(v.get("dtype")?.clone()).ok()?;
        let shape: Vec<u64> = serde_json::from_value(v.get("shape")?.clone()).ok()?;
        let needed = shape.iter().product::<u64>() * dtype.size() as u64;
        (e.checked_sub(s) != Some(needed)).then(|| {
            format!(
                "tensor '{name}': data_offsets [{s}, {e}] hold {} bytes but {dtype:?} × {shape:?} needs {needed}",
                e.saturating_sub(s)
            )
        })
    })
}
