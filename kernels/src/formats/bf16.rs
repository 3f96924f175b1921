//! BF16 (bfloat16): one element per "block".

use super::{dequant_each, dot_f64, impl_block, quant_each};
use half::bf16;

pub fn dequantize_row_bf16(x: &[bf16], y: &mut [f32]) {
    dequant_each(x, y, |b, o| o[0] = b.to_f32());
}

/// ggml's `ggml_compute_fp32_to_bf16`: NaN -> quiet NaN, otherwise round to nearest even
/// (no flush of subnormals).
#[inline]
pub fn fp32_to_bf16(v: f32) -> bf16 {
    let u = v.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return bf16::from_bits(((u >> 16) | 64) as u16);
    }
    bf16::from_bits((u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16)
}

pub fn quantize_row_bf16(x: &[f32], y: &mut [bf16]) {
    quant_each(x, y, |v| fp32_to_bf16(v[0]));
}

/// Products in f32, accumulated in f64 (as `ggml_vec_dot_bf16`'s scalar path).
pub fn vec_dot_bf16_bf16_ref(x: &[bf16], y: &[bf16]) -> f32 {
    dot_f64(x, y, bf16::to_f32)
}

impl_block!(
    bf16,
    BF16,
    deq = dequantize_row_bf16,
    quant = quantize_row_bf16,
    dot = vec_dot_bf16_bf16_ref,
    act = bf16
);
