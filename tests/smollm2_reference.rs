//! The real SmolLM2-135M-Instruct Q4_1 GGUF against Hugging Face transformers' float32 run of
//! the same weights (`../shared/refs/smollm2`).

mod common;

use std::sync::Arc;

use common::*;
use lumen::gguf::GgufFile;
use lumen::kernels::{kernels_for, Isa};
use lumen::model::{Llama, Logits};
use serde_json::Value;

struct Fixture {
    model: Llama,
    index: Value,
}

fn fixture() -> Fixture {
    let file = Arc::new(GgufFile::open(smollm2_path()).unwrap());
    let model = Llama::load(file).unwrap();
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(refs_dir().join("smollm2/index.json")).unwrap(),
    )
    .unwrap();
    Fixture { model, index }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Q8 activations against a float reference, relative L2 of the last position's logits.
/// The issue asked for 3%; llama.cpp itself (llama-cpp-python 0.3.36, same file, measured with
/// tools/scripts/llamacpp_logits.py) lands at 3.3%, 1.7%, 2.1% and 11.2% on these four prompts
/// (4.6%, 1.9%, 1.6%, 11.4% with an f32 KV cache): this SmolLM2 has outlier channels that make
/// Q8 rounding swing the logits by several percent either way: a 1e-7 change in summation
/// order (SIMD vs scalar, transposed vs row-major keys) that moves one activation across a Q8
/// rounding boundary moves p0 between 3.8% and 8.0% in our own runs. The bound is llama.cpp's
/// worst case here plus a margin; it still fails on any real defect (a wrong RoPE pair gives
/// > 50%), and exactness of the forward pass itself is tested in reference-matmul mode at 1e-4.
const MAX_REL_L2: f64 = 0.12;
/// Reference-matmul mode (dequantized f32 weights, f32 activations) against transformers.
const MAX_REL_L2_EXACT: f64 = 1e-4;
/// Steps whose reference top-1/top-2 margin is above this must agree exactly.
const MARGIN: f64 = 0.75;

#[test]
fn last_logits_match_the_float_reference_with_every_kernel_set() {
    let mut fx = fixture();
    let mut failures = Vec::new();
    for ks in Isa::ALL.into_iter().filter_map(kernels_for) {
        fx.model.set_kernels(ks);
        for p in fx.index["prompts"].as_array().unwrap() {
            let tag = format!("{}/{}", ks.isa.name(), p["tag"].as_str().unwrap());
            let prompt = ids(&p["prompt_ids"]);
            let mut cache = fx.model.new_cache(512);
            let logits = fx.model.forward(&prompt, &mut cache, Logits::Last).unwrap();
            let (_, reference) = read_npy(
                &refs_dir()
                    .join("smollm2")
                    .join(p["last_logits_file"].as_str().unwrap()),
            );
            let err = rel_l2(&logits, &reference);
            println!(
                "{tag}: rel L2 {err:.5}, top-1 ours {} ref {}",
                argmax(&logits),
                argmax(&reference)
            );
            failures.extend(
                (err >= MAX_REL_L2).then(|| format!("{tag}: relative L2 {err:.4} ≥ {MAX_REL_L2}")),
            );
            let margin = p["top1_top2_margin"].as_f64().unwrap();
            if margin > MARGIN && argmax(&logits) != argmax(&reference) {
                failures.push(format!(
                    "{tag}: top-1 {} differs from the reference's {}",
                    argmax(&logits),
                    argmax(&reference)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn reference_matmul_mode_equals_transformers_on_every_prompt_and_layer() {
    let mut fx = fixture();
    fx.model.set_reference_matmul(true);
    for p in fx.index["prompts"].as_array().unwrap() {
        let tag = p["tag"].as_str().unwrap();
        let prompt = ids(&p["prompt_ids"]);
        let dir = refs_dir().join("smollm2");
        let (_, hidden) = read_npy(&dir.join(p["hidden_states_file"].as_str().unwrap()));
        let (_, all_logits) = read_npy(&dir.join(p["all_logits_file"].as_str().unwrap()));
        let per_layer = prompt.len() * fx.model.config.n_embd;
        let mut worst_hidden = 0.0f64;
        let mut cache = fx.model.new_cache(64);
        let logits = fx
            .model
            .forward_traced(&prompt, &mut cache, Logits::All, &mut |i, x| {
                worst_hidden =
                    worst_hidden.max(rel_l2(x, &hidden[i * per_layer..(i + 1) * per_layer]));
            })
            .unwrap();
        let err = rel_l2(&logits, &all_logits);
        println!("{tag}: logits rel L2 {err:.2e}, worst hidden state {worst_hidden:.2e}");
        assert!(
            err < MAX_REL_L2_EXACT && worst_hidden < MAX_REL_L2_EXACT,
            "{tag}: {err} / {worst_hidden}"
        );
        let n_vocab = fx.model.config.n_vocab;
        let last = &logits[(prompt.len() - 1) * n_vocab..];
        assert_eq!(
            argmax(last),
            p["top10"][0]["id"].as_u64().unwrap() as usize,
            "{tag}: top-1 (margin {})",
            p["top1_top2_margin"]
        );
    }
}

#[test]
fn teacher_forced_argmax_follows_the_reference_where_the_margin_is_clear() {
    let mut fx = fixture();
    for ks in Isa::ALL.into_iter().filter_map(kernels_for) {
        fx.model.set_kernels(ks);
        for p in fx.index["prompts"].as_array().unwrap() {
            let tag = format!("{}/{}", ks.isa.name(), p["tag"].as_str().unwrap());
            let prompt = ids(&p["prompt_ids"]);
            let greedy = ids(&p["greedy_ids"]);
            let margins: Vec<f64> = p["greedy_step_top1_top2_margins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_f64().unwrap())
                .collect();
            let mut seq = prompt.clone();
            seq.extend_from_slice(&greedy[..greedy.len() - 1]);
            let mut cache = fx.model.new_cache(512);
            let logits = fx.model.forward(&seq, &mut cache, Logits::All).unwrap();
            let n_vocab = fx.model.config.n_vocab;
            let mut checked = 0;
            for (step, &expected) in greedy.iter().enumerate() {
                let pos = prompt.len() - 1 + step;
                let ours = argmax(&logits[pos * n_vocab..(pos + 1) * n_vocab]) as u32;
                if margins[step] > MARGIN {
                    assert_eq!(
                        ours, expected,
                        "{tag}: step {step} (margin {:.3})",
                        margins[step]
                    );
                    checked += 1;
                }
            }
            println!("{tag}: {checked} of {} steps checked", greedy.len());
            assert!(
                checked > greedy.len() / 3,
                "{tag}: too few steps had a clear margin to test anything"
            );
        }
    }
}

#[test]
fn all_position_logits_and_hidden_states_track_the_reference() {
    let fx = fixture();
    let p = &fx.index["prompts"][2];
    let prompt = ids(&p["prompt_ids"]);
    let (_, hidden) = read_npy(
        &refs_dir()
            .join("smollm2")
            .join(p["hidden_states_file"].as_str().unwrap()),
    );
    let (_, all_logits) = read_npy(
        &refs_dir()
            .join("smollm2")
            .join(p["all_logits_file"].as_str().unwrap()),
    );
    let per_layer = prompt.len() * fx.model.config.n_embd;
    let mut errors = Vec::new();
    let mut cache = fx.model.new_cache(64);
    let logits = fx
        .model
        .forward_traced(&prompt, &mut cache, Logits::All, &mut |i, x| {
            errors.push(rel_l2(x, &hidden[i * per_layer..(i + 1) * per_layer]));
        })
        .unwrap();
    println!("hidden-state relative L2 by layer: {errors:.4?}");
    assert_eq!(errors.len(), fx.model.config.n_layer + 1);
    // Embeddings are exact (same Q8_0 rows dequantized); deeper layers accumulate Q8 rounding.
    assert!(errors[0] < 1e-6, "embeddings differ: {}", errors[0]);
    assert!(
        errors.iter().all(|&e| e < 0.05),
        "a layer drifts: {errors:?}"
    );
    assert!(rel_l2(&logits, &all_logits) < MAX_REL_L2);
}

#[test]
fn token_by_token_decoding_agrees_with_batched_prefill() {
    let mut fx = fixture();
    let p = &fx.index["prompts"][2];
    let prompt = ids(&p["prompt_ids"]);
    for ks in Isa::ALL.into_iter().filter_map(kernels_for) {
        fx.model.set_kernels(ks);
        let mut cache = fx.model.new_cache(64);
        let batched = fx.model.forward(&prompt, &mut cache, Logits::Last).unwrap();
        let mut cache = fx.model.new_cache(64);
        let mut stepped = Vec::new();
        for &t in &prompt {
            stepped = fx.model.forward(&[t], &mut cache, Logits::Last).unwrap();
        }
        let err = rel_l2(&stepped, &batched);
        println!("{}: decode vs prefill relative L2 {err:.2e}", ks.isa.name());
        // The scalar set runs the same code both ways: identical. SIMD 1×4 and 1×1 kernels sum
        // floats in different orders; a 1e-7 difference that moves one Q8 activation across a
        // rounding boundary is amplified by this model's outlier channels (measured up to 7%
        // between SIMD and scalar), so SIMD gets the Q8 bound and must keep the top-1.
        let bound = if ks.isa == Isa::Scalar {
            1e-6
        } else {
            MAX_REL_L2
        };
        assert!(
            err < bound,
            "{}: decode vs prefill relative L2 {err}",
            ks.isa.name()
        );
        assert_eq!(
            argmax(&stepped),
            argmax(&batched),
            "{}: top-1 differs",
            ks.isa.name()
        );
    }
}
