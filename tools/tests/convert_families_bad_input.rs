//! The converter's new error paths for the non-Llama families: each broken copy of a tiny
//! family checkpoint gives a named error that says which file and key or tensor, and leaves
//! nothing in the output directory.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use lumen_tools::convert::{ConvertError, ConvertOptions, FileType};
use serde_json::{json, Value};

fn hf_dir(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/families_hf/{arch}"))
}

/// A copy of fixture `arch`, damaged by `damage`, converted to an empty output directory:
/// returns the error, after checking its message holds every needle and nothing was written.
fn fails(arch: &str, damage: impl FnOnce(&Path), needles: &[&str]) -> ConvertError {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join(arch);
    std::fs::create_dir(&input).unwrap();
    for e in std::fs::read_dir(hf_dir(arch)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), input.join(e.file_name())).unwrap();
    }
    damage(&input);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let err = convert_with(ConvertOptions {
        input,
        output: Some(out.join("model.gguf")),
        outtype: Some(FileType::F32),
        ..Default::default()
    })
    .expect_err("the conversion should fail");
    let msg = err.to_string();
    println!("{arch}: {msg}");
    for n in needles {
        assert!(msg.contains(n), "message lacks {n:?}: {msg}");
    }
    assert_eq!(dir_entries(&out), Vec::<String>::new(), "{msg}");
    err
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

type Config = serde_json::Map<String, Value>;
/// (fixture, config edit, the key the error must name).
type Case = (&'static str, fn(&mut Config), &'static str);

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Config)) {
    edit_json(&dir.join("config.json"), |v| {
        edit(v.as_object_mut().unwrap())
    });
}

#[test]
fn a_truncated_or_garbled_tokenizer_model_is_named() {
    for arch in ["gemma2", "phi3", "llama-mistral"] {
        let err = fails(
            arch,
            |d| {
                let p = d.join("tokenizer.model");
                let bytes = std::fs::read(&p).unwrap();
                std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            },
            &["tokenizer.model", "not a SentencePiece model"],
        );
        assert!(matches!(err, ConvertError::Tokenizer { .. }), "{err:?}");
    }
    let err = fails(
        "gemma3",
        |d| std::fs::write(d.join("tokenizer.model"), b"\x0a\xff\xff\xff\xff\x0f").unwrap(),
        &["tokenizer.model", "bytes needed"],
    );
    assert!(matches!(err, ConvertError::Tokenizer { .. }), "{err:?}");
}

#[test]
fn a_missing_tokenizer_model_is_named() {
    let err = fails(
        "phi3",
        |d| std::fs::remove_file(d.join("tokenizer.model")).unwrap(),
        &["tokenizer.model", "missing"],
    );
    assert!(matches!(err, ConvertError::Tokenizer { .. }), "{err:?}");
    let err = fails(
        "gemma2",
        |d| std::fs::remove_file(d.join("tokenizer.model")).unwrap(),
        &["tokenizer.model"],
    );
    assert!(matches!(err, ConvertError::Io { .. }), "{err:?}");
}

#[test]
fn keys_a_family_needs_are_named_when_missing_or_wrong() {
    let cases: Vec<Case> = vec![
        (
            "gemma2",
            |c| drop(c.remove("attn_logit_softcapping")),
            "attn_logit_softcapping",
        ),
        (
            "gemma2",
            |c| drop(c.insert("sliding_window".into(), Value::Null)),
            "sliding_window",
        ),
        ("gemma2", |c| drop(c.remove("head_dim")), "head_dim"),
        (
            "gemma3",
            |c| drop(c.insert("attn_logit_softcapping".into(), json!(50.0))),
            "attn_logit_softcapping",
        ),
        (
            "gemma3",
            |c| drop(c.insert("sliding_window".into(), json!("six"))),
            "sliding_window",
        ),
        (
            "phi3",
            |c| drop(c.remove("original_max_position_embeddings")),
            "original_max_position_embeddings",
        ),
        (
            "phi3",
            |c| drop(c.remove("num_key_value_heads")),
            "num_key_value_heads",
        ),
        (
            "phi3",
            |c| {
                c.insert(
                    "rope_parameters".into(),
                    json!({
                "rope_type": "longrope", "rope_theta": 10000.0,
                "long_factor": [1.0, 2.0], "short_factor": [1.0, 1.0]}),
                );
            },
            "long_factor",
        ),
        (
            "phi3",
            |c| {
                c.insert(
                    "rope_parameters".into(),
                    json!({"rope_type": "longrope", "rope_theta": 10000.0}),
                );
            },
            "long_factor",
        ),
        (
            "qwen3",
            |c| {
                c.insert(
                    "rope_parameters".into(),
                    json!({"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}),
                );
            },
            "rope_type",
        ),
        (
            "gemma2",
            |c| {
                c.insert(
                    "rope_parameters".into(),
                    json!({"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}),
                );
            },
            "Gemma2ForCausalLM",
        ),
        (
            "llama-mistral",
            |c| {
                c.insert(
                    "rope_parameters".into(),
                    json!({
                "rope_type": "longrope", "rope_theta": 1e6,
                "long_factor": [1.0], "short_factor": [1.0]}),
                );
            },
            "MistralForCausalLM",
        ),
        (
            "gemma3",
            |c| drop(c.insert("num_key_value_heads".into(), json!(3))),
            "num_key_value_heads",
        ),
    ];
    for (arch, edit, key) in cases {
        let err = fails(arch, |d| edit_config(d, edit), &["config.json", key]);
        assert!(
            matches!(err, ConvertError::BadKey { .. }),
            "{arch} {key}: {err:?}"
        );
    }
}

#[test]
fn added_tokens_beyond_the_vocabulary_are_named_for_phi3_and_skipped_elsewhere() {
    let beyond = |d: &Path| {
        edit_json(&d.join("tokenizer_config.json"), |v| {
            v["added_tokens_decoder"] = json!({"9999": {"content": "<|end|>", "special": true}});
        })
    };
    let err = fails(
        "phi3",
        beyond,
        &["tokenizer_config.json", "9999", "vocab_size"],
    );
    assert!(matches!(err, ConvertError::Tokenizer { .. }), "{err:?}");
    let err = fails(
        "gemma2",
        |d| {
            edit_json(&d.join("tokenizer_config.json"), |v| {
                v["added_tokens_decoder"] = json!({"x1": {"content": "<a>"}});
            })
        },
        &["tokenizer_config.json", "x1"],
    );
    assert!(matches!(err, ConvertError::Tokenizer { .. }), "{err:?}");
    // llama.cpp's common SentencePiece reader skips such ids with a warning: so does Lumen.
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("gemma2");
    std::fs::create_dir(&input).unwrap();
    for e in std::fs::read_dir(hf_dir("gemma2")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), input.join(e.file_name())).unwrap();
    }
    beyond(&input);
    convert_to(&input, tmp.path(), Some(FileType::F32)).unwrap();
}

#[test]
fn a_renamed_or_reshaped_family_tensor_is_named() {
    let err = fails(
        "qwen2",
        |d| {
            edit_shard_header(&d.join("model.safetensors"), |h| {
                let t = h.remove("model.layers.1.self_attn.q_proj.bias").unwrap();
                h.insert("model.layers.1.self_attn.q_proj.bias_renamed".into(), t);
            })
        },
        &["q_proj.bias_renamed", "model.safetensors"],
    );
    assert!(
        matches!(err, ConvertError::UnexpectedTensor { .. }),
        "{err:?}"
    );
    let err = fails(
        "phi3",
        |d| edit_config(d, |c| drop(c.insert("intermediate_size".into(), json!(64)))),
        &["mlp.down_proj", "model.safetensors", "has shape"],
    );
    assert!(matches!(err, ConvertError::ShapeMismatch { .. }), "{err:?}");
    // Qwen3 with attention_bias expects biases the checkpoint lacks.
    let err = fails(
        "qwen3",
        |d| edit_config(d, |c| drop(c.insert("attention_bias".into(), json!(true)))),
        &["bias"],
    );
    assert!(matches!(err, ConvertError::MissingTensor { .. }), "{err:?}");
}

#[test]
fn the_unsupported_architecture_message_lists_the_families() {
    let err = fails(
        "qwen2",
        |d| {
            edit_config(d, |c| {
                drop(c.insert("architectures".into(), json!(["Qwen2MoeForCausalLM"])))
            })
        },
        &[
            "Qwen2MoeForCausalLM",
            "Qwen2ForCausalLM",
            "Qwen3ForCausalLM",
            "Gemma2ForCausalLM",
            "Gemma3ForCausalLM",
            "Phi3ForCausalLM",
            "MistralForCausalLM",
        ],
    );
    assert!(
        matches!(err, ConvertError::UnsupportedArchitecture { .. }),
        "{err:?}"
    );
}
