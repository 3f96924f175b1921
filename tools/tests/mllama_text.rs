//! The mllama text decoder (self + cross-attention layers) against Meta's reference semantics:
//! tiny-mllama converted by our converter, fed the reference's projected vision states and
//! prompt ids, compared with `refs/tiny-mllama/meta_ref` (transformers + the Meta-semantics
//! patch, float32) and, with Hugging Face semantics, with `refs/tiny-mllama/hf4_46_3`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use common::{argmax, read_json, read_npy};
use lumen::gguf::GgufFile;
use lumen::model::mllama::text::{CrossAttentionSemantics, MllamaCache, MllamaText};
use lumen::model::mllama::Mllama;
use lumen::model::{Logits, ModelError};
use lumen_tools::convert::{ConvertOptions, FileType};
use serde_json::Value;

/// The bound for an F32 file.
const MAX_ABS_F32: f32 = 1e-4;
/// Tile slots per image in tiny-mllama (`max_num_tiles`).
const MAX_TILES: usize = 4;

fn refs_dir(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/refs/tiny-mllama")
        .join(variant)
}

fn npy(variant: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    read_npy(&refs_dir(variant).join(name))
}

fn index(variant: &str) -> Value {
    read_json(refs_dir(variant).join("index.json"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// tiny-mllama converted to `ft` once per test process, in Cargo's per-test scratch directory.
fn converted(ft: FileType) -> Arc<GgufFile> {
    type Converted = std::sync::Mutex<Vec<(FileType, Arc<GgufFile>)>>;
    static FILES: OnceLock<Converted> = OnceLock::new();
    let files = FILES.get_or_init(Default::default);
    let mut files = files.lock().unwrap();
    if let Some((_, f)) = files.iter().find(|(t, _)| *t == ft) {
        return f.clone();
    }
    let output = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mllama-text-{ft:?}.gguf"));
    common::convert_with(ConvertOptions {
        input: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tiny-mllama"),
        output: Some(output.clone()),
        outtype: Some(ft),
        force: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("converting tiny-mllama to {ft:?}: {e}"));
    let file = Arc::new(GgufFile::open(&output).unwrap());
    files.push((ft, file.clone()));
    file
}

/// The F32 decoder computing in f32 (the float reference's arithmetic).
fn reference_model(semantics: CrossAttentionSemantics) -> MllamaText {
    let mut model = MllamaText::load(converted(FileType::F32)).unwrap();
    model.set_reference_matmul(true);
    model.set_semantics(semantics);
    model
}

/// The reference image's real tiles, from the processor's aspect-ratio mask.
fn reference_tiles(variant: &str) -> usize {
    let (shape, mask) = npy_i64(variant, "aspect_ratio_mask.npy");
    assert_eq!(shape, [1, 1, MAX_TILES]);
    mask.iter().filter(|&&m| m != 0).count()
}

/// An int64 `.npy` (the processor's masks), as i64.
fn npy_i64(variant: &str, name: &str) -> (Vec<usize>, Vec<i64>) {
    let bytes = std::fs::read(refs_dir(variant).join(name)).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'<i8'"), "{header}");
    let shape = header.split("'shape': (").nth(1).unwrap();
    let shape = shape.split(')').next().unwrap();
    let shape = shape
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let values = bytes[10 + header_len..]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, values)
}

/// A cache holding the reference image (its projected states from `variant`).
fn cache_with_image(model: &MllamaText, variant: &str, n_ctx: usize) -> MllamaCache {
    let (shape, states) = npy(variant, "projected_cross_states.npy");
    assert_eq!(shape, [1, 1, MAX_TILES, 17, 64]);
    let mut cache = model.new_cache(n_ctx);
    model
        .attach_image(&mut cache, &states, MAX_TILES, reference_tiles(variant))
        .unwrap();
    cache
}

/// ‖a − b‖ / ‖b‖.
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let sq = |it: &mut dyn Iterator<Item = f32>| it.map(|v| (v as f64).powi(2)).sum::<f64>();
    (sq(&mut a.iter().zip(b).map(|(x, y)| x - y)) / sq(&mut b.iter().copied())).sqrt()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Per-layer hidden states (HF convention) and all-position logits of the reference prompt.
fn traced_prompt(model: &MllamaText, variant: &str) -> (Vec<Vec<f32>>, Vec<f32>) {
    let prompt = ids(&index(variant)["input_ids"]);
    let mut cache = cache_with_image(model, variant, prompt.len());
    let mut hidden = Vec::new();
    let logits = model
        .forward_traced(&prompt, &mut cache, Logits::All, &mut |_, h| {
            hidden.push(h.to_vec())
        })
        .unwrap();
    (hidden, logits)
}

/// Hidden states, all logits and last logits of `variant`'s prompt within `MAX_ABS_F32`.
fn check_prompt_against(variant: &str, semantics: CrossAttentionSemantics) {
    let model = reference_model(semantics);
    let (hidden, logits) = traced_prompt(&model, variant);
    let (shape, want_hidden) = npy(variant, "text_hidden_states.npy");
    assert_eq!(shape, [6, 14, 64]);
    assert_eq!(hidden.len(), 6);
    let mut failures = Vec::new();
    for (layer, (ours, want)) in hidden
        .iter()
        .zip(want_hidden.chunks_exact(14 * 64))
        .enumerate()
    {
        let d = max_abs_diff(ours, want);
        eprintln!("{variant}: hidden state {layer}: max abs {d:.2e}");
        if d >= MAX_ABS_F32 {
            failures.push(format!("hidden state {layer}: max abs {d}"));
        }
    }
    let (_, want_all) = npy(variant, "all_logits.npy");
    let (_, want_last) = npy(variant, "last_logits.npy");
    let d_all = max_abs_diff(&logits, &want_all);
    let d_last = max_abs_diff(&logits[13 * 128256..], &want_last);
    eprintln!("{variant}: all logits max abs {d_all:.2e}, last {d_last:.2e}");
    if d_all >= MAX_ABS_F32 || d_last >= MAX_ABS_F32 {
        failures.push(format!("logits: max abs {d_all} (all), {d_last} (last)"));
    }
    assert!(failures.is_empty(), "{variant}: {failures:#?}");
}

#[test]
fn f32_decoder_matches_meta_reference_hidden_states_and_logits() {
    check_prompt_against("meta_ref", CrossAttentionSemantics::Meta);
}

#[test]
fn hugging_face_semantics_match_transformers_4_46() {
    check_prompt_against("hf4_46_3", CrossAttentionSemantics::HuggingFace);
}

/// The two semantics differ only on the row that sees no image (BOS, before `<|image|>`) until
/// self-attention spreads the difference: at the output of the first cross layer (hidden
/// state 2) every other row is identical.
#[test]
fn semantics_differ_only_on_rows_without_an_image() {
    let (meta, _) = traced_prompt(&reference_model(CrossAttentionSemantics::Meta), "meta_ref");
    let (hf, _) = traced_prompt(
        &reference_model(CrossAttentionSemantics::HuggingFace),
        "meta_ref",
    );
    let first_cross = 1;
    assert_eq!(meta[first_cross], hf[first_cross]);
    let (m, h) = (&meta[first_cross + 1], &hf[first_cross + 1]);
    assert!(max_abs_diff(&m[..64], &h[..64]) > 1e-3, "row 0 must differ");
    assert_eq!(m[64..], h[64..], "rows that see the image must not differ");
}

fn greedy(model: &MllamaText, cache: &mut MllamaCache, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut logits = model.forward(prompt, cache, Logits::Last).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let next = argmax(&logits) as u32;
        out.push(next);
        logits = model.forward(&[next], cache, Logits::Last).unwrap();
    }
    out
}

#[test]
fn greedy_continuation_equals_meta_reference() {
    let model = reference_model(CrossAttentionSemantics::Meta);
    let idx = index("meta_ref");
    let prompt = ids(&idx["input_ids"]);
    let want = ids(&idx["greedy_ids"]);
    let mut cache = cache_with_image(&model, "meta_ref", prompt.len() + want.len());
    assert_eq!(greedy(&model, &mut cache, &prompt, want.len()), want);
}

#[test]
fn text_only_prompt_skips_cross_layers_and_matches_reference() {
    let model = reference_model(CrossAttentionSemantics::Meta);
    let text_only = &index("meta_ref")["text_only"];
    let prompt = ids(&text_only["input_ids"]);
    let mut cache = model.new_cache(prompt.len() + 8);
    let logits = model.forward(&prompt, &mut cache, Logits::Last).unwrap();
    let (_, want) = npy("meta_ref", "text_only_last_logits.npy");
    let d = max_abs_diff(&logits, &want);
    eprintln!("text-only last logits max abs {d:.2e}");
    assert!(d < MAX_ABS_F32, "max abs {d}");
    let mut cache = model.new_cache(prompt.len() + 8);
    assert_eq!(
        greedy(&model, &mut cache, &prompt, 8),
        ids(&text_only["greedy8_ids"])
    );
}

/// Feeding the prompt one token at a time (image bound when its token arrives) computes what
/// the batched prefill computes.
#[test]
fn token_by_token_decode_equals_batched_prefill() {
    let model = reference_model(CrossAttentionSemantics::Meta);
    let prompt = ids(&index("meta_ref")["input_ids"]);
    let mut batched = cache_with_image(&model, "meta_ref", prompt.len());
    let all = model.forward(&prompt, &mut batched, Logits::All).unwrap();
    let mut stepped = cache_with_image(&model, "meta_ref", prompt.len());
    for (t, &tok) in prompt.iter().enumerate() {
        let row = model.forward(&[tok], &mut stepped, Logits::Last).unwrap();
        let d = max_abs_diff(&row, &all[t * 128256..(t + 1) * 128256]);
        assert!(d < 1e-5, "position {t}: max abs {d}");
    }
}

/// Q8_0 text matrices with Q8 activations: the greedy choice equals the reference wherever the
/// reference's top-1/top-2 margin exceeds 0.5 (teacher-forced along the reference tokens).
#[test]
fn q8_0_greedy_matches_reference_where_the_margin_is_large() {
    let model = MllamaText::load(converted(FileType::Q8_0)).unwrap();
    let idx = index("meta_ref");
    let prompt = ids(&idx["input_ids"]);
    let want = ids(&idx["greedy_ids"]);
    let margins: Vec<f64> = idx["greedy_step_margins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_f64().unwrap())
        .collect();
    let mut cache = cache_with_image(&model, "meta_ref", prompt.len() + want.len());
    let mut logits = model.forward(&prompt, &mut cache, Logits::Last).unwrap();
    let (_, want_last) = npy("meta_ref", "last_logits.npy");
    let (d, rel) = (
        max_abs_diff(&logits, &want_last),
        rel_l2(&logits, &want_last),
    );
    eprintln!("Q8_0: last logits max abs {d:.2e}, relative L2 {rel:.2e}");
    // Q8_0 weights and Q8 activations: about 2% relative error in these random-weight logits (1.4% from the weights alone).
    assert!(rel < 0.03, "Q8_0 last logits relative L2 {rel}");
    let mut checked = 0;
    for (step, (&token, &margin)) in want.iter().zip(&margins).enumerate() {
        if margin > 0.5 {
            assert_eq!(
                argmax(&logits) as u32,
                token,
                "step {step} (margin {margin})"
            );
            checked += 1;
        }
        logits = model.forward(&[token], &mut cache, Logits::Last).unwrap();
    }
    assert!(checked >= 5, "only {checked} steps had a large margin");
}

/// Two images: rows before the second `<|image|>` are unaffected by it, rows after it see only
/// the second image (changing the first image's states changes nothing after the second token
/// except through self-attention, so the cross layers' effect is checked with a swap).
#[test]
fn rows_before_a_second_image_do_not_see_it() {
    let model = reference_model(CrossAttentionSemantics::Meta);
    let idx = index("meta_ref");
    let prompt = ids(&idx["input_ids"]);
    let image = model.config.image_token();
    let (_, states) = npy("meta_ref", "projected_cross_states.npy");
    let other: Vec<f32> = states.iter().map(|v| -0.5 * v).collect();
    let mut two = prompt.clone();
    two.extend([image, 2746, 358]);
    let run = |second: &[f32]| {
        let mut cache = model.new_cache(two.len());
        model
            .attach_image(&mut cache, &states, MAX_TILES, 4)
            .unwrap();
        model
            .attach_image(&mut cache, second, MAX_TILES, 2)
            .unwrap();
        model.forward(&two, &mut cache, Logits::All).unwrap()
    };
    let (a, b) = (run(&states), run(&other));
    let split = prompt.len() * 128256;
    assert_eq!(a[..split], b[..split], "rows before the second image");
    assert!(
        max_abs_diff(&a[split..], &b[split..]) > 1e-3,
        "rows after it"
    );
    // And the prefix equals the one-image prompt.
    let (_, logits) = traced_prompt(&model, "meta_ref");
    assert!(max_abs_diff(&a[..split], &logits) < 1e-5);
}

#[test]
fn image_token_without_an_image_and_bad_states_are_errors() {
    let model = reference_model(CrossAttentionSemantics::Meta);
    let prompt = ids(&index("meta_ref")["input_ids"]);
    let mut cache = model.new_cache(prompt.len());
    let err = model
        .forward(&prompt, &mut cache, Logits::Last)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::UnboundImageToken {
                position: 1,
                attached: 0
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("position 1"), "{err}");
    assert_eq!(cache.len(), 0, "a failed pass leaves the cache as it was");
    let (_, states) = npy("meta_ref", "projected_cross_states.npy");
    for (values, n_tiles) in [(&states[1..], 4), (&states[..], 0), (&states[..], 5)] {
        let err = model
            .attach_image(&mut cache, values, MAX_TILES, n_tiles)
            .unwrap_err();
        assert!(err.to_string().contains("vision states"), "{err}");
    }
    assert_eq!(cache.n_images(), 0);
    let err = model
        .forward(&[128264], &mut cache, Logits::Last)
        .unwrap_err();
    assert!(
        matches!(err, ModelError::BadToken { id: 128264, .. }),
        "{err}"
    );
}

/// The whole model from the processor's pixels: vision encoder, projector, cross K/V, decoder.
#[test]
fn pixels_to_logits_match_meta_reference() {
    let mut model = Mllama::load(converted(FileType::F32)).unwrap();
    model.set_reference_matmul(true);
    let idx = index("meta_ref");
    let prompt = ids(&idx["input_ids"]);
    let (_, pixels) = npy("meta_ref", "pixel_values.npy");
    let (_, mask) = npy_i64("meta_ref", "aspect_ratio_mask.npy");
    let mask: Vec<u8> = mask.iter().map(|&m| m as u8).collect();
    let aspect_id = idx["aspect_ratio_ids"][0][0].as_u64().unwrap() as usize;
    let mut cache = model.new_cache(prompt.len() + 16);
    model
        .attach_image(&mut cache, &pixels, aspect_id, &mask, &mut |_| {})
        .unwrap();
    let logits = model
        .text
        .forward(&prompt, &mut cache, Logits::All)
        .unwrap();
    let (_, want) = npy("meta_ref", "all_logits.npy");
    let d = max_abs_diff(&logits, &want);
    eprintln!("pixels → all logits max abs {d:.2e}");
    assert!(d < MAX_ABS_F32, "max abs {d}");
    let err = model
        .attach_image(&mut cache, &pixels, aspect_id, &[1, 0, 1, 0], &mut |_| {})
        .unwrap_err();
    assert!(
        err.to_string().contains("real tiles must come first"),
        "{err}"
    );
}
