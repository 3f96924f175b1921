//! The mllama vision encoder and projector against Meta's reference semantics: tiny-mllama
//! converted by our converter, fed the reference processor's pixels, compared with
//! `refs/tiny-mllama/meta_ref/{vision_output,projected_cross_states}.npy` (transformers + the
//! Meta-semantics patch, float32).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::read_npy;
use lumen::gguf::kv::read_kv;
use lumen::gguf::writer::{GgufWriter, MetaValue, TensorData};
use lumen::gguf::GgufFile;
use lumen::kernels::Isa;
use lumen::model::mllama::vision::VisionEncoder;
use lumen::model::ModelError;
use lumen_tools::convert::{ConvertOptions, FileType};

/// The bound for an F32 file.
const MAX_ABS_F32: f32 = 1e-4;

fn tiny_mllama_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tiny-mllama")
}

fn meta_ref(name: &str) -> (Vec<usize>, Vec<f32>) {
    read_npy(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/refs/tiny-mllama/meta_ref")
            .join(name),
    )
}

/// The aspect ratio id and mask the reference processor produced (`index.json`).
fn reference_aspect() -> (usize, Vec<u8>) {
    let index = common::read_json(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/refs/tiny-mllama/meta_ref/index.json"),
    );
    let id = index["aspect_ratio_ids"][0][0].as_u64().unwrap() as usize;
    let mask = index["aspect_ratio_mask"][0][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    (id, mask)
}

/// tiny-mllama converted to `ft` in a temporary directory (kept alive by the returned guard).
fn converted(ft: FileType) -> (tempfile::TempDir, Arc<GgufFile>) {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("tiny-mllama.gguf");
    common::convert_with(ConvertOptions {
        input: tiny_mllama_dir(),
        output: Some(output.clone()),
        outtype: Some(ft),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("converting tiny-mllama to {ft:?}: {e}"));
    let file = Arc::new(GgufFile::open(&output).unwrap());
    (dir, file)
}

/// ‖a − b‖ / ‖b‖.
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let sq = |it: &mut dyn Iterator<Item = f64>| it.map(|v| v * v).sum::<f64>().sqrt();
    sq(&mut a.iter().zip(b).map(|(x, y)| (x - y) as f64)) / sq(&mut b.iter().map(|&y| y as f64))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Encoder output before and after the projector for the reference image.
fn run(encoder: &VisionEncoder) -> (Vec<f32>, Vec<f32>) {
    let (_, pixels) = meta_ref("pixel_values.npy");
    let (id, mask) = reference_aspect();
    let features = encoder.features(&pixels, id, &mask, &mut |_| {}).unwrap();
    let projected = encoder.project(&features).unwrap();
    assert_eq!(
        encoder.encode(&pixels, id, &mask).unwrap(),
        projected,
        "encode = project ∘ features"
    );
    (features, projected)
}

/// Max abs differences (features, projected) from the reference.
fn errors(encoder: &VisionEncoder) -> (f32, f32) {
    let (features, projected) = run(encoder);
    let (shape, want_features) = meta_ref("vision_output.npy");
    assert_eq!(shape, [1, 1, 4, 17, 96]);
    let (shape, want_projected) = meta_ref("projected_cross_states.npy");
    assert_eq!(shape, [1, 1, 4, 17, 64]);
    (
        max_abs_diff(&features, &want_features),
        max_abs_diff(&projected, &want_projected),
    )
}

#[test]
fn f32_encoder_matches_meta_reference_on_every_kernel_level() {
    let (_dir, file) = converted(FileType::F32);
    let mut encoder = VisionEncoder::load(file).unwrap();
    let cfg = &encoder.config;
    assert_eq!(
        (
            cfg.n_tile_tokens(),
            cfg.n_tile_tokens_padded(),
            cfg.output_dim()
        ),
        (17, 24, 96)
    );
    for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
        encoder.set_kernels(lumen::kernels::kernels_for(isa).unwrap());
        let (features, projected) = errors(&encoder);
        eprintln!("{isa:?}: vision output max abs {features:.2e}, projected {projected:.2e}");
        assert!(
            features < MAX_ABS_F32 && projected < MAX_ABS_F32,
            "{isa:?}: max abs diff {features} (vision output), {projected} (projected)"
        );
    }
}

/// The default path multiplies with 14-bit integer copies of the weights and activations
/// (`dense_gemm::int16`), and runs attention in bf16 where the CPU has AVX-512 BF16.
/// tiny-mllama has random weights and 32-wide rows. Measured against Meta's reference on the
/// F16 file: projected states 1.13e-3 relative L2 with bf16 attention, 5.5e-4 without
/// (the exact path 5.7e-4); the Q8_0 weights and activations this path replaced gave 2.2e-2.
/// The bound is issue 18's: 5e-3 on every level.
const MAX_ABS_FAST: f32 = 2e-2;
const MAX_REL_L2_FAST: f64 = 5e-3;
/// The exact matmuls on F16 weights: F16 rounding only (~1e-3 relative per dot product).
const MAX_ABS_F16_EXACT: f32 = 2e-2;

/// Max abs and relative L2 differences (features, projected) from Meta's reference.
fn errors_l2(encoder: &VisionEncoder) -> [(f32, f64); 2] {
    let (features, projected) = run(encoder);
    let (_, want_features) = meta_ref("vision_output.npy");
    let (_, want_projected) = meta_ref("projected_cross_states.npy");
    [(features, want_features), (projected, want_projected)]
        .map(|(ours, want)| (max_abs_diff(&ours, &want), rel_l2(&ours, &want)))
}

#[test]
fn f16_and_q8_0_encoders_stay_close_to_meta_reference_on_every_kernel_level() {
    for ft in [FileType::F16, FileType::Q8_0] {
        let (_dir, file) = converted(ft);
        let mut encoder = VisionEncoder::load(file).unwrap();
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            encoder.set_kernels(lumen::kernels::kernels_for(isa).unwrap());
            let [(f_abs, f_l2), (p_abs, p_l2)] = errors_l2(&encoder);
            eprintln!(
                "{ft:?} {isa:?} default: vision output max abs {f_abs:.2e} rel L2 {f_l2:.2e}, \
                 projected {p_abs:.2e} rel L2 {p_l2:.2e}"
            );
            assert!(
                f_abs < MAX_ABS_FAST && p_abs < MAX_ABS_FAST,
                "{ft:?} {isa:?}: max abs diff {f_abs} (vision output), {p_abs} (projected)"
            );
            assert!(
                f_l2 < MAX_REL_L2_FAST && p_l2 < MAX_REL_L2_FAST,
                "{ft:?} {isa:?}: relative L2 {f_l2} (vision output), {p_l2} (projected)"
            );
        }
        encoder.set_reference_matmul(true);
        let (exact_features, exact_projected) = errors(&encoder);
        eprintln!("{ft:?} exact matmuls: {exact_features:.2e}, {exact_projected:.2e}");
        assert!(
            exact_features < MAX_ABS_F16_EXACT && exact_projected < MAX_ABS_F16_EXACT,
            "{ft:?} exact: max abs diff {exact_features} (vision output), {exact_projected} \
             (projected)"
        );
    }
}

/// The default path really runs in integers: its output differs from the exact path (neither
/// identical, which would mean the integer path never ran, nor far).
#[test]
fn default_path_is_integer_and_close_to_exact() {
    if std::env::var("LUMEN_VISION_F32").is_ok_and(|v| v == "1") {
        return;
    }
    let (_dir, file) = converted(FileType::F16);
    let mut encoder = VisionEncoder::load(file).unwrap();
    let (features, projected) = run(&encoder);
    encoder.set_reference_matmul(true);
    let (exact_features, exact_projected) = run(&encoder);
    let (df, dp) = (
        rel_l2(&features, &exact_features),
        rel_l2(&projected, &exact_projected),
    );
    eprintln!("integer vs exact matmuls: relative L2 vision output {df:.2e}, projected {dp:.2e}");
    assert!(
        df > 1e-4 && dp > 1e-4,
        "integer path did not run: {df}, {dp}"
    );
    assert!(df < MAX_REL_L2_FAST && dp < MAX_REL_L2_FAST, "{df}, {dp}");
}

#[test]
fn bad_image_input_is_an_error_naming_the_problem() {
    let (_dir, file) = converted(FileType::F32);
    let encoder = VisionEncoder::load(file).unwrap();
    let (_, pixels) = meta_ref("pixel_values.npy");
    let message = |r: Result<Vec<f32>, ModelError>| r.unwrap_err().to_string();
    let m = message(encoder.encode(&pixels[1..], 6, &[1, 1, 1, 1]));
    assert!(m.contains("pixel values"), "{m}");
    let m = message(encoder.encode(&pixels, 9, &[1, 1, 1, 1]));
    assert!(m.contains("aspect ratio id 9"), "{m}");
    let m = message(encoder.encode(&pixels, 6, &[1, 1, 1]));
    assert!(m.contains("mask has 3 entries"), "{m}");
    let m = message(encoder.encode(&pixels, 6, &[0, 0, 0, 0]));
    assert!(m.contains("no real tile"), "{m}");
}

/// A one-tile image still runs every tile slot, and padding tiles change the real tiles'
/// states (real tokens attend to them, as in the reference): the padding tiles' zero pixels
/// are not skipped.
#[test]
fn padding_tiles_take_part_in_attention() {
    let (_dir, file) = converted(FileType::F32);
    let encoder = VisionEncoder::load(file).unwrap();
    let cfg = encoder.config.clone();
    let (_, mut pixels) = meta_ref("pixel_values.npy");
    let tile_len = pixels.len() / cfg.max_tiles;
    pixels[tile_len..].fill(0.0);
    let one_tile = encoder.encode(&pixels, 1, &[1, 0, 0, 0]).unwrap();
    assert_eq!(
        one_tile.len(),
        cfg.max_tiles * cfg.n_tile_tokens() * cfg.text_embd
    );
    // Same pixels with the padding tiles marked real: a different mask, so the first tile's
    // states must differ (pad tokens of padding tiles stop seeing each other otherwise).
    let all_real = encoder.encode(&pixels, 1, &[1, 1, 1, 1]).unwrap();
    let first = cfg.n_tile_tokens() * cfg.text_embd;
    assert!(max_abs_diff(&one_tile[..first], &all_real[..first]) > 1e-6);
    assert!(one_tile.iter().all(|v| v.is_finite()));
}

/// `file` rewritten with `edit` applied to every tensor (None drops it) and `meta` to every
/// metadata pair, loaded as a vision encoder: the load error's message.
fn load_error_after(
    file: &GgufFile,
    dir: &Path,
    edit: impl Fn(TensorData) -> Option<TensorData>,
    meta: impl Fn(String, MetaValue) -> (String, MetaValue),
) -> String {
    let mut w = GgufWriter::new();
    for (k, v) in read_kv(file).unwrap() {
        let (k, v) = meta(k, v);
        w.add_meta(k, v);
    }
    for t in file.tensors() {
        let data = TensorData {
            name: t.name.clone(),
            ty: t.ty,
            shape: t.shape.clone(),
            data: file.tensor_bytes(t).to_vec(),
        };
        if let Some(data) = edit(data) {
            w.add_tensor(data);
        }
    }
    let path = dir.join("edited.gguf");
    w.write_atomic(&path).unwrap();
    match VisionEncoder::load(Arc::new(GgufFile::open(&path).unwrap())) {
        Ok(_) => panic!("the edited file loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_are_errors_naming_the_tensor_or_key() {
    let (dir, file) = converted(FileType::F32);
    let keep_meta = |k, v| (k, v);
    let m = load_error_after(
        &file,
        dir.path(),
        |t| (t.name != "v.global.blk.1.ffn_up.bias").then_some(t),
        keep_meta,
    );
    assert!(m.contains("v.global.blk.1.ffn_up.bias"), "{m}");
    // The patch convolution with a wrong channel count (same byte count).
    let m = load_error_after(
        &file,
        dir.path(),
        |mut t| {
            if t.name == "v.patch_embd.weight" {
                t.shape = vec![14, 14, 1, 96];
            }
            Some(t)
        },
        keep_meta,
    );
    assert!(
        m.contains("v.patch_embd.weight") && m.contains("[14, 14, 3, 32]"),
        "{m}"
    );
    // A tile-position table whose rows are one tile short.
    let m = load_error_after(
        &file,
        dir.path(),
        |mut t| {
            if t.name == "v.tile_position_embd.weight" {
                let row = 3 * 17 * 32;
                t.shape = vec![row, t.data.len() / 4 / row];
                t.data.truncate(row * t.shape[1] * 4);
            }
            Some(t)
        },
        keep_meta,
    );
    assert!(m.contains("v.tile_position_embd.weight"), "{m}");
    let m = load_error_after(&file, dir.path(), Some, |k, v| {
        if k == "mllama.vision.intermediate_layers_indices" {
            (
                k,
                MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(4)]),
            )
        } else {
            (k, v)
        }
    });
    assert!(m.contains("intermediate layer index 4"), "{m}");
    // Tiles and image size each within their caps (64, 16384 px) but far too much together:
    // one encode would need ~570 GB. Refused at load, before any buffer is made.
    let m = load_error_after(&file, dir.path(), Some, |k, v| {
        let value = match k.as_str() {
            "mllama.vision.image_size" => 16380,
            "mllama.vision.max_num_tiles" => 64,
            _ => return (k, v),
        };
        let v = match v {
            MetaValue::U32(_) => MetaValue::U32(value),
            MetaValue::I32(_) => MetaValue::I32(value as i32),
            MetaValue::U64(_) => MetaValue::U64(value as u64),
            other => panic!("{k}: unexpected type {other:?}"),
        };
        (k, v)
    });
    assert!(
        m.contains("encoding one image (64 tiles of 16380 px") && m.contains("of memory"),
        "{m}"
    );
}

/// Timing on a real-width tower (not a correctness test; run by hand):
/// `LUMEN_VISION_TIMING_GGUF=FILE cargo test --release -p lumen-tools --test mllama_vision \
///  timing -- --ignored --nocapture` with a file of 1280-wide layers (any layer count), e.g.
/// from `tools/scripts/synth_mllama_vision.py`. Prints the time of every encoder layer and of
/// one attention call at the full token count.
#[test]
#[ignore]
fn timing() {
    use std::time::Instant;
    let Some(path) = std::env::var_os("LUMEN_VISION_TIMING_GGUF") else {
        eprintln!("LUMEN_VISION_TIMING_GGUF is not set");
        return;
    };
    let file = Arc::new(GgufFile::open(path).unwrap());
    let encoder = VisionEncoder::load(file).unwrap();
    let cfg = encoder.config.clone();
    let pixels: Vec<f32> = (0..cfg.pixels_len())
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mask = vec![1u8; cfg.max_tiles];
    let n_tok = cfg.max_tiles * cfg.n_tile_tokens_padded();

    let shape = lumen::kernels::dense_attention::DenseShape {
        n_tok,
        n_head: cfg.n_head,
        head_dim: cfg.head_dim(),
    };
    let q: Vec<f32> = pixels
        .iter()
        .cycle()
        .take(n_tok * cfg.n_embd)
        .copied()
        .collect();
    let mut out = vec![0.0f32; q.len()];
    let flops = 4.0 * (n_tok * n_tok * cfg.n_embd) as f64;
    let isa = lumen::kernels::kernels().isa;
    for name in ["f32", "bf16"] {
        let t = Instant::now();
        if name == "bf16" {
            lumen::kernels::dense_attention::attend_bf16(isa, &shape, &q, &q, &q, None, &mut out);
        } else {
            lumen::kernels::dense_attention::attend(isa, &shape, &q, &q, &q, None, &mut out);
        }
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "attention alone ({name}), {n_tok} tokens: {secs:.2} s ({:.1} GFLOP/s)",
            flops / secs / 1e9
        );
    }

    let start = Instant::now();
    let mut last = start;
    encoder
        .encode_with(&pixels, 6, &mask, &mut |p| {
            let now = Instant::now();
            eprintln!(
                "layer {}/{}: {:.2} s",
                p.done,
                p.total,
                (now - last).as_secs_f64()
            );
            last = now;
        })
        .unwrap();
    eprintln!(
        "encode ({} local + {} global layers): {:.2} s",
        cfg.n_layer,
        cfg.n_global_layer,
        start.elapsed().as_secs_f64()
    );
}
