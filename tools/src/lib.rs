//! Lumen's tools as a library: the Hugging Face → GGUF converter (`lumen-convert`, also
//! `lumen convert`) and the terminal progress display the tool binaries share.

pub mod convert;
pub mod progress;
