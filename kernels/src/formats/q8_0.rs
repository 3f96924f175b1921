//! Q8_0: 32 elements, d:f16 + 32 signed bytes; value = q * d. Both a weight and an activation type.

use super::{check_dot, dequant_each, dequant_q8_32, fp16, impl_block, quant_each, quantize_q8_32};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

pub fn dequantize_row_q8_0_ref(x: &[BlockQ8_0], y: &mut [f32]) {
    dequant_each(x, y, |b, out| dequant_q8_32(b.d, &b.qs, out));
}

/// `quantize_row_q8_0_ref`: d = amax/127, q = roundf(x·(1/d)) (ties away from zero).
pub fn quantize_row_q8_0_ref(x: &[f32], y: &mut [BlockQ8_0]) {
    quant_each(x, y, |xb| {
        let (d, qs) = quantize_q8_32(xb);
        BlockQ8_0 {
            d: f16::from_f32(d),
            qs,
        }
    });
}

pub fn vec_dot_q8_0_q8_0_ref(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    check_dot(x, y);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let sumi: i32 = xb
            .qs
            .iter()
            .zip(&yb.qs)
            .map(|(&a, &b)| a as i32 * b as i32)
            .sum();
        sumf += sumi as f32 * (fp16(xb.d) * fp16(yb.d));
    }
    sumf
}

impl_block!(
    BlockQ8_0,
    Q8_0,
    deq = dequantize_row_q8_0_ref,
    quant = quantize_row_q8_0_ref,
    dot = vec_dot_q8_0_q8_0_ref,
    act = BlockQ8_0
);
