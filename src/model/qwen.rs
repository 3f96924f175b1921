//! Qwen2 / Qwen2.5 (`qwen2`) and Qwen3 (`qwen3`): Llama's layer with NEOX RoPE (llama.cpp's
//! converter keeps Hugging Face's Q/K row order for them). Qwen2 adds Q/K/V biases and Qwen3
//! per-head RMSNorm of Q and K before RoPE; the layer loads whichever of those the file has.

use std::sync::Arc;

use super::llama::{Flavor, LlamaConfig};
use super::{Llama, Model, ModelError};
use crate::gguf::GgufFile;

pub fn load(file: Arc<GgufFile>) -> Result<Box<dyn Model>, ModelError> {
    Ok(Box::new(Llama::load_flavored(file, flavor)?))
}

pub fn flavor(_file: &GgufFile, cfg: &LlamaConfig) -> Result<Flavor, ModelError> {
    Ok(Flavor::neox(cfg))
}
