//! avx2_packed: AVX2 + FMA kernels for the packed Q4_0, Q4_1 and Q5_0 layouts of
//! [`crate::packed`].
//!
//! Same layout as the AVX-512 kernels. Each 64-byte part splits into two 256-bit halves: rows
//! 0..4 and rows 4..8, lane `2r' + p`. A half is processed at a time, so four 8-lane
//! accumulators (eight in the tile) fit AVX2's sixteen registers. The u8 × i8 sums use
//! `vpmaddubsw` + `vpmaddwd`. That is exact here because the weights are at most 5 bits
//! (≤ 31), so a pair sum stays within ±7874. Q5_0's fifth bits come from the 32-bit half of
//! each part's mask, spread to one byte per bit (ggml's `bytes_from_bits_32`). Q8_0 (unsigned
//! weights up to 255 would saturate `vpmaddubsw`), Q4_K and Q6_K are in `avx2_packed_q8_k`.

use std::arch::x86_64::*;

use crate::kernel_set::{PackedGemvFn, PackedTileFn, Provider};
use crate::packed::{
    aux_bytes, packed_block_bytes, ActBlockAux, Q81Aux, GROUP_ROWS, Q5_0_QH_AT, TILE_TOKENS,
};
use crate::table::GgmlType;

/// Half `h`'s four row scales (f16 at `at`), each in its two lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn half_scales(at: *const u8) -> __m256 {
    let d4 = _mm_cvtph_ps(_mm_loadl_epi64(at as *const __m128i));
    _mm256_permutevar8x32_ps(
        _mm256_castps128_ps256(d4),
        _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
    )
}

/// Half `h` of a Q4_0-style nibble area at `q` (2 × 64 bytes): parts 0..4, unsigned.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn half_nibbles(q: *const u8, h: usize) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0x0F);
    let v0 = _mm256_loadu_si256(q.add(32 * h) as *const __m256i);
    let v1 = _mm256_loadu_si256(q.add(64 + 32 * h) as *const __m256i);
    [
        _mm256_and_si256(v0, m4),
        _mm256_and_si256(v1, m4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v0), m4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v1), m4),
    ]
}

/// 16 in byte `i` where bit `i` of the little-endian u32 at `at` is set: a Q5_0 half-part's
/// fifth bits, ready to OR onto its nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bits(at: *const u8) -> __m256i {
    let x = _mm256_set1_epi32((at as *const i32).read_unaligned());
    // Byte i takes byte i / 8 of x, then keeps only its bit i % 8.
    let spread = _mm256_shuffle_epi8(
        x,
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(16))
}

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
        let a = _mm256_set1_epi64x((qa.add(8 * k) as *const i64).read_unaligned());
        _mm256_maddubs_epi16(w[k], a)
    };
    let s16 = _mm256_add_epi16(
        _mm256_add_epi16(part(0), part(1)),
        _mm256_add_epi16(part(2), part(3)),
    );
    _mm256_add_epi32(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)), start)
}

/// How a level forms the u8 × i8 lane sums of a half-block: AVX2's `vpmaddubsw` chain above,
/// or AVX-VNNI's `vpdpbusd` (`simd::avxvnni_packed`). Everything else in these kernels is shared.
pub(super) trait Products {
    /// Σ over the four parts of `w[k]` · the activation bytes `qa[8k..8k + 8]`, plus `start`.
    unsafe fn isums(w: &[__m256i; 4], qa: *const u8, start: __m256i) -> __m256i;
}

/// The AVX2 products ([`half_isums`]).
pub(super) struct MaddUbs;

impl Products for MaddUbs {
    #[inline(always)]
    unsafe fn isums(w: &[__m256i; 4], qa: *const u8, start: __m256i) -> __m256i {
        half_isums(w, qa, start)
    }
}

/// acc + (d_w·d_a)·isum for one half, with the four row scales (f16) at `scales`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn add_scaled(acc: __m256, isum: __m256i, scales: *const u8, da: f32) -> __m256 {
    let d = _mm256_mul_ps(half_scales(scales), _mm256_set1_ps(da));
    _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc)
}

/// Lane pairs of one half summed → its four rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn half_pair_sums(acc: __m256) -> [f32; 4] {
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
    std::array::from_fn(|r| lanes[2 * r] + lanes[2 * r + 1])
}

/// Format-specific parts of one block for half `h`: (acc update for one token).
pub(super) trait Half {
    const TY: GgmlType;
    /// Half `h`'s four parts of a packed block as unsigned weights.
    #[inline(always)]
    unsafe fn weights(block: *const u8, h: usize) -> [__m256i; 4] {
        half_nibbles(block.add(Self::QUANTS_AT), h)
    }
    /// acc + this block's contribution for rows `4h..4h+4` against one activation block.
    unsafe fn block<P: Products>(
        acc: __m256,
        block: *const u8,
        w: &[__m256i; 4],
        h: usize,
        ab: *const u8,
        aux: *const u8,
    ) -> __m256;
    /// Where the nibbles start in a packed block.
    const QUANTS_AT: usize;
}

pub(super) struct Q40;
pub(super) struct Q41;
pub(super) struct Q50;

/// acc + one block against a Q8_0 activation block, the integer chain started from the
/// format's `−offset · lane sums` (`start` picks them from the aux record).
#[inline(always)]
pub(super) unsafe fn q8_0_act_block<P: Products>(
    acc: __m256,
    block: *const u8,
    w: &[__m256i; 4],
    h: usize,
    ab: *const u8,
    aux: *const u8,
    start: impl Fn(&ActBlockAux) -> [i32; 2],
) -> __m256 {
    let ax = (aux as *const ActBlockAux).read_unaligned();
    let start: i64 = bytemuck::cast(start(&ax));
    let s = P::isums(w, ab.add(2), _mm256_set1_epi64x(start));
    add_scaled(acc, s, block.add(8 * h), ax.d)
}

impl Half for Q40 {
    const TY: GgmlType = GgmlType::Q4_0;
    const QUANTS_AT: usize = 16;
    #[inline(always)]
    unsafe fn block<P: Products>(
        acc: __m256,
        block: *const u8,
        w: &[__m256i; 4],
        h: usize,
        ab: *const u8,
        aux: *const u8,
    ) -> __m256 {
        q8_0_act_block::<P>(acc, block, w, h, ab, aux, |ax| ax.neg_offset_sums_q4)
    }
}

impl Half for Q50 {
    const TY: GgmlType = GgmlType::Q5_0;
    const QUANTS_AT: usize = 16;
    #[inline(always)]
    unsafe fn weights(block: *const u8, h: usize) -> [__m256i; 4] {
        let nibbles = half_nibbles(block.add(Self::QUANTS_AT), h);
        // Part k's mask is the u64 at QH_AT + 8k; half h is its 32 bits at + 4h.
        std::array::from_fn(|k| {
            _mm256_or_si256(
                nibbles[k],
                fifth_bits(block.add(Q5_0_QH_AT + 8 * k + 4 * h)),
            )
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
        q8_0_act_block::<P>(acc, block, w, h, ab, aux, |ax| ax.neg_offset_sums_q5)
    }
}

impl Half for Q41 {
    const TY: GgmlType = GgmlType::Q4_1;
    const QUANTS_AT: usize = 32;
    #[inline(always)]
    unsafe fn block<P: Products>(
        acc: __m256,
        block: *const u8,
        w: &[__m256i; 4],
        h: usize,
        ab: *const u8,
        aux: *const u8,
    ) -> __m256 {
        let ax = (aux as *const Q81Aux).read_unaligned();
        let s = P::isums(w, ab.add(4), _mm256_setzero_si256());
        let acc = add_scaled(acc, s, block.add(8 * h), ax.d);
        _mm256_fmadd_ps(
            half_scales(block.add(16 + 8 * h)),
            _mm256_set1_ps(ax.half_s),
            acc,
        )
    }
}

#[inline(always)]
pub(super) unsafe fn gemv_k<F: Half, P: Products>(
    g: *const u8,
    a: *const u8,
    aux: *const u8,
    nb: usize,
) -> [f32; GROUP_ROWS] {
    let pbb = packed_block_bytes(F::TY).unwrap_or(0);
    let (ab_bytes, aux_b) = (
        F::TY.vec_dot_type().block_bytes(),
        aux_bytes(F::TY.vec_dot_type()),
    );
    // One pass over the group, both halves per block: the stream is read once, in order.
    let mut acc = [_mm256_setzero_ps(); 2];
    for b in 0..nb {
        let block = g.add(b * pbb);
        let (ab, ax) = (a.add(b * ab_bytes), aux.add(b * aux_b));
        for (h, acc) in acc.iter_mut().enumerate() {
            let w = F::weights(block, h);
            *acc = F::block::<P>(*acc, block, &w, h, ab, ax);
        }
    }
    let mut out = [0.0f32; GROUP_ROWS];
    for (h, acc) in acc.iter().enumerate() {
        out[4 * h..4 * h + 4].copy_from_slice(&half_pair_sums(*acc));
    }
    out
}

#[inline(always)]
pub(super) unsafe fn tile_k<F: Half, P: Products>(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    let pbb = packed_block_bytes(F::TY).unwrap_or(0);
    let (ab_bytes, aux_b) = (
        F::TY.vec_dot_type().block_bytes(),
        aux_bytes(F::TY.vec_dot_type()),
    );
    let mut out = [[0.0f32; GROUP_ROWS]; TILE_TOKENS];
    for h in 0..2 {
        let mut acc = [_mm256_setzero_ps(); TILE_TOKENS];
        for b in 0..nb {
            let block = g.add(b * pbb);
            let w = F::weights(block, h);
            for t in 0..TILE_TOKENS {
                acc[t] = F::block::<P>(
                    acc[t],
                    block,
                    &w,
                    h,
                    a[t].add(b * ab_bytes),
                    aux[t].add(b * aux_b),
                );
            }
        }
        for t in 0..TILE_TOKENS {
            out[t][4 * h..4 * h + 4].copy_from_slice(&half_pair_sums(acc[t]));
        }
    }
    out
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

super::avx512_packed::packed_entry_points!(
    0 => (GgmlType::Q4_0, q4_0_gemv_k, q4_0_tile_k),
    1 => (GgmlType::Q4_1, q4_1_gemv_k, q4_1_tile_k),
    2 => (GgmlType::Q5_0, q5_0_gemv_k, q5_0_tile_k),
);
