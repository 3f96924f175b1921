//! Q5_K: Q4_K plus a fifth bit per element; value = d·sc·(nibble + 16·hbit) − dmin·m.

use super::q4_k::{dequant_k_min, dot_k_min, unpack_k_nibbles};
use super::{check_dot, dequant_each, impl_block, BlockQ8_K, QK_K};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    /// Bit j of `qh[l]` is the high bit of element 32j + l.
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_K>() == 176);

/// The 256 5-bit quants (0..=31) in element order.
#[inline]
pub fn unpack_q5_k(b: &BlockQ5_K) -> [i8; QK_K] {
    let mut q = unpack_k_nibbles(&b.qs);
    for (e, v) in q.iter_mut().enumerate() {
        *v |= (((b.qh[e % 32] >> (e / 32)) & 1) << 4) as i8;
    }
    q
}

pub fn dequantize_row_q5_k_ref(x: &[BlockQ5_K], y: &mut [f32]) {
    dequant_each(x, y, |b, out| {
        dequant_k_min(b.d, b.dmin, &b.scales, &unpack_q5_k(b), out)
    });
}

pub fn vec_dot_q5_k_q8_k_ref(x: &[BlockQ5_K], y: &[BlockQ8_K]) -> f32 {
    check_dot(x, y);
    x.iter().zip(y).fold(0.0f32, |s, (xb, yb)| {
        s + dot_k_min(xb.d, xb.dmin, &xb.scales, &unpack_q5_k(xb), yb)
    })
}

impl_block!(
    BlockQ5_K,
    Q5_K,
    deq = dequantize_row_q5_k_ref,
    dot = vec_dot_q5_k_q8_k_ref,
    act = BlockQ8_K
);
