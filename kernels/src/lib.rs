//! Lumen's block formats and CPU kernels (no model knowledge).
//!
//! * [`table`]: [`GgmlType`] and its static facts (ids, names, block sizes, vec_dot types).
//! * [`formats`]: one `#[repr(C)]` block struct per ggml type with scalar reference
//!   dequantize / quantize / vec_dot kernels matching llama.cpp.
//! * [`dispatch`]: the type-erased byte-level API ([`dequantize_row`], [`quantize_row`],
//!   [`vec_dot`]) that returns [`KernelError`] instead of panicking.
//! * [`quantize`]: [`quantize_weights`], llama.cpp's reference quantizers for every weight type.
// SIMD loops index several register arrays and byte offsets by one counter; an iterator
// chain would hide the block layout the offsets spell out.
#![allow(clippy::needless_range_loop)]

pub mod attention;
pub mod cpu;
pub mod dense_attention;
pub mod dense_gemm;
pub mod dispatch;
pub mod formats;
pub mod kernel_set;
pub mod math;
pub mod matmul;
pub mod packed;
pub mod quantize;
#[cfg(target_arch = "x86_64")]
mod simd;
pub mod table;
pub mod team;

pub use cpu::Isa;
pub use dispatch::{
    blocks_of, dequantize_blocks, dequantize_row, quantize_blocks, quantize_row, vec_dot,
    vec_dot_blocks, KernelError,
};
pub use formats::{ActivationFormat, BlockFormat, WeightFormat};
pub use kernel_set::{
    kernels, kernels_for, KernelSet, PackedGemvFn, PackedTileFn, QuantizeRowFn, RowDot4Fn,
    RowDotFn, Rows4DotFn, Tile4x4Fn,
};
pub use packed::{ActBlockAux, PackedMatrix};
pub use quantize::quantize_weights;
pub use table::{GgmlType, TypeInfo, TYPE_TABLE};
