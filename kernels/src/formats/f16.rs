//! F16 (IEEE binary16): one element per "block".

use super::{dot_f64, impl_block, quant_each};
use half::f16;
use half::slice::HalfFloatSliceExt;

/// Exact widening, 8 elements at a time with F16C when the CPU has it (half detects it at run
/// time): the quantize tool widens every weight of an F16 model.
pub fn dequantize_row_f16(x: &[f16], y: &mut [f32]) {
    assert_eq!(y.len(), x.len(), "dequantize F16: output length");
    x.convert_to_f32_slice(y);
}

/// Round-to-nearest-even f32 -> f16 (as `ggml_fp32_to_fp16` / numpy `astype(float16)`).
pub fn quantize_row_f16(x: &[f32], y: &mut [f16]) {
    quant_each(x, y, |v| f16::from_f32(v[0]));
}

/// Products in f32 (exact for f16 inputs), accumulated in f64 (as `ggml_vec_dot_f16`).
pub fn vec_dot_f16_f16_ref(x: &[f16], y: &[f16]) -> f32 {
    dot_f64(x, y, f16::to_f32)
}

impl_block!(
    f16,
    F16,
    deq = dequantize_row_f16,
    quant = quantize_row_f16,
    dot = vec_dot_f16_f16_ref,
    act = f16
);
