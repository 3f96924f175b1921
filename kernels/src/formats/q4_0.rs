//! Q4_0: 32 elements, d:f16 + 16 bytes of nibbles; value = (nibble - 8) * d.

use super::{
    check_dot, dequant_each, dequant_sym32, fp16, impl_block, isum_offset, pack_nibbles,
    quant_each, quantize_sym32, unpack_nibbles, BlockQ8_0,
};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    /// Byte j: element j in the low nibble, element j+16 in the high nibble.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

pub fn dequantize_row_q4_0_ref(x: &[BlockQ4_0], y: &mut [f32]) {
    dequant_each(x, y, |b, out| {
        dequant_sym32(b.d, unpack_nibbles(&b.qs), 8, out)
    });
}

/// `quantize_row_q4_0_ref`: d = max/−8 (max = the value of largest magnitude),
/// q = min(15, trunc(x/d + 8.5)).
pub fn quantize_row_q4_0_ref(x: &[f32], y: &mut [BlockQ4_0]) {
    quant_each(x, y, |xb| {
        let (d, q) = quantize_sym32(xb, 8);
        BlockQ4_0 {
            d: f16::from_f32(d),
            qs: pack_nibbles(&q),
        }
    });
}

pub fn vec_dot_q4_0_q8_0_ref(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    check_dot(x, y);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let sumi = isum_offset(&unpack_nibbles(&xb.qs), 8, &yb.qs);
        sumf += sumi as f32 * fp16(xb.d) * fp16(yb.d);
    }
    sumf
}

impl_block!(
    BlockQ4_0,
    Q4_0,
    deq = dequantize_row_q4_0_ref,
    dot = vec_dot_q4_0_q8_0_ref,
    act = BlockQ8_0
);
