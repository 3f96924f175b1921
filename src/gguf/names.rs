//! Every GGUF tensor name Lumen reads or writes, in one place (llama.cpp's `llama-arch.cpp` names).

pub const TOKEN_EMBD: &str = "token_embd.weight";
pub const OUTPUT_NORM: &str = "output_norm.weight";
pub const OUTPUT: &str = "output.weight";
pub const ROPE_FREQS: &str = "rope_freqs.weight";

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

/// `blk.{layer}.{suffix}`, e.g. `blk.3.attn_q.weight`.
pub fn blk(layer: usize, suffix: &str) -> String {
    format!("blk.{layer}.{suffix}")
}
