//! avx2::legacy_tiles: 4×4 GEMM tiles (`Tile4x4Fn`) and four-row matvec kernels (`Rows4DotFn`)
//! for the legacy block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (see kernel_set.rs).
//!
//! The kernel bodies live in the [`legacy_tiles!`] macro so the AVX-512 file instantiates the
//! same code under its own `target_feature` set. Every module invoking it must define
//!
//! ```ignore
//! // acc + Σ per 4 bytes of u8(u)·i8(s), i32 lanes
//! // (VNNI: one `vpdpbusd`; AVX2: `vpmaddubsw` + `vpmaddwd` + `vpaddd`)
//! unsafe fn dpb(acc: __m256i, u: __m256i, s: __m256i) -> __m256i
//! // bit j of the little-endian u32 at p → byte j = 0x10 or 0 (Q5 fifth bit)
//! unsafe fn q5_high(p: *const u8) -> __m256i
//! // optional faster staging of the f16 scales of blocks 0..n (`None`: generic staging)
//! unsafe fn fast_scales(p: *const u8, stride: usize, n: usize, pair: bool)
//!     -> Option<(__m256, __m256)>
//! ```
//!
//! and pass (1) whether Q8_0 weights use the +128 activation trick (needs `vpdpbusd`:
//! `vpmaddubsw` would saturate), (2) whether the 4×4 tile folds its dots with `vphaddd`
//! (`tile4_impl`, 4 accumulators: AVX2 with 16 registers) or keeps 16 accumulators
//! (`tile_impl::<K, 4>`: AVX-512 with 32 registers, where `vphaddd` measured slower on Zen 4).
//!
//! Technique. `tile_impl::<K, NT>` (K = weight format, NT = tokens: 4 for the tile, 1 for rows4)
//! keeps 4·NT f32 accumulators of 8 lanes each (per-lane partial sums, reduced once at the
//! end). Per 32-element block it unpacks each of the 4 weight blocks once, loads each of the NT
//! activation blocks once, and does 4·NT × (integer dot → `cvtdq2ps` → FMA with the broadcast
//! d_w·d_a). 4-bit / 5-bit weights stay unsigned (0..15 / 0..31) as the u8 operand; the −8 / −16
//! offset of Q4_0 / Q5_0 is folded in by starting each integer dot from the bias −8·Σa (−16·Σa)
//! per 4-byte lane group, computed once per (token, block) and reused for the 4 rows. Q8_0
//! (VNNI): u8 = a + 128 once per (token, block), dot started from −128·Σw per lane group,
//! computed once per (row, block) and reused for the tokens (exact even for a = −128); Q8_0
//! (AVX2): the `vpsignb` trick (|w| once per row, sign(a, w) per pair; activations must not
//! hold −128, as in `avx2::legacy`). Q4_1 / Q5_1 add Σ_blocks m_w·s_a. Scales: per chunk of 8
//! blocks the f16 d (and m, s) of all rows/tokens are staged (u16 loads; Q4_1/Q5_1 tiles: one
//! `vpgatherdd` per row/token, or the AVX-512 `vpermt2w` path), converted 8 at a time with F16C,
//! and the 4·NT scale products stored to a small stack table the FMAs broadcast from; the m·s
//! products of the chunk are added lane-wise into the same accumulators (all lanes are summed at
//! the end anyway). `tile4_impl` instead folds the 4 token dots of a row into
//! [t0 t1 t2 t3 | t0 t1 t2 t3] with 3 `vphaddd` and scales them with one FMA.
//!
//! Integer block sums are exact (|lane| ≤ 4·255·128 + bias); the only differences from the
//! scalar reference are the f32 rounding of the per-lane scaling and the summation order.
//! Every kernel asserts the slice lengths (whole blocks, equal lengths) before its unchecked
//! reads, and reads only bytes inside the given blocks.

use std::arch::x86_64::*;

use crate::kernel_set::Provider;

/// AVX2 u8×i8 pair sums added to `acc`. Adjacent pair sums fit i16 for |u| ≤ 128 and
/// |s| ≤ 128 (unsigned 4/5-bit weights: ≤ 2·31·128; sign trick: ≤ 2·128·127).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dpb(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_add_epi32(
        acc,
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)),
    )
}

/// Bit j of the little-endian u32 at `p` → byte j = 0x10 if set, else 0x00 (the Q5 fifth bit).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_high(p: *const u8) -> __m256i {
    let h = (p as *const u32).read_unaligned();
    let v = _mm256_set1_epi32(h as i32);
    // Byte j takes source byte j/8, then all bits but bit j%8 are set: all ones iff it was set.
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let v = _mm256_shuffle_epi8(v, shuf);
    let v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64));
    _mm256_and_si256(
        _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1)),
        _mm256_set1_epi8(0x10),
    )
}

/// No AVX2 shortcut for the chunk scales (see the AVX-512 file's `fast_scales`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fast_scales(
    _p: *const u8,
    _stride: usize,
    _n: usize,
    _pair: bool,
) -> Option<(__m256, __m256)> {
    None
}

crate::simd::x86::legacy_tiles::legacy_tiles!("avx2,fma,f16c", false, true);

/// AVX2 tiles where they beat `row_dot4`: not Q4_1 / Q5_1, whose `row_dot4` needs no sign
/// fix-up and measured faster (Q4_1 38.9 vs tile 35.6, Q5_1 34.0 vs 28.7 G MAC/s on Zen 4).
fn tile4x4_avx2(ty: crate::table::GgmlType) -> Option<crate::kernel_set::Tile4x4Fn> {
    use crate::table::GgmlType as T;
    match ty {
        T::Q4_1 | T::Q5_1 => None,
        _ => tile4x4_legacy(ty),
    }
}

/// AVX2 four-row kernels where they are not slower than `row_dot`: not Q5_1 (19.5 vs rows4
/// 18.0 G MAC/s on Zen 4).
fn rows4_avx2(ty: crate::table::GgmlType) -> Option<crate::kernel_set::Rows4DotFn> {
    match ty {
        crate::table::GgmlType::Q5_1 => None,
        _ => rows4_legacy(ty),
    }
}

pub(crate) static PROVIDER: Provider = Provider {
    name: module_path!(),
    tile4x4: tile4x4_avx2,
    rows4: rows4_avx2,
    ..Provider::NONE
};
