//! GGUF files: reading (validated, memory-mapped), key and tensor names, writing.

pub mod keys;
pub mod kv;
mod metadata;
pub mod names;
mod reader;
mod vocab;
pub mod writer;

use std::path::PathBuf;

pub use metadata::Metadata;
#[cfg(test)]
pub(crate) use reader::test_files;
pub use reader::{GgufFile, OpenOptions, TensorInfo, MAX_ARRAY_LEN};

/// Everything that can be wrong with a GGUF file. Each variant names the file and, where there
/// is one, the key or tensor.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")")]
    BadMagic { path: PathBuf, found: [u8; 4] },
    #[error("{path}: GGUF version {version} is not supported (versions 2 and 3 are)")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{path}: file is truncated: {what} needs {needed} bytes but the file has {file_len}")]
    Truncated {
        path: PathBuf,
        what: String,
        needed: u64,
        file_len: u64,
    },
    #[error("{path}: {what} {count} is impossible (limit {limit} for this file)")]
    AbsurdCount {
        path: PathBuf,
        what: &'static str,
        count: u64,
        limit: u64,
    },
    #[error("{path}: malformed GGUF: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: metadata key '{key}' is missing")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: metadata key '{key}': {message}")]
    BadValue {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: tensor '{name}' has type id {id}, which Lumen does not support (supported: {supported})", supported = supported_type_names())]
    UnsupportedType {
        path: PathBuf,
        name: String,
        id: u32,
    },
    #[error("{path}: tensor '{name}': {message}")]
    BadTensor {
        path: PathBuf,
        name: String,
        message: String,
    },
    #[error("{path}: required tensor '{name}' is missing")]
    MissingTensor { path: PathBuf, name: String },
}

fn supported_type_names() -> String {
    lumen_kernels::GgmlType::ALL
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}
