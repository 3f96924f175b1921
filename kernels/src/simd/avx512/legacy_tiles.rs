//! avx512::legacy_tiles: the 4×4 GEMM tiles and four-row matvec kernels of `avx2::legacy_tiles`
//! (same code, via its `legacy_tiles!` macro) compiled for AVX-512 F/BW/VL + VNNI: integer dots
//! by one 256-bit `vpdpbusd` started from the offset bias, 32 ymm registers (the 16 tile
//! accumulators stay in registers), and Q8_0 weights via the +128 activation trick.

use std::arch::x86_64::*;

use crate::kernel_set::Provider;

/// `acc` + Σ per 4 bytes of u8(u)·i8(s) into i32 lanes (`vpdpbusd`, no saturation).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dpb(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, s)
}

/// Bit j of the little-endian u32 at `p` → byte j = 0x10 if set, else 0 (one masked move).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q5_high(p: *const u8) -> __m256i {
    let h = (p as *const u32).read_unaligned();
    _mm256_maskz_mov_epi8(h, _mm256_set1_epi8(0x10))
}

/// The f16 d (and, with `pair`, the following m / s) at the start of blocks 0..n (n ≤ 8,
/// `stride` bytes apart, even) as f32, lanes ≥ n zero: up to 4 masked 64-byte loads (no bytes
/// past the n blocks are touched) and one or two `vpermt2w` picking word j·stride/2 (+1).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn fast_scales(
    p: *const u8,
    stride: usize,
    n: usize,
    pair: bool,
) -> Option<(__m256, __m256)> {
    if !pair {
        // Measured: for d alone the generic staging is faster (Q4_0 tile 56 vs 51 G MAC/s).
        return None;
    }
    let words = stride / 2;
    let avail = n * stride; // bytes of the n blocks
                            // Lanes 0..8: word j·words (d of block j); lanes 8..16: word j·words + 1 (m / s).
    const IOTA: [u16; 32] = [
        0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ];
    const HI: [u16; 32] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ];
    let mut idx = _mm512_mullo_epi16(
        _mm512_loadu_si512(IOTA.as_ptr() as *const _),
        _mm512_set1_epi16(words as i16),
    );
    if pair {
        idx = _mm512_add_epi16(idx, _mm512_loadu_si512(HI.as_ptr() as *const _));
    }
    let load = |k: usize| -> __m512i {
        let start = 64 * k;
        if avail >= start + 64 {
            _mm512_loadu_si512(p.add(start) as *const _)
        } else if avail > start {
            let mask: u64 = (1u64 << (avail - start)) - 1;
            _mm512_maskz_loadu_epi8(mask, p.add(start) as *const i8)
        } else {
            _mm512_setzero_si512()
        }
    };
    // Words needed: up to 7·words + 2 ≤ 128.
    let need = 7 * words + 1 + pair as usize; // words read, ≤ 128
    let lo = _mm512_permutex2var_epi16(load(0), idx, load(1));
    let v = if need > 64 {
        let hi = _mm512_permutex2var_epi16(
            load(2),
            _mm512_sub_epi16(idx, _mm512_set1_epi16(64)),
            load(3),
        );
        let sel = _mm512_cmpge_epu16_mask(idx, _mm512_set1_epi16(64));
        _mm512_mask_blend_epi16(sel, lo, hi)
    } else {
        lo
    };
    let v = _mm512_castsi512_si256(v);
    let second = if pair {
        _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(v))
    } else {
        _mm256_setzero_ps()
    };
    Some((_mm256_cvtph_ps(_mm256_castsi256_si128(v)), second))
}

crate::simd::x86::legacy_tiles::legacy_tiles!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    true,
    false
);

pub(crate) static PROVIDER: Provider = Provider {
    name: module_path!(),
    tile4x4: tile4x4_legacy,
    rows4: rows4_legacy,
    ..Provider::NONE
};
