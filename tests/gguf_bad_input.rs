//! Damaged and hostile GGUF files: each gives a named error, never a panic.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::tiny_gguf::*;
use lumen::gguf::{GgufError, GgufFile};
use lumen::model::{Llama, ModelError};

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn open_err(bytes: &[u8]) -> GgufError {
    let dir = tempfile::tempdir().unwrap();
    GgufFile::open(write(&dir, "bad.gguf", bytes)).expect_err("must be rejected")
}

fn load_err(bytes: &[u8]) -> ModelError {
    let dir = tempfile::tempdir().unwrap();
    let file = GgufFile::open(write(&dir, "m.gguf", bytes)).expect("the file itself is valid");
    Llama::load(Arc::new(file))
        .err()
        .expect("the model must be rejected")
}

#[test]
fn the_undamaged_tiny_model_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = GgufFile::open(write(&dir, "ok.gguf", &tiny_llama_bytes())).unwrap();
    let model = Llama::load(Arc::new(file)).unwrap();
    let mut cache = model.new_cache(8);
    let logits = model
        .forward(&[1, 2, 3], &mut cache, lumen::model::Logits::Last)
        .unwrap();
    assert_eq!(logits.len(), N_VOCAB);
    assert!(logits.iter().all(|l| l.is_finite()));
}

#[test]
fn truncated_files_are_named_as_truncated() {
    let bytes = tiny_llama_bytes();
    for cut in [0, 3, 10, 23, 100, bytes.len() / 2, bytes.len() - 1] {
        let err = open_err(&bytes[..cut]);
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                GgufError::Truncated { .. }
                    | GgufError::Parse { .. }
                    | GgufError::AbsurdCount { .. }
            ),
            "cut at {cut}: {msg}"
        );
        assert!(
            msg.contains("bad.gguf"),
            "error does not name the file: {msg}"
        );
    }
}

#[test]
fn wrong_magic() {
    let mut bytes = tiny_llama_bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let err = open_err(&bytes);
    assert!(matches!(err, GgufError::BadMagic { .. }), "{err}");
    assert!(err.to_string().contains("not a GGUF file"));
}

#[test]
fn unsupported_version() {
    let mut bytes = tiny_llama_bytes();
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        open_err(&bytes),
        GgufError::UnsupportedVersion { version: 1, .. }
    ));
}

#[test]
fn absurd_tensor_and_key_counts() {
    let mut bytes = tiny_llama_bytes();
    bytes[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let err = open_err(&bytes);
    assert!(
        matches!(
            err,
            GgufError::AbsurdCount {
                what: "tensor count",
                ..
            }
        ),
        "{err}"
    );
    let mut bytes = tiny_llama_bytes();
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    let err = open_err(&bytes);
    assert!(
        matches!(
            err,
            GgufError::AbsurdCount {
                what: "metadata key count",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn tensor_past_the_end_of_the_file() {
    let bytes = tiny_llama_bytes();
    // Drop the last tensor's data: its info is intact, its bytes are gone.
    let err = open_err(&bytes[..bytes.len() - 64 * 4]);
    assert!(
        matches!(&err, GgufError::Truncated { what, .. } if what.contains("blk.0.ffn_down.weight")),
        "{err}"
    );
}

/// Type id 40 is one past gguf-rs's table (its `GGMLType::Count`): gguf-rs panicked on it
/// (`lumen inspect` exited 101 on a 4 KB file). Every id Lumen has no kernels for is a named
/// error before gguf-rs decodes.
#[test]
fn type_id_past_gguf_rs_table_is_a_named_error_not_a_panic() {
    for id in [39u32, 40, 41, u32::MAX] {
        let mut bytes = tiny_llama_bytes();
        let at = tensor_type_field(&bytes, "blk.0.attn_q.weight");
        bytes[at..at + 4].copy_from_slice(&id.to_le_bytes());
        let err = open_err(&bytes);
        assert!(
            matches!(&err, GgufError::UnsupportedType { id: got, name, .. } if *got == id && name == "blk.0.attn_q.weight"),
            "{id}: {err}"
        );
    }
}

#[test]
fn unknown_tensor_type_id() {
    let mut bytes = tiny_llama_bytes();
    let at = tensor_type_field(&bytes, "blk.0.attn_q.weight");
    bytes[at..at + 4].copy_from_slice(&4242u32.to_le_bytes());
    let err = open_err(&bytes);
    // gguf-rs rejects ids it does not know; ids it knows but we do not (IQ2_XXS = 16) are ours.
    assert!(err.to_string().contains("bad.gguf"), "{err}");
    let mut bytes = tiny_llama_bytes();
    bytes[at..at + 4].copy_from_slice(&16u32.to_le_bytes());
    let err = open_err(&bytes);
    assert!(
        matches!(&err, GgufError::UnsupportedType { id: 16, name, .. } if name == "blk.0.attn_q.weight"),
        "{err}"
    );
    assert!(
        err.to_string().contains("Q4_K"),
        "the error lists supported types: {err}"
    );
}

#[test]
fn missing_required_tensor() {
    let bytes = tiny_llama_writer("llama", Some("blk.0.ffn_up.weight")).to_bytes();
    let err = load_err(&bytes);
    assert!(
        err.to_string()
            .contains("required tensor 'blk.0.ffn_up.weight' is missing"),
        "{err}"
    );
}

#[test]
fn unsupported_architecture_lists_the_supported_ones() {
    let bytes = tiny_llama_writer("mamba", None).to_bytes();
    let err = load_err(&bytes);
    let msg = err.to_string();
    assert!(
        matches!(err, ModelError::UnsupportedArchitecture { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("'mamba'")
            && msg.contains("supported: llama, mllama, qwen2, qwen3, gemma2, gemma3, phi3"),
        "{msg}"
    );
}

#[test]
fn wrong_tensor_shape_is_named() {
    let mut w = tiny_llama_writer("llama", Some("blk.0.ffn_up.weight"));
    w.add_tensor(f32_tensor("blk.0.ffn_up.weight", &[N_EMBD, 48], 99));
    let err = load_err(&w.to_bytes());
    let msg = err.to_string();
    assert!(matches!(err, ModelError::BadShape { .. }), "{msg}");
    assert!(
        msg.contains("blk.0.ffn_up.weight") && msg.contains("[32, 48]"),
        "{msg}"
    );
}

#[test]
fn duplicate_keys_are_refused() {
    let mut w = tiny_llama_writer("llama", None);
    w.add_meta(
        "llama.feed_forward_length",
        lumen::gguf::writer::MetaValue::U32(48),
    );
    let err = open_err(&w.to_bytes());
    assert!(err.to_string().contains("appears twice"), "{err}");
}

#[test]
fn duplicate_tensor_names_are_refused() {
    let mut w = tiny_llama_writer("llama", None);
    w.add_tensor(f32_tensor("output_norm.weight", &[N_EMBD], 98));
    let err = open_err(&w.to_bytes());
    assert!(
        err.to_string().contains("'output_norm.weight'") && err.to_string().contains("twice"),
        "{err}"
    );
}

#[test]
fn dims_whose_product_overflows() {
    let mut bytes = tiny_llama_bytes();
    let at = tensor_type_field(&bytes, "blk.0.ffn_gate.weight");
    // The two dims sit just before the type field.
    bytes[at - 16..at - 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    bytes[at - 8..at].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let err = open_err(&bytes);
    assert!(err.to_string().contains("bad.gguf"), "{err}");
}

#[test]
fn unaligned_tensor_offset() {
    let mut bytes = tiny_llama_bytes();
    let at = tensor_type_field(&bytes, "output_norm.weight") + 4;
    let offset = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    bytes[at..at + 8].copy_from_slice(&(offset + 4).to_le_bytes());
    let err = open_err(&bytes);
    assert!(err.to_string().contains("not aligned"), "{err}");
}

#[test]
fn overlapping_tensors() {
    let mut bytes = tiny_llama_bytes();
    let at = tensor_type_field(&bytes, "output_norm.weight") + 4;
    bytes[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    let err = open_err(&bytes);
    assert!(err.to_string().contains("overlaps"), "{err}");
}

#[test]
fn no_mmap_reads_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "ok.gguf", &tiny_llama_bytes());
    let mapped = GgufFile::open(&path).unwrap();
    let read = GgufFile::open_with(&path, lumen::gguf::OpenOptions { mmap: false }).unwrap();
    assert!(mapped.is_mapped() && !read.is_mapped());
    for t in mapped.tensors() {
        assert_eq!(
            mapped.tensor_bytes(t),
            read.tensor_bytes(read.tensor_info(&t.name).unwrap())
        );
    }
}
