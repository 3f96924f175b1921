//! Tensor operations on f32 activations and quantized weights.

pub mod matmul;
pub mod ops;
