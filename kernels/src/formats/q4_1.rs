//! Q4_1: 32 elements, d:f16, m:f16 + 16 bytes of nibbles; value = nibble * d + m.

use super::{
    check_dot, dequant_each, dequant_min32, dot_min32, impl_block, pack_nibbles, quant_each,
    quantize_min32, unpack_nibbles, BlockQ8_1,
};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

pub fn dequantize_row_q4_1_ref(x: &[BlockQ4_1], y: &mut [f32]) {
    dequant_each(x, y, |b, out| {
        dequant_min32(b.d, b.m, unpack_nibbles(&b.qs), out)
    });
}

/// `quantize_row_q4_1_ref`: d = (max − min)/15, m = min, q = min(15, trunc((x − min)/d + 0.5)).
pub fn quantize_row_q4_1_ref(x: &[f32], y: &mut [BlockQ4_1]) {
    quant_each(x, y, |xb| {
        let (d, m, q) = quantize_min32(xb, 15);
        BlockQ4_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(m),
            qs: pack_nibbles(&q),
        }
    });
}

/// Σ (d_x·d_y)·Σq_x·q_y + m_x·s_y per block (s_y = d_y·Σq_y, stored in the Q8_1 block).
pub fn vec_dot_q4_1_q8_1_ref(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    check_dot(x, y);
    x.iter().zip(y).fold(0.0f32, |s, (xb, yb)| {
        s + dot_min32(xb.d, xb.m, &unpack_nibbles(&xb.qs), yb)
    })
}

impl_block!(
    BlockQ4_1,
    Q4_1,
    deq = dequantize_row_q4_1_ref,
    dot = vec_dot_q4_1_q8_1_ref,
    act = BlockQ8_1
);
