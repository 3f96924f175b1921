//! `LlamaForCausalLM` (and `MistralForCausalLM`, which llama.cpp converts the same way) → GGUF
//! arch `llama`, as llama.cpp's `LlamaModel` converter does it: tensor names, the Q/K row
//! permutation, `rope_freqs` for llama3 RoPE scaling, tied embeddings, hyper-parameter keys.
//! The planning machinery here ([`Expected`], [`plan_checkpoint`]) serves the other text
//! families too (`super::family`).

use std::collections::HashMap;

use lumen::gguf::writer::MetaValue;
use lumen::gguf::{keys, names};
use lumen::kernels::{dequantize_row, GgmlType};

use super::hf::{HfConfig, Llama3Rope, RopeScaling};
use super::safetensors::{Checkpoint, SrcTensor};
use super::{ConvertError, FileType};

/// Hugging Face classes this module converts.
pub const HF_ARCHITECTURES: &[&str] = &["LlamaForCausalLM", "MistralForCausalLM"];
pub const GGUF_ARCH: &str = "llama";

/// Where an output tensor's values come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A checkpoint tensor; `permute_heads` = undo HF's rotate-half row order over that many
    /// heads (Q and K only).
    Checkpoint {
        tensor: SrcTensor,
        hf_name: String,
        permute_heads: Option<usize>,
    },
    /// Values computed by the converter (`rope_freqs`, LongRoPE factors, Gemma's 1 + w norms).
    Generated(Vec<f32>),
}

/// One tensor of the output file.
#[derive(Clone, Debug)]
pub struct TensorPlan {
    pub name: String,
    /// GGUF order (innermost first): a PyTorch `[out, in]` matrix becomes `[in, out]`.
    pub shape: Vec<usize>,
    pub ty: GgmlType,
    pub source: Source,
}

impl TensorPlan {
    /// Elements per row (the innermost dimension) and number of rows.
    pub fn cols_rows(&self) -> (usize, usize) {
        let cols = self.shape.first().copied().unwrap_or(1);
        (cols, self.shape.iter().skip(1).product())
    }

    pub fn n_bytes(&self) -> usize {
        let (cols, rows) = self.cols_rows();
        // Types are chosen so rows are whole blocks (see `tensor_type`).
        self.ty.row_bytes(cols).unwrap_or(0) * rows
    }
}

/// What the converter does to a checkpoint tensor's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transform {
    Copy,
    /// Undo HF's rotate-half row order over this many heads (llama Q and K).
    Permute(usize),
    /// `w + 1` (Gemma's norms, which HF stores zero-centred), computed in the checkpoint's
    /// precision when that is F16 (as torch does) and in f32 otherwise.
    AddOne,
}

/// An expected checkpoint tensor: its GGUF name, PyTorch shape and transform.
#[derive(Clone, Debug)]
pub(crate) struct Expected {
    pub gguf: String,
    pub shape: Vec<usize>,
    pub transform: Transform,
    /// A tensor llama.cpp converts when the checkpoint has it, with no complaint when it does
    /// not (a tied model's `lm_head`).
    pub optional: bool,
}

impl Expected {
    pub fn new(gguf: impl Into<String>, shape: Vec<usize>, transform: Transform) -> Self {
        Self {
            gguf: gguf.into(),
            shape,
            transform,
            optional: false,
        }
    }
}

/// Every tensor a `LlamaForCausalLM` checkpoint must hold, keyed by its HF name.
fn expected_tensors(cfg: &HfConfig) -> HashMap<String, Expected> {
    let (e, ff, v) = (cfg.n_embd, cfg.n_ff, cfg.n_vocab);
    let hd = cfg.head_dim();
    let (q, kv) = (cfg.n_head * hd, cfg.n_head_kv * hd);
    let mut out = HashMap::new();
    let mut add = |hf: String, gguf: String, shape: Vec<usize>, permute_heads: Option<usize>| {
        let transform = permute_heads.map_or(Transform::Copy, Transform::Permute);
        out.insert(hf, Expected::new(gguf, shape, transform));
    };
    add(
        "model.embed_tokens.weight".into(),
        names::TOKEN_EMBD.into(),
        vec![v, e],
        None,
    );
    add(
        "model.norm.weight".into(),
        names::OUTPUT_NORM.into(),
        vec![e],
        None,
    );
    if !cfg.tie_word_embeddings {
        add(
            "lm_head.weight".into(),
            names::OUTPUT.into(),
            vec![v, e],
            None,
        );
    }
    for i in 0..cfg.n_layer {
        let layer = [
            ("input_layernorm", names::ATTN_NORM, vec![e], None),
            (
                "self_attn.q_proj",
                names::ATTN_Q,
                vec![q, e],
                Some(cfg.n_head),
            ),
            (
                "self_attn.k_proj",
                names::ATTN_K,
                vec![kv, e],
                Some(cfg.n_head_kv),
            ),
            ("self_attn.v_proj", names::ATTN_V, vec![kv, e], None),
            ("self_attn.o_proj", names::ATTN_OUTPUT, vec![e, q], None),
            ("post_attention_layernorm", names::FFN_NORM, vec![e], None),
            ("mlp.gate_proj", names::FFN_GATE, vec![ff, e], None),
            ("mlp.up_proj", names::FFN_UP, vec![ff, e], None),
            ("mlp.down_proj", names::FFN_DOWN, vec![e, ff], None),
        ];
        for (hf, suffix, shape, perm) in layer {
            add(
                format!("model.layers.{i}.{hf}.weight"),
                names::blk(i, suffix),
                shape,
                perm,
            );
        }
    }
    out
}

/// Checkpoint tensors llama.cpp drops, whatever the architecture.
pub(crate) fn always_ignored(hf_name: &str) -> bool {
    hf_name.ends_with(".rotary_emb.inv_freq")
        || hf_name.ends_with(".attention.masked_bias")
        || hf_name.ends_with(".attention.bias")
}

/// Checkpoint tensors llama.cpp drops.
fn ignored(hf_name: &str, cfg: &HfConfig) -> bool {
    always_ignored(hf_name)
        // A tied checkpoint that still stores the head: it is the embedding matrix again.
        || (cfg.tie_word_embeddings && hf_name == "lm_head.weight")
}

/// The llama3 `rope_freqs` tensor when the config asks for it.
pub(crate) fn generated_rope_freqs(cfg: &HfConfig) -> Vec<TensorPlan> {
    let RopeScaling::Llama3(r) = &cfg.rope_scaling else {
        return Vec::new();
    };
    let freqs = llama3_rope_factors(cfg.rope_theta.unwrap_or(10000.0), cfg.head_dim(), r);
    vec![TensorPlan {
        name: names::ROPE_FREQS.into(),
        shape: vec![freqs.len()],
        ty: GgmlType::F32,
        source: Source::Generated(freqs),
    }]
}

/// The output tensors in llama.cpp's order (generated `rope_freqs` first, then the
/// checkpoint's tensors shard by shard), each checked against the config.
pub fn plan(
    cfg: &HfConfig,
    ckpt: &Checkpoint,
    ft: FileType,
) -> Result<Vec<TensorPlan>, ConvertError> {
    plan_checkpoint(
        cfg,
        ckpt,
        ft,
        expected_tensors(cfg),
        &|name| ignored(name, cfg),
        generated_rope_freqs(cfg),
    )
}

/// The output tensors: `generated` first (llama.cpp's `generate_extra_tensors`), then the
/// checkpoint's tensors in shard and name order, each found in `expected` (else it is an
/// unexpected tensor) unless `ignored`, and checked against its expected shape; a required
/// expected tensor the checkpoint lacks is an error.
pub(crate) fn plan_checkpoint(
    cfg: &HfConfig,
    ckpt: &Checkpoint,
    ft: FileType,
    mut expected: HashMap<String, Expected>,
    ignored: &dyn Fn(&str) -> bool,
    generated: Vec<TensorPlan>,
) -> Result<Vec<TensorPlan>, ConvertError> {
    let mut out = generated;
    for ((_, hf_name), t) in &ckpt.tensors {
        if ignored(hf_name) {
            continue;
        }
        let Some(exp) = expected.remove(hf_name) else {
            return Err(ConvertError::UnexpectedTensor {
                path: ckpt.shard_path(t).to_path_buf(),
                tensor: hf_name.clone(),
            });
        };
        out.push(checked_tensor(ckpt, hf_name, t, exp, ft)?);
    }
    let missing = expected
        .into_iter()
        .filter(|(_, e)| !e.optional)
        .map(|(k, _)| k)
        .min();
    if let Some(hf_name) = missing {
        return Err(ConvertError::MissingTensor {
            dir: cfg
                .path
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default(),
            tensor: hf_name,
        });
    }
    Ok(out)
}

fn checked_tensor(
    ckpt: &Checkpoint,
    hf_name: &str,
    t: &SrcTensor,
    exp: Expected,
    ft: FileType,
) -> Result<TensorPlan, ConvertError> {
    let path = ckpt.shard_path(t).to_path_buf();
    if let Err(dtype) = &t.dtype {
        return Err(ConvertError::UnsupportedDtype {
            path,
            tensor: hf_name.into(),
            dtype: dtype.clone(),
        });
    }
    if t.shape != exp.shape {
        return Err(ConvertError::ShapeMismatch {
            path,
            tensor: hf_name.into(),
            found: t.shape.clone(),
            expected: exp.shape,
        });
    }
    let shape: Vec<usize> = exp.shape.iter().rev().copied().collect();
    let source = match exp.transform {
        Transform::AddOne => Source::Generated(plus_one(ckpt, hf_name, t)?),
        Transform::Copy | Transform::Permute(_) => Source::Checkpoint {
            tensor: t.clone(),
            hf_name: hf_name.into(),
            permute_heads: match exp.transform {
                Transform::Permute(h) => Some(h),
                _ => None,
            },
        },
    };
    Ok(TensorPlan {
        ty: tensor_type(&exp.gguf, &shape, ft),
        name: exp.gguf,
        shape,
        source,
    })
}

/// A (small) checkpoint tensor's values plus one, as llama.cpp's torch code computes them: an
/// F16 tensor stays F16 (the sum is rounded to F16), BF16 and F32 ones are added in f32.
fn plus_one(ckpt: &Checkpoint, hf_name: &str, t: &SrcTensor) -> Result<Vec<f32>, ConvertError> {
    let path = ckpt.shard_path(t).to_path_buf();
    let dtype = t
        .dtype
        .clone()
        .map_err(|dtype| ConvertError::UnsupportedDtype {
            path: path.clone(),
            tensor: hf_name.into(),
            dtype,
        })?;
    let n: usize = t.shape.iter().product();
    let mut values = vec![0f32; n];
    dequantize_row(dtype.ggml(), ckpt.bytes(t), &mut values).map_err(|e| {
        ConvertError::BadHeader {
            path,
            message: format!("tensor '{hf_name}': {e}"),
        }
    })?;
    let f16 = dtype == super::safetensors::SrcDtype::F16;
    Ok(values
        .into_iter()
        .map(|v| {
            let s = v + 1.0;
            if f16 {
                half::f16::from_f32(s).to_f32()
            } else {
                s
            }
        })
        .collect())
}

/// llama.cpp's choice: 1-D tensors and norms stay F32 (its kernels expect that); the rest
/// takes the file type, and a row that is not whole Q8_0 blocks falls back to F16.
pub(crate) fn tensor_type(gguf_name: &str, shape: &[usize], ft: FileType) -> GgmlType {
    if shape.len() <= 1 || gguf_name.ends_with("_norm.weight") {
        return GgmlType::F32;
    }
    let ty = ft.tensor_type();
    match ty.row_bytes(shape[0]) {
        Some(_) => ty,
        None => GgmlType::F16,
    }
}

/// llama.cpp's `rope_freqs` for llama3 scaling: one divisor per rotated pair, 1 for high
/// frequencies, `factor` for low ones, a smooth blend between. Computed in f32 like the
/// converter's torch code.
pub fn llama3_rope_factors(theta: f64, head_dim: usize, r: &Llama3Rope) -> Vec<f32> {
    let low_wavelen = r.original_context / r.low_freq_factor;
    let high_wavelen = r.original_context / r.high_freq_factor;
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                r.factor
            } else {
                let smooth = (r.original_context / wavelen - r.low_freq_factor)
                    / (r.high_freq_factor - r.low_freq_factor);
                1.0 / ((1.0 - smooth) / r.factor + smooth)
            }
        })
        .collect()
}

/// The source row that lands at output row `r`: llama.cpp's `permute` views each head's rows
/// as `[2, head_dim/2]` and swaps the two axes, so output row `h·d + 2b + a` takes source row
/// `h·d + a·d/2 + b` (the interleaved pair order ggml's RoPE rotates).
pub fn permuted_source_row(r: usize, rows: usize, heads: usize) -> usize {
    let d = rows / heads;
    let (h, within) = (r / d, r % d);
    let (b, a) = (within / 2, within % 2);
    h * d + a * (d / 2) + b
}

/// `llama.*` hyper-parameter keys in llama.cpp's order; `general.file_type` sits between
/// them as it does there.
pub fn hparams_metadata(cfg: &HfConfig, ft: FileType) -> Vec<(String, MetaValue)> {
    let k = |s| keys::arch_key(GGUF_ARCH, s);
    let u32v = |v: usize| MetaValue::U32(v as u32);
    let mut md = vec![(k(keys::BLOCK_COUNT), u32v(cfg.n_layer))];
    if let Some(n) = cfg.n_ctx {
        md.push((k(keys::CONTEXT_LENGTH), u32v(n)));
    }
    md.push((k(keys::EMBEDDING_LENGTH), u32v(cfg.n_embd)));
    md.push((k(keys::FEED_FORWARD_LENGTH), u32v(cfg.n_ff)));
    md.push((k(keys::HEAD_COUNT), u32v(cfg.n_head)));
    md.push((k(keys::HEAD_COUNT_KV), u32v(cfg.n_head_kv)));
    if let RopeScaling::Linear(f) = cfg.rope_scaling {
        md.push((k(keys::ROPE_SCALING_TYPE), MetaValue::Str("linear".into())));
        md.push((k(keys::ROPE_SCALING_FACTOR), MetaValue::F32(f)));
    }
    if let Some(t) = cfg.rope_theta {
        md.push((k(keys::ROPE_FREQ_BASE), MetaValue::F32(t as f32)));
    }
    if let Some(eps) = cfg.rms_eps {
        md.push((k(keys::RMS_EPS), MetaValue::F32(eps as f32)));
    }
    if let Some(hd) = cfg.head_dim_explicit {
        md.push((k(keys::KEY_LENGTH), u32v(hd)));
        md.push((k(keys::VALUE_LENGTH), u32v(hd)));
    }
    md.push((keys::GENERAL_FILE_TYPE.into(), MetaValue::U32(ft.id())));
    md.push((k(keys::VOCAB_SIZE), u32v(cfg.n_vocab)));
    md.push((k(keys::ROPE_DIMENSION_COUNT), u32v(cfg.head_dim())));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_llama_cpp_reshape_swapaxes() {
        // numpy: np.arange(8).reshape(2, 2, 2).swapaxes(1, 2).reshape(8) for 2 heads of d=4
        // = [0, 2, 1, 3, 4, 6, 5, 7]
        let got: Vec<usize> = (0..8).map(|r| permuted_source_row(r, 8, 2)).collect();
        assert_eq!(got, [0, 2, 1, 3, 4, 6, 5, 7]);
    }

    #[test]
    fn llama3_factors_match_llama_cpp_on_the_fixture_config() {
        // llama.cpp's converter wrote these for tiny-llama (theta 5e5, head_dim 16, factor 32).
        let r = Llama3Rope {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_context: 8192.0,
        };
        let f = llama3_rope_factors(500000.0, 16, &r);
        let want = [1.0, 1.0, 1.0, 1.0, 3.292_262_8, 32.0, 32.0, 32.0];
        for (a, b) in f.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{f:?}");
        }
    }
}
