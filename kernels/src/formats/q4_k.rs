//! Q4_K: 256 elements in 8 sub-blocks of 32 with 6-bit scales and mins;
//! value = d·sc·nibble − dmin·m.

use super::{
    check_dot, dequant_each, dequant_sub_blocks, fp16, impl_block, isum_scaled, BlockQ8_K, QK_K,
};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_K {
    pub d: f16,
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, see [`get_scale_min_k4`].
    pub scales: [u8; 12],
    /// Group g (64 elements) uses bytes 32g..32g+32: low nibbles = elements 64g..64g+32,
    /// high nibbles = elements 64g+32..64g+64.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_K>() == 144);

/// (scale, min) of sub-block j (ggml's `get_scale_min_k4`).
#[inline(always)]
pub fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// All eight (scales, mins) as i32.
#[inline]
pub(crate) fn scales_mins_k4(q: &[u8; 12]) -> ([i32; 8], [i32; 8]) {
    let sm: [(u8, u8); 8] = std::array::from_fn(|j| get_scale_min_k4(j, q));
    (sm.map(|(s, _)| s as i32), sm.map(|(_, m)| m as i32))
}

/// The 256 low 4-bit values (0..=15) of the Q4_K/Q5_K layout in element order.
#[inline]
pub(crate) fn unpack_k_nibbles(qs: &[u8; QK_K / 2]) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for (e, v) in q.iter_mut().enumerate() {
        let (g, hi, l) = (e / 64, (e % 64) / 32, e % 32);
        *v = ((qs[32 * g + l] >> (4 * hi)) & 0xF) as i8;
    }
    q
}

/// Shared by Q4_K and Q5_K: out = (d·sc)·q − dmin·m per sub-block of 32.
#[inline]
pub(crate) fn dequant_k_min(d: f16, dmin: f16, scales: &[u8; 12], q: &[i8; QK_K], out: &mut [f32]) {
    let (d, dmin) = (fp16(d), fp16(dmin));
    let (sc, m) = scales_mins_k4(scales);
    dequant_sub_blocks(q, out, 8, |j| (d * sc[j] as f32, dmin * m[j] as f32));
}

/// Shared by Q4_K and Q5_K: one super-block's contribution d·Σsc·Σq·a − dmin·Σm·bsum.
#[inline]
pub(crate) fn dot_k_min(
    d: f16,
    dmin: f16,
    scales: &[u8; 12],
    q: &[i8; QK_K],
    y: &BlockQ8_K,
) -> f32 {
    let (sc, m) = scales_mins_k4(scales);
    let summs: i32 = y
        .bsums
        .iter()
        .enumerate()
        .map(|(j, &s)| s as i32 * m[j / 2])
        .sum();
    let isum = isum_scaled(q, &y.qs, &sc);
    fp16(d) * y.d * isum as f32 - fp16(dmin) * y.d * summs as f32
}

pub fn dequantize_row_q4_k_ref(x: &[BlockQ4_K], y: &mut [f32]) {
    dequant_each(x, y, |b, out| {
        dequant_k_min(b.d, b.dmin, &b.scales, &unpack_k_nibbles(&b.qs), out)
    });
}

pub fn vec_dot_q4_k_q8_k_ref(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
    check_dot(x, y);
    x.iter().zip(y).fold(0.0f32, |s, (xb, yb)| {
        s + dot_k_min(xb.d, xb.dmin, &xb.scales, &unpack_k_nibbles(&xb.qs), yb)
    })
}

impl_block!(
    BlockQ4_K,
    Q4_K,
    deq = dequantize_row_q4_k_ref,
    dot = vec_dot_q4_k_q8_k_ref,
    act = BlockQ8_K
);
