//! `lumen convert` on the six tiny family checkpoints (`tools/tests/fixtures/families_hf/<arch>`,
//! Qwen2, Qwen3, Gemma 2, Gemma 3, Phi-3 and Mistral, saved by
//! `tools/scripts/family_fixtures.py --save-hf`) writes what llama.cpp's `convert_hf_to_gguf.py`
//! wrote for the same checkpoints (`tests/fixtures/families/<arch>/model.gguf`, F32): every
//! metadata key with the same value, type and place, and every tensor with the same name,
//! type, shape and bytes, in the same order. The other output types (F16, BF16, Q8_0) are
//! checked against llama.cpp's conversions recorded per tensor (name, type, shape, sha256 of the
//! bytes) in `tools/tests/fixtures/families_llamacpp.json` by
//! `tools/scripts/family_convert_refs.py`, which also checked that their keys equal the F32
//! file's apart from `general.file_type`.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use lumen::gguf::kv::read_kv;
use lumen::gguf::writer::MetaValue;
use lumen::gguf::GgufFile;
use lumen_tools::convert::{FileType, OutType};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The fixture folders, named after the GGUF architecture (`llama-mistral`: Mistral).
const ARCHS: [&str; 6] = [
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3",
    "phi3",
    "llama-mistral",
];

/// Keys whose values legitimately differ, each with the reason.
const IGNORED_KEYS: [(&str, &str); 1] = [(
    "general.name",
    "the fixtures were converted with --model-name lumen-tiny-<arch>; Lumen names the model \
     after the checkpoint directory, as llama.cpp does without that option",
)];

fn hf_dir(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/families_hf/{arch}"))
}

fn llama_cpp_gguf(arch: &str) -> PathBuf {
    root_fixtures_dir().join(format!("families/{arch}/model.gguf"))
}

/// The keys in file order, ignored ones left out.
fn kept_keys(file: &GgufFile) -> Vec<(String, MetaValue)> {
    read_kv(file)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| !IGNORED_KEYS.iter().any(|(i, _)| i == k))
        .collect()
}

/// Short text for a value in a failure message.
fn show(v: &MetaValue) -> String {
    match v {
        MetaValue::Array(items) if items.len() > 8 => {
            format!("[{} items: {:?}, ...]", items.len(), &items[..4])
        }
        other => format!("{other:?}"),
    }
}

/// Differences between two key lists: values and types (a `MetaValue` variant is a GGUF type),
/// then order.
fn key_differences(ours: &[(String, MetaValue)], theirs: &[(String, MetaValue)]) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in theirs {
        match ours.iter().find(|(o, _)| o == k) {
            None => out.push(format!("key {k} missing (llama.cpp: {})", show(v))),
            Some((_, o)) if o != v => {
                // Arrays: name the first differing element.
                let detail = match (o, v) {
                    (MetaValue::Array(a), MetaValue::Array(b)) => {
                        let i = a.iter().zip(b).position(|(x, y)| x != y);
                        format!(
                            " (lengths {} / {}, first difference at {i:?}: {:?} / {:?})",
                            a.len(),
                            b.len(),
                            i.map(|i| &a[i]),
                            i.map(|i| &b[i])
                        )
                    }
                    _ => String::new(),
                };
                out.push(format!(
                    "key {k}: Lumen {}, llama.cpp {}{detail}",
                    show(o),
                    show(v)
                ))
            }
            Some(_) => {}
        }
    }
    for (k, v) in ours {
        if !theirs.iter().any(|(t, _)| t == k) {
            out.push(format!("key {k} only in Lumen's file ({})", show(v)));
        }
    }
    if out.is_empty() {
        let a: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
        let b: Vec<&str> = theirs.iter().map(|(k, _)| k.as_str()).collect();
        if a != b {
            out.push(format!("key order: Lumen {a:?}\nllama.cpp {b:?}"));
        }
    }
    out
}

fn convert_family(arch: &str, out_dir: &Path, ft: FileType) -> GgufFile {
    let summary = convert_to(&hf_dir(arch), out_dir, Some(ft))
        .unwrap_or_else(|e| panic!("{arch}: lumen convert failed: {e}"));
    GgufFile::open(&summary.output).unwrap()
}

/// Keys, then tensors (name, type, shape, bytes, order) against llama.cpp's F32 conversion.
fn f32_differences(arch: &str) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let ours = convert_family(arch, tmp.path(), FileType::F32);
    let theirs = GgufFile::open(llama_cpp_gguf(arch)).unwrap();
    let (our_keys, their_keys) = (kept_keys(&ours), kept_keys(&theirs));
    let mut out = key_differences(&our_keys, &their_keys);
    let (a, b) = (ours.tensors(), theirs.tensors());
    println!(
        "{arch}: {} keys, {} tensors compared",
        their_keys.len(),
        b.len()
    );
    assert!(
        their_keys.len() > 20 && b.len() > 20,
        "{arch}: fixture too small"
    );
    let names =
        |ts: &[lumen::gguf::TensorInfo]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    if names(a) != names(b) {
        out.push(format!(
            "tensor names/order: Lumen {:?}\nllama.cpp {:?}",
            names(a),
            names(b)
        ));
    }
    for t in b {
        let Some(o) = a.iter().find(|o| o.name == t.name) else {
            continue;
        };
        if (o.ty, &o.shape) != (t.ty, &t.shape) {
            out.push(format!(
                "tensor {}: Lumen {} {:?}, llama.cpp {} {:?}",
                t.name, o.ty, o.shape, t.ty, t.shape
            ));
        } else if ours.tensor_bytes(o) != theirs.tensor_bytes(t) {
            out.push(format!("tensor {}: bytes differ", t.name));
        }
    }
    out
}

#[test]
fn f32_conversions_equal_llama_cpp_key_for_key_and_tensor_for_tensor() {
    let mut failures = Vec::new();
    for arch in ARCHS {
        let d = f32_differences(arch);
        println!("{arch}: {} differences", d.len());
        failures.extend(d.into_iter().map(|m| format!("{arch}: {m}")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn llama_cpp_refs() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families_llamacpp.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// F16, BF16 and Q8_0: keys as in llama.cpp's F32 file but `general.file_type`, and every
/// tensor (order, name, type, shape, sha256) as llama.cpp's conversion to that type.
#[test]
fn f16_bf16_q8_0_conversions_equal_llama_cpp_tensor_for_tensor() {
    let refs = llama_cpp_refs();
    let mut failures = Vec::new();
    for arch in ARCHS {
        let f32_file = GgufFile::open(llama_cpp_gguf(arch)).unwrap();
        for (outtype, want) in refs["archs"][arch]["convert"].as_object().unwrap() {
            let OutType::Fixed(ft) = outtype.parse().unwrap() else {
                panic!("{outtype}")
            };
            let tmp = tempfile::tempdir().unwrap();
            let ours = convert_family(arch, tmp.path(), ft);
            let file_type = want["file_type"].as_u64().unwrap() as u32;
            let their_keys: Vec<(String, MetaValue)> = kept_keys(&f32_file)
                .into_iter()
                .map(|(k, v)| match k.as_str() {
                    "general.file_type" => (k, MetaValue::U32(file_type)),
                    _ => (k, v),
                })
                .collect();
            let mut d = key_differences(&kept_keys(&ours), &their_keys);
            let got: Vec<Value> = ours
                .tensors()
                .iter()
                .map(|t| {
                    serde_json::json!([t.name, t.ty.name(), t.shape, hex(ours.tensor_bytes(t))])
                })
                .collect();
            let want = want["tensors"].as_array().unwrap();
            if got.len() != want.len() {
                d.push(format!("{} tensors, llama.cpp {}", got.len(), want.len()));
            }
            for (g, w) in got.iter().zip(want) {
                if g != w {
                    d.push(format!("tensor: Lumen {g}, llama.cpp {w}"));
                }
            }
            println!(
                "{arch} {outtype}: {} tensors, {} differences",
                want.len(),
                d.len()
            );
            failures.extend(d.into_iter().map(|m| format!("{arch} {outtype}: {m}")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
