//! avx2::packed: the AVX2 entry points of the packed Q4_0, Q4_1 and Q5_0 kernels
//! ([`crate::simd::x86::packed`]'s loops) with AVX2's products: `vpmaddubsw` + `vpmaddwd`, exact
//! here because the weights are at most 5 bits (≤ 31). Q8_0 (unsigned weights up to 255 would
//! saturate `vpmaddubsw`), Q4_K and Q6_K are in `avx2::packed_q8_k`.

use std::arch::x86_64::*;

use crate::kernel_set::{PackedGemvFn, PackedTileFn, Provider};
use crate::packed::{GROUP_ROWS, TILE_TOKENS};
use crate::simd::x86::packed::{bcast8, gemv_k, tile_k, Products, Q40, Q41, Q50};
use crate::table::GgmlType;

/// Σ over the four parts of u·a (activation quants at `qa`), plus `start` (i32 lanes).
///
/// The four parts' `vpmaddubsw` pair sums are added in i16 before one `vpmaddwd` widens them:
/// with u ≤ 31 and any i8 activation a pair sum is at most 2·31·128 = 7936 in size, four of
/// them 31744 < 2^15, so nothing saturates. One widening instead of four: five multiplier-port
/// instructions per half-block instead of eight.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn half_isums(w: &[__m256i; 4], qa: *const u8, start: __m256i) -> __m256i {
    let part = |k: usize| {
        let a = bcast8(qa.add(8 * k));
        _mm256_maddubs_epi16(w[k], a)
    };
    let s16 = _mm256_add_epi16(
        _mm256_add_epi16(part(0), part(1)),
        _mm256_add_epi16(part(2), part(3)),
    );
    _mm256_add_epi32(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)), start)
}

/// The AVX2 products ([`half_isums`]).
struct MaddUbs;

impl Products for MaddUbs {
    #[inline(always)]
    unsafe fn isums(w: &[__m256i; 4], qa: *const u8, start: __m256i) -> __m256i {
        half_isums(w, qa, start)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_gemv_k(g: *const u8, a: *const u8, aux: *const u8, nb: usize) -> [f32; GROUP_ROWS] {
    gemv_k::<Q40, MaddUbs>(g, a, aux, nb)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_gemv_k(g: *const u8, a: *const u8, aux: *const u8, nb: usize) -> [f32; GROUP_ROWS] {
    gemv_k::<Q41, MaddUbs>(g, a, aux, nb)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_gemv_k(g: *const u8, a: *const u8, aux: *const u8, nb: usize) -> [f32; GROUP_ROWS] {
    gemv_k::<Q50, MaddUbs>(g, a, aux, nb)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_tile_k(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    tile_k::<Q40, MaddUbs>(g, a, aux, nb)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_tile_k(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    tile_k::<Q41, MaddUbs>(g, a, aux, nb)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_tile_k(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    tile_k::<Q50, MaddUbs>(g, a, aux, nb)
}

crate::simd::x86::packed::packed_entry_points!(
    0 => (GgmlType::Q4_0, q4_0_gemv_k, q4_0_tile_k),
    1 => (GgmlType::Q4_1, q4_1_gemv_k, q4_1_tile_k),
    2 => (GgmlType::Q5_0, q5_0_gemv_k, q5_0_tile_k),
);
