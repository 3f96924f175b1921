//! Q5_1: 32 elements, d:f16, m:f16, qh (u32) + 16 bytes of nibbles; value = q5 * d + m.

use super::{
    check_dot, dequant_each, dequant_min32, dot_min32, impl_block, pack_5bit, quant_each,
    quantize_min32, unpack_5bit, BlockQ8_1,
};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

pub fn dequantize_row_q5_1_ref(x: &[BlockQ5_1], y: &mut [f32]) {
    dequant_each(x, y, |b, out| {
        dequant_min32(b.d, b.m, unpack_5bit(&b.qh, &b.qs), out)
    });
}

/// `quantize_row_q5_1_ref`: d = (max − min)/31, m = min, q = trunc((x − min)/d + 0.5).
pub fn quantize_row_q5_1_ref(x: &[f32], y: &mut [BlockQ5_1]) {
    quant_each(x, y, |xb| {
        let (d, m, q) = quantize_min32(xb, 31);
        let (qh, qs) = pack_5bit(&q);
        BlockQ5_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(m),
            qh,
            qs,
        }
    });
}

pub fn vec_dot_q5_1_q8_1_ref(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    check_dot(x, y);
    x.iter().zip(y).fold(0.0f32, |s, (xb, yb)| {
        s + dot_min32(xb.d, xb.m, &unpack_5bit(&xb.qh, &xb.qs), yb)
    })
}

impl_block!(
    BlockQ5_1,
    Q5_1,
    deq = dequantize_row_q5_1_ref,
    dot = vec_dot_q5_1_q8_1_ref,
    act = BlockQ8_1
);
