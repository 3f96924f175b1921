//! Q5_K: Q4_K plus a fifth bit per element; value = d·sc·(nibble + 16·hbit) − dmin·m.

use super::k_search::Qkx2Search;
use super::q4_k::{dequant_k_min, dot_k_min, quantize_k_min, unpack_k_nibbles};
use super::{check_dot, dequant_each, impl_block, quant_each, BlockQ8_K, QK_K};
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

/// `quantize_row_q5_K_ref`: Q4_K's algorithm with nmax 31 and ggml's Q5_K search grid; the
/// fifth bits go to `qh` (element 32j + l: bit j of byte l).
pub fn quantize_row_q5_k_ref(x: &[f32], y: &mut [BlockQ5_K]) {
    const SEARCH: Qkx2Search = Qkx2Search {
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    quant_each(x, y, |xb| {
        let k = quantize_k_min(xb, 31, SEARCH);
        let mut qh = [0u8; QK_K / 8];
        for (e, &v) in k.l.iter().enumerate() {
            qh[e % 32] |= ((v >> 4) & 1) << (e / 32);
        }
        BlockQ5_K {
            d: k.d,
            dmin: k.dmin,
            scales: k.scales,
            qh,
            qs: std::array::from_fn(|i| {
                let (g, b) = (64 * (i / 32), i % 32);
                (k.l[g + b] & 0xF) | ((k.l[g + b + 32] & 0xF) << 4)
            }),
        }
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
