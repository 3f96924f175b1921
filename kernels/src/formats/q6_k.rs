//! Q6_K: 256 elements in 16 sub-blocks of 16 with int8 scales; value = d·sc·(q6 − 32).

use super::{
    check_dot, dequant_each, dequant_sub_blocks, fp16, impl_block, isum_scaled, BlockQ8_K, QK_K,
};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6_K {
    /// Low 4 bits: per half of 128, byte l (0..64) holds element l (low nibble) and l+64 (high).
    pub ql: [u8; QK_K / 2],
    /// High 2 bits: per half, byte l (0..32) holds elements l, l+32, l+64, l+96 at bits 0, 2, 4, 6.
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6_K>() == 210);

/// The 256 6-bit quants minus 32 (−32 ..= 31) in element order.
#[inline]
pub fn unpack_q6_k(b: &BlockQ6_K) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for (e, v) in q.iter_mut().enumerate() {
        let (half, r) = (e / 128, e % 128);
        let low = (b.ql[64 * half + r % 64] >> (4 * (r / 64))) & 0xF;
        let high = (b.qh[32 * half + r % 32] >> (2 * (r / 32))) & 3;
        *v = (low | (high << 4)) as i8 - 32;
    }
    q
}

pub fn dequantize_row_q6_k_ref(x: &[BlockQ6_K], y: &mut [f32]) {
    dequant_each(x, y, |b, out| {
        let d = fp16(b.d);
        dequant_sub_blocks(&unpack_q6_k(b), out, 16, |j| (d * b.scales[j] as f32, 0.0));
    });
}

pub fn vec_dot_q6_k_q8_k_ref(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
    check_dot(x, y);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let scales = xb.scales.map(|s| s as i32);
        let isum = isum_scaled(&unpack_q6_k(xb), &yb.qs, &scales);
        sumf += fp16(xb.d) * yb.d * isum as f32;
    }
    sumf
}

impl_block!(
    BlockQ6_K,
    Q6_K,
    deq = dequantize_row_q6_k_ref,
    dot = vec_dot_q6_k_q8_k_ref,
    act = BlockQ8_K
);
