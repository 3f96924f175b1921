//! Llama 3.2 Vision (`MllamaForConditionalGeneration`) → one `mllama` GGUF, checked against
//! an expectation we did not derive from our own code: `tools/scripts/mllama_gguf_check.py`
//! applied the spec's layout rules to the safetensors with numpy, verified our files with
//! gguf-py, and saved per output type every key and each tensor's type, shape and the sha256
//! of its expected bytes (`tools/tests/fixtures/tiny_mllama_gguf.json`). Plus bad inputs.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use lumen::gguf::kv::read_kv;
use lumen::gguf::writer::MetaValue;
use lumen::gguf::{keys, names, GgufFile};
use lumen_tools::convert::{ConvertError, ConvertOptions, FileType};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn tiny_mllama_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tiny-mllama")
}

fn expectation() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_mllama_gguf.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A metadata value as the check script wrote it: numbers, strings, lists; lists longer than
/// 64 as their length and the sha256 of their compact JSON.
fn as_json(v: &MetaValue) -> Value {
    match v {
        MetaValue::U8(x) => (*x).into(),
        MetaValue::I8(x) => (*x).into(),
        MetaValue::U16(x) => (*x).into(),
        MetaValue::I16(x) => (*x).into(),
        MetaValue::U32(x) => (*x).into(),
        MetaValue::I32(x) => (*x).into(),
        MetaValue::U64(x) => (*x).into(),
        MetaValue::I64(x) => (*x).into(),
        MetaValue::F32(x) => (*x as f64).into(),
        MetaValue::F64(x) => (*x).into(),
        MetaValue::Bool(x) => (*x).into(),
        MetaValue::Str(s) => s.clone().into(),
        MetaValue::Array(items) => {
            let list = Value::Array(items.iter().map(as_json).collect());
            if items.len() <= 64 {
                return list;
            }
            let text = serde_json::to_string(&list).unwrap();
            serde_json::json!({"len": items.len(), "sha256": hex(text.as_bytes())})
        }
    }
}

/// JSON equality, with floats compared as the f32 they were written from (serde_json's default
/// float parsing may be off by one ulp of the f64).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            x.as_f64().map(|v| v as f32) == y.as_f64().map(|v| v as f32)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn check_against_expectation(outtype: &str, ft: FileType) {
    let want = expectation();
    let tmp = tempfile::tempdir().unwrap();
    convert_to(&tiny_mllama_dir(), tmp.path(), Some(ft)).unwrap();
    let file = GgufFile::open(tmp.path().join("model.gguf")).unwrap();

    let got_keys: std::collections::HashMap<String, Value> = read_kv(&file)
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), as_json(v)))
        .collect();
    let want_keys = want["keys"][outtype].as_object().unwrap();
    for (k, v) in want_keys {
        let got = got_keys.get(k);
        assert!(
            got.is_some_and(|g| same(g, v)),
            "{outtype}: key {k}: got {got:?}, want {v}"
        );
    }

    let want_tensors = want["tensors"].as_object().unwrap();
    assert_eq!(file.tensors().len(), want_tensors.len(), "{outtype}");
    for t in file.tensors() {
        let w = want_tensors
            .get(&t.name)
            .unwrap_or_else(|| panic!("{outtype}: unexpected tensor {}", t.name));
        let shape: Vec<usize> = serde_json::from_value(w["shape"].clone()).unwrap();
        assert_eq!(t.shape, shape, "{outtype}: {}", t.name);
        assert_eq!(
            t.ty.name(),
            w["types"][outtype].as_str().unwrap(),
            "{outtype}: {}",
            t.name
        );
        assert_eq!(
            hex(file.tensor_bytes(t)),
            w["sha256"][outtype].as_str().unwrap(),
            "{outtype}: {} bytes",
            t.name
        );
    }
}

#[test]
fn f32_conversion_equals_the_independent_expectation() {
    check_against_expectation("f32", FileType::F32);
}

#[test]
fn f16_conversion_equals_the_independent_expectation() {
    check_against_expectation("f16", FileType::F16);
}

#[test]
fn q8_0_conversion_equals_the_independent_expectation() {
    check_against_expectation("q8_0", FileType::Q8_0);
}

#[test]
fn lumen_reads_the_converted_file() {
    let tmp = tempfile::tempdir().unwrap();
    convert_to(&tiny_mllama_dir(), tmp.path(), Some(FileType::F16)).unwrap();
    let file = GgufFile::open(tmp.path().join("model.gguf")).unwrap();
    assert_eq!(file.architecture().unwrap(), "mllama");
    let md = file.metadata();
    let key = |s| keys::arch_key("mllama", s);
    assert_eq!(
        md.get_i32_array(&key(keys::CROSS_ATTENTION_LAYERS))
            .unwrap(),
        [1, 3]
    );
    assert_eq!(md.get_u32(&key(keys::VOCAB_SIZE)).unwrap(), 128256);
    let tokens = md.get_str_array(keys::TOKENIZER_TOKENS).unwrap();
    assert_eq!(tokens.len(), 128257);
    assert_eq!(tokens[128256], "<|image|>");
    assert_eq!(
        md.get_f32_array(&key(keys::VISION_IMAGE_STD)).unwrap(),
        [0.268_629_54, 0.261_302_6, 0.275_777_1]
    );
    let embd = file.require(names::TOKEN_EMBD).unwrap();
    assert_eq!(embd.shape, [64, 128264], "vocab + 8 learnable image rows");
    assert_eq!(file.require(names::OUTPUT).unwrap().shape, [64, 128256]);
    assert!(file
        .tensor_info(&names::blk(1, names::CROSS_ATTN_Q))
        .is_some());
    assert!(file.tensor_info(&names::blk(1, names::ATTN_Q)).is_none());
    assert!(file.tensor_info(names::V_TILE_POSITION_EMBD_GATE).is_some());
}

/// A writable copy of the fixture; the checkpoint is copied only when `copy_weights` (the
/// test damages it), else linked.
struct Broken {
    _tmp: tempfile::TempDir,
    input: PathBuf,
    out: PathBuf,
}

fn broken_copy(copy_weights: bool, damage: impl FnOnce(&Path)) -> Broken {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("tiny-mllama");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(tiny_mllama_dir()).unwrap() {
        let src = entry.unwrap().path();
        let dst = input.join(src.file_name().unwrap());
        if src.ends_with("model.safetensors") && !copy_weights {
            std::os::unix::fs::symlink(&src, &dst).unwrap();
            continue;
        }
        std::fs::write(&dst, std::fs::read(&src).unwrap()).unwrap();
    }
    damage(&input);
    Broken {
        _tmp: tmp,
        input,
        out,
    }
}

impl Broken {
    /// Converts, expects an error whose message contains every `needle`, and checks nothing
    /// was written.
    fn fails_with(&self, needles: &[&str]) -> ConvertError {
        let opts = ConvertOptions {
            input: self.input.clone(),
            output: Some(self.out.join("model.gguf")),
            outtype: Some(FileType::F16),
            ..Default::default()
        };
        let err = match convert_with(opts) {
            Ok(s) => panic!("expected an error, wrote {}", s.output.display()),
            Err(e) => e,
        };
        let msg = err.to_string();
        println!("{msg}");
        for n in needles {
            assert!(msg.contains(n), "message lacks {n:?}: {msg}");
        }
        assert_eq!(dir_entries(&self.out), Vec::<String>::new(), "{msg}");
        err
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Rewrites `model.safetensors`' header (and optionally its data length), keeping the data.
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>) -> usize) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data_len = edit(&mut header);
    let mut text = serde_json::to_vec(&header).unwrap();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..8 + n + data_len]);
    std::fs::write(path, out).unwrap();
}

fn data_end(info: &Value) -> usize {
    info["data_offsets"][1].as_u64().unwrap() as usize
}

#[test]
fn config_without_vision_config_is_named() {
    let b = broken_copy(false, |d| {
        edit_config(d, |v| {
            v.as_object_mut().unwrap().remove("vision_config");
        })
    });
    let err = b.fails_with(&["config.json", "vision_config", "missing"]);
    assert!(matches!(err, ConvertError::BadKey { .. }), "{err:?}");
}

#[test]
fn cross_attention_layer_beyond_the_decoder_is_named() {
    let b = broken_copy(false, |d| {
        edit_config(d, |v| {
            v["text_config"]["cross_attention_layers"] = serde_json::json!([1, 5]);
        })
    });
    let err = b.fails_with(&["text_config.cross_attention_layers", "below 5"]);
    assert!(matches!(err, ConvertError::BadKey { .. }), "{err:?}");
}

#[test]
fn tensor_of_the_wrong_shape_is_named() {
    // Same number of elements, so the safetensors header itself stays valid.
    let b = broken_copy(true, |d| {
        edit_weights(d, |h| {
            h["multi_modal_projector.weight"]["shape"] = serde_json::json!([96, 64]);
            h.values()
                .filter(|v| v.get("data_offsets").is_some())
                .map(data_end)
                .max()
                .unwrap()
        })
    });
    let err = b.fails_with(&["multi_modal_projector.weight", "[96, 64]", "[64, 96]"]);
    assert!(matches!(err, ConvertError::ShapeMismatch { .. }), "{err:?}");
}

#[test]
fn missing_tensor_is_named() {
    // Drop the tensor stored last, and its bytes, so the file stays a valid safetensors file.
    let removed = std::cell::RefCell::new(String::new());
    let b = broken_copy(true, |d| {
        edit_weights(d, |h| {
            let last = h
                .iter()
                .filter(|(_, v)| v.get("data_offsets").is_some())
                .max_by_key(|(_, v)| data_end(v))
                .map(|(k, _)| k.clone())
                .unwrap();
            h.remove(&last);
            *removed.borrow_mut() = last;
            h.values()
                .filter(|v| v.get("data_offsets").is_some())
                .map(data_end)
                .max()
                .unwrap()
        })
    });
    let name = removed.borrow().clone();
    let err = b.fails_with(&[&name, "missing"]);
    assert!(matches!(err, ConvertError::MissingTensor { .. }), "{err:?}");
}

#[test]
fn bad_image_normalisation_is_named() {
    let b = broken_copy(false, |d| {
        let path = d.join("preprocessor_config.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v["image_std"] = serde_json::json!([0.5, 0.5]);
        std::fs::write(path, v.to_string()).unwrap();
    });
    let err = b.fails_with(&["preprocessor_config.json", "image_std", "3 numbers"]);
    assert!(matches!(err, ConvertError::BadKey { .. }), "{err:?}");
}
