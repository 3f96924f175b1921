//! Q2_K: 256 elements in 16 sub-blocks of 16. Per sub-block a byte with a 4-bit scale (low) and a
//! 4-bit min (high); value = d·(sc & 15)·q − dmin·(sc >> 4), q the 2-bit quant.

use super::k_search::{make_qkx2_quants_lanes, nearest_int, Qkx2Search};
use super::{
    check_dot, dequant_each, dequant_sub_blocks, fp16, impl_block, isum_scaled, pack_2bit_planes,
    quant_each, BlockQ8_K, QK_K,
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

/// `quantize_row_q2_K_ref`: per sub-block of 16 a `make_qkx2_quants` fit (weights |x|,
/// absolute error), the sixteen scales and mins quantized to 4 bits against their maxima, then
/// the quants recomputed against the rounded scales.
pub fn quantize_row_q2_k_ref(x: &[f32], y: &mut [BlockQ2_K]) {
    quant_each(x, y, quantize_block_q2_k);
}

const Q2_K_SEARCH: Qkx2Search = Qkx2Search {
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
    use_mad: true,
};

fn quantize_block_q2_k(x: &[f32]) -> BlockQ2_K {
    const Q4SCALE: f32 = 15.0;
    let weights: [f32; QK_K] = std::array::from_fn(|i| x[i].abs());
    let mut l = [0u8; QK_K];
    let (scales, mins) = make_qkx2_quants_lanes::<16, 16>(3, x, &weights, &mut l, Q2_K_SEARCH);
    let max_scale = scales
        .iter()
        .fold(0.0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });
    let mut b = BlockQ2_K {
        scales: [0; 16],
        qs: [0; QK_K / 4],
        d: f16::ZERO,
        dmin: f16::ZERO,
    };
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (s, &sc) in b.scales.iter_mut().zip(&scales) {
            // ggml stores the int in a uint8_t: truncating, as `as u8` does.
            *s = nearest_int(iscale * sc) as u8;
        }
        b.d = f16::from_f32(max_scale / Q4SCALE);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (s, &m) in b.scales.iter_mut().zip(&mins) {
            *s |= (nearest_int(iscale * m) << 4) as u8;
        }
        b.dmin = f16::from_f32(max_min / Q4SCALE);
    }
    for j in 0..QK_K / 16 {
        let d = fp16(b.d) * (b.scales[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = fp16(b.dmin) * (b.scales[j] >> 4) as f32;
        for i in 16 * j..16 * j + 16 {
            l[i] = nearest_int((x[i] + dm) / d).clamp(0, 3) as u8;
        }
    }
    b.qs = pack_2bit_planes(&l);
    b
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
