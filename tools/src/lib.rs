//! Lumen's tools as a library: the Hugging Face → GGUF converter (`lumen-convert`, also
//! `lumen convert`), the quantizer (`lumen-quantize`, also `lumen quantize`), the output-file
//! rules they share and the terminal progress display of the tool binaries.

pub mod cli;
pub mod convert;
pub mod output;
pub mod progress;
pub mod quantize;
