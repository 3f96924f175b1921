//! Qwen2 / Qwen2.5 (`qwen2`) and Qwen3 (`qwen3`): Llama's layer with NEOX RoPE (llama.cpp's
//! converter keeps Hugging Face's Q/K row order for them). Qwen2 adds Q/K/V biases and Qwen3
//! per-head RMSNorm of Q and K before RoPE; the layer loads whichever of those the file has.

use super::llama::{Flavor, LlamaConfig};
use super::ModelError;
use crate::gguf::GgufFile;

pub fn flavor(_file: &GgufFile, cfg: &LlamaConfig) -> Result<Flavor, ModelError> {
    Ok(Flavor {
        rope_halves: true,
        ..cfg.flavor.clone()
    })
}
