//! `lumen quantize` end to end on the tensors of `tools/fixtures/quantize` (written by
//! `tools/scripts/gen_quantize_fixtures.py`): each quantized tensor of the output file equals
//! gguf-py's quantization (legacy types) or llama.cpp's (K-quants, and the 32-element type
//! llama.cpp falls back to for 64-column rows); norms stay F32; metadata is kept with
//! llama.cpp's `general.file_type`. Then bad inputs: each a named error, nothing left behind.

mod common;

use std::path::{Path, PathBuf};

use common::dir_entries;
use lumen::gguf::kv::read_kv;
use lumen::gguf::writer::{GgufWriter, MetaValue, TensorData};
use lumen::gguf::{GgufError, GgufFile};
use lumen::kernels::GgmlType;
use lumen_tools::output::TestHooks;
use lumen_tools::quantize::{self, FileType, QuantizeError, QuantizeOptions, Summary};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/quantize")
}

fn index() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("index.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The fixture tensors as an F32 GGUF with minimal llama metadata, written to `path`.
fn write_f32_model(path: &Path) {
    let idx = index();
    let raw = std::fs::read(fixture_dir().join("weights.f32")).unwrap();
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", MetaValue::Str("llama".into()));
    w.add_meta("general.name", MetaValue::Str("fixture".into()));
    w.add_meta("general.file_type", MetaValue::U32(0));
    w.add_meta("llama.block_count", MetaValue::U32(1));
    w.add_meta("llama.attention.head_count", MetaValue::U32(4));
    w.add_meta("llama.attention.head_count_kv", MetaValue::U32(1));
    w.add_meta("split.count", MetaValue::U16(1));
    for t in idx["tensors"].as_array().unwrap() {
        let (cols, rows) = (t["cols"].as_u64().unwrap(), t["rows"].as_u64().unwrap());
        let off = t["offset"].as_u64().unwrap() as usize * 4;
        let n = (cols * rows) as usize * 4;
        let shape = if rows == 1 {
            vec![cols as usize]
        } else {
            vec![cols as usize, rows as usize]
        };
        w.add_tensor(TensorData {
            name: t["name"].as_str().unwrap().into(),
            ty: GgmlType::F32,
            shape,
            data: raw[off..off + n].to_vec(),
        });
    }
    w.write_atomic(path).unwrap();
}

/// A temporary directory holding `model-f32.gguf`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_f32_model(&dir.path().join("model-f32.gguf"));
        Setup { dir }
    }

    fn input(&self) -> PathBuf {
        self.dir.path().join("model-f32.gguf")
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out.gguf")
    }

    fn options(&self, ft: FileType) -> QuantizeOptions {
        QuantizeOptions::new(self.input(), self.out(), ft)
    }
}

fn run(opts: &QuantizeOptions) -> Result<Summary, QuantizeError> {
    quantize::quantize(opts, &mut |_| {})
}

/// The reference bytes of `tensor` quantized to `ty` (`source` = "gguf_py" or "ggml").
fn reference(ty: GgmlType, tensor: &str, source: &str) -> Vec<u8> {
    let e = &index()["types"][ty.name()];
    let t = &e["tensors"][tensor];
    let off = t[format!("{source}_offset")].as_u64().unwrap() as usize;
    let len = t["bytes"].as_u64().unwrap() as usize;
    let all = std::fs::read(fixture_dir().join(e[source].as_str().unwrap())).unwrap();
    all[off..off + len].to_vec()
}

fn file_type_of(f: &GgufFile) -> u32 {
    f.metadata().get_u32("general.file_type").unwrap()
}

/// (tensor, expected type, reference source) for a `--pure` run of `ft`.
fn pure_expectations(ft: FileType) -> Vec<(&'static str, GgmlType, &'static str)> {
    let ty = ft.default_type();
    let legacy = |t: GgmlType| {
        if t.block_elems() == 32 {
            "gguf_py"
        } else {
            "ggml"
        }
    };
    // 64 columns: K-quants fall back as llama.cpp does (Q4_K → Q5_0, Q6_K → Q8_0 …).
    let narrow = match ty {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        t => t,
    };
    vec![
        ("blk.0.attn_q.weight", ty, legacy(ty)),
        ("blk.0.ffn_down.weight", ty, legacy(ty)),
        ("token_embd.weight", ty, legacy(ty)),
        ("blk.0.attn_k.weight", narrow, "gguf_py"),
    ]
}

#[test]
fn pure_quantization_equals_the_references_tensor_by_tensor() {
    let s = Setup::new();
    let input_before = std::fs::read(s.input()).unwrap();
    for ft in [
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q8_0,
        FileType::Q2_K,
        FileType::Q3_K_M,
        FileType::Q4_K_M,
        FileType::Q5_K_M,
        FileType::Q6_K,
    ] {
        let mut opts = s.options(ft);
        opts.types.pure = true;
        opts.force = true;
        let summary = run(&opts).unwrap();
        let out = GgufFile::open(s.out()).unwrap();
        assert_eq!(file_type_of(&out), ft.id(), "{ft:?}");
        assert_eq!(summary.n_tensors, 5);
        for (name, ty, source) in pure_expectations(ft) {
            let t = out.require(name).unwrap();
            assert_eq!(t.ty, ty, "{ft:?} {name}");
            let want = reference(ty, name, source);
            assert!(
                out.tensor_bytes(t) == want.as_slice(),
                "{ft:?} {name}: bytes differ from {source}'s {ty}"
            );
        }
        let norm = out.require("blk.0.attn_norm.weight").unwrap();
        assert_eq!(norm.ty, GgmlType::F32, "{ft:?}: norms stay F32");
        let src = GgufFile::open(s.input()).unwrap();
        let src_norm = src.require("blk.0.attn_norm.weight").unwrap();
        assert_eq!(out.tensor_bytes(norm), src.tensor_bytes(src_norm));
    }
    assert_eq!(
        std::fs::read(s.input()).unwrap(),
        input_before,
        "input changed"
    );
}

#[test]
fn metadata_is_kept_in_order_with_llama_cpp_file_type_and_tensor_order() {
    let s = Setup::new();
    run(&s.options(FileType::Q4_K_M)).unwrap();
    let out = GgufFile::open(s.out()).unwrap();
    let kv = read_kv(&out).unwrap();
    let keys: Vec<&str> = kv.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "general.architecture",
            "general.name",
            "llama.block_count",
            "llama.attention.head_count",
            "llama.attention.head_count_kv",
            "general.quantization_version",
            "general.file_type",
        ]
    );
    assert_eq!(kv[6].1, MetaValue::U32(15));
    assert_eq!(kv[5].1, MetaValue::U32(2));
    // llama.cpp's order: non-layer tensors first, then by layer, by name within a layer.
    let names: Vec<&str> = out.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "token_embd.weight",
            "blk.0.attn_k.weight",
            "blk.0.attn_norm.weight",
            "blk.0.attn_q.weight",
            "blk.0.ffn_down.weight",
        ]
    );
    // The Q4_K_M mix: tied embeddings become Q6_K, ffn_down of the (only, so last) layer Q6_K.
    let ty = |n: &str| out.require(n).unwrap().ty;
    assert_eq!(ty("token_embd.weight"), GgmlType::Q6_K);
    assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q6_K);
    assert_eq!(ty("blk.0.attn_q.weight"), GgmlType::Q4_K);
    assert_eq!(ty("blk.0.attn_k.weight"), GgmlType::Q5_0);
}

#[test]
fn tensor_type_options_override_the_mix() {
    let s = Setup::new();
    let mut opts = s.options(FileType::Q4_0);
    opts.types.token_embedding_type = Some(GgmlType::Q8_0);
    run(&opts).unwrap();
    let out = GgufFile::open(s.out()).unwrap();
    let t = out.require("token_embd.weight").unwrap();
    assert_eq!(t.ty, GgmlType::Q8_0);
    assert_eq!(
        out.tensor_bytes(t),
        reference(GgmlType::Q8_0, "token_embd.weight", "gguf_py")
    );
}

#[test]
fn requantizing_needs_allow_requantize() {
    let s = Setup::new();
    run(&s.options(FileType::Q8_0)).unwrap();
    let q8 = s.dir.path().join("q8.gguf");
    std::fs::rename(s.out(), &q8).unwrap();
    let mut opts = QuantizeOptions::new(&q8, s.out(), FileType::Q4_0);
    let err = run(&opts).unwrap_err();
    assert!(
        matches!(
            err,
            QuantizeError::NeedsRequantize {
                from: GgmlType::Q8_0,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("q8.gguf") && msg.contains("--allow-requantize"),
        "{msg}"
    );
    assert!(!s.out().exists());
    opts.allow_requantize = true;
    run(&opts).unwrap();
    let out = GgufFile::open(s.out()).unwrap();
    assert_eq!(
        out.require("blk.0.attn_q.weight").unwrap().ty,
        GgmlType::Q4_0
    );
}

/// Runs `opts`, expects an error whose message has every needle, and checks that the
/// directory holds only `keep` afterwards.
fn fails(opts: &QuantizeOptions, needles: &[&str], keep: &[&str]) -> QuantizeError {
    let err = run(opts).expect_err("expected an error");
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "message lacks {n:?}: {msg}");
    }
    let dir = opts.output.parent().unwrap();
    assert_eq!(dir_entries(dir), keep, "{msg}");
    err
}

#[test]
fn existing_output_needs_force_and_the_input_is_never_the_output() {
    let s = Setup::new();
    std::fs::write(s.out(), b"keep me").unwrap();
    let err = fails(
        &s.options(FileType::Q4_0),
        &["out.gguf", "--force"],
        &["model-f32.gguf", "out.gguf"],
    );
    assert!(matches!(err, QuantizeError::Output(_)), "{err:?}");
    assert_eq!(std::fs::read(s.out()).unwrap(), b"keep me");

    let mut opts = QuantizeOptions::new(s.input(), s.input(), FileType::Q4_0);
    opts.force = true;
    let before = std::fs::read(s.input()).unwrap();
    fails(&opts, &["input"], &["model-f32.gguf", "out.gguf"]);
    assert_eq!(std::fs::read(s.input()).unwrap(), before);

    let mut opts = s.options(FileType::Q4_0);
    opts.force = true;
    run(&opts).unwrap();
    assert!(GgufFile::open(s.out()).is_ok());
}

#[test]
fn truncated_input_is_a_named_error() {
    let s = Setup::new();
    let bytes = std::fs::read(s.input()).unwrap();
    std::fs::write(s.input(), &bytes[..bytes.len() - 100]).unwrap();
    let err = fails(
        &s.options(FileType::Q4_0),
        &["model-f32.gguf", "truncated"],
        &["model-f32.gguf"],
    );
    assert!(
        matches!(err, QuantizeError::Gguf(GgufError::Truncated { .. })),
        "{err:?}"
    );
}

#[test]
fn write_failure_and_full_disk_leave_nothing_behind() {
    let s = Setup::new();
    let mut opts = s.options(FileType::Q4_K_M);
    opts.hooks = TestHooks {
        fail_at_tensor: Some(3),
        ..Default::default()
    };
    let err = fails(
        &opts,
        &["out.gguf", "injected write failure"],
        &["model-f32.gguf"],
    );
    assert!(matches!(err, QuantizeError::Write { .. }), "{err:?}");

    opts.hooks = TestHooks {
        free_bytes: Some(1000),
        ..Default::default()
    };
    let err = fails(&opts, &["not enough free space"], &["model-f32.gguf"]);
    assert!(matches!(err, QuantizeError::Output(_)), "{err:?}");
}

#[test]
fn unknown_type_names_are_refused_with_the_list() {
    for bad in ["Q4_2", "IQ2_XXS", "q9", ""] {
        assert_eq!(FileType::parse(bad), None, "{bad}");
        let msg = QuantizeError::UnknownType(bad.into()).to_string();
        assert!(msg.contains("Q4_K_M") && msg.contains(bad), "{msg}");
    }
    assert!(quantize::parse_tensor_type("q8_k", "--output-tensor-type").is_err());
    assert_eq!(
        quantize::parse_tensor_type("q6_k", "--output-tensor-type").unwrap(),
        GgmlType::Q6_K
    );
}
