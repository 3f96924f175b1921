//! Shared x86 helpers of the K-quant kernels (every level's `kquants` and `kquant_tiles`):
//! block layouts taken from the format structs, unaligned loads, scale unpacking and the
//! horizontal sums. The `#[target_feature]` ones need only AVX2, which every x86 level has.

use std::arch::x86_64::*;
use std::mem::{offset_of, size_of};

use crate::formats::{BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K};

/// Block sizes and field offsets, from the format structs (one definition of each layout).
pub(crate) const Q8K_BYTES: usize = size_of::<BlockQ8_K>();
pub(crate) const Q8K_QS: usize = offset_of!(BlockQ8_K, qs);
pub(crate) const Q8K_BSUMS: usize = offset_of!(BlockQ8_K, bsums);

pub(crate) const Q2K_BYTES: usize = size_of::<BlockQ2_K>();
pub(crate) const Q3K_BYTES: usize = size_of::<BlockQ3_K>();
pub(crate) const Q4K_BYTES: usize = size_of::<BlockQ4_K>();
pub(crate) const Q5K_BYTES: usize = size_of::<BlockQ5_K>();
pub(crate) const Q6K_BYTES: usize = size_of::<BlockQ6_K>();

// ---------------------------------------------------------------------------------------------
// Small helpers (inlined into the `#[target_feature]` kernels).

#[inline(always)]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline(always)]
pub(crate) unsafe fn f32_at(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

#[inline(always)]
pub(crate) unsafe fn u32_at(p: *const u8) -> u32 {
    (p as *const u32).read_unaligned()
}

#[inline(always)]
pub(crate) unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
pub(crate) unsafe fn load128(p: *const u8) -> __m128i {
    _mm_loadu_si128(p as *const __m128i)
}

/// Q4_K/Q5_K 12-byte scale field → 16 × i16: the eight 6-bit scales, then the eight 6-bit mins
/// (the `0x3f3f3f3f / 0x0f0f0f0f / 0x03030303` unpack of `get_scale_min_k4`).
#[inline(always)]
pub(crate) unsafe fn k4_scales_mins(p: *const u8) -> __m256i {
    // Byte groups of 4 (dwords): q0 = bytes 0..4, q1 = 4..8, q2 = 8..12 of the scale field
    // (the 16-byte load reads 4 bytes of the following, ignored, quants).
    // scales 0..4 = q0 & 63          scales 4..8 = (q2 & 15) | (q0 >> 6) << 4
    // mins   0..4 = q1 & 63          mins   4..8 = (q2 >> 4) | (q1 >> 6) << 4
    let v = load128(p);
    let lo = _mm_shuffle_epi8(
        v,
        _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11),
    );
    let lo = _mm_and_si128(
        _mm_srlv_epi32(lo, _mm_setr_epi32(0, 0, 0, 4)),
        _mm_setr_epi32(0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f, 0x0f0f_0f0f),
    );
    let hi = _mm_shuffle_epi8(
        v,
        _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7),
    );
    let hi = _mm_and_si128(_mm_srli_epi32::<2>(hi), _mm_set1_epi8(0x30));
    _mm256_cvtepu8_epi16(_mm_or_si128(lo, hi))
}

/// Q3_K 12-byte scale field → 16 × i8 scales with the bias of 32 removed (`q3_k_scales`).
#[inline(always)]
pub(crate) unsafe fn q3k_scales(p: *const u8) -> __m128i {
    const K1: u32 = 0x0303_0303;
    const K2: u32 = 0x0f0f_0f0f;
    let (a0, a1, a2) = (u32_at(p), u32_at(p.add(4)), u32_at(p.add(8)));
    let s = _mm_set_epi32(
        (((a1 >> 4) & K2) | (((a2 >> 6) & K1) << 4)) as i32,
        (((a0 >> 4) & K2) | (((a2 >> 4) & K1) << 4)) as i32,
        ((a1 & K2) | (((a2 >> 2) & K1) << 4)) as i32,
        ((a0 & K2) | ((a2 & K1) << 4)) as i32,
    );
    _mm_sub_epi8(s, _mm_set1_epi8(32))
}

/// The activation pointers of super-block i of every row.
#[inline(always)]
pub(crate) unsafe fn act_ptrs<const N: usize>(a: &[&[u8]; N], i: usize) -> [*const u8; N] {
    std::array::from_fn(|r| a[r].as_ptr().add(i * Q8K_BYTES))
}

/// Σ of each of four 8 × i32 vectors → 4 × i32.
#[inline(always)]
pub(crate) unsafe fn hsum4_epi32(s0: __m256i, s1: __m256i, s2: __m256i, s3: __m256i) -> __m128i {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// Exact i32 sum of each row's 8-lane accumulator.
#[inline(always)]
pub(crate) unsafe fn hsum_rows<const N: usize>(v: &[__m256i; N]) -> [i32; N] {
    let mut out = [0i32; N];
    if N == 4 {
        let s = hsum4_epi32(v[0], v[1], v[2], v[3]);
        _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, s);
    } else {
        for r in 0..N {
            let x = _mm_add_epi32(
                _mm256_castsi256_si128(v[r]),
                _mm256_extracti128_si256::<1>(v[r]),
            );
            let x = _mm_add_epi32(x, _mm_unpackhi_epi64(x, x));
            let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b01>(x));
            out[r] = _mm_cvtsi128_si32(x);
        }
    }
    out
}

/// acc[r] += (d·yd_r)·isum_r with isum_r the exact sum of `sumi[r]` — the scalar reference's
/// f32 operations, lane-wise for four rows.
#[inline(always)]
pub(crate) unsafe fn finish<const N: usize>(
    acc: &mut [f32; N],
    ys: &[*const u8; N],
    d: f32,
    sumi: &[__m256i; N],
) {
    if N == 4 {
        let isum = _mm_cvtepi32_ps(hsum4_epi32(sumi[0], sumi[1], sumi[2], sumi[3]));
        let yd = _mm_set_ps(f32_at(ys[3]), f32_at(ys[2]), f32_at(ys[1]), f32_at(ys[0]));
        let t = _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(d), yd), isum);
        _mm_storeu_ps(acc.as_mut_ptr(), _mm_add_ps(_mm_loadu_ps(acc.as_ptr()), t));
    } else {
        let isum = hsum_rows(sumi);
        for r in 0..N {
            acc[r] += d * f32_at(ys[r]) * isum[r] as f32;
        }
    }
}

/// acc[r] += (d·yd_r)·isum_r − (dmin·yd_r)·summs_r (sums exact, f32 as the scalar reference).
#[inline(always)]
pub(crate) unsafe fn finish_min<const N: usize>(
    acc: &mut [f32; N],
    ys: &[*const u8; N],
    d: f32,
    dmin: f32,
    sumi: &[__m256i; N],
    prods: &[__m256i; N],
) {
    if N == 4 {
        let isum = _mm_cvtepi32_ps(hsum4_epi32(sumi[0], sumi[1], sumi[2], sumi[3]));
        let summs = _mm_cvtepi32_ps(hsum4_epi32(prods[0], prods[1], prods[2], prods[3]));
        let yd = _mm_set_ps(f32_at(ys[3]), f32_at(ys[2]), f32_at(ys[1]), f32_at(ys[0]));
        let t = _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(d), yd), isum);
        let m = _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(dmin), yd), summs);
        let a = _mm_add_ps(_mm_loadu_ps(acc.as_ptr()), _mm_sub_ps(t, m));
        _mm_storeu_ps(acc.as_mut_ptr(), a);
    } else {
        let isum = hsum_rows(sumi);
        let summs = hsum_rows(prods);
        for r in 0..N {
            let yd = f32_at(ys[r]);
            acc[r] += d * yd * isum[r] as f32 - dmin * yd * summs[r] as f32;
        }
    }
}

/// The 16 i16 bsums of one Q8_K block.
#[inline(always)]
pub(crate) unsafe fn bsums16(y: *const u8) -> __m256i {
    load256(y.add(Q8K_BSUMS))
}

#[inline(always)]
pub(crate) fn check_rows(w: &[u8], bs: usize, a: &[&[u8]]) {
    let nb = w.len() / bs;
    for a in a {
        assert!(
            a.len() >= nb * Q8K_BYTES,
            "row dot: activation row shorter than the weight row"
        );
    }
}
