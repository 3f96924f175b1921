//! Q8_1: 32 elements, d:f16, s:f16 (= d·Σq) + 32 signed bytes; value = q * d. Activation-only
//! (the vec_dot type of Q4_1 and Q5_1).

use super::{dequant_each, dequant_q8_32, impl_block, quant_each, quantize_q8_32};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_1 {
    pub d: f16,
    /// d · Σ qs, computed from the f32 d and the integer sum, then rounded to f16.
    pub s: f16,
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

pub fn dequantize_row_q8_1_ref(x: &[BlockQ8_1], y: &mut [f32]) {
    dequant_each(x, y, |b, out| dequant_q8_32(b.d, &b.qs, out));
}

/// `quantize_row_q8_1_ref`: as Q8_0, plus s = f16(Σq · d) with d the unrounded f32 scale.
pub fn quantize_row_q8_1_ref(x: &[f32], y: &mut [BlockQ8_1]) {
    quant_each(x, y, |xb| {
        let (d, qs) = quantize_q8_32(xb);
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        BlockQ8_1 {
            d: f16::from_f32(d),
            s: f16::from_f32(sum as f32 * d),
            qs,
        }
    });
}

impl_block!(
    BlockQ8_1,
    Q8_1,
    deq = dequantize_row_q8_1_ref,
    quant = quantize_row_q8_1_ref
);
