//! Model architectures on shared building blocks, behind one [`Model`] trait.
//!
//! Every command (`run`, `chat`, `serve`, `bench`, `perplexity`) holds a `Box<dyn Model>` from
//! [`load`], which picks the constructor from [`ARCHITECTURES`] by `general.architecture`, the
//! way llama.cpp has one file per architecture and one switch. Adding an architecture is one
//! file here plus one row in that table.

pub mod blocks;
pub mod gemma;
pub mod kv_cache;
pub mod llama;
pub mod mllama;
pub mod phi3;
pub mod qwen;
pub mod weights;

use std::path::PathBuf;
use std::sync::Arc;

pub use kv_cache::KvCache;
pub use llama::{Llama, LlamaConfig, Logits};
use lumen_kernels::KernelSet;

use self::mllama::text::MllamaCache;
use crate::gguf::{GgufError, GgufFile};

/// Builds a model of one architecture from an open file.
pub type Constructor = fn(Arc<GgufFile>) -> Result<Box<dyn Model>, ModelError>;

/// `general.architecture` → constructor: every architecture Lumen runs.
pub const ARCHITECTURES: &[(&str, Constructor)] = &[
    ("llama", |f| Ok(Box::new(Llama::load(f)?))),
    ("mllama", |f| Ok(Box::new(mllama::Mllama::load(f)?))),
    ("qwen2", qwen::load),
    ("qwen3", qwen::load),
    ("gemma2", gemma::load_gemma2),
    ("gemma3", gemma::load_gemma3),
    ("phi3", phi3::load),
];

/// Every architecture Lumen runs, for messages: "llama, mllama, …".
pub fn supported_architectures() -> String {
    ARCHITECTURES
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The model in `file`, by its architecture.
pub fn load(file: Arc<GgufFile>) -> Result<Box<dyn Model>, ModelError> {
    let arch = file.architecture()?;
    match ARCHITECTURES.iter().find(|(name, _)| *name == arch) {
        Some((_, construct)) => construct(file),
        None => Err(unsupported(&file, arch)),
    }
}

/// The error for a file whose architecture no loader runs.
pub(crate) fn unsupported(file: &GgufFile, arch: &str) -> ModelError {
    ModelError::UnsupportedArchitecture {
        path: file.path().to_path_buf(),
        arch: arch.to_string(),
        expected: supported_architectures(),
    }
}

/// What a loaded model is, for start-up lines and bench tables.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// `general.architecture`.
    pub arch: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    /// Bytes the KV cache reserves per position, over every layer ([`kv_cache::size`]).
    pub kv_bytes_per_token: usize,
    /// Architecture-specific facts for the start-up line (e.g. cross-attention layers).
    pub detail: Option<String>,
}

/// The machine's memory (MemTotal from /proc/meminfo), the bound for buffers whose size a file
/// or a flag drives; where that cannot be read, the largest allocation Rust allows.
pub fn physical_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        })
        .unwrap_or(isize::MAX as u64)
}

/// A loaded model of any architecture: what generation, serving, benchmarks and perplexity need.
pub trait Model: Send + Sync {
    fn info(&self) -> ModelInfo;
    fn kernels(&self) -> &'static KernelSet;
    /// Heap bytes held by load-time repacked weight copies (0 when nothing was packed).
    fn packed_bytes(&self) -> usize;
    /// Dequantized-f32 matmuls and unquantized activations (validation against float references).
    fn set_reference_matmul(&mut self, on: bool);
    fn new_cache(&self, n_ctx: usize) -> Cache;
    /// Appends `tokens` to `cache` and returns the logits of the last position or of all of
    /// them (`n × n_vocab`).
    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut Cache,
        which: Logits,
    ) -> Result<Vec<f32>, ModelError>;
    /// Appends one token to each cache (several sequences decoding together) and returns
    /// `[n][n_vocab]` logits. Models that can batch read their weights once for all of them.
    fn forward_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut Cache],
    ) -> Result<Vec<f32>, ModelError> {
        let mut out = Vec::new();
        for (&t, cache) in tokens.iter().zip(caches.iter_mut()) {
            out.extend(self.forward(&[t], cache, Logits::Last)?);
        }
        Ok(out)
    }
    /// The image input of a vision model; `None` for text-only models.
    fn vision(&self) -> Option<&dyn ImageInput> {
        None
    }
}

/// An image after the vision encoder: what a cache needs to attach it, computed once (a chat
/// re-attaches a conversation's images every turn without encoding them again).
pub struct EncodedImage {
    /// The encoder's output states, in the model's own layout.
    pub states: Vec<f32>,
    /// Tiles (crops) the image was split into.
    pub n_tiles: usize,
}

/// Images for a vision model: each one is encoded, then attached to a cache before the prompt
/// whose image tokens refer to the attached images in order.
pub trait ImageInput: Sync {
    /// The token that stands for an image in the prompt.
    fn image_token(&self) -> u32;
    /// Decodes, preprocesses and encodes one image file's bytes (`name` labels errors).
    fn encode_image(&self, bytes: &[u8], name: &str) -> anyhow::Result<EncodedImage>;
    /// Binds an encoded image to the next unbound image token of `cache`.
    fn attach_encoded(&self, cache: &mut Cache, image: &EncodedImage) -> Result<(), ModelError>;
    /// [`Self::encode_image`] then [`Self::attach_encoded`]; returns the tiles it took.
    fn attach_image(&self, cache: &mut Cache, bytes: &[u8], name: &str) -> anyhow::Result<usize> {
        let image = self.encode_image(bytes, name)?;
        self.attach_encoded(cache, &image)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        Ok(image.n_tiles)
    }
    /// A raw (non-chat) prompt as the model's processor prepares it for `n_images` images
    /// (`bos` is the BOS token's text).
    fn processor_prompt(&self, prompt: &str, n_images: usize, bos: &str) -> String;
    /// Vision-encoder facts for the start-up line.
    fn describe(&self) -> String;
}

/// A sequence's state in one model: its self-attention keys and values, and for a vision
/// model the cross-attention states of the images attached to it.
pub enum Cache {
    Text(KvCache),
    Vision(MllamaCache),
}

impl Cache {
    /// Positions filled so far.
    pub fn len(&self) -> usize {
        match self {
            Cache::Text(c) => c.len(),
            Cache::Vision(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        match self {
            Cache::Text(c) => c.capacity(),
            Cache::Vision(c) => c.capacity(),
        }
    }

    /// Forgets every position (and image).
    pub fn clear(&mut self) {
        match self {
            Cache::Text(c) => c.clear(),
            Cache::Vision(c) => c.clear(),
        }
    }

    /// Whether [`Cache::truncate`] keeps a prefix. A vision cache binds images to token
    /// positions, so it is only ever cleared.
    pub fn keeps_prefix(&self) -> bool {
        matches!(self, Cache::Text(_))
    }

    /// Keeps the first `len` positions (everything is forgotten where a prefix cannot be kept).
    pub fn truncate(&mut self, len: usize) {
        match self {
            Cache::Text(c) => c.truncate(len),
            Cache::Vision(c) => c.clear(),
        }
    }

    /// Images attached so far.
    pub fn n_images(&self) -> usize {
        match self {
            Cache::Text(_) => 0,
            Cache::Vision(c) => c.n_images(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(
        "a KV cache of {n_ctx} positions × {n_slots} slot(s) needs {:.1} GiB, more than this \
         machine's {:.1} GiB of memory: lower -c (or --parallel)",
        *bytes as f64 / (1u64 << 30) as f64,
        *memory as f64 / (1u64 << 30) as f64
    )]
    KvCacheTooLarge {
        n_ctx: usize,
        n_slots: usize,
        bytes: u64,
        memory: u64,
    },
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
    /// A cache made by another model (a caller bug, reported rather than a panic).
    #[error("a {0} model was given another kind of model's cache")]
    WrongCache(&'static str),
    #[error(transparent)]
    Kernel(#[from] lumen_kernels::KernelError),
}
