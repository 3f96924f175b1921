//! llama.cpp's file types (`llama_ftype`) and how `llama-quantize` picks each tensor's type
//! for them (`llama_tensor_get_type` and `tensor_type_fallback` in llama.cpp's
//! `src/llama-quant.cpp`), for the file types Lumen writes. The _S/_M/_L mixes spend more bits
//! on the tensors that hurt most when quantized coarsely: `attn_v`, `ffn_down` of the first,
//! last and every third layer, `attn_output`, and the output projection.

use lumen::kernels::GgmlType;

/// A `llama_ftype` Lumen can write.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

use FileType as F;
use GgmlType as G;

/// (file type, name, `llama_ftype` id, default tensor type), in llama-quantize's listing order.
const FILE_TYPES: [(FileType, &str, u32, GgmlType); 17] = [
    (F::Q4_0, "Q4_0", 2, G::Q4_0),
    (F::Q4_1, "Q4_1", 3, G::Q4_1),
    (F::Q5_0, "Q5_0", 8, G::Q5_0),
    (F::Q5_1, "Q5_1", 9, G::Q5_1),
    (F::Q2_K, "Q2_K", 10, G::Q2_K),
    (F::Q3_K_S, "Q3_K_S", 11, G::Q3_K),
    (F::Q3_K_M, "Q3_K_M", 12, G::Q3_K),
    (F::Q3_K_L, "Q3_K_L", 13, G::Q3_K),
    (F::Q4_K_S, "Q4_K_S", 14, G::Q4_K),
    (F::Q4_K_M, "Q4_K_M", 15, G::Q4_K),
    (F::Q5_K_S, "Q5_K_S", 16, G::Q5_K),
    (F::Q5_K_M, "Q5_K_M", 17, G::Q5_K),
    (F::Q6_K, "Q6_K", 18, G::Q6_K),
    (F::Q8_0, "Q8_0", 7, G::Q8_0),
    (F::F16, "F16", 1, G::F16),
    (F::BF16, "BF16", 32, G::BF16),
    (F::F32, "F32", 0, G::F32),
];

/// llama-quantize's short names for the medium mixes.
const ALIASES: [(&str, FileType); 3] = [
    ("Q3_K", F::Q3_K_M),
    ("Q4_K", F::Q4_K_M),
    ("Q5_K", F::Q5_K_M),
];

impl FileType {
    fn entry(self) -> &'static (FileType, &'static str, u32, GgmlType) {
        // Every variant has exactly one row (checked by a test).
        FILE_TYPES
            .iter()
            .find(|e| e.0 == self)
            .unwrap_or(&FILE_TYPES[0])
    }

    /// llama.cpp's name (`Q4_K_M`).
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// The `llama_ftype` id written to `general.file_type`.
    pub fn id(self) -> u32 {
        self.entry().2
    }

    /// The type of the tensors the mix does not single out.
    pub fn default_type(self) -> GgmlType {
        self.entry().3
    }

    /// A name (any case, aliases included) or a numeric `llama_ftype` id, as llama-quantize
    /// accepts them.
    pub fn parse(s: &str) -> Option<Self> {
        let by_name = FILE_TYPES
            .iter()
            .find(|e| e.1.eq_ignore_ascii_case(s))
            .map(|e| e.0);
        let alias = || {
            ALIASES
                .iter()
                .find(|a| a.0.eq_ignore_ascii_case(s))
                .map(|a| a.1)
        };
        let by_id = || {
            let id: u32 = s.parse().ok()?;
            FILE_TYPES.iter().find(|e| e.2 == id).map(|e| e.0)
        };
        by_name.or_else(alias).or_else(by_id)
    }

    /// Every accepted name, for error messages and `--help`.
    pub fn names() -> String {
        let names: Vec<&str> = FILE_TYPES.iter().map(|e| e.1).collect();
        format!(
            "{} (aliases Q3_K, Q4_K, Q5_K = the _M mixes)",
            names.join(", ")
        )
    }
}

/// The model facts the mixes depend on (llama.cpp reads them from the hyper-parameters).
#[derive(Clone, Debug, Default)]
pub struct ModelInfo {
    pub arch: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_expert: usize,
}

impl ModelInfo {
    /// Query heads per KV head (`hparams.n_gqa()`, 0 without KV heads).
    fn n_gqa(&self) -> usize {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// llama.cpp's `LLM_TYPE_70B`: a Llama with 80 layers and grouped-query attention.
    fn is_70b(&self) -> bool {
        self.arch == "llama" && self.n_layer == 80 && self.n_head != self.n_head_kv
    }

    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }
}

/// The per-tensor options of llama-quantize.
#[derive(Clone, Debug, Default)]
pub struct TypeOptions {
    /// `--pure`: every quantizable tensor gets the default type (still with shape fallbacks).
    pub pure: bool,
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--leave-output-tensor`: keep `output.weight` as it is.
    pub leave_output_tensor: bool,
}

/// What the type choice needs to know about one tensor.
#[derive(Clone, Copy, Debug)]
pub struct TensorDesc<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    /// GGUF order, innermost first.
    pub shape: &'a [usize],
}

impl TensorDesc<'_> {
    fn cols(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// `ggml_n_dims`: dimensions up to the last one larger than 1.
    fn n_dims(&self) -> usize {
        self.shape.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TypeError {
    #[error("tensor '{tensor}': {cols} columns fit neither {ty} nor its fallback types")]
    NoFallback {
        tensor: String,
        ty: GgmlType,
        cols: usize,
    },
    #[error("tensor '{tensor}': {cols} columns are not a whole number of {ty} blocks ({block})")]
    Incompatible {
        tensor: String,
        ty: GgmlType,
        cols: usize,
        block: usize,
    },
    #[error("tensor '{tensor}': cannot tell its layer (expected 'blk.N.' with N < {n_layer})")]
    BadLayer { tensor: String, n_layer: usize },
}

/// Tensor roles the mixes treat differently (llama.cpp's `tensor_category`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    /// `attn_v`, `attn_qkv` and `attn_kv_b`: the value projections, most sensitive.
    AttnV,
    AttnK,
    AttnOutput,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    use Category as C;
    if name == "output.weight" {
        return C::Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return C::TokenEmbd;
    }
    let has = |s: &str| name.contains(s);
    if has("attn_qkv.weight") || has("attn_kv_b.weight") || has("attn_v.weight") {
        C::AttnV
    } else if has("attn_k.weight") {
        C::AttnK
    } else if has("attn_q.weight") {
        C::AttnQ
    } else if has("attn_output.weight") {
        C::AttnOutput
    } else if has("ffn_up") || has("ffn_gate") {
        // Only the IQ mixes (not written by Lumen) treat these apart.
        C::Other
    } else if has("ffn_down") {
        C::FfnDown
    } else {
        C::Other
    }
}

/// Substrings of 2-D weights llama.cpp never quantizes (gating, small per-model tensors).
const NEVER_QUANTIZED: &[&str] = &[
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// Llama 3.2 Vision's vision tower (`v.*`) and projector (`mm.*`), which Ollama's quantizer
/// leaves as they are (F16, F32 tables): the encoder runs once per image on 6432 tokens, where
/// its ~0.9 B weights are compute-bound, not bandwidth-bound, and it is sensitive to error.
fn is_mllama_vision(name: &str, model: &ModelInfo) -> bool {
    model.arch == "mllama" && (name.starts_with("v.") || name.contains("mm."))
}

/// llama.cpp's `tensor_allows_quantization`: 2-D (or more) `*weight` tensors that are not
/// norms, positional/type embeddings or one of [`NEVER_QUANTIZED`]; for mllama, Ollama's rule
/// on top: nothing of the vision tower or projector.
fn allows_quantization(t: &TensorDesc, opts: &TypeOptions, model: &ModelInfo) -> bool {
    let name = t.name;
    !is_mllama_vision(name, model)
        && t.n_dims() >= 2
        && name.ends_with("weight")
        && !(opts.leave_output_tensor && name == "output.weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !NEVER_QUANTIZED.iter().any(|s| name.contains(s))
}

/// Counters llama.cpp keeps while it walks the tensors (in its order, see `llama_order`).
struct State {
    n_attention_wv: usize,
    i_attention_wv: usize,
    n_ffn_down: usize,
    i_ffn_down: usize,
    tied_embeddings: bool,
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third one
/// in between.
fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// The type of every tensor of a file quantized to `ft`, for tensors given in llama.cpp's
/// processing order (the counters behind the mixes count in that order).
pub fn choose_types(
    tensors: &[TensorDesc],
    ft: FileType,
    model: &ModelInfo,
    opts: &TypeOptions,
) -> Result<Vec<GgmlType>, TypeError> {
    let mut st = State {
        // The vision tower's `v.blk.N.attn_v` are not quantized and are not counted: the mix
        // spreads its extra bits over the text layers. (Ollama counts them, which shifts its
        // Q4_K_M choice of attn_v layers on mllama; we follow llama.cpp's meaning.)
        n_attention_wv: tensors
            .iter()
            .filter(|t| category(t.name) == Category::AttnV && !is_mllama_vision(t.name, model))
            .count(),
        i_attention_wv: 0,
        n_ffn_down: model.n_layer,
        i_ffn_down: 0,
        tied_embeddings: !tensors.iter().any(|t| category(t.name) == Category::Output),
    };
    let types = tensors
        .iter()
        .map(|t| tensor_type(&mut st, t, ft, model, opts))
        .collect::<Result<Vec<_>, _>>()?;
    for (t, &ty) in tensors.iter().zip(&types) {
        if !t.cols().is_multiple_of(ty.block_elems()) {
            // Only an explicit --output-tensor-type / --token-embedding-type can get here.
            return Err(TypeError::Incompatible {
                tensor: t.name.to_string(),
                ty,
                cols: t.cols(),
                block: ty.block_elems(),
            });
        }
    }
    Ok(types)
}

/// llama.cpp's `llama_tensor_get_type`.
fn tensor_type(
    st: &mut State,
    t: &TensorDesc,
    ft: FileType,
    model: &ModelInfo,
    opts: &TypeOptions,
) -> Result<GgmlType, TypeError> {
    if !allows_quantization(t, opts, model) {
        return Ok(t.ty);
    }
    let cat = category(t.name);
    match (cat, opts.token_embedding_type, opts.output_tensor_type) {
        (Category::TokenEmbd, Some(ty), _) | (Category::Output, _, Some(ty)) => return Ok(ty),
        _ => {}
    }
    let default = ft.default_type();
    if !is_block_quant(default) {
        return Ok(default);
    }
    let ty = if opts.pure {
        default
    } else {
        mix_type(st, t, cat, default, ft, model, opts)?
    };
    fallback(t, ty)
}

/// ggml_is_quantized: every block type (not F32, F16, BF16).
fn is_block_quant(ty: GgmlType) -> bool {
    ty.block_elems() > 1
}

/// llama.cpp's `llama_tensor_get_type_impl` for the file types in [`FileType`].
fn mix_type(
    st: &mut State,
    t: &TensorDesc,
    cat: Category,
    default: GgmlType,
    ft: FileType,
    model: &ModelInfo,
    opts: &TypeOptions,
) -> Result<GgmlType, TypeError> {
    use Category as C;
    let mut ty = default;
    if cat == C::Output || (st.tied_embeddings && cat == C::TokenEmbd) {
        // The output projection (or the embeddings standing in for it) gets Q6_K, or Q8_0 when
        // its rows do not fit the default type's blocks.
        if let Some(o) = opts.output_tensor_type {
            ty = o;
        } else if model.is_falcon() || !t.cols().is_multiple_of(ty.block_elems()) {
            ty = G::Q8_0;
        } else if ty != G::Q8_0 {
            ty = G::Q6_K;
        }
    } else if cat == C::TokenEmbd {
        if let Some(e) = opts.token_embedding_type {
            ty = e;
        }
    } else if cat == C::AttnV {
        ty = attn_v_type(st, ty, ft, model);
    } else if cat == C::AttnK {
        if model.n_expert == 8 {
            ty = G::Q8_0;
        }
    } else if cat == C::FfnDown {
        ty = ffn_down_type(st, t, ty, ft, model)?;
    } else if cat == C::AttnOutput {
        ty = attn_output_type(ty, ft, model);
    }
    Ok(ty)
}

fn attn_v_type(st: &mut State, mut ty: GgmlType, ft: FileType, model: &ModelInfo) -> GgmlType {
    let (i, n) = (st.i_attention_wv, st.n_attention_wv);
    match ft {
        F::Q2_K => ty = if model.n_gqa() >= 4 { G::Q4_K } else { G::Q3_K },
        F::Q3_K_M => ty = if i < 2 { G::Q5_K } else { G::Q4_K },
        F::Q3_K_L => ty = G::Q5_K,
        F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => ty = G::Q6_K,
        F::Q4_K_S if i < 4 => ty = G::Q5_K,
        _ => {}
    }
    // A 70B shares each attn_v among 8 heads, so it is 8× smaller: more bits cost little.
    if model.is_70b() && (ty == G::Q3_K || ty == G::Q4_K) {
        ty = G::Q5_K;
    }
    if model.n_expert == 8 {
        ty = G::Q8_0;
    }
    st.i_attention_wv += 1;
    ty
}

/// `(layer, n_layer)` of an `ffn_down`: its position among them, or for mixture-of-experts
/// models (whose expert tensors are not in layer order) the layer in its name.
fn layer_of(st: &State, t: &TensorDesc, model: &ModelInfo) -> Result<(usize, usize), TypeError> {
    let n = st.n_ffn_down;
    if model.n_expert <= 1 {
        return Ok((st.i_ffn_down, n));
    }
    super::layer_number(t.name)
        .and_then(|l| usize::try_from(l).ok())
        .filter(|&l| l < n)
        .map(|l| (l, n))
        .ok_or_else(|| TypeError::BadLayer {
            tensor: t.name.to_string(),
            n_layer: n,
        })
}

fn ffn_down_type(
    st: &mut State,
    t: &TensorDesc,
    mut ty: GgmlType,
    ft: FileType,
    model: &ModelInfo,
) -> Result<GgmlType, TypeError> {
    let (i, n) = layer_of(st, t, model)?;
    let falcon = model.is_falcon();
    match ft {
        F::Q2_K => ty = G::Q3_K,
        F::Q3_K_M => {
            ty = if i < n / 16 {
                G::Q5_K
            } else if !falcon || use_more_bits(i, n) {
                G::Q4_K
            } else {
                G::Q3_K
            }
        }
        F::Q3_K_L => ty = if falcon { G::Q4_K } else { G::Q5_K },
        F::Q4_K_M if falcon => {
            ty = if i < n / 16 {
                G::Q6_K
            } else if use_more_bits(i, n) {
                G::Q5_K
            } else {
                G::Q4_K
            }
        }
        F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => ty = G::Q6_K,
        F::Q4_K_S if !falcon && i < n / 8 => ty = G::Q5_K,
        _ => {}
    }
    st.i_ffn_down += 1;
    Ok(ty)
}

fn attn_output_type(ty: GgmlType, ft: FileType, model: &ModelInfo) -> GgmlType {
    if model.is_falcon() {
        return if ft == F::Q3_K_L { G::Q4_K } else { ty };
    }
    if model.n_expert == 8 {
        return match ft {
            F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::Q4_K_S | F::Q4_K_M => G::Q5_K,
            _ => ty,
        };
    }
    match ft {
        F::Q2_K => G::Q3_K,
        F::Q3_K_M => G::Q4_K,
        F::Q3_K_L => G::Q5_K,
        _ => ty,
    }
}

/// llama.cpp's `tensor_type_fallback`: rows that are not whole 256-element super-blocks take
/// a 32-element type of similar size, and F16 if even that does not fit (as does a 32-element
/// type whose blocks do not fit: there is nothing smaller to demote it to).
fn fallback(t: &TensorDesc, ty: GgmlType) -> Result<GgmlType, TypeError> {
    let cols = t.cols();
    if cols.is_multiple_of(ty.block_elems()) {
        return Ok(ty);
    }
    let alt = match ty {
        G::Q2_K | G::Q3_K => G::Q4_0,
        G::Q4_K => G::Q5_0,
        G::Q5_K => G::Q5_1,
        G::Q6_K => G::Q8_0,
        _ if ty.block_elems() <= 32 => ty,
        _ => {
            return Err(TypeError::NoFallback {
                tensor: t.name.to_string(),
                ty,
                cols,
            })
        }
    };
    Ok(if cols.is_multiple_of(alt.block_elems()) {
        alt
    } else {
        G::F16
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_type_has_one_row_and_parses_back() {
        for (ft, name, id, _) in FILE_TYPES {
            assert_eq!(FileType::parse(name), Some(ft));
            assert_eq!(FileType::parse(&name.to_lowercase()), Some(ft));
            assert_eq!(FileType::parse(&id.to_string()), Some(ft));
            assert_eq!(ft.name(), name);
            assert_eq!(FILE_TYPES.iter().filter(|e| e.0 == ft).count(), 1);
        }
        assert_eq!(FileType::parse("q4_k"), Some(F::Q4_K_M));
        assert_eq!(FileType::parse("Q4_2"), None);
        assert_eq!(FileType::parse("IQ2_XXS"), None);
    }

    #[test]
    fn use_more_bits_matches_llama_cpp_for_16_layers() {
        let more: Vec<usize> = (0..16).filter(|&i| use_more_bits(i, 16)).collect();
        assert_eq!(more, [0, 1, 4, 7, 10, 13, 14, 15]);
    }

    #[test]
    fn fallbacks_follow_block_sizes() {
        let shape = [576usize, 10];
        let t = TensorDesc {
            name: "blk.0.ffn_down.weight",
            ty: G::F32,
            shape: &shape,
        };
        assert_eq!(fallback(&t, G::Q4_K).unwrap(), G::Q5_0);
        assert_eq!(fallback(&t, G::Q6_K).unwrap(), G::Q8_0);
        assert_eq!(fallback(&t, G::Q3_K).unwrap(), G::Q4_0);
        let odd = [40usize, 10];
        let t = TensorDesc { shape: &odd, ..t };
        assert_eq!(fallback(&t, G::Q5_K).unwrap(), G::F16);
        // A 32-element type that does not fit has nothing smaller to go to: F16.
        assert_eq!(fallback(&t, G::Q4_0).unwrap(), G::F16);
        assert_eq!(fallback(&t, G::Q8_0).unwrap(), G::F16);
    }

    #[test]
    fn an_explicit_type_that_does_not_fit_the_rows_is_refused() {
        let shape = [576usize, 100];
        let t = TensorDesc {
            name: "token_embd.weight",
            ty: G::F16,
            shape: &shape,
        };
        let opts = TypeOptions {
            token_embedding_type: Some(G::Q4_K),
            ..Default::default()
        };
        let err = choose_types(&[t], F::Q4_0, &ModelInfo::default(), &opts).unwrap_err();
        assert!(matches!(err, TypeError::Incompatible { .. }), "{err:?}");
        // Without the option the mix picks Q8_0 for tied embeddings that Q6_K cannot hold.
        let types = choose_types(&[t], F::Q4_K_M, &ModelInfo::default(), &Default::default());
        assert_eq!(types.unwrap(), [G::Q8_0]);
    }

    #[test]
    fn norms_and_vectors_keep_their_type() {
        let opts = TypeOptions::default();
        let v = [2048usize];
        let m = [2048usize, 1];
        let n = [2048usize, 2048];
        let cases = [
            ("blk.0.attn_norm.weight", &v[..], false),
            ("blk.0.attn_q.weight", &m[..], false),
            ("blk.0.attn_q.weight", &n[..], true),
            ("blk.0.attn_q.bias", &n[..], false),
            ("blk.0.ffn_gate_inp.weight", &n[..], false),
        ];
        for (name, shape, want) in cases {
            let t = TensorDesc {
                name,
                ty: G::F16,
                shape,
            };
            assert_eq!(
                allows_quantization(&t, &opts, &ModelInfo::default()),
                want,
                "{name}"
            );
        }
    }
}
