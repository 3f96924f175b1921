//! Float exactness per architecture: tiny random Hugging Face checkpoints converted to F32 GGUF
//! by llama.cpp's own `convert_hf_to_gguf.py`, with transformers' float32 all-position logits
//! (`tools/scripts/family_fixtures.py`, `tests/fixtures/families/README.md`). Each runs through
//! `lumen::model::load` in reference mode and must be within 1e-4 relative L2 of transformers
//! at every position.
//!
//! The checkpoints exercise what sets each family apart: Q/K/V biases and an untied output
//! (qwen2), per-head Q/K norms (qwen3), soft-capping and alternating sliding windows shorter
//! than the sequence (gemma2), the 5:1 sliding/global pattern with its own RoPE base (gemma3),
//! fused QKV and gate/up tensors with a window (phi3), and a head size other than
//! n_embd / n_head (Mistral, a `llama` file).

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{read_npy, rel_l2};
use lumen::gguf::GgufFile;
use lumen::model::Logits;
use serde_json::Value;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(name)
}

/// Runs both reference sequences of `folder` through `model.gguf` and compares every position's
/// logits with `logits_file`; returns the worst relative L2.
fn check(folder: &str, arch: &str, logits_file: &str) -> f64 {
    check_file(folder, "model.gguf", arch, logits_file)
}

fn check_file(folder: &str, gguf: &str, arch: &str, logits_file: &str) -> f64 {
    let d = dir(folder);
    let file = Arc::new(GgufFile::open(d.join(gguf)).unwrap());
    let mut model = lumen::model::load(file).unwrap();
    assert_eq!(model.info().arch, arch);
    model.set_reference_matmul(true);
    let ids: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("ids.json")).unwrap()).unwrap();
    let (shape, reference) = read_npy(&d.join(logits_file));
    let (n_seq, seq_len, n_vocab) = (shape[0], shape[1], shape[2]);
    assert_eq!(model.info().n_vocab, n_vocab);
    let sequences = ids["sequences"].as_array().unwrap();
    assert_eq!(sequences.len(), n_seq);
    let mut worst = 0.0f64;
    for (i, seq) in sequences.iter().enumerate() {
        let tokens: Vec<u32> = seq
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tokens.len(), seq_len);
        let mut cache = model.new_cache(seq_len);
        let ours = model.forward(&tokens, &mut cache, Logits::All).unwrap();
        let want = &reference[i * seq_len * n_vocab..(i + 1) * seq_len * n_vocab];
        for p in 0..seq_len {
            let row = p * n_vocab..(p + 1) * n_vocab;
            let err = rel_l2(&ours[row.clone()], &want[row]);
            worst = worst.max(err);
            assert!(
                err < 1e-4,
                "{folder} sequence {i} position {p}: relative L2 {err:.2e}"
            );
        }
    }
    eprintln!("{folder}: worst relative L2 {worst:.2e} over {n_seq}×{seq_len} positions");
    worst
}

#[test]
fn qwen2_matches_transformers() {
    check("qwen2", "qwen2", "logits.npy");
}

#[test]
fn qwen3_matches_transformers() {
    check("qwen3", "qwen3", "logits.npy");
}

#[test]
fn gemma2_matches_transformers() {
    check("gemma2", "gemma2", "logits.npy");
}

#[test]
fn gemma3_matches_transformers() {
    check("gemma3", "gemma3", "logits.npy");
}

/// The file's `phi3.attention.sliding_window` (8, shorter than the 24-token sequences) applies
/// as in Hugging Face.
#[test]
fn phi3_matches_transformers() {
    check("phi3", "phi3", "logits.npy");
}

/// llama.cpp's converter writes no sliding window for Mistral (`llama` architecture): the file
/// is the full-attention model, which is what transformers computes without the window.
#[test]
fn mistral_head_size_matches_transformers_full_attention() {
    check("llama-mistral", "llama", "logits_full_attention.npy");
}

/// The same file with `llama.attention.sliding_window = 8` added
/// (`tools/scripts/gguf_add_sliding_window.py`): every layer slides, as in Hugging Face's Mistral.
#[test]
fn mistral_with_a_window_in_the_file_matches_transformers() {
    check_file("llama-mistral", "model_window8.gguf", "llama", "logits.npy");
}

/// The windows matter in these fixtures: the full-attention logits are far from the windowed
/// ones, so a runtime that ignored the window could not pass the phi3 test above.
#[test]
fn the_window_fixtures_can_fail() {
    for folder in ["phi3", "llama-mistral"] {
        let d = dir(folder);
        let (_, windowed) = read_npy(&d.join("logits.npy"));
        let (_, full) = read_npy(&d.join("logits_full_attention.npy"));
        assert!(rel_l2(&full, &windowed) > 1e-2, "{folder}");
    }
}
