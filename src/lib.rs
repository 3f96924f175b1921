//! Lumen: a CPU runtime for quantized LLMs in GGUF files.
//!
//! The library never prints; the `lumen` binary (src/main.rs, src/cli/) is a thin layer over it.

pub mod bench;
pub mod chat;
pub mod download;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod perplexity;
pub mod registry;
pub mod sampling;
pub mod server;
pub mod tensor;
pub mod tokenizer;

pub use lumen_kernels as kernels;
