//! Tensor operations on f32 activations. Quantized matmuls live in `lumen_kernels::matmul`.

pub mod ops;
