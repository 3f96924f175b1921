//! The decoder-only text families beyond Llama, converted the way llama.cpp's
//! `convert_hf_to_gguf.py` does (`conversion/{qwen,gemma,phi,llama}.py` on top of `TextModel`):
//!
//! | Hugging Face class | GGUF arch | what the converter does |
//! |---|---|---|
//! | `LlamaForCausalLM`, `MistralForCausalLM` | `llama` | [`super::llama`]: Q/K rows permuted for ggml's RoPE, `llama.vocab_size` and `rope.dimension_count` |
//! | `Qwen2ForCausalLM` | `qwen2` | names only (Q/K/V biases kept); `TextModel`'s keys |
//! | `Qwen3ForCausalLM` | `qwen3` | names only (`attn_q_norm`/`attn_k_norm` per head) |
//! | `Gemma2ForCausalLM` | `gemma2` | every `*norm.weight` becomes `1 + w`; `lm_head` dropped; soft-capping and window keys |
//! | `Gemma3ForCausalLM` | `gemma3` | `1 + w` norms (Q/K norms too); `TextModel`'s keys with Gemma 3's defaults on top, `rope.freq_base_swa` |
//! | `Phi3ForCausalLM` | `phi3` | fused `qkv_proj` → `attn_qkv` and `gate_up_proj` → `ffn_up` kept as they are; LongRoPE factors as tensors |
//!
//! Vocabularies: `tokenizer.model` (SentencePiece, `tokenizer.ggml.model = "llama"`) where
//! llama.cpp reads one (Gemma, Phi-3, Mistral and Llama 2 checkpoints; Gemma 3 and Qwen only
//! when present), else `tokenizer.json` (byte-level BPE). See [`super::vocab`].
//!
//! Not converted (a named error instead): embedding/reranker variants (llama.cpp's pooling and
//! `cls_out` handling), RoPE scaling types a family's llama.cpp code would ignore or not write.
//! Gemma 3's trimming of `embed_tokens` to the vocabulary is not needed: the shape check already
//! requires exactly `vocab_size` rows, which is what the trim leaves.

use std::collections::HashMap;
use std::path::Path;

use lumen::gguf::writer::MetaValue;
use lumen::gguf::{keys, names};
use lumen::kernels::GgmlType;
use serde_json::Value;

use super::hf::{HfConfig, JsonFile, RopeScaling};
use super::llama::{self, Expected, Source, TensorPlan, Transform};
use super::safetensors::Checkpoint;
use super::vocab::{SpacePrefix, SpmFlavor, Vocab};
use super::{write, ConvertError, ConvertOptions, Event, FileType, Summary};

/// A text family the converter handles (all but mllama).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Qwen2,
    Qwen3,
    Gemma2,
    Gemma3,
    Phi3,
}

/// Hugging Face classes this module converts, with their family.
const CLASSES: [(&str, Family); 7] = [
    ("LlamaForCausalLM", Family::Llama),
    ("MistralForCausalLM", Family::Llama),
    ("Qwen2ForCausalLM", Family::Qwen2),
    ("Qwen3ForCausalLM", Family::Qwen3),
    ("Gemma2ForCausalLM", Family::Gemma2),
    ("Gemma3ForCausalLM", Family::Gemma3),
    ("Phi3ForCausalLM", Family::Phi3),
];

/// The class names, for error messages.
pub fn hf_architectures() -> impl Iterator<Item = &'static str> {
    CLASSES.iter().map(|c| c.0)
}

impl Family {
    pub fn from_hf(class: &str) -> Option<Self> {
        CLASSES.iter().find(|c| c.0 == class).map(|c| c.1)
    }

    /// `general.architecture`.
    pub fn gguf_arch(self) -> &'static str {
        match self {
            Family::Llama => llama::GGUF_ARCH,
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Gemma2 => "gemma2",
            Family::Gemma3 => "gemma3",
            Family::Phi3 => "phi3",
        }
    }

    fn is_gemma(self) -> bool {
        matches!(self, Family::Gemma2 | Family::Gemma3)
    }
}

/// Converts a checkpoint of `family` whose `config.json` is `json`.
pub fn convert(
    opts: &ConvertOptions,
    json: JsonFile,
    family: Family,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary, ConvertError> {
    let dir = &opts.input;
    let cfg = read_config(json, family)?;
    let ckpt = Checkpoint::open(dir)?;
    let ft = match opts.outtype {
        Some(ft) => ft,
        None => super::guess_file_type(&ckpt),
    };
    // Config keys first: a missing key is named before the tensors it shapes are checked.
    let (early, hparams) = hparams_metadata(family, &cfg, ft)?;
    let plan = plan(family, &cfg, &ckpt, ft)?;
    let vocab = vocab(family, dir, &cfg)?;
    let mut metadata = write::metadata_for(dir, family.gguf_arch(), hparams, &plan, &vocab);
    // Keys llama.cpp adds while it prepares the tensors land right after the architecture.
    for (i, kv) in early.into_iter().enumerate() {
        metadata.insert(1 + i, kv);
    }
    super::write_output(opts, &ckpt, ft, &plan, &metadata, on_event)
}

/// `config.json` read as a text config, with Gemma 3's defaults and each family's RoPE limits.
pub fn read_config(json: JsonFile, family: Family) -> Result<HfConfig, ConvertError> {
    let mut cfg = HfConfig::from_json(json)?;
    if family == Family::Gemma3 {
        // Gemma3TextConfig's defaults, which llama.cpp's converter assumes too.
        if cfg.json.get("head_dim").is_none() {
            cfg.head_dim_explicit = Some(256);
        }
        if cfg.json.get("num_key_value_heads").is_none() {
            cfg.n_head_kv = 4;
        }
        if !cfg.n_head.is_multiple_of(cfg.n_head_kv) {
            return Err(cfg.json.bad(
                "num_key_value_heads",
                format!(
                    "{} attention heads are not a multiple of {} KV heads",
                    cfg.n_head, cfg.n_head_kv
                ),
            ));
        }
    }
    let supported = matches!(
        (family, &cfg.rope_scaling),
        (_, RopeScaling::None)
            | (
                Family::Llama,
                RopeScaling::Linear(_) | RopeScaling::Llama3(_)
            )
            | (
                Family::Qwen2 | Family::Qwen3 | Family::Gemma3,
                RopeScaling::Linear(_)
            )
            | (Family::Phi3, RopeScaling::LongRope(_))
    );
    if !supported {
        let key = if cfg.json.get("rope_parameters").is_some() {
            "rope_parameters"
        } else {
            "rope_scaling"
        };
        return Err(cfg.json.bad(
            key,
            format!(
                "RoPE type {:?} is not supported for {} (llama.cpp's converter would not carry it into the GGUF)",
                cfg.rope_scaling.name(),
                cfg.architecture
            ),
        ));
    }
    Ok(cfg)
}

/// The output tensors, in llama.cpp's order.
pub fn plan(
    family: Family,
    cfg: &HfConfig,
    ckpt: &Checkpoint,
    ft: FileType,
) -> Result<Vec<TensorPlan>, ConvertError> {
    if family == Family::Llama {
        return llama::plan(cfg, ckpt, ft);
    }
    let generated = match family {
        Family::Phi3 => longrope_factors(cfg)?,
        _ => Vec::new(),
    };
    let ignored = |name: &str| {
        llama::always_ignored(name)
            // Gemma 2's converter skips the head whatever the config says.
            || (family == Family::Gemma2 && name == "lm_head.weight")
    };
    llama::plan_checkpoint(
        cfg,
        ckpt,
        ft,
        expected_tensors(family, cfg)?,
        &ignored,
        generated,
    )
}

/// `attention_bias` from `config.json` (false when absent).
fn attention_bias(cfg: &HfConfig) -> bool {
    cfg.json.bool_opt("attention_bias").unwrap_or(false)
}

/// Every tensor a checkpoint of `family` (not Llama) holds, keyed by its HF name.
fn expected_tensors(
    family: Family,
    cfg: &HfConfig,
) -> Result<HashMap<String, Expected>, ConvertError> {
    let (e, ff, v) = (cfg.n_embd, cfg.n_ff, cfg.n_vocab);
    let hd = cfg.head_dim();
    let (q, kv) = (cfg.n_head * hd, cfg.n_head_kv * hd);
    let norm = if family.is_gemma() {
        Transform::AddOne
    } else {
        Transform::Copy
    };
    let mut out = HashMap::new();
    let mut add = |hf: String, gguf: String, shape: Vec<usize>, tr: Transform| {
        out.insert(hf, Expected::new(gguf, shape, tr));
    };
    add(
        "model.embed_tokens.weight".into(),
        names::TOKEN_EMBD.into(),
        vec![v, e],
        Transform::Copy,
    );
    add(
        "model.norm.weight".into(),
        names::OUTPUT_NORM.into(),
        vec![e],
        norm,
    );
    let copy = Transform::Copy;
    for i in 0..cfg.n_layer {
        let mut layer: Vec<(&str, &str, Vec<usize>, Transform)> = vec![
            ("input_layernorm.weight", names::ATTN_NORM, vec![e], norm),
            (
                "self_attn.o_proj.weight",
                names::ATTN_OUTPUT,
                vec![e, q],
                copy,
            ),
            ("mlp.down_proj.weight", names::FFN_DOWN, vec![e, ff], copy),
        ];
        if family == Family::Phi3 {
            layer.extend([
                (
                    "self_attn.qkv_proj.weight",
                    names::ATTN_QKV,
                    vec![q + 2 * kv, e],
                    copy,
                ),
                (
                    "mlp.gate_up_proj.weight",
                    names::FFN_UP,
                    vec![2 * ff, e],
                    copy,
                ),
                (
                    "post_attention_layernorm.weight",
                    names::FFN_NORM,
                    vec![e],
                    copy,
                ),
            ]);
        } else {
            layer.extend([
                ("self_attn.q_proj.weight", names::ATTN_Q, vec![q, e], copy),
                ("self_attn.k_proj.weight", names::ATTN_K, vec![kv, e], copy),
                ("self_attn.v_proj.weight", names::ATTN_V, vec![kv, e], copy),
                ("mlp.gate_proj.weight", names::FFN_GATE, vec![ff, e], copy),
                ("mlp.up_proj.weight", names::FFN_UP, vec![ff, e], copy),
            ]);
        }
        if family.is_gemma() {
            layer.extend([
                (
                    "post_attention_layernorm.weight",
                    names::ATTN_POST_NORM,
                    vec![e],
                    norm,
                ),
                (
                    "pre_feedforward_layernorm.weight",
                    names::FFN_NORM,
                    vec![e],
                    norm,
                ),
                (
                    "post_feedforward_layernorm.weight",
                    names::FFN_POST_NORM,
                    vec![e],
                    norm,
                ),
            ]);
        } else if family != Family::Phi3 {
            layer.push((
                "post_attention_layernorm.weight",
                names::FFN_NORM,
                vec![e],
                copy,
            ));
        }
        if matches!(family, Family::Qwen3 | Family::Gemma3) {
            layer.extend([
                (
                    "self_attn.q_norm.weight",
                    names::ATTN_Q_NORM,
                    vec![hd],
                    norm,
                ),
                (
                    "self_attn.k_norm.weight",
                    names::ATTN_K_NORM,
                    vec![hd],
                    norm,
                ),
            ]);
        }
        // Qwen2 always has Q/K/V biases; Qwen3 and Gemma have Q/K/V/O biases when
        // `attention_bias` says so (Phi-3 has none).
        let qkv_bias = family == Family::Qwen2
            || (matches!(family, Family::Qwen3 | Family::Gemma2 | Family::Gemma3)
                && attention_bias(cfg));
        if qkv_bias {
            layer.extend([
                ("self_attn.q_proj.bias", names::ATTN_Q_BIAS, vec![q], copy),
                ("self_attn.k_proj.bias", names::ATTN_K_BIAS, vec![kv], copy),
                ("self_attn.v_proj.bias", names::ATTN_V_BIAS, vec![kv], copy),
            ]);
            if family != Family::Qwen2 {
                layer.push((
                    "self_attn.o_proj.bias",
                    names::ATTN_OUTPUT_BIAS,
                    vec![e],
                    copy,
                ));
            }
        }
        for (hf, gguf, shape, tr) in layer {
            add(
                format!("model.layers.{i}.{hf}"),
                names::blk(i, gguf),
                shape,
                tr,
            );
        }
    }
    // The head: required when untied; a tied checkpoint that still stores it gets it converted,
    // as llama.cpp converts every tensor it finds (Gemma 2 drops it: see `plan`).
    let head = Expected {
        optional: cfg.tie_word_embeddings,
        ..Expected::new(names::OUTPUT, vec![v, e], Transform::Copy)
    };
    if family != Family::Gemma2 {
        out.insert("lm_head.weight".into(), head);
    }
    Ok(out)
}

/// Phi-3 LongRoPE: `rope_factors_long` and `rope_factors_short`, `n_rot / 2` each.
fn longrope_factors(cfg: &HfConfig) -> Result<Vec<TensorPlan>, ConvertError> {
    let RopeScaling::LongRope(r) = &cfg.rope_scaling else {
        return Ok(Vec::new());
    };
    let n_rot = phi3_rope_dims(cfg);
    if r.long_factor.len() != r.short_factor.len() || 2 * r.long_factor.len() != n_rot {
        return Err(cfg.json.bad(
            "rope_parameters.long_factor",
            format!(
                "long_factor has {} and short_factor {} entries; {} rotated dimensions need {} each",
                r.long_factor.len(),
                r.short_factor.len(),
                n_rot,
                n_rot as f64 / 2.0
            ),
        ));
    }
    Ok([
        (names::ROPE_FACTORS_LONG, &r.long_factor),
        (names::ROPE_FACTORS_SHORT, &r.short_factor),
    ]
    .into_iter()
    .map(|(name, f)| TensorPlan {
        name: name.into(),
        shape: vec![f.len()],
        ty: GgmlType::F32,
        source: Source::Generated(f.clone()),
    })
    .collect())
}

/// `int(partial_rotary_factor * n_embd) // n_head`, as Python computes it.
fn phi3_rope_dims(cfg: &HfConfig) -> usize {
    let pct = cfg.partial_rotary_factor.unwrap_or(1.0);
    ((pct * cfg.n_embd as f64).trunc().max(0.0) as usize) / cfg.n_head
}

/// The family's vocabulary (see the module doc for which file each reads).
pub fn vocab(family: Family, dir: &Path, cfg: &HfConfig) -> Result<Vocab, ConvertError> {
    let has_spm = dir.join("tokenizer.model").is_file();
    let tok_config = JsonFile::read_optional(&dir.join("tokenizer_config.json"))?;
    let mut v = match family {
        Family::Llama | Family::Qwen2 | Family::Qwen3 if has_spm => {
            Vocab::read_spm(dir, cfg, SpmFlavor::Common)?
        }
        Family::Llama | Family::Qwen2 | Family::Qwen3 => Vocab::read(dir, cfg)?,
        Family::Gemma3 if !has_spm => Vocab::read(dir, cfg)?,
        Family::Gemma2 | Family::Gemma3 => {
            let mut v = Vocab::read_spm(dir, cfg, SpmFlavor::Common)?;
            v.space_prefix = SpacePrefix::After(false);
            return Ok(v);
        }
        Family::Phi3 => {
            let class = tok_config
                .as_ref()
                .and_then(|tc| tc.get("tokenizer_class"))
                .and_then(Value::as_str);
            if class == Some("GPT2Tokenizer") {
                Vocab::read(dir, cfg)?
            } else if has_spm {
                Vocab::read_spm(dir, cfg, SpmFlavor::Phi3)?
            } else {
                return Err(ConvertError::Tokenizer {
                    path: dir.join("tokenizer.model"),
                    message: "missing: Phi-3's converter reads the SentencePiece model".into(),
                });
            }
        }
    };
    // Only the llama converter writes `tokenizer_config.json`'s `add_prefix_space`.
    v.space_prefix = match (
        family,
        tok_config
            .as_ref()
            .and_then(|c| c.bool_opt("add_prefix_space")),
    ) {
        (Family::Llama, Some(b)) => SpacePrefix::Before(b),
        _ => SpacePrefix::None,
    };
    Ok(v)
}

/// `{arch}.*` keys (with `general.file_type` where llama.cpp puts it) in llama.cpp's order,
/// upserting like its writer (a key set twice keeps its first place).
struct Keys {
    arch: &'static str,
    md: Vec<(String, MetaValue)>,
}

impl Keys {
    fn new(arch: &'static str) -> Self {
        Self {
            arch,
            md: Vec::new(),
        }
    }

    fn set_raw(&mut self, key: String, v: MetaValue) {
        match self.md.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = v,
            None => self.md.push((key, v)),
        }
    }

    fn set(&mut self, suffix: &str, v: MetaValue) {
        self.set_raw(keys::arch_key(self.arch, suffix), v);
    }

    fn u32(&mut self, suffix: &str, v: usize) {
        self.set(suffix, MetaValue::U32(v as u32));
    }

    fn f32(&mut self, suffix: &str, v: f64) {
        self.set(suffix, MetaValue::F32(v as f32));
    }
}

/// A required number from `config.json`.
fn required_f64(json: &JsonFile, key: &str, why: &str) -> Result<f64, ConvertError> {
    json.f64_opt(key)?
        .ok_or_else(|| json.bad(key, format!("missing ({why})")))
}

/// A required non-negative integer from `config.json` (`null` counts as missing).
fn required_u32(json: &JsonFile, key: &str, why: &str) -> Result<usize, ConvertError> {
    match json.get(key) {
        None => Err(json.bad(key, format!("missing ({why})"))),
        Some(v) => v
            .as_u64()
            .filter(|&n| n <= u32::MAX as u64)
            .map(|n| n as usize)
            .ok_or_else(|| json.bad(key, format!("{v} is not an integer in 0..=4294967295"))),
    }
}

/// The hyper-parameter keys: (keys llama.cpp writes while preparing tensors, which go right
/// after `general.architecture`; the rest, placed after the naming keys).
#[allow(clippy::type_complexity)]
pub fn hparams_metadata(
    family: Family,
    cfg: &HfConfig,
    ft: FileType,
) -> Result<(Vec<(String, MetaValue)>, Vec<(String, MetaValue)>), ConvertError> {
    let arch = family.gguf_arch();
    let json = &cfg.json;
    let mut k = Keys::new(arch);
    let mut early = Keys::new(arch);
    match family {
        Family::Llama => return Ok((Vec::new(), llama::hparams_metadata(cfg, ft))),
        Family::Qwen2 | Family::Qwen3 => text_model_keys(&mut k, cfg, ft),
        Family::Gemma2 => {
            let why = "Gemma 2's converter requires it";
            k.u32(
                keys::CONTEXT_LENGTH,
                required_u32(json, "max_position_embeddings", why)?,
            );
            k.u32(keys::EMBEDDING_LENGTH, cfg.n_embd);
            k.u32(keys::BLOCK_COUNT, cfg.n_layer);
            k.u32(keys::FEED_FORWARD_LENGTH, cfg.n_ff);
            k.u32(keys::HEAD_COUNT, cfg.n_head);
            k.u32(keys::HEAD_COUNT_KV, cfg.n_head_kv);
            k.f32(keys::RMS_EPS, required_f64(json, "rms_norm_eps", why)?);
            let hd = required_u32(json, "head_dim", why)?;
            k.u32(keys::KEY_LENGTH, hd);
            k.u32(keys::VALUE_LENGTH, hd);
            k.set_raw(keys::GENERAL_FILE_TYPE.into(), MetaValue::U32(ft.id()));
            k.f32(
                keys::ATTN_LOGIT_SOFTCAPPING,
                required_f64(json, "attn_logit_softcapping", why)?,
            );
            k.f32(
                keys::FINAL_LOGIT_SOFTCAPPING,
                required_f64(json, "final_logit_softcapping", why)?,
            );
            k.u32(
                keys::SLIDING_WINDOW,
                required_u32(json, "sliding_window", why)?,
            );
        }
        Family::Gemma3 => {
            text_model_keys(&mut k, cfg, ft);
            k.u32(keys::CONTEXT_LENGTH, cfg.n_ctx.unwrap_or(131072));
            k.u32(keys::HEAD_COUNT, cfg.n_head);
            k.f32(keys::RMS_EPS, cfg.rms_eps.unwrap_or(1e-6));
            k.u32(keys::KEY_LENGTH, cfg.head_dim());
            k.u32(keys::VALUE_LENGTH, cfg.head_dim());
            k.f32(keys::ROPE_FREQ_BASE, cfg.rope_theta.unwrap_or(1_000_000.0));
            if let Some(v) = json.get("attn_logit_softcapping") {
                return Err(json.bad(
                    "attn_logit_softcapping",
                    format!(
                        "{v}: Gemma 3 has no attention soft-capping (llama.cpp asserts it is null)"
                    ),
                ));
            }
            match json.f64_opt("final_logit_softcapping")? {
                Some(c) if c != 0.0 => k.f32(keys::FINAL_LOGIT_SOFTCAPPING, c),
                _ => {}
            }
            let pattern = json.get("sliding_window_pattern").and_then(Value::as_u64);
            if pattern != Some(1) {
                let why = "Gemma 3's converter requires it unless sliding_window_pattern is 1";
                k.u32(
                    keys::SLIDING_WINDOW,
                    required_u32(json, "sliding_window", why)?,
                );
            }
            k.u32(keys::HEAD_COUNT_KV, cfg.n_head_kv);
        }
        Family::Phi3 => {
            let why = "Phi-3's converter requires it";
            let n_ctx = match json.get("n_positions") {
                Some(_) => required_u32(json, "n_positions", why)?,
                None => required_u32(json, "max_position_embeddings", why)?,
            };
            k.u32(keys::CONTEXT_LENGTH, n_ctx);
            let orig = cfg.rope_original_context.ok_or_else(|| {
                json.bad(
                    "original_max_position_embeddings",
                    format!("missing ({why})"),
                )
            })?;
            k.u32(keys::ROPE_SCALING_ORIG_CTX, orig);
            k.u32(keys::EMBEDDING_LENGTH, cfg.n_embd);
            k.u32(keys::FEED_FORWARD_LENGTH, cfg.n_ff);
            k.u32(keys::BLOCK_COUNT, cfg.n_layer);
            k.u32(keys::HEAD_COUNT, cfg.n_head);
            if json.get("num_key_value_heads").is_none() {
                return Err(json.bad("num_key_value_heads", format!("missing ({why})")));
            }
            k.u32(keys::HEAD_COUNT_KV, cfg.n_head_kv);
            k.f32(keys::RMS_EPS, required_f64(json, "rms_norm_eps", why)?);
            k.u32(keys::ROPE_DIMENSION_COUNT, phi3_rope_dims(cfg));
            let theta = cfg
                .rope_theta
                .ok_or_else(|| json.bad("rope_theta", format!("missing ({why})")))?;
            k.f32(keys::ROPE_FREQ_BASE, theta);
            k.set_raw(keys::GENERAL_FILE_TYPE.into(), MetaValue::U32(ft.id()));
            // Phi-4 has none: llama.cpp writes 0 then.
            let window = match json.get("sliding_window") {
                None => 0,
                Some(_) => required_u32(json, "sliding_window", why)?,
            };
            k.u32(keys::SLIDING_WINDOW, window);
            if let RopeScaling::LongRope(r) = &cfg.rope_scaling {
                let scale = n_ctx as f64 / orig as f64;
                let attn_factor = match r.rope_type.as_str() {
                    _ if scale <= 1.0 => 1.0,
                    "yarn" => 0.1 * scale.ln() + 1.0,
                    _ => (1.0 + scale.ln() / (orig as f64).ln()).sqrt(),
                };
                early.f32(keys::ROPE_SCALING_ATTN_FACTOR, attn_factor);
            }
        }
    }
    Ok((early.md, k.md))
}

/// llama.cpp's `TextModel.set_gguf_parameters` for what these configs hold.
fn text_model_keys(k: &mut Keys, cfg: &HfConfig, ft: FileType) {
    k.u32(keys::BLOCK_COUNT, cfg.n_layer);
    if let Some(n) = cfg.n_ctx {
        k.u32(keys::CONTEXT_LENGTH, n);
    }
    k.u32(keys::EMBEDDING_LENGTH, cfg.n_embd);
    k.u32(keys::FEED_FORWARD_LENGTH, cfg.n_ff);
    k.u32(keys::HEAD_COUNT, cfg.n_head);
    if cfg.json.get("num_key_value_heads").is_some() {
        k.u32(keys::HEAD_COUNT_KV, cfg.n_head_kv);
    }
    if let RopeScaling::Linear(f) = cfg.rope_scaling {
        k.set(keys::ROPE_SCALING_TYPE, MetaValue::Str("linear".into()));
        k.set(keys::ROPE_SCALING_FACTOR, MetaValue::F32(f));
    }
    if let Some(t) = cfg.rope_theta {
        k.f32(keys::ROPE_FREQ_BASE, t);
    }
    if let Some(t) = cfg.rope_theta_swa {
        k.f32(keys::ROPE_FREQ_BASE_SWA, t);
    }
    if let Some(eps) = cfg.rms_eps {
        k.f32(keys::RMS_EPS, eps);
    }
    if let Some(hd) = cfg
        .head_dim_explicit
        .filter(|_| cfg.json.get("head_dim").is_some())
    {
        k.u32(keys::KEY_LENGTH, hd);
        k.u32(keys::VALUE_LENGTH, hd);
    }
    k.set_raw(keys::GENERAL_FILE_TYPE.into(), MetaValue::U32(ft.id()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_maps_to_one_family() {
        for (class, f) in CLASSES {
            assert_eq!(Family::from_hf(class), Some(f));
        }
        assert_eq!(Family::from_hf("GPT2LMHeadModel"), None);
    }

    #[test]
    fn keys_upsert_in_place() {
        let mut k = Keys::new("gemma3");
        k.u32(keys::BLOCK_COUNT, 1);
        k.u32(keys::CONTEXT_LENGTH, 2);
        k.u32(keys::BLOCK_COUNT, 3);
        let got: Vec<_> = k.md.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        assert_eq!(
            got,
            [
                ("gemma3.block_count", MetaValue::U32(3)),
                ("gemma3.context_length", MetaValue::U32(2)),
            ]
        );
    }
}
