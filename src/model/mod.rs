//! Model architectures on shared building blocks.

pub mod kv_cache;
pub mod llama;
pub mod mllama;
pub mod weights;

use std::path::PathBuf;

pub use kv_cache::KvCache;
pub use llama::{Llama, LlamaConfig, Logits};

use crate::gguf::GgufError;

/// Every `general.architecture` Lumen runs, named in the error for any other.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "mllama"];

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: architecture '{arch}' is not supported (supported: {expected})")]
    UnsupportedArchitecture {
        path: PathBuf,
        arch: String,
        /// Every architecture Lumen runs (not only the refusing loader's).
        expected: String,
    },
    #[error("{path}: tensor '{tensor}' has shape {found:?}, expected {expected:?}")]
    BadShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: inconsistent hyper-parameters: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("context is full: {needed} positions needed, the context holds {n_ctx} (raise -c)")]
    ContextFull { needed: usize, n_ctx: usize },
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken { id: u32, n_vocab: usize },
    #[error("<|image|> token at position {position} has no image: {attached} image(s) attached")]
    UnboundImageToken { position: usize, attached: usize },
    #[error("vision states: {0}")]
    BadVisionStates(String),
    #[error(transparent)]
    Kernel(#[from] lumen_kernels::KernelError),
}
