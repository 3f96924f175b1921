//! Helpers for the converter tests: the tiny-llama fixture, conversions into temporary
//! directories, and the root crate's test helpers (npy reader, argmax).
#![allow(dead_code)]

#[path = "../../../tests/common/mod.rs"]
mod root_common;
#[path = "../../../tests/tokenizer_common/mod.rs"]
mod tokenizer_common;

use std::path::{Path, PathBuf};

use lumen_tools::convert::{self, ConvertError, ConvertOptions, FileType, Summary};
#[allow(unused_imports)] // not every test file uses them all
pub use root_common::{argmax, measured, read_npy};
#[allow(unused_imports)]
pub use tokenizer_common::{ids_of, read_json};

/// `../shared/fixtures/tiny-llama` beside the repository root (CI lays it out the same way).
pub fn tiny_llama_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tiny-llama")
}

/// The repository's `tests/fixtures`.
pub fn root_fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Converts `input` to `out_dir/model.gguf`.
pub fn convert_to(
    input: &Path,
    out_dir: &Path,
    outtype: Option<FileType>,
) -> Result<Summary, ConvertError> {
    convert_with(ConvertOptions {
        input: input.to_path_buf(),
        output: Some(out_dir.join("model.gguf")),
        outtype,
        ..Default::default()
    })
}

pub fn convert_with(opts: ConvertOptions) -> Result<Summary, ConvertError> {
    convert::convert(&opts, &mut |_| {})
}

/// The names in `dir`, sorted (to check nothing — no partial output, no temporary file — was
/// left behind).
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Rewrites a shard's header JSON, keeping its data bytes.
pub fn edit_shard_header(
    path: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut text = serde_json::to_vec(&header).unwrap();
    // safetensors pads the header with spaces to keep the data 8-byte aligned.
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

/// llama.cpp's conversions and quantizations of the tiny family checkpoints, per tensor
/// (`tools/scripts/family_convert_refs.py`).
pub fn families_llamacpp() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families_llamacpp.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The tiny family fixture folders, named after the GGUF architecture (`llama-mistral`:
/// Mistral), under `tests/fixtures/families*`.
pub const FAMILY_FIXTURES: [&str; 6] = [
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3",
    "phi3",
    "llama-mistral",
];
