//! `MllamaForConditionalGeneration` (Llama 3.2 Vision) → one GGUF with architecture `mllama`,
//! in Ollama's single-file schema (its `convert/convert_mllama.go`): the text decoder with its
//! cross-attention layers, the vision encoder (`v.*`) and the projector (`mm.0.*`); Ollama's
//! `mllama.*` keys plus the image normalisation (`mllama.vision.image_{mean,std}`, Lumen's
//! addition); the Llama 3 byte-level BPE vocabulary including `<|image|>`.
//!
//! The layout decisions are listed above the mllama names in `lumen::gguf::names`; [`Transform`]
//! says why each transform exists. Text keys and the vocabulary reuse the llama converter.

use std::collections::HashMap;
use std::path::Path;

use lumen::gguf::writer::MetaValue;
use lumen::gguf::{keys, names};
use lumen::kernels::{dequantize_row, GgmlType};
use serde_json::Value;

use super::hf::{self, HfConfig, JsonFile, RopeScaling};
use super::llama::{self, Source, TensorPlan};
use super::safetensors::{Checkpoint, SrcTensor};
use super::vocab::Vocab;
use super::{write, ConvertError, ConvertOptions, Event, FileType, Summary};

/// Hugging Face classes this module converts.
pub const HF_ARCHITECTURES: &[&str] = &["MllamaForConditionalGeneration"];
pub const GGUF_ARCH: &str = "mllama";

/// Rows of the embedding matrix beyond `vocab_size`: Meta's 8 learnable image-token rows, which
/// the HF converter appended (only the first, `<|image|>` = 128256, is used).
pub const EXTRA_EMBEDDING_ROWS: usize = 8;

/// CLIP normalisation: the processor's default, used when `preprocessor_config.json` is absent.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// The vision encoder's hyper-parameters (`config.json`'s `vision_config`).
#[derive(Clone, Debug)]
pub struct VisionConfig {
    /// Local (ungated) encoder layers.
    pub n_layer: usize,
    /// Global (gated) encoder layers.
    pub n_global_layer: usize,
    /// Local layers whose inputs become the intermediate features.
    pub intermediate_layers: Vec<usize>,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub norm_eps: f64,
    pub image_size: usize,
    pub patch_size: usize,
    pub max_num_tiles: usize,
    pub n_channels: usize,
    /// Rows of the per-aspect-ratio tables: one per supported ratio plus the padding row 0.
    pub n_ratio_rows: usize,
}

impl VisionConfig {
    /// Patches of one tile plus its class token (1601 for 560/14).
    pub fn tokens_per_tile(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side + 1
    }

    /// Width of the projector's input: the global output and every intermediate feature.
    pub fn output_dim(&self) -> usize {
        self.n_embd * (self.intermediate_layers.len() + 1)
    }
}

/// Everything the converter reads from `config.json` and `preprocessor_config.json`.
#[derive(Clone, Debug)]
pub struct MllamaConfig {
    /// `text_config` read as a Llama config (`vocab_size` = the logits, 128256).
    pub text: HfConfig,
    /// Indices (in the one list of decoder layers) of the cross-attention layers.
    pub cross_layers: Vec<usize>,
    pub vision: VisionConfig,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl MllamaConfig {
    /// Reads the sections of `config` (already parsed) and `dir/preprocessor_config.json`.
    pub fn read(dir: &Path, config: &JsonFile) -> Result<Self, ConvertError> {
        let mut text_json = section(config, "text_config")?;
        // HfConfig wants the class name; it lives at the top level.
        if let Some(a) = config.get("architectures") {
            text_json.root.insert("architectures".into(), a.clone());
        }
        let text =
            HfConfig::from_json(text_json.clone()).map_err(|e| in_section(e, "text_config"))?;
        let cross_layers = index_list(&text_json, "cross_attention_layers", text.n_layer)
            .map_err(|e| in_section(e, "text_config"))?;
        let vision_json = section(config, "vision_config")?;
        let vision = read_vision(&vision_json).map_err(|e| in_section(e, "vision_config"))?;
        let (image_mean, image_std) = read_normalisation(dir)?;
        Ok(Self {
            text,
            cross_layers,
            vision,
            image_mean,
            image_std,
        })
    }
}

/// A nested object of `config.json` as a file of its own (errors still name `config.json`).
fn section(config: &JsonFile, key: &str) -> Result<JsonFile, ConvertError> {
    match config.get(key) {
        Some(Value::Object(root)) => Ok(JsonFile {
            path: config.path.clone(),
            root: root.clone(),
        }),
        Some(other) => Err(config.bad(key, format!("{other} is not an object"))),
        None => Err(config.bad(
            key,
            "missing (an MllamaForConditionalGeneration config has text_config and vision_config)",
        )),
    }
}

/// Names a key inside a section by its full path (`vision_config.hidden_size`).
fn in_section(e: ConvertError, section: &str) -> ConvertError {
    match e {
        ConvertError::BadKey { path, key, message } => ConvertError::BadKey {
            path,
            key: format!("{section}.{key}"),
            message,
        },
        other => other,
    }
}

/// A list of layer indices, each below `bound`, strictly increasing.
fn index_list(json: &JsonFile, key: &str, bound: usize) -> Result<Vec<usize>, ConvertError> {
    let Some(Value::Array(items)) = json.get(key) else {
        return Err(json.bad(key, "missing or not a list of layer indices"));
    };
    let list: Vec<usize> = items
        .iter()
        .map(|v| {
            v.as_u64()
                .map(|i| i as usize)
                .filter(|&i| i < bound)
                .ok_or_else(|| json.bad(key, format!("{v} is not a layer index below {bound}")))
        })
        .collect::<Result<_, _>>()?;
    if list.windows(2).any(|w| w[0] >= w[1]) {
        return Err(json.bad(key, format!("{list:?} is not strictly increasing")));
    }
    Ok(list)
}

fn read_vision(v: &JsonFile) -> Result<VisionConfig, ConvertError> {
    let n_layer = v.usize_capped("num_hidden_layers", hf::MAX_LAYERS)?;
    let max_num_tiles = v.usize_opt("max_num_tiles", 64)?.unwrap_or(4);
    let n_ratio_rows = match v.get("supported_aspect_ratios") {
        Some(Value::Array(list)) => list.len() + 1,
        Some(other) => {
            return Err(v.bad("supported_aspect_ratios", format!("{other} is not a list")))
        }
        // The processor's default: every rows × cols layout of at most max_num_tiles tiles.
        None => {
            (1..=max_num_tiles)
                .map(|r| max_num_tiles / r)
                .sum::<usize>()
                + 1
        }
    };
    let cfg = VisionConfig {
        n_layer,
        n_global_layer: v.usize_capped("num_global_layers", hf::MAX_LAYERS)?,
        intermediate_layers: index_list(v, "intermediate_layers_indices", n_layer)?,
        n_embd: v.usize_capped("hidden_size", hf::MAX_DIM)?,
        n_ff: v.usize_capped("intermediate_size", hf::MAX_DIM * 8)?,
        n_head: v.usize_capped("attention_heads", hf::MAX_DIM)?,
        norm_eps: v.f64_opt("norm_eps")?.unwrap_or(1e-5),
        image_size: v.usize_capped("image_size", hf::MAX_DIM)?,
        patch_size: v.usize_capped("patch_size", hf::MAX_DIM)?,
        max_num_tiles,
        n_channels: v.usize_opt("num_channels", 16)?.unwrap_or(3),
        n_ratio_rows,
    };
    let head_dim = cfg.n_embd / cfg.n_head;
    // The Q/K permutation needs whole, even heads.
    if !cfg.n_embd.is_multiple_of(cfg.n_head) || !head_dim.is_multiple_of(2) {
        return Err(v.bad(
            "attention_heads",
            format!(
                "hidden size {} over {} heads is not a whole even head dimension",
                cfg.n_embd, cfg.n_head
            ),
        ));
    }
    if !cfg.image_size.is_multiple_of(cfg.patch_size) {
        return Err(v.bad(
            "patch_size",
            format!(
                "{} does not divide the image size {}",
                cfg.patch_size, cfg.image_size
            ),
        ));
    }
    if let Some(d) = v.usize_opt("vision_output_dim", hf::MAX_DIM * 8)? {
        if d != cfg.output_dim() {
            return Err(v.bad(
                "vision_output_dim",
                format!(
                    "{d}, but hidden size {} × ({} intermediate layers + 1) is {}",
                    cfg.n_embd,
                    cfg.intermediate_layers.len(),
                    cfg.output_dim()
                ),
            ));
        }
    }
    Ok(cfg)
}

/// `image_mean` / `image_std` of `preprocessor_config.json`, CLIP's when the file is absent.
fn read_normalisation(dir: &Path) -> Result<([f32; 3], [f32; 3]), ConvertError> {
    let Some(pre) = JsonFile::read_optional(&dir.join("preprocessor_config.json"))? else {
        return Ok((CLIP_MEAN, CLIP_STD));
    };
    let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3], ConvertError> {
        let Some(v) = pre.get(key) else {
            return Ok(default);
        };
        let numbers: Option<Vec<f32>> = v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_f64().map(|x| x as f32)).collect());
        numbers
            .and_then(|n| <[f32; 3]>::try_from(n).ok())
            .ok_or_else(|| pre.bad(key, format!("{v} is not a list of 3 numbers")))
    };
    Ok((
        triple("image_mean", CLIP_MEAN)?,
        triple("image_std", CLIP_STD)?,
    ))
}

/// How a checkpoint tensor becomes a GGUF tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Written as it is (converted to the output type).
    Copy,
    /// Rows llama-permuted over this many heads ([`llama::permuted_source_row`]). Text
    /// self-attention Q/K need it for ggml's adjacent-pair RoPE. Cross-attention Q/K and vision
    /// Q/K have no RoPE: Ollama's converter permutes them anyway (its rule matches any
    /// `attn_q`/`attn_k` name) and we match its bytes; q·k is unchanged by a common permutation,
    /// and the runtime permutes the cross-attention q_norm/k_norm vectors to agree.
    Permute(usize),
    /// tanh(g): vision gates are stored as the factor the model multiplies by, so the runtime
    /// (Ollama's too) applies them as plain multipliers.
    Tanh,
    /// 1 − tanh(g): the positional-embedding side of the gated positional embedding, which Ollama
    /// writes as `v.position_embd.gate` beside `tanh(g)` as `v.tile_position_embd.gate`.
    OneMinusTanh,
}

/// An expected checkpoint tensor: its PyTorch shape and the GGUF tensor(s) made from it.
struct Expected {
    shape: Vec<usize>,
    outputs: Vec<(String, Transform)>,
}

/// Every tensor an `MllamaForConditionalGeneration` checkpoint must hold, by HF name.
#[derive(Default)]
struct Table(HashMap<String, Expected>);

impl Table {
    fn add(&mut self, hf: String, shape: Vec<usize>, gguf: impl Into<String>, t: Transform) {
        self.add_many(hf, shape, vec![(gguf.into(), t)]);
    }

    fn add_many(&mut self, hf: String, shape: Vec<usize>, outputs: Vec<(String, Transform)>) {
        self.0.insert(hf, Expected { shape, outputs });
    }
}

fn expected_tensors(cfg: &MllamaConfig) -> Table {
    let mut t = Table::default();
    text_tensors(cfg, &mut t);
    vision_tensors(cfg, &mut t);
    t
}

/// The decoder: Llama layers, with cross-attention in place of self-attention at
/// `cross_layers`; the embedding has the extra image rows.
fn text_tensors(cfg: &MllamaConfig, t: &mut Table) {
    use Transform::{Copy, Permute};
    let c = &cfg.text;
    let (e, ff, v) = (c.n_embd, c.n_ff, c.n_vocab);
    let hd = c.head_dim();
    let (q, kv) = (c.n_head * hd, c.n_head_kv * hd);
    let lm = "language_model.";
    t.add(
        format!("{lm}model.embed_tokens.weight"),
        vec![v + EXTRA_EMBEDDING_ROWS, e],
        names::TOKEN_EMBD,
        Copy,
    );
    t.add(
        format!("{lm}model.norm.weight"),
        vec![e],
        names::OUTPUT_NORM,
        Copy,
    );
    if !c.tie_word_embeddings {
        t.add(
            format!("{lm}lm_head.weight"),
            vec![v, e],
            names::OUTPUT,
            Copy,
        );
    }
    for i in 0..c.n_layer {
        let p = format!("{lm}model.layers.{i}.");
        let mut layer = vec![
            ("input_layernorm.weight", names::ATTN_NORM, vec![e], Copy),
            (
                "post_attention_layernorm.weight",
                names::FFN_NORM,
                vec![e],
                Copy,
            ),
            ("mlp.gate_proj.weight", names::FFN_GATE, vec![ff, e], Copy),
            ("mlp.up_proj.weight", names::FFN_UP, vec![ff, e], Copy),
            ("mlp.down_proj.weight", names::FFN_DOWN, vec![e, ff], Copy),
        ];
        if cfg.cross_layers.contains(&i) {
            layer.extend([
                (
                    "cross_attn.q_proj.weight",
                    names::CROSS_ATTN_Q,
                    vec![q, e],
                    Permute(c.n_head),
                ),
                (
                    "cross_attn.k_proj.weight",
                    names::CROSS_ATTN_K,
                    vec![kv, e],
                    Permute(c.n_head_kv),
                ),
                (
                    "cross_attn.v_proj.weight",
                    names::CROSS_ATTN_V,
                    vec![kv, e],
                    Copy,
                ),
                (
                    "cross_attn.o_proj.weight",
                    names::CROSS_ATTN_O,
                    vec![e, q],
                    Copy,
                ),
                // One RMSNorm weight per head dimension, not permuted (see `Transform::Permute`).
                (
                    "cross_attn.q_norm.weight",
                    names::CROSS_ATTN_Q_NORM,
                    vec![hd],
                    Copy,
                ),
                (
                    "cross_attn.k_norm.weight",
                    names::CROSS_ATTN_K_NORM,
                    vec![hd],
                    Copy,
                ),
                // Raw: the text model applies tanh itself (Ollama's runtime does too).
                (
                    "cross_attn_attn_gate",
                    names::CROSS_ATTN_ATTN_GATE,
                    vec![1],
                    Copy,
                ),
                (
                    "cross_attn_mlp_gate",
                    names::CROSS_ATTN_MLP_GATE,
                    vec![1],
                    Copy,
                ),
            ]);
        } else {
            layer.extend([
                (
                    "self_attn.q_proj.weight",
                    names::ATTN_Q,
                    vec![q, e],
                    Permute(c.n_head),
                ),
                (
                    "self_attn.k_proj.weight",
                    names::ATTN_K,
                    vec![kv, e],
                    Permute(c.n_head_kv),
                ),
                ("self_attn.v_proj.weight", names::ATTN_V, vec![kv, e], Copy),
                (
                    "self_attn.o_proj.weight",
                    names::ATTN_OUTPUT,
                    vec![e, q],
                    Copy,
                ),
            ]);
        }
        for (hf, suffix, shape, tr) in layer {
            t.add(format!("{p}{hf}"), shape, names::blk(i, suffix), tr);
        }
    }
}

/// The vision encoder and the projector.
fn vision_tensors(cfg: &MllamaConfig, t: &mut Table) {
    use Transform::{Copy, OneMinusTanh, Tanh};
    let v = &cfg.vision;
    let h = v.n_embd;
    let (tokens, rows, tiles) = (v.tokens_per_tile(), v.n_ratio_rows, v.max_num_tiles);
    let p = "vision_model.";
    t.add(
        format!("{p}patch_embedding.weight"),
        vec![h, v.n_channels, v.patch_size, v.patch_size],
        names::V_PATCH_EMBD,
        Copy,
    );
    t.add(
        format!("{p}class_embedding"),
        vec![h],
        names::V_CLASS_EMBD,
        Copy,
    );
    t.add(
        format!("{p}gated_positional_embedding.embedding"),
        vec![tokens, h],
        names::V_POSITION_EMBD,
        Copy,
    );
    // One HF gate g mixes two tables: (1 − tanh g)·position + tanh g·tile; Ollama stores both
    // factors.
    t.add_many(
        format!("{p}gated_positional_embedding.gate"),
        vec![1],
        vec![
            (names::V_POSITION_EMBD_GATE.into(), OneMinusTanh),
            (names::V_TILE_POSITION_EMBD_GATE.into(), Tanh),
        ],
    );
    t.add(
        format!("{p}gated_positional_embedding.tile_embedding.weight"),
        vec![rows, tiles * tokens * h],
        names::V_TILE_POSITION_EMBD,
        Copy,
    );
    for (hf, table, gate) in [
        (
            "pre_tile_positional_embedding",
            names::V_PRE_TILE_POSITION_EMBD,
            names::V_PRE_TILE_POSITION_EMBD_GATE,
        ),
        (
            "post_tile_positional_embedding",
            names::V_POST_TILE_POSITION_EMBD,
            names::V_POST_TILE_POSITION_EMBD_GATE,
        ),
    ] {
        t.add(
            format!("{p}{hf}.embedding.weight"),
            vec![rows, tiles * h],
            table,
            Copy,
        );
        t.add(format!("{p}{hf}.gate"), vec![1], gate, Tanh);
    }
    for (hf, w, b) in [
        (
            "layernorm_pre",
            names::V_PRE_LN_WEIGHT,
            names::V_PRE_LN_BIAS,
        ),
        (
            "layernorm_post",
            names::V_POST_LN_WEIGHT,
            names::V_POST_LN_BIAS,
        ),
    ] {
        t.add(format!("{p}{hf}.weight"), vec![h], w, Copy);
        t.add(format!("{p}{hf}.bias"), vec![h], b, Copy);
    }
    for i in 0..v.n_layer {
        let prefix = format!("{p}transformer.layers.{i}.");
        vision_layer(t, &prefix, &|s| names::v_blk(i, s), v, false);
    }
    for i in 0..v.n_global_layer {
        let prefix = format!("{p}global_transformer.layers.{i}.");
        vision_layer(t, &prefix, &|s| names::v_global_blk(i, s), v, true);
    }
    t.add(
        "multi_modal_projector.weight".into(),
        vec![cfg.text.n_embd, v.output_dim()],
        names::MM_PROJ_WEIGHT,
        Copy,
    );
    t.add(
        "multi_modal_projector.bias".into(),
        vec![cfg.text.n_embd],
        names::MM_PROJ_BIAS,
        Copy,
    );
}

/// One encoder layer; `gated` = a global layer with `gate_attn`/`gate_ffn`.
fn vision_layer(
    t: &mut Table,
    prefix: &str,
    name: &dyn Fn(&str) -> String,
    v: &VisionConfig,
    gated: bool,
) {
    use Transform::{Copy, Permute, Tanh};
    let (h, ff) = (v.n_embd, v.n_ff);
    let mut layer = vec![
        (
            "self_attn.q_proj.weight",
            names::V_ATTN_Q,
            vec![h, h],
            Permute(v.n_head),
        ),
        (
            "self_attn.k_proj.weight",
            names::V_ATTN_K,
            vec![h, h],
            Permute(v.n_head),
        ),
        ("self_attn.v_proj.weight", names::V_ATTN_V, vec![h, h], Copy),
        (
            "self_attn.o_proj.weight",
            names::V_ATTN_OUTPUT,
            vec![h, h],
            Copy,
        ),
        (
            "input_layernorm.weight",
            names::V_ATTN_NORM_WEIGHT,
            vec![h],
            Copy,
        ),
        (
            "input_layernorm.bias",
            names::V_ATTN_NORM_BIAS,
            vec![h],
            Copy,
        ),
        (
            "post_attention_layernorm.weight",
            names::V_FFN_NORM_WEIGHT,
            vec![h],
            Copy,
        ),
        (
            "post_attention_layernorm.bias",
            names::V_FFN_NORM_BIAS,
            vec![h],
            Copy,
        ),
        ("mlp.fc1.weight", names::V_FFN_UP_WEIGHT, vec![ff, h], Copy),
        ("mlp.fc1.bias", names::V_FFN_UP_BIAS, vec![ff], Copy),
        (
            "mlp.fc2.weight",
            names::V_FFN_DOWN_WEIGHT,
            vec![h, ff],
            Copy,
        ),
        ("mlp.fc2.bias", names::V_FFN_DOWN_BIAS, vec![h], Copy),
    ];
    if gated {
        layer.push(("gate_attn", names::V_ATTN_GATE, vec![1], Tanh));
        layer.push(("gate_ffn", names::V_FFN_GATE, vec![1], Tanh));
    }
    for (hf, suffix, shape, tr) in layer {
        t.add(format!("{prefix}{hf}"), shape, name(suffix), tr);
    }
}

/// Tables that stay F32 whatever the output type (Ollama's converter does the same): they are
/// added to activations once per image, and the tile table is large only in its row count.
const ALWAYS_F32: [&str; 4] = [
    names::V_POSITION_EMBD,
    names::V_TILE_POSITION_EMBD,
    names::V_PRE_TILE_POSITION_EMBD,
    names::V_POST_TILE_POSITION_EMBD,
];

/// The vision tower and the projector (never quantized, as in Ollama's files).
pub fn is_vision(gguf_name: &str) -> bool {
    gguf_name.starts_with("v.") || gguf_name.starts_with("mm.")
}

/// A tensor's output type: 1-D tensors (norms, biases, gates, class embedding), norms and the
/// positional tables F32; the vision tower and projector in the file type but F16 for a Q8_0
/// file (Ollama keeps them at F16; they are ~7% of the 11B's weights); text matrices as the
/// llama converter types them (the file type, F16 where a row is not whole Q8_0 blocks).
fn tensor_type(gguf_name: &str, shape: &[usize], ft: FileType) -> GgmlType {
    if shape.len() <= 1 || gguf_name.ends_with("_norm.weight") || ALWAYS_F32.contains(&gguf_name) {
        return GgmlType::F32;
    }
    if is_vision(gguf_name) {
        return match ft {
            FileType::Q8_0 => GgmlType::F16,
            other => other.tensor_type(),
        };
    }
    let ty = ft.tensor_type();
    match ty.row_bytes(shape[0]) {
        Some(_) => ty,
        None => GgmlType::F16,
    }
}

/// The head a tied checkpoint may still store: the embedding matrix again.
const TIED_HEAD: &str = "language_model.lm_head.weight";

/// The output tensors: the generated `rope_freqs` first, then the checkpoint's tensors in
/// shard and name order (the positional gate giving two), each checked against the config.
pub fn plan(
    cfg: &MllamaConfig,
    ckpt: &Checkpoint,
    ft: FileType,
) -> Result<Vec<TensorPlan>, ConvertError> {
    let mut expected = expected_tensors(cfg).0;
    let mut out = Vec::new();
    if let RopeScaling::Llama3(r) = &cfg.text.rope_scaling {
        let text = &cfg.text;
        let freqs =
            llama::llama3_rope_factors(text.rope_theta.unwrap_or(10000.0), text.head_dim(), r);
        out.push(TensorPlan {
            name: names::ROPE_FREQS.into(),
            shape: vec![freqs.len()],
            ty: GgmlType::F32,
            source: Source::Generated(freqs),
        });
    }
    for ((_, hf_name), t) in &ckpt.tensors {
        let ignored = hf_name.ends_with(".rotary_emb.inv_freq")
            || (cfg.text.tie_word_embeddings && hf_name == TIED_HEAD);
        if ignored {
            continue;
        }
        let Some(exp) = expected.remove(hf_name) else {
            return Err(ConvertError::UnexpectedTensor {
                path: ckpt.shard_path(t).to_path_buf(),
                tensor: hf_name.clone(),
            });
        };
        check_tensor(ckpt, hf_name, t, &exp.shape)?;
        let shape: Vec<usize> = exp.shape.iter().rev().copied().collect();
        for (gguf, tr) in exp.outputs {
            out.push(planned(ckpt, hf_name, t, shape.clone(), gguf, tr, ft)?);
        }
    }
    if let Some(hf_name) = expected.into_keys().min() {
        return Err(ConvertError::MissingTensor {
            dir: cfg
                .text
                .path
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default(),
            tensor: hf_name,
        });
    }
    Ok(out)
}

fn check_tensor(
    ckpt: &Checkpoint,
    hf_name: &str,
    t: &SrcTensor,
    shape: &[usize],
) -> Result<(), ConvertError> {
    let path = ckpt.shard_path(t).to_path_buf();
    if let Err(dtype) = &t.dtype {
        return Err(ConvertError::UnsupportedDtype {
            path,
            tensor: hf_name.into(),
            dtype: dtype.clone(),
        });
    }
    if t.shape != shape {
        return Err(ConvertError::ShapeMismatch {
            path,
            tensor: hf_name.into(),
            found: t.shape.clone(),
            expected: shape.to_vec(),
        });
    }
    Ok(())
}

/// One output tensor: gates are computed here (a few scalars), everything else streams from
/// the checkpoint when the file is written.
fn planned(
    ckpt: &Checkpoint,
    hf_name: &str,
    t: &SrcTensor,
    shape: Vec<usize>,
    gguf: String,
    tr: Transform,
    ft: FileType,
) -> Result<TensorPlan, ConvertError> {
    let gate = |f: fn(f64) -> f64| -> Result<Source, ConvertError> {
        let values = read_f32(ckpt, hf_name, t)?;
        // In f64 and rounded once, so the stored factor is the correctly rounded value.
        Ok(Source::Generated(
            values.iter().map(|&g| f(g as f64) as f32).collect(),
        ))
    };
    let source = match tr {
        Transform::Tanh => gate(f64::tanh)?,
        Transform::OneMinusTanh => gate(|g| 1.0 - g.tanh())?,
        Transform::Copy | Transform::Permute(_) => Source::Checkpoint {
            tensor: t.clone(),
            hf_name: hf_name.into(),
            permute_heads: match tr {
                Transform::Permute(h) => Some(h),
                _ => None,
            },
        },
    };
    let ty = match source {
        Source::Generated(_) => GgmlType::F32,
        Source::Checkpoint { .. } => tensor_type(&gguf, &shape, ft),
    };
    Ok(TensorPlan {
        name: gguf,
        shape,
        ty,
        source,
    })
}

/// A (small) checkpoint tensor's values as f32.
fn read_f32(ckpt: &Checkpoint, hf_name: &str, t: &SrcTensor) -> Result<Vec<f32>, ConvertError> {
    let path = ckpt.shard_path(t).to_path_buf();
    let bad = |message: String| ConvertError::BadHeader {
        path: path.clone(),
        message: format!("tensor '{hf_name}': {message}"),
    };
    let dtype = t.dtype.clone().map_err(|d| bad(format!("dtype {d}")))?;
    let n: usize = t.shape.iter().product();
    let mut values = vec![0f32; n];
    dequantize_row(dtype.ggml(), ckpt.bytes(t), &mut values).map_err(|e| bad(e.to_string()))?;
    Ok(values)
}

/// `mllama.*` keys: the llama converter's text keys renamed, then Ollama's cross-attention and
/// vision keys, then the image normalisation.
pub fn hparams_metadata(cfg: &MllamaConfig, ft: FileType) -> Vec<(String, MetaValue)> {
    let llama_prefix = format!("{}.", llama::GGUF_ARCH);
    let mut md: Vec<(String, MetaValue)> = llama::hparams_metadata(&cfg.text, ft)
        .into_iter()
        .map(|(k, v)| match k.strip_prefix(&llama_prefix) {
            Some(suffix) => (keys::arch_key(GGUF_ARCH, suffix), v),
            None => (k, v),
        })
        .collect();
    let k = |s| keys::arch_key(GGUF_ARCH, s);
    let u32v = |v: usize| MetaValue::U32(v as u32);
    let i32s =
        |l: &[usize]| MetaValue::Array(l.iter().map(|&i| MetaValue::I32(i as i32)).collect());
    let f32s = |l: &[f32; 3]| MetaValue::Array(l.iter().map(|&x| MetaValue::F32(x)).collect());
    let v = &cfg.vision;
    md.extend([
        (k(keys::CROSS_ATTENTION_LAYERS), i32s(&cfg.cross_layers)),
        (k(keys::VISION_BLOCK_COUNT), u32v(v.n_layer)),
        (k(keys::VISION_GLOBAL_BLOCK_COUNT), u32v(v.n_global_layer)),
        (
            k(keys::VISION_INTERMEDIATE_LAYERS),
            i32s(&v.intermediate_layers),
        ),
        (k(keys::VISION_EMBEDDING_LENGTH), u32v(v.n_embd)),
        (k(keys::VISION_FEED_FORWARD_LENGTH), u32v(v.n_ff)),
        (k(keys::VISION_HEAD_COUNT), u32v(v.n_head)),
        (
            k(keys::VISION_LAYER_NORM_EPS),
            MetaValue::F32(v.norm_eps as f32),
        ),
        (k(keys::VISION_IMAGE_SIZE), u32v(v.image_size)),
        (k(keys::VISION_PATCH_SIZE), u32v(v.patch_size)),
        (k(keys::VISION_MAX_NUM_TILES), u32v(v.max_num_tiles)),
        (k(keys::VISION_NUM_CHANNELS), u32v(v.n_channels)),
        (k(keys::VISION_IMAGE_MEAN), f32s(&cfg.image_mean)),
        (k(keys::VISION_IMAGE_STD), f32s(&cfg.image_std)),
    ]);
    md
}

/// Converts an `MllamaForConditionalGeneration` directory whose `config.json` is `config`.
pub fn convert(
    opts: &ConvertOptions,
    config: JsonFile,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary, ConvertError> {
    let dir = &opts.input;
    let cfg = MllamaConfig::read(dir, &config)?;
    let ckpt = Checkpoint::open(dir)?;
    let ft = opts
        .outtype
        .unwrap_or_else(|| super::guess_file_type(&ckpt));
    let plan = plan(&cfg, &ckpt, ft)?;
    // All of tokenizer.json's tokens (128257 with `<|image|>`), at most one per embedding row.
    let vocab = Vocab::read_extended(dir, &cfg.text, cfg.text.n_vocab + EXTRA_EMBEDDING_ROWS)?;
    let metadata = write::metadata_for(dir, GGUF_ARCH, hparams_metadata(&cfg, ft), &plan, &vocab);
    super::write_output(opts, &ckpt, ft, &plan, &metadata, on_event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_ollama_and_llama_cpp() {
        let ft = FileType::Q8_0;
        assert_eq!(
            tensor_type("blk.0.attn_q.weight", &[64, 64], ft),
            GgmlType::Q8_0
        );
        assert_eq!(
            tensor_type("blk.0.attn_q.weight", &[40, 64], ft),
            GgmlType::F16
        );
        assert_eq!(
            tensor_type("v.blk.0.attn_q.weight", &[64, 64], ft),
            GgmlType::F16
        );
        assert_eq!(tensor_type("mm.0.weight", &[96, 64], ft), GgmlType::F16);
        assert_eq!(tensor_type("mm.0.bias", &[64], ft), GgmlType::F32);
        assert_eq!(
            tensor_type(names::V_TILE_POSITION_EMBD, &[2176, 9], FileType::F16),
            GgmlType::F32
        );
        assert_eq!(
            tensor_type("v.patch_embd.weight", &[14, 14, 3, 32], FileType::F16),
            GgmlType::F16
        );
        assert_eq!(
            tensor_type("blk.1.cross_attn_q_norm.weight", &[16], FileType::F16),
            GgmlType::F32
        );
    }

    #[test]
    fn default_aspect_ratio_rows_match_the_processor_list() {
        // (1,1) (1,2) (1,3) (1,4) (2,1) (2,2) (3,1) (4,1) + the padding row.
        let rows: usize = (1..=4usize).map(|r| 4 / r).sum::<usize>() + 1;
        assert_eq!(rows, 9);
    }
}
