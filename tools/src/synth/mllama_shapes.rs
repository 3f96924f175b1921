//! Llama 3.2 Vision (`mllama`): the text decoder with cross-attention layers, the vision tower
//! and the projector, in the converter's layout (same names, shapes and F16/F32 choices), with
//! the text types picked by the quantizer's own rules.

use lumen_tools::convert::mllama;
use lumen_tools::quantize::presets;

use super::*;

/// What a Llama 3.2 Vision shape adds to the text shape of its `[[synthetic]]` entry.
#[derive(Clone, Debug)]
pub struct VisionShape {
    /// Decoder layers that are cross-attention layers.
    pub cross_attention_layers: Vec<usize>,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    /// Local and global (gated) encoder layers.
    pub n_layer: usize,
    pub n_global_layer: usize,
    pub intermediate_layers: Vec<usize>,
    pub image_size: usize,
    pub patch_size: usize,
    pub max_num_tiles: usize,
    pub n_channels: usize,
}

impl VisionShape {
    fn tokens_per_tile(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side + 1
    }

    /// One row per supported aspect ratio (rows × cols ≤ max tiles) plus the padding row.
    fn n_ratio_rows(&self) -> usize {
        let m = self.max_num_tiles;
        (1..=m).map(|r| m / r).sum::<usize>() + 1
    }

    fn output_dim(&self) -> usize {
        self.n_embd * (self.intermediate_layers.len() + 1)
    }
}

/// The vision part of the `[[synthetic]]` shapes that have one, by id. The registry's
/// `SyntheticShape` has no vision fields, so they live here (models.toml says so).
pub fn vision_shape(id: &str) -> Option<VisionShape> {
    match id {
        // Meta's Llama 3.2 11B Vision (HF config): the vision tower is the same for 90B.
        "llama-3.2-11b-vision" => Some(VisionShape {
            cross_attention_layers: (3..40).step_by(5).collect(),
            n_embd: 1280,
            n_ff: 5120,
            n_head: 16,
            n_layer: 32,
            n_global_layer: 8,
            intermediate_layers: vec![3, 7, 15, 23, 30],
            image_size: 560,
            patch_size: 14,
            max_num_tiles: 4,
            n_channels: 3,
        }),
        _ => None,
    }
}

/// Extra embedding rows after the vocabulary (Meta's learnable image rows; `<|image|>` is the
/// first).
pub(super) const MLLAMA_EXTRA_EMBEDDING_ROWS: usize = 8;

/// Every tensor as the converter writes it to an F16 file: (name, GGUF shape, type).
pub(super) fn mllama_tensors(
    shape: &SyntheticShape,
    v: &VisionShape,
) -> Vec<(String, Vec<usize>, GgmlType)> {
    use GgmlType::{F16, F32};
    let (e, ff) = (shape.n_embd, shape.n_ff);
    let hd = shape.head_dim;
    let (q, kv) = (shape.n_head * hd, shape.n_head_kv * hd);
    let mut t: Vec<(String, Vec<usize>, GgmlType)> = Vec::new();
    let mut add = |name: String, dims: Vec<usize>, ty| t.push((name, dims, ty));
    if shape.llama3_rope_factor.is_some() {
        add(names::ROPE_FREQS.into(), vec![hd / 2], F32);
    }
    add(
        names::TOKEN_EMBD.into(),
        vec![e, shape.n_vocab + MLLAMA_EXTRA_EMBEDDING_ROWS],
        F16,
    );
    add(names::OUTPUT_NORM.into(), vec![e], F32);
    add(names::OUTPUT.into(), vec![e, shape.n_vocab], F16);
    for i in 0..shape.n_layer {
        let mut layer = vec![
            (names::ATTN_NORM, vec![e], F32),
            (names::FFN_NORM, vec![e], F32),
            (names::FFN_GATE, vec![e, ff], F16),
            (names::FFN_UP, vec![e, ff], F16),
            (names::FFN_DOWN, vec![ff, e], F16),
        ];
        if v.cross_attention_layers.contains(&i) {
            layer.extend([
                (names::CROSS_ATTN_Q, vec![e, q], F16),
                (names::CROSS_ATTN_K, vec![e, kv], F16),
                (names::CROSS_ATTN_V, vec![e, kv], F16),
                (names::CROSS_ATTN_O, vec![q, e], F16),
                (names::CROSS_ATTN_Q_NORM, vec![hd], F32),
                (names::CROSS_ATTN_K_NORM, vec![hd], F32),
                (names::CROSS_ATTN_ATTN_GATE, vec![1], F32),
                (names::CROSS_ATTN_MLP_GATE, vec![1], F32),
            ]);
        } else {
            layer.extend([
                (names::ATTN_Q, vec![e, q], F16),
                (names::ATTN_K, vec![e, kv], F16),
                (names::ATTN_V, vec![e, kv], F16),
                (names::ATTN_OUTPUT, vec![q, e], F16),
            ]);
        }
        for (suffix, dims, ty) in layer {
            add(names::blk(i, suffix), dims, ty);
        }
    }
    let (h, vff) = (v.n_embd, v.n_ff);
    let (tokens, rows, tiles) = (v.tokens_per_tile(), v.n_ratio_rows(), v.max_num_tiles);
    add(
        names::V_PATCH_EMBD.into(),
        vec![v.patch_size, v.patch_size, v.n_channels, h],
        F16,
    );
    add(names::V_CLASS_EMBD.into(), vec![h], F32);
    add(names::V_POSITION_EMBD.into(), vec![h, tokens], F32);
    add(names::V_POSITION_EMBD_GATE.into(), vec![1], F32);
    add(
        names::V_TILE_POSITION_EMBD.into(),
        vec![tiles * tokens * h, rows],
        F32,
    );
    add(names::V_TILE_POSITION_EMBD_GATE.into(), vec![1], F32);
    for (table, gate) in [
        (
            names::V_PRE_TILE_POSITION_EMBD,
            names::V_PRE_TILE_POSITION_EMBD_GATE,
        ),
        (
            names::V_POST_TILE_POSITION_EMBD,
            names::V_POST_TILE_POSITION_EMBD_GATE,
        ),
    ] {
        add(table.into(), vec![tiles * h, rows], F32);
        add(gate.into(), vec![1], F32);
    }
    for name in [
        names::V_PRE_LN_WEIGHT,
        names::V_PRE_LN_BIAS,
        names::V_POST_LN_WEIGHT,
        names::V_POST_LN_BIAS,
    ] {
        add(name.into(), vec![h], F32);
    }
    let layers = (0..v.n_layer)
        .map(|i| (names::v_blk(i, ""), false))
        .chain((0..v.n_global_layer).map(|i| (names::v_global_blk(i, ""), true)));
    for (prefix, gated) in layers {
        let mut layer = vec![
            (names::V_ATTN_Q, vec![h, h], F16),
            (names::V_ATTN_K, vec![h, h], F16),
            (names::V_ATTN_V, vec![h, h], F16),
            (names::V_ATTN_OUTPUT, vec![h, h], F16),
            (names::V_ATTN_NORM_WEIGHT, vec![h], F32),
            (names::V_ATTN_NORM_BIAS, vec![h], F32),
            (names::V_FFN_NORM_WEIGHT, vec![h], F32),
            (names::V_FFN_NORM_BIAS, vec![h], F32),
            (names::V_FFN_UP_WEIGHT, vec![h, vff], F16),
            (names::V_FFN_UP_BIAS, vec![vff], F32),
            (names::V_FFN_DOWN_WEIGHT, vec![vff, h], F16),
            (names::V_FFN_DOWN_BIAS, vec![h], F32),
        ];
        if gated {
            layer.push((names::V_ATTN_GATE, vec![1], F32));
            layer.push((names::V_FFN_GATE, vec![1], F32));
        }
        for (suffix, dims, ty) in layer {
            add(format!("{prefix}{suffix}"), dims, ty);
        }
    }
    add(names::MM_PROJ_WEIGHT.into(), vec![v.output_dim(), e], F16);
    add(names::MM_PROJ_BIAS.into(), vec![e], F32);
    t
}

/// The quantizer's file type for a mix, and whether it is `--pure`.
pub(super) fn quantize_file_type(mix: WeightMix) -> anyhow::Result<(presets::FileType, bool)> {
    match mix {
        WeightMix::Q4KM => Ok((presets::FileType::Q4_K_M, false)),
        WeightMix::Pure(t) => presets::FileType::parse(t.name())
            .map(|ft| (ft, true))
            .with_context(|| format!("{} is not a file type lumen quantize writes", t.name())),
    }
}

/// The tensors in llama.cpp's order with the types `lumen quantize` would give an F16
/// conversion of the model (text matrices by the mix, vision tower and projector left at
/// F16, vectors and positional tables F32).
pub(super) fn mllama_plan(
    shape: &SyntheticShape,
    v: &VisionShape,
    mix: WeightMix,
) -> anyhow::Result<Vec<Planned>> {
    let tensors = mllama_tensors(shape, v);
    let names: Vec<&str> = tensors.iter().map(|t| t.0.as_str()).collect();
    let order = lumen_tools::quantize::llama_order(&names);
    let descs: Vec<presets::TensorDesc> = order
        .iter()
        .map(|&i| presets::TensorDesc {
            name: &tensors[i].0,
            ty: tensors[i].2,
            shape: &tensors[i].1,
        })
        .collect();
    let (ft, pure) = quantize_file_type(mix)?;
    let model = presets::ModelInfo {
        arch: "mllama".into(),
        n_layer: shape.n_layer,
        n_head: shape.n_head,
        n_head_kv: shape.n_head_kv,
        n_expert: 0,
    };
    let opts = presets::TypeOptions {
        pure,
        ..Default::default()
    };
    let types = presets::choose_types(&descs, ft, &model, &opts)?;
    descs
        .iter()
        .zip(types)
        .map(|(d, ty)| {
            let n_bytes = ty
                .row_bytes(d.shape[0])
                .with_context(|| format!("{}: row of {} in {ty}", d.name, d.shape[0]))?
                * d.shape[1..].iter().product::<usize>();
            Ok(Planned {
                name: d.name.to_string(),
                ty,
                shape: d.shape.to_vec(),
                n_bytes,
            })
        })
        .collect()
}

/// The converter's `mllama.*` keys (CLIP normalisation) and a byte-level vocabulary whose
/// `<|image|>` sits right after the `n_vocab` tokens, as in Llama 3.2 Vision.
pub(super) fn mllama_metadata(
    shape: &SyntheticShape,
    v: &VisionShape,
    mix: WeightMix,
) -> Vec<(String, MetaValue)> {
    let arch = "mllama";
    let k = |s| keys::arch_key(arch, s);
    let u32v = |x: usize| MetaValue::U32(x as u32);
    let i32s =
        |l: &[usize]| MetaValue::Array(l.iter().map(|&i| MetaValue::I32(i as i32)).collect());
    let f32s = |l: [f32; 3]| MetaValue::Array(l.iter().map(|&x| MetaValue::F32(x)).collect());
    let mut md = general_and_text_metadata(arch, shape, mix);
    md.extend([
        (
            k(keys::CROSS_ATTENTION_LAYERS),
            i32s(&v.cross_attention_layers),
        ),
        (k(keys::VISION_BLOCK_COUNT), u32v(v.n_layer)),
        (k(keys::VISION_GLOBAL_BLOCK_COUNT), u32v(v.n_global_layer)),
        (
            k(keys::VISION_INTERMEDIATE_LAYERS),
            i32s(&v.intermediate_layers),
        ),
        (k(keys::VISION_EMBEDDING_LENGTH), u32v(v.n_embd)),
        (k(keys::VISION_FEED_FORWARD_LENGTH), u32v(v.n_ff)),
        (k(keys::VISION_HEAD_COUNT), u32v(v.n_head)),
        (k(keys::VISION_LAYER_NORM_EPS), MetaValue::F32(1e-5)),
        (k(keys::VISION_IMAGE_SIZE), u32v(v.image_size)),
        (k(keys::VISION_PATCH_SIZE), u32v(v.patch_size)),
        (k(keys::VISION_MAX_NUM_TILES), u32v(v.max_num_tiles)),
        (k(keys::VISION_NUM_CHANNELS), u32v(v.n_channels)),
        (k(keys::VISION_IMAGE_MEAN), f32s(mllama::CLIP_MEAN)),
        (k(keys::VISION_IMAGE_STD), f32s(mllama::CLIP_STD)),
    ]);
    md.extend(vocab_metadata(shape.n_vocab, &["<|image|>"]));
    md
}
