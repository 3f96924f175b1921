//! F32: one element per "block".

use super::{dequant_each, dot_f64, impl_block, quant_each};

pub fn dequantize_row_f32(x: &[f32], y: &mut [f32]) {
    dequant_each(x, y, |b, o| o[0] = *b);
}

pub fn quantize_row_f32(x: &[f32], y: &mut [f32]) {
    quant_each(x, y, |v| v[0]);
}

/// Products in f32, accumulated in f64 (as `ggml_vec_dot_f32`'s scalar path).
pub fn vec_dot_f32_f32_ref(x: &[f32], y: &[f32]) -> f32 {
    dot_f64(x, y, |v| v)
}

impl_block!(
    f32,
    F32,
    deq = dequantize_row_f32,
    quant = quantize_row_f32,
    dot = vec_dot_f32_f32_ref,
    act = f32
);
