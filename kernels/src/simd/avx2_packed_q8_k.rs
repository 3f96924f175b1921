//! avx2_packed_q8_k: AVX2 (+FMA, F16C; no VNNI) kernels for the packed Q8_0, Q4_K and Q6_K
//! layouts of [`crate::packed`] (the same bytes the AVX-512 kernels read).
//!
//! As in `avx2_packed`, each 64-byte part splits into two 256-bit halves (rows 0..4 and 4..8,
//! lane `2r' + p`), and the u8 × i8 sums use llama.cpp's AVX2 idiom, `vpmaddubsw` (adjacent
//! pairs to i16) then `vpmaddwd` (pairs to i32). `vpmaddubsw` saturates, so each format keeps its
//! i16 pair sums in range:
//!
//! * Q8_0: the packed bytes are `q + 128`, up to 255, which would saturate; the kernel flips
//!   them back to `q` and uses the sign trick (`|q|` as the unsigned operand, `sign(a, q)` as the
//!   signed one: pair sums ≤ 2·128·127, exact also for q = −128; activations never hold −128).
//!   Then `vpmaddwd` against ones.
//!
//! The gemv does both halves per block (one pass over the stream); the tile applies each
//! unpacked block to [`TILE_TOKENS`] activation rows. Integer block sums are exact; the f32
//! scaling is the AVX-512 kernels' (one FMA per block with `d_w·d_a`), so results differ from
//! the scalar reference only in f32 rounding order.

use std::arch::x86_64::*;

use crate::kernel_set::{PackedGemvFn, PackedTileFn, Provider};
use crate::packed::{packed_block_bytes, ActBlockAux, GROUP_ROWS, TILE_TOKENS};
use crate::table::GgmlType;

/// Half `h`'s four row scales (f16 at `at`, row order), each in its two lanes.
#[inline(always)]
unsafe fn half_scales(at: *const u8) -> __m256 {
    let d4 = _mm_cvtph_ps(_mm_loadl_epi64(at as *const __m128i));
    _mm256_permutevar8x32_ps(
        _mm256_castps128_ps256(d4),
        _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
    )
}

/// Lane pairs of one half summed → its four rows.
#[inline(always)]
unsafe fn half_pair_sums(acc: __m256) -> [f32; 4] {
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
    std::array::from_fn(|r| lanes[2 * r] + lanes[2 * r + 1])
}

/// The eight rows' outputs from the two halves' accumulators.
#[inline(always)]
unsafe fn rows_of(acc: [__m256; 2]) -> [f32; GROUP_ROWS] {
    let (lo, hi) = (half_pair_sums(acc[0]), half_pair_sums(acc[1]));
    std::array::from_fn(|r| if r < 4 { lo[r] } else { hi[r - 4] })
}

/// 64-bit broadcast of the eight bytes at `p`.
#[inline(always)]
unsafe fn bcast8(p: *const u8) -> __m256i {
    _mm256_set1_epi64x((p as *const i64).read_unaligned())
}

// ---------------------------------------------------------------- Q8_0 × Q8_0

const Q8_0_PBB: usize = match packed_block_bytes(GgmlType::Q8_0) {
    Some(b) => b,
    None => 0,
};
/// Q8_0 activation block: d (f16) at 0, qs at 2.
const Q80_BYTES: usize = 34;
const AUX80: usize = std::mem::size_of::<ActBlockAux>();

/// One half of a packed Q8_0 block: per part, (|q| as u8, q).
#[inline(always)]
unsafe fn q8_0_half(block: *const u8, h: usize) -> [(__m256i, __m256i); 4] {
    let flip = _mm256_set1_epi8(-128);
    std::array::from_fn(|k| {
        let u = _mm256_loadu_si256(block.add(16 + 64 * k + 32 * h) as *const __m256i);
        let q = _mm256_xor_si256(u, flip);
        (_mm256_sign_epi8(q, q), q)
    })
}

/// Σ over the four parts of q·a (activation quants at `qa`): exact signed lane sums.
#[inline(always)]
unsafe fn q8_0_isums(w: &[(__m256i, __m256i); 4], qa: *const u8) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    let part = |k: usize| {
        let a = _mm256_sign_epi8(bcast8(qa.add(8 * k)), w[k].1);
        _mm256_madd_epi16(_mm256_maddubs_epi16(w[k].0, a), ones)
    };
    _mm256_add_epi32(
        _mm256_add_epi32(part(0), part(1)),
        _mm256_add_epi32(part(2), part(3)),
    )
}

/// Activation block `b`'s scale as f32 (from its aux record).
#[inline(always)]
unsafe fn q8_0_da(aux: *const u8, b: usize) -> f32 {
    (aux.add(b * AUX80) as *const ActBlockAux)
        .read_unaligned()
        .d
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_gemv_k(g: *const u8, a: *const u8, aux: *const u8, nb: usize) -> [f32; GROUP_ROWS] {
    let mut acc = [_mm256_setzero_ps(); 2];
    for b in 0..nb {
        let block = g.add(b * Q8_0_PBB);
        let qa = a.add(b * Q80_BYTES + 2);
        let da = _mm256_set1_ps(q8_0_da(aux, b));
        for (h, acc) in acc.iter_mut().enumerate() {
            let s = q8_0_isums(&q8_0_half(block, h), qa);
            let d = _mm256_mul_ps(half_scales(block.add(8 * h)), da);
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, *acc);
        }
    }
    rows_of(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_tile_k(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    let mut out = [[0.0f32; GROUP_ROWS]; TILE_TOKENS];
    for h in 0..2 {
        let mut acc = [_mm256_setzero_ps(); TILE_TOKENS];
        for b in 0..nb {
            let block = g.add(b * Q8_0_PBB);
            let w = q8_0_half(block, h);
            let dw = half_scales(block.add(8 * h));
            for t in 0..TILE_TOKENS {
                let s = q8_0_isums(&w, a[t].add(b * Q80_BYTES + 2));
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(q8_0_da(aux[t], b)));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, acc[t]);
            }
        }
        for t in 0..TILE_TOKENS {
            out[t][4 * h..4 * h + 4].copy_from_slice(&half_pair_sums(acc[t]));
        }
    }
    out
}

super::avx512_packed::packed_entry_points!(
    0 => (GgmlType::Q8_0, q8_0_gemv_k, q8_0_tile_k),
);
