//! Every GGUF tensor name Lumen reads or writes, in one place (llama.cpp's `llama-arch.cpp` names).

pub const TOKEN_EMBD: &str = "token_embd.weight";
pub const OUTPUT_NORM: &str = "output_norm.weight";
pub const OUTPUT: &str = "output.weight";
pub const ROPE_FREQS: &str = "rope_freqs.weight";
/// Phi-3 LongRoPE frequency divisors (global, `[n_rot / 2]`): long ones when the context is
/// longer than the original training context, short ones otherwise.
pub const ROPE_FACTORS_LONG: &str = "rope_factors_long.weight";
pub const ROPE_FACTORS_SHORT: &str = "rope_factors_short.weight";

// Per-block tensors: `blk.{i}.{suffix}`.
pub const ATTN_NORM: &str = "attn_norm.weight";
pub const ATTN_Q: &str = "attn_q.weight";
pub const ATTN_K: &str = "attn_k.weight";
pub const ATTN_V: &str = "attn_v.weight";
pub const ATTN_OUTPUT: &str = "attn_output.weight";
pub const FFN_NORM: &str = "ffn_norm.weight";
pub const FFN_GATE: &str = "ffn_gate.weight";
pub const FFN_UP: &str = "ffn_up.weight";
pub const FFN_DOWN: &str = "ffn_down.weight";
// Optional per-block tensors of the other families (llama.cpp's names; each is loaded where the
// file has it, so one layer type serves them all).
/// Phi-3's fused Q/K/V projection: output rows `[Q | K | V]`.
pub const ATTN_QKV: &str = "attn_qkv.weight";
/// Bias of the attention output projection (where a checkpoint has one, e.g. some Phi-3).
pub const ATTN_OUTPUT_BIAS: &str = "attn_output.bias";
/// Q/K/V biases (Qwen2).
pub const ATTN_Q_BIAS: &str = "attn_q.bias";
pub const ATTN_K_BIAS: &str = "attn_k.bias";
pub const ATTN_V_BIAS: &str = "attn_v.bias";
/// Per-head RMSNorm of Q and K before RoPE (Qwen3, Gemma 3): `[head_dim]`.
pub const ATTN_Q_NORM: &str = "attn_q_norm.weight";
pub const ATTN_K_NORM: &str = "attn_k_norm.weight";
/// RMSNorm of the attention output before the residual add (Gemma 2/3).
pub const ATTN_POST_NORM: &str = "post_attention_norm.weight";
/// RMSNorm of the FFN output before the residual add (Gemma 2/3).
pub const FFN_POST_NORM: &str = "post_ffw_norm.weight";

/// `blk.{layer}.{suffix}`, e.g. `blk.3.attn_q.weight`.
pub fn blk(layer: usize, suffix: &str) -> String {
    format!("blk.{layer}.{suffix}")
}

// ---------------------------------------------------------------------------------------------
// Llama 3.2 Vision (`mllama`), Ollama's single-file schema (its `convert/convert_mllama.go`).
//
// Layout decisions, so that Ollama's files and ours are the same bytes and compute the same
// numbers as Meta's reference:
// - Text self-attention `attn_q`/`attn_k` rows are llama-permuted, exactly as in `llama` files.
// - `cross_attn_q_proj`/`cross_attn_k_proj` rows are llama-permuted too (Ollama's converter
//   catches them with its `attn_q_proj`/`attn_k_proj` rule), but `cross_attn_q_norm`/`k_norm`
//   (one 128-vector per layer) are written unpermuted. Cross-attention has no RoPE, so the
//   permutation itself is harmless for q·k; the element-wise norm weight is not. The loader
//   therefore applies the same within-head permutation to the two norm vectors (cheap, at
//   load), which makes the file equal to the unpermuted Hugging Face weights. Our converter
//   writes the Ollama layout so both producers' files load through one path.
// - Text cross gates (`cross_attn_attn_gate`, `cross_attn_mlp_gate`) are stored raw: the model
//   applies tanh.
// - Vision gates are stored already transformed: `v.position_embd.gate` = 1 − tanh(g),
//   `v.tile_position_embd.gate` = tanh(g) (the same HF gate written twice), pre/post tile gates
//   and global-layer `attn_gate`/`ffn_gate` = tanh(g). The model uses them as plain multipliers.
// - Vision `attn_q`/`attn_k` are llama-permuted with the vision head count: no RoPE and no
//   per-dimension weights, so there is nothing to undo.
// - `token_embd.weight` has vocab + 8 rows (the learnable image rows); `output.weight` has vocab.

/// Text cross-attention tensors: `blk.{i}.{suffix}` at the cross-attention layer indices.
pub const CROSS_ATTN_Q: &str = "cross_attn_q_proj.weight";
pub const CROSS_ATTN_K: &str = "cross_attn_k_proj.weight";
pub const CROSS_ATTN_V: &str = "cross_attn_v_proj.weight";
pub const CROSS_ATTN_O: &str = "cross_attn_o_proj.weight";
pub const CROSS_ATTN_Q_NORM: &str = "cross_attn_q_norm.weight";
pub const CROSS_ATTN_K_NORM: &str = "cross_attn_k_norm.weight";
/// Raw scalar gates, `[1]`; the model applies tanh.
pub const CROSS_ATTN_ATTN_GATE: &str = "cross_attn_attn_gate";
pub const CROSS_ATTN_MLP_GATE: &str = "cross_attn_mlp_gate";

/// Vision tower (prefix `v.`) and projector (`mm.0`).
pub const V_PATCH_EMBD: &str = "v.patch_embd.weight";
pub const V_CLASS_EMBD: &str = "v.class_embd";
pub const V_POSITION_EMBD: &str = "v.position_embd.weight";
/// 1 − tanh(g).
pub const V_POSITION_EMBD_GATE: &str = "v.position_embd.gate";
pub const V_TILE_POSITION_EMBD: &str = "v.tile_position_embd.weight";
/// tanh(g), the same HF gate as [`V_POSITION_EMBD_GATE`].
pub const V_TILE_POSITION_EMBD_GATE: &str = "v.tile_position_embd.gate";
pub const V_PRE_TILE_POSITION_EMBD: &str = "v.pre_tile_position_embd.weight";
pub const V_PRE_TILE_POSITION_EMBD_GATE: &str = "v.pre_tile_position_embd.gate";
pub const V_POST_TILE_POSITION_EMBD: &str = "v.post_tile_position_embd.weight";
pub const V_POST_TILE_POSITION_EMBD_GATE: &str = "v.post_tile_position_embd.gate";
pub const V_PRE_LN_WEIGHT: &str = "v.pre_ln.weight";
pub const V_PRE_LN_BIAS: &str = "v.pre_ln.bias";
pub const V_POST_LN_WEIGHT: &str = "v.post_ln.weight";
pub const V_POST_LN_BIAS: &str = "v.post_ln.bias";
pub const MM_PROJ_WEIGHT: &str = "mm.0.weight";
pub const MM_PROJ_BIAS: &str = "mm.0.bias";

/// Vision encoder layers: `v.blk.{i}.{suffix}` (local) and `v.global.blk.{i}.{suffix}` (global).
pub const V_ATTN_Q: &str = "attn_q.weight";
pub const V_ATTN_K: &str = "attn_k.weight";
pub const V_ATTN_V: &str = "attn_v.weight";
pub const V_ATTN_OUTPUT: &str = "attn_output.weight";
pub const V_ATTN_NORM_WEIGHT: &str = "attn_norm.weight";
pub const V_ATTN_NORM_BIAS: &str = "attn_norm.bias";
pub const V_FFN_NORM_WEIGHT: &str = "ffn_norm.weight";
pub const V_FFN_NORM_BIAS: &str = "ffn_norm.bias";
/// fc1 (first MLP linear, hidden → intermediate).
pub const V_FFN_UP_WEIGHT: &str = "ffn_up.weight";
pub const V_FFN_UP_BIAS: &str = "ffn_up.bias";
/// fc2 (second MLP linear, intermediate → hidden).
pub const V_FFN_DOWN_WEIGHT: &str = "ffn_down.weight";
pub const V_FFN_DOWN_BIAS: &str = "ffn_down.bias";
/// Global layers only, tanh(g) already applied.
pub const V_ATTN_GATE: &str = "attn_gate";
pub const V_FFN_GATE: &str = "ffn_gate";

/// `v.blk.{layer}.{suffix}`: a local vision encoder layer.
pub fn v_blk(layer: usize, suffix: &str) -> String {
    format!("v.blk.{layer}.{suffix}")
}

/// `v.global.blk.{layer}.{suffix}`: a gated global vision encoder layer.
pub fn v_global_blk(layer: usize, suffix: &str) -> String {
    format!("v.global.blk.{layer}.{suffix}")
}
