//! Llama 3.2 Vision (`mllama`): a Llama 3.1 text decoder with gated cross-attention layers that
//! read the states of a vision encoder, from one GGUF file in Ollama's schema.
//!
//! - `image_proc`: image file → normalised tiles, as the reference `MllamaImageProcessor`.
//! - `vision`: tiles → projected cross-attention states (vision encoder + projector).
//! - `text`: the decoder with cross-attention, its caches and masks.

pub mod image_proc;
pub mod text;
pub mod vision;
