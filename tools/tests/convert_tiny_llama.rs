//! The converter against Hugging Face transformers: tiny-llama (bf16, two shards, llama3 RoPE
//! scaling, tied embeddings) converted to F32 and BF16, run by Lumen, and compared with the
//! logits and greedy continuations transformers computed (`refs.json`, `ref_*.npy`).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use lumen::gguf::GgufFile;
use lumen::model::{Llama, Logits};
use lumen::tokenizer::{Tokenizer, VocabSpec};
use lumen_tools::convert::FileType;
use serde_json::Value;

/// The fixture's README: a right converter + runtime reproduces the logits to about 1e-4.
const MAX_ABS_DIFF: f32 = 1e-4;

fn refs() -> Value {
    read_json(tiny_llama_dir().join("refs.json"))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Loads a GGUF with f32 matmuls (the float reference's arithmetic).
fn reference_model(path: &Path) -> Llama {
    let file = Arc::new(GgufFile::open(path).unwrap());
    let mut model = Llama::load(file).unwrap();
    model.set_reference_matmul(true);
    model
}

fn greedy(model: &Llama, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = model.new_cache(prompt.len() + n);
    let mut logits = model.forward(prompt, &mut cache, Logits::Last).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let next = argmax(&logits) as u32;
        out.push(next);
        logits = model.forward(&[next], &mut cache, Logits::Last).unwrap();
    }
    out
}

/// All-position logits of the three prompts, greedy continuations, and the 300-token
/// sequence's last logits, against transformers.
fn check_against_transformers(tag: &str, gguf: &Path) {
    let model = reference_model(gguf);
    let refs = refs();
    let mut failures = Vec::new();
    for p in refs["prompts"].as_array().unwrap() {
        let prompt = ids_of(&p["ids"]);
        let mut cache = model.new_cache(prompt.len());
        let logits = model.forward(&prompt, &mut cache, Logits::All).unwrap();
        let file = tiny_llama_dir().join(p["all_logits"].as_str().unwrap());
        let (shape, reference) = read_npy(&file);
        assert_eq!(shape, [prompt.len(), model.config.n_vocab]);
        let diff = max_abs_diff(&logits, &reference);
        println!(
            "{tag} {:?}: all-position max |diff| {diff:.2e}",
            p["prompt"]
        );
        if diff > MAX_ABS_DIFF {
            failures.push(format!("{:?}: logits max |diff| {diff}", p["prompt"]));
        }
        let got = greedy(&model, &prompt, 16);
        if got != ids_of(&p["greedy16"]) {
            failures.push(format!(
                "{:?}: greedy {got:?} != {}",
                p["prompt"], p["greedy16"]
            ));
        }
    }
    let long = ids_of(&refs["long"]["ids"]);
    let mut cache = model.new_cache(long.len());
    let logits = model.forward(&long, &mut cache, Logits::Last).unwrap();
    let (_, reference) = read_npy(&tiny_llama_dir().join("ref_long_last_logits.npy"));
    let diff = max_abs_diff(&logits, &reference);
    println!("{tag} 300-token sequence: last-position max |diff| {diff:.2e}");
    if diff > MAX_ABS_DIFF {
        failures.push(format!("300-token sequence: last logits max |diff| {diff}"));
    }
    assert!(failures.is_empty(), "{tag}: {failures:#?}");
}

fn check_conversion(ft: FileType) {
    let tmp = tempfile::tempdir().unwrap();
    let summary = convert_to(&tiny_llama_dir(), tmp.path(), Some(ft)).unwrap();
    check_against_transformers(&format!("{ft:?}"), &summary.output);
}

#[test]
fn f32_conversion_reproduces_transformers_logits_and_greedy_tokens() {
    check_conversion(FileType::F32);
}

#[test]
fn bf16_conversion_reproduces_transformers_logits_and_greedy_tokens() {
    check_conversion(FileType::BF16);
}

/// Interop: Lumen runs llama.cpp's own conversion of the fixture just as well. The files come
/// from `tools/scripts/llamacpp_convert_reference.sh` (torch + transformers, several GB, not in
/// CI), so the test is opt-in (`--ignored`) and fails, never skips, when they are absent.
#[test]
#[ignore = "needs tools/scripts/llamacpp_convert_reference.sh output in $LUMEN_LLAMACPP_REF_DIR"]
fn llama_cpp_conversion_runs_in_lumen_like_transformers() {
    let dir = std::env::var_os("LUMEN_LLAMACPP_REF_DIR")
        .map(PathBuf::from)
        .expect("set LUMEN_LLAMACPP_REF_DIR to the folder llamacpp_convert_reference.sh wrote");
    for t in ["bf16", "f32"] {
        let path = dir.join(format!("llamacpp-{t}.gguf"));
        assert!(
            path.is_file(),
            "{} absent (run tools/scripts/llamacpp_convert_reference.sh)",
            path.display()
        );
        check_against_transformers(&format!("llama.cpp {t}"), &path);
    }
}

/// The vocabulary written into the GGUF tokenizes the reference prompts to transformers' ids.
#[test]
fn converted_vocabulary_tokenizes_the_prompts_like_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let summary = convert_to(&tiny_llama_dir(), tmp.path(), Some(FileType::BF16)).unwrap();
    let file = GgufFile::open(&summary.output).unwrap();
    let tok = Tokenizer::from_spec(VocabSpec::from_gguf(file.metadata()).unwrap()).unwrap();
    assert!(tok.add_bos_default());
    for p in refs()["prompts"].as_array().unwrap() {
        let got = tok.encode(p["prompt"].as_str().unwrap(), true).unwrap();
        assert_eq!(got, ids_of(&p["ids"]), "{:?}", p["prompt"]);
    }
}

/// Writes the fixture as one `model.safetensors` (no index) in `dtype`, beside copies of its
/// JSON files.
fn single_file_copy(dir: &Path, dtype: safetensors::Dtype) {
    use lumen_tools::convert::safetensors::Checkpoint;
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(tiny_llama_dir().join(f), dir.join(f)).unwrap();
    }
    let ckpt = Checkpoint::open(&tiny_llama_dir()).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = ckpt
        .tensors
        .iter()
        .map(|((_, name), t)| {
            let values = ckpt
                .bytes(t)
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32());
            let bytes: Vec<u8> = match dtype {
                safetensors::Dtype::F32 => values.flat_map(f32::to_le_bytes).collect(),
                safetensors::Dtype::F16 => values
                    .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
                other => panic!("{other:?}"),
            };
            (name.clone(), t.shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap();
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &dir.join("model.safetensors")).unwrap();
}

/// A single-file F32 checkpoint: `auto` picks F16 as llama.cpp does for float32 weights, and
/// `f32` reproduces transformers (the bf16 values are exact in f32). An F16 checkpoint stays
/// F16 under `auto`.
#[test]
fn single_file_f32_and_f16_checkpoints_convert() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("tiny-llama");
    std::fs::create_dir(&input).unwrap();
    single_file_copy(&input, safetensors::Dtype::F32);
    let auto = convert_to(&input, tmp.path(), None).unwrap();
    assert_eq!(auto.file_type, FileType::F16);
    let out = tmp.path().join("f32");
    std::fs::create_dir(&out).unwrap();
    let f32_file = convert_to(&input, &out, Some(FileType::F32)).unwrap();
    check_against_transformers("single-file F32", &f32_file.output);

    let f16_input = tmp.path().join("f16");
    std::fs::create_dir(&f16_input).unwrap();
    single_file_copy(&f16_input, safetensors::Dtype::F16);
    let f16_out = tmp.path().join("f16-out");
    std::fs::create_dir(&f16_out).unwrap();
    let summary = convert_to(&f16_input, &f16_out, None).unwrap();
    assert_eq!(summary.file_type, FileType::F16);
    let file = GgufFile::open(&summary.output).unwrap();
    let embd = file.require("token_embd.weight").unwrap();
    assert_eq!(embd.ty, lumen::kernels::GgmlType::F16);
}
