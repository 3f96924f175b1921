//! Q4_K: 256 elements in 8 sub-blocks of 32 with 6-bit scales and mins;
//! value = d·sc·nibble − dmin·m.

use super::k_search::{make_qkx2_quants_lanes, nearest_int, Qkx2Search};
use super::{
    check_dot, dequant_each, dequant_sub_blocks, fp16, impl_block, isum_scaled, quant_each,
    BlockQ8_K, QK_K,
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

/// One Q4_K/Q5_K super-block before bit packing.
pub(crate) struct KMinBlock {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    /// Quants 0..=nmax in element order.
    pub l: [u8; QK_K],
}

/// Inverse of [`get_scale_min_k4`] for the 6-bit scale `ls` and min `lm` of sub-block j.
fn put_scale_min_k4(q: &mut [u8; 12], j: usize, ls: u8, lm: u8) {
    if j < 4 {
        q[j] = ls;
        q[j + 4] = lm;
    } else {
        q[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
        q[j - 4] |= (ls >> 4) << 6;
        q[j] |= (lm >> 4) << 6;
    }
}

/// The shared part of `quantize_row_q4_K_ref` (nmax 15) and `quantize_row_q5_K_ref` (nmax 31):
/// per sub-block of 32 a `make_qkx2_quants` fit weighted by rms(x) + |x|, scales and mins
/// quantized to 6 bits against their maxima, then the quants recomputed against them.
pub(crate) fn quantize_k_min(x: &[f32], nmax: i32, search: Qkx2Search) -> KMinBlock {
    let mut weights = [0.0f32; QK_K];
    for (xs, ws) in x.chunks_exact(32).zip(weights.chunks_exact_mut(32)) {
        let sum_x2 = xs.iter().fold(0.0f32, |s, &v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in ws.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
    }
    let mut l = [0u8; QK_K];
    let (scales, mins) = make_qkx2_quants_lanes::<8, 32>(nmax, x, &weights, &mut l, search);
    let max_scale = scales
        .iter()
        .fold(0.0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..QK_K / 32 {
        // ggml stores the ints in uint8_t (truncating) before clamping to 63.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        put_scale_min_k4(&mut packed, j, ls, lm);
    }
    let (d, dmin) = (
        f16::from_f32(max_scale / 63.0),
        f16::from_f32(max_min / 63.0),
    );
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dl = fp16(d) * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = fp16(dmin) * m as f32;
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + dm) / dl).clamp(0, nmax) as u8;
        }
    }
    KMinBlock {
        d,
        dmin,
        scales: packed,
        l,
    }
}

/// `quantize_row_q4_K_ref`: [`quantize_k_min`] with nmax 15 and ggml's Q4_K search grid.
pub fn quantize_row_q4_k_ref(x: &[f32], y: &mut [BlockQ4_K]) {
    const SEARCH: Qkx2Search = Qkx2Search {
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    quant_each(x, y, |xb| {
        let k = quantize_k_min(xb, 15, SEARCH);
        BlockQ4_K {
            d: k.d,
            dmin: k.dmin,
            scales: k.scales,
            qs: std::array::from_fn(|i| {
                let (g, b) = (64 * (i / 32), i % 32);
                k.l[g + b] | (k.l[g + b + 32] << 4)
            }),
        }
    });
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
