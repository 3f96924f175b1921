//! Q3_K: 256 elements in 16 sub-blocks of 16; 2 low bits as Q2_K, a high-bit mask (bit clear
//! means "subtract 4"), sixteen 6-bit scales biased by 32; value = d·(sc − 32)·q3.

use super::k_search::{make_q3_quants, nearest_int};
use super::{
    check_dot, dequant_each, dequant_sub_blocks, fp16, impl_block, isum_scaled, pack_2bit_planes,
    quant_each, BlockQ8_K, QK_K,
};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ3_K {
    /// Bit k of `hmask[l]` belongs to element 32k + l.
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3_K>() == 110);

/// The sixteen 6-bit scales with the bias removed (−32 ..= 31). Scale i: low 4 bits from
/// nibble (i % 8 of bytes 0..8, low nibbles first), high 2 bits from byte 8 + i % 4 at bit 2·(i / 4).
#[inline]
pub fn q3_k_scales(s: &[u8; 12]) -> [i32; 16] {
    std::array::from_fn(|i| {
        let lo = (s[i % 8] >> (4 * (i / 8))) & 0xF;
        let hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        (lo | (hi << 4)) as i32 - 32
    })
}

/// The 256 3-bit quants (−4 ..= 3) in element order.
#[inline]
pub fn unpack_q3_k(b: &BlockQ3_K) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for (e, v) in q.iter_mut().enumerate() {
        let (half, plane, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = ((b.qs[32 * half + l] >> (2 * plane)) & 3) as i8;
        let high_set = b.hmask[l] & (1 << (e / 32)) != 0;
        *v = low - if high_set { 0 } else { 4 };
    }
    q
}

pub fn dequantize_row_q3_k_ref(x: &[BlockQ3_K], y: &mut [f32]) {
    dequant_each(x, y, |b, out| {
        let d = fp16(b.d);
        let scales = q3_k_scales(&b.scales);
        dequant_sub_blocks(&unpack_q3_k(b), out, 16, |j| (d * scales[j] as f32, 0.0));
    });
}

/// `quantize_row_q3_K_ref`: per sub-block of 16 a `make_q3_quants` fit, the sixteen signed
/// scales quantized to 6 bits against the one of largest magnitude, then the quants recomputed
/// against the rounded scales.
pub fn quantize_row_q3_k_ref(x: &[f32], y: &mut [BlockQ3_K]) {
    quant_each(x, y, quantize_block_q3_k);
}

/// Inverse of [`q3_k_scales`] for one biased 6-bit scale `l` (0..=63) of sub-block j.
fn put_q3_k_scale(s: &mut [u8; 12], j: usize, l: u8) {
    if j < 8 {
        s[j] = l & 0xF;
    } else {
        s[j - 8] |= (l & 0xF) << 4;
    }
    s[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
}

fn quantize_block_q3_k(x: &[f32]) -> BlockQ3_K {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
    for (j, sc) in scales.iter_mut().enumerate() {
        *sc = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        if sc.abs() > amax {
            amax = sc.abs();
            max_scale = *sc;
        }
    }
    let mut b = BlockQ3_K {
        hmask: [0; QK_K / 8],
        qs: [0; QK_K / 4],
        scales: [0; 12],
        d: f16::ZERO,
    };
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &sc) in scales.iter().enumerate() {
            // ggml narrows to int8_t before clamping; the product is within ±32 here.
            let q = nearest_int(iscale * sc) as i8;
            put_q3_k_scale(&mut b.scales, j, (q.clamp(-32, 31) + 32) as u8);
        }
        b.d = f16::from_f32(1.0 / iscale);
    }
    let sc = q3_k_scales(&b.scales);
    for ((&s, ls), xs) in sc
        .iter()
        .zip(l.chunks_exact_mut(16))
        .zip(x.chunks_exact(16))
    {
        let d = fp16(b.d) * s as f32;
        if d == 0.0 {
            continue;
        }
        for (li, &xi) in ls.iter_mut().zip(xs) {
            *li = nearest_int(xi / d).clamp(-4, 3) as i8 + 4;
        }
    }
    // Values 4..=7 set their bit in the high-bit mask (element 32k + m: bit k of byte m) and
    // keep the low two bits.
    let mut low = [0u8; QK_K];
    for (e, (&v, lo)) in l.iter().zip(low.iter_mut()).enumerate() {
        let v = v as u8;
        if v > 3 {
            b.hmask[e % 32] |= 1 << (e / 32);
            *lo = v - 4;
        } else {
            *lo = v;
        }
    }
    b.qs = pack_2bit_planes(&low);
    b
}

pub fn vec_dot_q3_k_q8_k_ref(x: &[BlockQ3_K], y: &[BlockQ8_K]) -> f32 {
    check_dot(x, y);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let isum = isum_scaled(&unpack_q3_k(xb), &yb.qs, &q3_k_scales(&xb.scales));
        sumf += fp16(xb.d) * yb.d * isum as f32;
    }
    sumf
}

impl_block!(
    BlockQ3_K,
    Q3_K,
    deq = dequantize_row_q3_k_ref,
    dot = vec_dot_q3_k_q8_k_ref,
    act = BlockQ8_K
);
