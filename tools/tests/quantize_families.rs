//! `lumen quantize` on the six tiny family models (converted from
//! `tools/tests/fixtures/families_hf/<arch>` by `lumen convert`, F32, which equals llama.cpp's
//! conversion: see `convert_families.rs`) picks, for every file type, the tensor types
//! llama.cpp's `llama-quantize` picked on llama.cpp's own F32 conversion, in the same tensor
//! order, and for Q4_K_M writes the same bytes. The llama.cpp side was recorded by
//! `tools/scripts/family_convert_refs.py` in `tools/tests/fixtures/families_llamacpp.json`.
//!
//! These small models exercise the rules real ones of these families meet: widths that are not
//! whole 256-element super-blocks (64, 48, 128 columns: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0,
//! and F16 where even 32-element blocks do not fit, Gemma 3's 48), tied embeddings taking the
//! output's type (Qwen3, Gemma), `use_more_bits` layers for `attn_v` / Phi-3's fused `attn_qkv`
//! and `ffn_down`, and Phi-3's fused `ffn_up`.

mod common;

use std::path::Path;

use common::*;
use lumen::gguf::GgufFile;
use lumen_tools::convert::FileType as ConvertType;
use lumen_tools::quantize::{quantize, FileType, QuantizeOptions};
use serde_json::Value;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_file_type_picks_llama_quantize_s_types_and_q4_k_m_its_bytes() {
    let refs = families_llamacpp();
    let mut failures = Vec::new();
    let mut checked = 0;
    for arch in FAMILY_FIXTURES {
        let tmp = tempfile::tempdir().unwrap();
        let hf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/families_hf/{arch}"));
        let f32_path = convert_to(&hf, tmp.path(), Some(ConvertType::F32))
            .unwrap()
            .output;
        let want = &refs["archs"][arch]["quantize"];
        let names = strings(&want["tensors"]);
        for (ftype, types) in want["types"].as_object().unwrap() {
            let ft = FileType::parse(ftype).unwrap();
            let out = tmp.path().join(format!("{ftype}.gguf"));
            quantize(&QuantizeOptions::new(&f32_path, &out, ft), &mut |_| {})
                .unwrap_or_else(|e| panic!("{arch} {ftype}: {e}"));
            let file = GgufFile::open(&out).unwrap();
            let got_names: Vec<String> = file.tensors().iter().map(|t| t.name.clone()).collect();
            if got_names != names {
                failures.push(format!(
                    "{arch} {ftype}: tensor order {got_names:?}, llama-quantize {names:?}"
                ));
                continue;
            }
            let types = strings(types);
            for (t, want_ty) in file.tensors().iter().zip(&types) {
                if t.ty.name() != want_ty {
                    failures.push(format!(
                        "{arch} {ftype}: {} is {}, llama-quantize {want_ty}",
                        t.name,
                        t.ty.name()
                    ));
                }
            }
            if let Some(sums) = want["sha256"].get(ftype.as_str()) {
                for (t, sum) in file.tensors().iter().zip(strings(sums)) {
                    if sha256_hex(file.tensor_bytes(t)) != sum {
                        failures.push(format!(
                            "{arch} {ftype}: {} ({}) bytes differ from llama-quantize's",
                            t.name,
                            t.ty.name()
                        ));
                    }
                }
            }
            checked += 1;
        }
        println!("{arch}: checked");
    }
    assert_eq!(checked, 6 * 14, "architectures × file types");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
