//! Q5_0: 32 elements, d:f16 + qh (u32, bit j = 5th bit of element j) + 16 bytes of nibbles;
//! value = (q5 - 16) * d.

use super::{
    check_dot, dequant_each, dequant_sym32, fp16, impl_block, isum_offset, pack_5bit, quant_each,
    quantize_sym32, unpack_5bit, BlockQ8_0,
};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

pub fn dequantize_row_q5_0_ref(x: &[BlockQ5_0], y: &mut [f32]) {
    dequant_each(x, y, |b, out| {
        dequant_sym32(b.d, unpack_5bit(&b.qh, &b.qs), 16, out)
    });
}

/// `quantize_row_q5_0_ref`: d = max/−16, q = min(31, trunc(x/d + 16.5)).
pub fn quantize_row_q5_0_ref(x: &[f32], y: &mut [BlockQ5_0]) {
    quant_each(x, y, |xb| {
        let (d, q) = quantize_sym32(xb, 16);
        let (qh, qs) = pack_5bit(&q);
        BlockQ5_0 {
            d: f16::from_f32(d),
            qh,
            qs,
        }
    });
}

pub fn vec_dot_q5_0_q8_0_ref(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    check_dot(x, y);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let sumi = isum_offset(&unpack_5bit(&xb.qh, &xb.qs), 16, &yb.qs);
        sumf += (fp16(xb.d) * fp16(yb.d)) * sumi as f32;
    }
    sumf
}

impl_block!(
    BlockQ5_0,
    Q5_0,
    deq = dequantize_row_q5_0_ref,
    dot = vec_dot_q5_0_q8_0_ref,
    act = BlockQ8_0
);
