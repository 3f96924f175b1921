//! avxvnni::packed: the packed Q4_0, Q4_1, Q5_0 and Q8_0 kernels with AVX-VNNI's 256-bit
//! `vpdpbusd` (Intel client CPUs since Alder Lake, Zen 5) in place of AVX2's `vpmaddubsw` +
//! `vpmaddwd` chain.
//!
//! The loops, layouts and f32 scaling are `simd::x86::packed`'s (generic over [`Products`]);
//! only the integer lane sums differ. `vpdpbusd` adds four u8 × i8 products straight into an i32 lane, so
//! nothing saturates and Q8_0 needs no sign trick: its packed bytes `q + 128` are used as they
//! are, and the block's `−128 · lane sums` (the activation aux record, as on AVX-512) start the
//! sum. Q4_K and Q6_K keep the AVX2 kernels (their per-sub-block scales go through
//! `vpmaddwd` either way).

use std::arch::x86_64::*;

use crate::kernel_set::{PackedGemvFn, PackedTileFn, Provider};
use crate::packed::{GROUP_ROWS, TILE_TOKENS};
use crate::simd::x86::packed::{
    bcast8, gemv_k, q8_0_act_block, tile_k, Half, Products, Q40, Q41, Q50,
};
use crate::table::GgmlType;

/// The AVX-VNNI products.
struct Dpbusd;

impl Products for Dpbusd {
    #[inline(always)]
    unsafe fn isums(w: &[__m256i; 4], qa: *const u8, start: __m256i) -> __m256i {
        dpbusd_isums(w, qa, start)
    }
}

/// Σ over the four parts of `w[k]` · `qa[8k..8k + 8]` (64-bit broadcasts), plus `start`: two
/// chains of two `vpdpbusd`, so a one-token gemv is not bound by one chain's latency.
#[inline]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn dpbusd_isums(w: &[__m256i; 4], qa: *const u8, start: __m256i) -> __m256i {
    let a = |k: usize| bcast8(qa.add(8 * k));
    let s0 = _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(start, w[0], a(0)), w[1], a(1));
    let s1 = _mm256_dpbusd_avx_epi32(
        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), w[2], a(2)),
        w[3],
        a(3),
    );
    _mm256_add_epi32(s0, s1)
}

/// Packed Q8_0 (`crate::packed`: 8 row scales, then four 64-byte parts of `q + 128`), which
/// the AVX2 level cannot take this way (`vpmaddubsw` would saturate on bytes up to 255).
struct Q80;

impl Half for Q80 {
    const TY: GgmlType = GgmlType::Q8_0;
    #[inline(always)]
    unsafe fn weights(block: *const u8, h: usize) -> [__m256i; 4] {
        std::array::from_fn(|k| {
            _mm256_loadu_si256(block.add(Self::QUANTS_AT + 64 * k + 32 * h) as *const __m256i)
        })
    }
    #[inline(always)]
    unsafe fn block<P: Products>(
        acc: __m256,
        block: *const u8,
        w: &[__m256i; 4],
        h: usize,
        ab: *const u8,
        aux: *const u8,
    ) -> __m256 {
        q8_0_act_block::<P>(acc, block, w, h, ab, aux, |ax| ax.neg_offset_sums_q8)
    }
}

/// One gemv and one tile entry point per format, compiled with AVX-VNNI enabled.
macro_rules! vnni_entry_points {
    ($($fmt:ty => ($gemv:ident, $tile:ident)),+ $(,)?) => {$(
        #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
        unsafe fn $gemv(g: *const u8, a: *const u8, aux: *const u8, nb: usize) -> [f32; GROUP_ROWS] {
            gemv_k::<$fmt, Dpbusd>(g, a, aux, nb)
        }

        #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
        unsafe fn $tile(
            g: *const u8,
            a: [*const u8; TILE_TOKENS],
            aux: [*const u8; TILE_TOKENS],
            nb: usize,
        ) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
            tile_k::<$fmt, Dpbusd>(g, a, aux, nb)
        }
    )+};
}

vnni_entry_points!(
    Q40 => (q4_0_gemv_k, q4_0_tile_k),
    Q41 => (q4_1_gemv_k, q4_1_tile_k),
    Q50 => (q5_0_gemv_k, q5_0_tile_k),
    Q80 => (q8_0_gemv_k, q8_0_tile_k),
);

crate::simd::x86::packed::packed_entry_points!(
    0 => (GgmlType::Q4_0, q4_0_gemv_k, q4_0_tile_k),
    1 => (GgmlType::Q4_1, q4_1_gemv_k, q4_1_tile_k),
    2 => (GgmlType::Q5_0, q5_0_gemv_k, q5_0_tile_k),
    3 => (GgmlType::Q8_0, q8_0_gemv_k, q8_0_tile_k),
);
