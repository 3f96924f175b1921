//! `lumen quantize` on a Llama 3.2 Vision file (spec 4.4, Ollama's quantizer rules on top of
//! llama.cpp's mixes): only the text matrices (incl. `cross_attn_{q,k,v,o}_proj`) are
//! quantized; the vision tower, projector, positional tables, gates and norms keep their type
//! and bytes. The expected text types are worked out by hand below from llama.cpp's rules for
//! the tiny model's shapes (64/128-element rows, which no 256-element K-quant block fits).

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use lumen::gguf::GgufFile;
use lumen::kernels::GgmlType;
use lumen_tools::convert::FileType as OutType;
use lumen_tools::quantize::{self, FileType, QuantizeOptions};

fn tiny_mllama_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tiny-mllama")
}

/// Converts the fixture to F16 and quantizes that to `ft`.
fn quantized(ft: FileType, tmp: &Path) -> (GgufFile, GgufFile) {
    convert_to(&tiny_mllama_dir(), tmp, Some(OutType::F16)).unwrap();
    let input = tmp.join("model.gguf");
    let output = tmp.join(format!("model-{}.gguf", ft.name()));
    quantize::quantize(&QuantizeOptions::new(&input, &output, ft), &mut |_| {}).unwrap();
    (
        GgufFile::open(&input).unwrap(),
        GgufFile::open(&output).unwrap(),
    )
}

fn is_text_matrix(name: &str) -> bool {
    let text = !name.starts_with("v.") && !name.starts_with("mm.");
    text && name.ends_with(".weight")
        && !name.ends_with("norm.weight")
        && name != "rope_freqs.weight"
}

/// Everything but the text matrices is copied unchanged.
fn check_untouched(input: &GgufFile, output: &GgufFile) -> usize {
    let mut n = 0;
    for t in input.tensors() {
        if is_text_matrix(&t.name) {
            continue;
        }
        let o = output.require(&t.name).unwrap();
        assert_eq!(o.ty, t.ty, "{}", t.name);
        assert_eq!(output.tensor_bytes(o), input.tensor_bytes(t), "{}", t.name);
        n += 1;
    }
    n
}

#[test]
fn q4_k_m_quantizes_only_the_text_matrices_with_llama_cpp_s_mix() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = quantized(FileType::Q4_K_M, tmp.path());
    let untouched = check_untouched(&input, &output);
    assert!(
        untouched > 80,
        "vision tower, projector, norms, gates: {untouched}"
    );
    assert_eq!(
        input.tensor_info("v.blk.0.attn_q.weight").unwrap().ty,
        GgmlType::F16
    );

    // Q4_K_M asks Q4_K (Q6_K for output and the use_more_bits layers of attn_v / ffn_down);
    // a 64- or 128-element row fits no 256-block, so Q4_K → Q5_0 and Q6_K → Q8_0, and the
    // output head takes Q8_0 directly. attn_v counts the 3 self-attention layers 0, 2, 4
    // (use_more_bits(i, 3): i = 2); ffn_down counts all 5 layers (use_more_bits(i, 5): 2, 4).
    let mut want: HashMap<String, GgmlType> = HashMap::new();
    want.insert("token_embd.weight".into(), GgmlType::Q5_0);
    want.insert("output.weight".into(), GgmlType::Q8_0);
    for i in 0..5 {
        let blk = |s: &str| format!("blk.{i}.{s}");
        let ffn_down = if i == 2 || i == 4 {
            GgmlType::Q8_0
        } else {
            GgmlType::Q5_0
        };
        want.insert(blk("ffn_down.weight"), ffn_down);
        want.insert(blk("ffn_gate.weight"), GgmlType::Q5_0);
        want.insert(blk("ffn_up.weight"), GgmlType::Q5_0);
        let attn = if i == 1 || i == 3 {
            [
                "cross_attn_q_proj",
                "cross_attn_k_proj",
                "cross_attn_v_proj",
                "cross_attn_o_proj",
            ]
        } else {
            ["attn_q", "attn_k", "attn_output", "attn_v"]
        };
        for a in attn {
            let ty = if a == "attn_v" && i == 4 {
                GgmlType::Q8_0
            } else {
                GgmlType::Q5_0
            };
            want.insert(blk(&format!("{a}.weight")), ty);
        }
    }
    let got: HashMap<String, GgmlType> = output
        .tensors()
        .iter()
        .filter(|t| is_text_matrix(&t.name))
        .map(|t| (t.name.clone(), t.ty))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn q8_0_keeps_the_vision_tower_at_f16() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = quantized(FileType::Q8_0, tmp.path());
    check_untouched(&input, &output);
    for t in output.tensors() {
        if is_text_matrix(&t.name) {
            assert_eq!(t.ty, GgmlType::Q8_0, "{}", t.name);
        }
    }
    assert_eq!(output.tensor_info("mm.0.weight").unwrap().ty, GgmlType::F16);
    // The cross-attention projections are quantized like any text matrix.
    assert_eq!(
        output
            .tensor_info("blk.1.cross_attn_k_proj.weight")
            .unwrap()
            .ty,
        GgmlType::Q8_0
    );
}
