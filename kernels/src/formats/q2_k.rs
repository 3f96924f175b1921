//! Q2_K: 256 elements in 16 sub-blocks of 16. Per sub-block a byte with a 4-bit scale (low) and a
//! 4-bit min (high); value = d·(sc & 15)·q − dmin·(sc >> 4), q the 2-bit quant.

use super::{
    check_dot, dequant_each, dequant_sub_blocks, fp16, impl_block, isum_scaled, BlockQ8_K, QK_K,
};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ2_K {
    pub scales: [u8; QK_K / 16],
    /// Per half of 128 elements, 32 bytes hold four 2-bit planes (shifts 0, 2, 4, 6), each plane
    /// 32 consecutive elements.
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2_K>() == 84);

/// The 256 2-bit quants in element order.
#[inline]
pub fn unpack_q2_k(b: &BlockQ2_K) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for (e, v) in q.iter_mut().enumerate() {
        let (half, plane, l) = (e / 128, (e % 128) / 32, e % 32);
        *v = ((b.qs[32 * half + l] >> (2 * plane)) & 3) as i8;
    }
    q
}

pub fn dequantize_row_q2_k_ref(x: &[BlockQ2_K], y: &mut [f32]) {
    dequant_each(x, y, |b, out| {
        let (d, dmin) = (fp16(b.d), fp16(b.dmin));
        dequant_sub_blocks(&unpack_q2_k(b), out, 16, |j| {
            let sc = b.scales[j];
            (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32)
        });
    });
}

pub fn vec_dot_q2_k_q8_k_ref(x: &[BlockQ2_K], y: &[BlockQ8_K]) -> f32 {
    check_dot(x, y);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let summs: i32 = yb
            .bsums
            .iter()
            .zip(&xb.scales)
            .map(|(&s, &sc)| s as i32 * (sc >> 4) as i32)
            .sum();
        let scales: [i32; 16] = std::array::from_fn(|j| (xb.scales[j] & 0xF) as i32);
        let isum = isum_scaled(&unpack_q2_k(xb), &yb.qs, &scales);
        let dall = yb.d * fp16(xb.d);
        let dmin = yb.d * fp16(xb.dmin);
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

impl_block!(
    BlockQ2_K,
    Q2_K,
    deq = dequantize_row_q2_k_ref,
    dot = vec_dot_q2_k_q8_k_ref,
    act = BlockQ8_K
);
