//! `lumen convert` on the six tiny family checkpoints (`tools/tests/fixtures/families_hf/<arch>`,
//! Qwen2, Qwen3, Gemma 2, Gemma 3, Phi-3 and Mistral, saved by
//! `tools/scripts/family_fixtures.py --save-hf`) writes what llama.cpp's `convert_hf_to_gguf.py`
//! wrote for the same checkpoints (`tests/fixtures/families/<arch>/model.gguf`, F32): every
//! metadata key with the same value, type and place, and every tensor with the same name,
//! type, shape and bytes, in the same order. The other output types (F16, BF16, Q8_0) are
//! checked against llama.cpp's conversions recorded per tensor (name, type, shape, sha256 of the
//! bytes) in `tools/tests/fixtures/families_llamacpp.json` by
//! `tools/scripts/family_convert_refs.py`, which also checked that their keys equal the F32
//! file's apart from `general.file_type`. Features the six checkpoints lack (Phi-3 LongRoPE
//! with a partial rotary factor, Gemma 3's older RoPE spelling, SentencePiece added tokens, the
//! llama converter's `add_prefix_space`) are checked on edited copies of them, against
//! llama.cpp's conversion of the same copies recorded in that file.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use lumen::gguf::kv::read_kv;
use lumen::gguf::writer::MetaValue;
use lumen::gguf::GgufFile;
use lumen_tools::convert::{FileType, OutType};
use serde_json::Value;

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
    for arch in FAMILY_FIXTURES {
        let d = f32_differences(arch);
        println!("{arch}: {} differences", d.len());
        failures.extend(d.into_iter().map(|m| format!("{arch}: {m}")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// F16, BF16 and Q8_0: keys as in llama.cpp's F32 file but `general.file_type`, and every
/// tensor (order, name, type, shape, sha256) as llama.cpp's conversion to that type.
#[test]
fn f16_bf16_q8_0_conversions_equal_llama_cpp_tensor_for_tensor() {
    let refs = families_llamacpp();
    let mut failures = Vec::new();
    for arch in FAMILY_FIXTURES {
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
                    serde_json::json!([
                        t.name,
                        t.ty.name(),
                        t.shape,
                        sha256_hex(ours.tensor_bytes(t))
                    ])
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

/// A metadata value as JSON, with its GGUF type name (`ARRAY:ELEM` for arrays).
fn typed_json(v: &MetaValue) -> (String, Value) {
    let (ty, val): (&str, Value) = match v {
        MetaValue::U8(x) => ("UINT8", (*x).into()),
        MetaValue::I8(x) => ("INT8", (*x).into()),
        MetaValue::U16(x) => ("UINT16", (*x).into()),
        MetaValue::I16(x) => ("INT16", (*x).into()),
        MetaValue::U32(x) => ("UINT32", (*x).into()),
        MetaValue::I32(x) => ("INT32", (*x).into()),
        MetaValue::U64(x) => ("UINT64", (*x).into()),
        MetaValue::I64(x) => ("INT64", (*x).into()),
        MetaValue::F32(x) => ("FLOAT32", (*x as f64).into()),
        MetaValue::F64(x) => ("FLOAT64", (*x).into()),
        MetaValue::Bool(x) => ("BOOL", (*x).into()),
        MetaValue::Str(x) => ("STRING", x.clone().into()),
        MetaValue::Array(items) => {
            let elem = items.first().map_or("?".to_string(), |i| typed_json(i).0);
            let list = items.iter().map(|i| typed_json(i).1).collect();
            return (format!("ARRAY:{elem}"), Value::Array(list));
        }
    };
    (ty.to_string(), val)
}

/// JSON equality with numbers compared as the f32 they were written from.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            x.as_f64().map(|v| v as f32) == y.as_f64().map(|v| v as f32)
        }
        _ => a == b,
    }
}

/// Copies fixture `base` to `dest` and applies `patch` (`{file: {key: value or null}}`, null
/// deleting the key).
fn patched_copy(base: &str, dest: &Path, patch: &Value) {
    std::fs::create_dir_all(dest).unwrap();
    for e in std::fs::read_dir(hf_dir(base)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
    }
    for (file, edits) in patch.as_object().unwrap() {
        let path = dest.join(file);
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (k, x) in edits.as_object().unwrap() {
            match x {
                Value::Null => drop(v.as_object_mut().unwrap().remove(k)),
                _ => v[k] = x.clone(),
            }
        }
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
}

#[test]
fn edited_checkpoints_convert_like_llama_cpp() {
    let refs = families_llamacpp();
    let variants = refs["variants"].as_object().unwrap();
    assert!(variants.len() >= 5, "{:?}", variants.keys());
    let mut failures = Vec::new();
    for (name, want) in variants {
        let base = want["base"].as_str().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join(name);
        patched_copy(base, &input, &want["patch"]);
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let summary = convert_to(&input, &out, Some(FileType::F32))
            .unwrap_or_else(|e| panic!("{name}: lumen convert failed: {e}"));
        let ours = GgufFile::open(&summary.output).unwrap();
        let base_keys = read_kv(&GgufFile::open(llama_cpp_gguf(base)).unwrap()).unwrap();
        let our_keys = kept_keys(&ours);
        let mut d = Vec::new();
        let want_keys = want["keys"].as_array().unwrap();
        let order: Vec<&str> = want_keys.iter().map(|k| k[0].as_str().unwrap()).collect();
        let our_order: Vec<&str> = our_keys.iter().map(|(k, _)| k.as_str()).collect();
        if order != our_order {
            d.push(format!(
                "key order: Lumen {our_order:?}\nllama.cpp {order:?}"
            ));
        }
        for k in want_keys {
            let key = k[0].as_str().unwrap();
            let Some((_, v)) = our_keys.iter().find(|(n, _)| n == key) else {
                d.push(format!("key {key} missing"));
                continue;
            };
            let (ty, got) = typed_json(v);
            if ty != k[1].as_str().unwrap() {
                d.push(format!("key {key}: type {ty}, llama.cpp {}", k[1]));
                continue;
            }
            let expected = match &k[2] {
                Value::Object(diff) => {
                    // An array: the unedited fixture's, with the recorded elements changed.
                    let (_, b) = base_keys.iter().find(|(n, _)| n == key).unwrap();
                    let mut list = typed_json(b).1;
                    assert_eq!(
                        list.as_array().unwrap().len() as u64,
                        diff["len"].as_u64().unwrap()
                    );
                    for (i, x) in diff["changed"].as_object().unwrap() {
                        list[i.parse::<usize>().unwrap()] = x.clone();
                    }
                    list
                }
                other => other.clone(),
            };
            let equal = match (&got, &expected) {
                (Value::Array(a), Value::Array(b)) => {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
                }
                (a, b) => same(a, b),
            };
            if !equal {
                let short = |v: &Value| v.to_string().chars().take(300).collect::<String>();
                d.push(format!(
                    "key {key}: Lumen {}, llama.cpp {}",
                    short(&got),
                    short(&expected)
                ));
            }
        }
        let got: Vec<Value> = ours
            .tensors()
            .iter()
            .map(|t| {
                serde_json::json!([
                    t.name,
                    t.ty.name(),
                    t.shape,
                    sha256_hex(ours.tensor_bytes(t))
                ])
            })
            .collect();
        if got != *want["tensors"].as_array().unwrap() {
            d.push(format!(
                "tensors: Lumen {:?}\nllama.cpp {:?}",
                got.iter().map(|t| t[0].clone()).collect::<Vec<_>>(),
                want["tensors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t[0].clone())
                    .collect::<Vec<_>>()
            ));
            for (g, w) in got.iter().zip(want["tensors"].as_array().unwrap()) {
                if g != w {
                    d.push(format!("tensor: Lumen {g}, llama.cpp {w}"));
                }
            }
        }
        println!("{name}: {} keys, {} differences", want_keys.len(), d.len());
        failures.extend(d.into_iter().map(|m| format!("{name}: {m}")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
