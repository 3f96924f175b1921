//! Q6_K: 256 elements in 16 sub-blocks of 16 with int8 scales; value = d·sc·(q6 − 32).

use super::k_search::{make_qx_quants_lanes, nearest_int, GROUP_MAX_EPS};
use super::{
    check_dot, dequant_each, dequant_sub_blocks, fp16, impl_block, isum_scaled, quant_each,
    BlockQ8_K, QK_K,
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

/// `quantize_row_q6_K_ref`: per sub-block of 16 a `make_qx_quants` fit (nmax 32), the sixteen
/// signed scales quantized to int8 against the one of largest magnitude, then the quants
/// recomputed against the rounded scales. A block whose scales are all ~0 is all zeros.
pub fn quantize_row_q6_k_ref(x: &[f32], y: &mut [BlockQ6_K]) {
    quant_each(x, y, quantize_block_q6_k);
}

fn quantize_block_q6_k(x: &[f32]) -> BlockQ6_K {
    let mut l = [0i8; QK_K];
    let scales = make_qx_quants_lanes::<16, 16>(32, x, &mut l);
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for &sc in &scales {
        if sc.abs() > max_abs_scale {
            max_abs_scale = sc.abs();
            max_scale = sc;
        }
    }
    let mut b = BlockQ6_K {
        ql: [0; QK_K / 2],
        qh: [0; QK_K / 4],
        scales: [0; 16],
        d: f16::ZERO,
    };
    if max_abs_scale < GROUP_MAX_EPS {
        return b;
    }
    let iscale = -128.0 / max_scale;
    b.d = f16::from_f32(1.0 / iscale);
    for (s, &sc) in b.scales.iter_mut().zip(&scales) {
        // ggml stores the int in an int8_t (truncating) after capping it at 127.
        *s = nearest_int(iscale * sc).min(127) as i8;
    }
    for j in 0..QK_K / 16 {
        let d = fp16(b.d) * b.scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = nearest_int(x[i] / d).clamp(-32, 31) as i8 + 32;
        }
    }
    // Inverse of `unpack_q6_k`: per half of 128, low nibbles of elements r and r+64 share byte
    // r % 64 of `ql`, the high 2 bits of r, r+32, r+64, r+96 share byte r % 32 of `qh`.
    for (e, &v) in l.iter().enumerate() {
        let (half, r) = (e / 128, e % 128);
        let v = v as u8;
        b.ql[64 * half + r % 64] |= (v & 0xF) << (4 * (r / 64));
        b.qh[32 * half + r % 32] |= (v >> 4) << (2 * (r / 32));
    }
    b
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
