//! Phi-3 / 3.5 / 4-mini (`phi3`): Llama's layer with NEOX RoPE over fused tensors (`attn_qkv`
//! holds Q, K, V rows; `ffn_up` holds the gate rows then the up rows: the layer loader takes
//! them apart as row ranges) and, where the file has `rope_factors_long`/`_short`, LongRoPE
//! (picked per context size as llama.cpp does, in the shared loader).
//!
//! A `phi3.attention.sliding_window` in the file applies to every layer, as in Hugging Face's
//! Phi-3; llama.cpp reads it and switches it off, which only matters past the window.

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
