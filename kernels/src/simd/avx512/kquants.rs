//! AVX-512 (F/BW/VL + VNNI) kernels for the K-quants × Q8_K. See simd/mod.rs for the soundness
//! rule.
//!
//! Same scheme as avx2::kquants (exact integer super-block sums, offsets and mins through the
//! Q8_K bsums, then the scalar reference's f32 scaling), but 64 elements per step: the weight
//! bytes of two 32-element chunks are unpacked into one zmm (broadcast + per-half variable
//! shifts) and two such steps (128 elements) go together: per activation row, one VNNI
//! `vpdpbusd` per step into a fresh i32 vector (four u8×i8 products per lane, small enough for
//! i16), one `vpackssdw` of the two (exact), and one `vpdpwssd` against the matching i16 scales
//! (placed once per super-block with `vpermw`). That is three multiplies per 128 elements and
//! row, against four `vpmaddubsw`/`vpmaddwd` in the AVX2 kernels.
//!
//! The Q8_K quantizer is not provided here (the AVX2 one is used).

use std::arch::x86_64::*;

use crate::kernel_set::{Provider, QuantizeRowFn, RowDot4Fn, RowDotFn};
use crate::simd::x86::kquant::{
    act_ptrs, bsums16, check_rows, f16_at, finish, finish_min, k4_scales_mins, load128, load256,
    q3k_scales, Q2K_BYTES, Q3K_BYTES, Q4K_BYTES, Q5K_BYTES, Q6K_BYTES, Q8K_QS,
};
use crate::table::GgmlType;

#[inline(always)]
pub(super) unsafe fn load512(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p as *const _)
}

/// The same 32 bytes in both 256-bit halves.
#[inline(always)]
pub(super) unsafe fn bcast256(p: *const u8) -> __m512i {
    _mm512_broadcast_i64x4(load256(p))
}

/// i16 vector: `lo` in the lower 256 bits, `hi` in the upper.
#[inline(always)]
pub(super) unsafe fn halves16(lo: i16, hi: i16) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_set1_epi16(lo)),
        _mm256_set1_epi16(hi),
    )
}

/// `vpermw` index for [`accum_quad`]: in 128-bit lane l, four copies of `sub(p0, l)` then four
/// of `sub(p1, l)`, where `sub(p, l)` is the scale index of step p's lane l.
#[inline(always)]
pub(super) unsafe fn quad_idx(
    sub: impl Fn(usize, usize) -> usize,
    p0: usize,
    p1: usize,
) -> __m512i {
    let v: [i16; 32] = std::array::from_fn(|k| {
        let (l, e) = (k / 8, k % 8);
        sub(if e < 4 { p0 } else { p1 }, l) as i16
    });
    _mm512_loadu_si512(v.as_ptr() as *const _)
}

/// Two steps at once with VNNI: per row, `vpdpbusd` of each step into a fresh i32 vector (4
/// products per lane, |·| ≤ 4·63·128 < 2^15), `vpackssdw` (exact) and one `vpdpwssd` against the
/// matching scales `sc` (see [`quad_idx`]). Three multiplies per 128 elements instead of four.
#[inline(always)]
unsafe fn accum_quad<const N: usize>(
    sumi: &mut [__m512i; N],
    ys: &[*const u8; N],
    p0: usize,
    wq0: __m512i,
    wq1: __m512i,
    sc: __m512i,
) {
    for r in 0..N {
        let y0 = load512(ys[r].add(Q8K_QS + 64 * p0));
        let y1 = load512(ys[r].add(Q8K_QS + 64 * (p0 + 1)));
        let d0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq0, y0);
        let d1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq1, y1);
        sumi[r] = _mm512_dpwssd_epi32(sumi[r], _mm512_packs_epi32(d0, d1), sc);
    }
}

#[inline(always)]
unsafe fn fold256<const N: usize>(v: &[__m512i; N]) -> [__m256i; N] {
    let mut out = [_mm256_setzero_si256(); N];
    for r in 0..N {
        let hi = _mm512_extracti64x4_epi64::<1>(v[r]);
        out[r] = _mm256_add_epi32(_mm512_castsi512_si256(v[r]), hi);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Q4_K / Q5_K: step g = 64-element group g (sub-blocks 2g, 2g+1).

#[inline(always)]
unsafe fn q45k_body<const N: usize, const FIVE: bool>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let bs = if FIVE { Q5K_BYTES } else { Q4K_BYTES };
    let qs_off = if FIVE { 48 } else { 16 };
    let nb = w.len() / bs;
    let m4 = _mm512_set1_epi8(0x0f);
    let m1 = _mm512_set1_epi8(1);
    let sh04 = halves16(0, 4);
    let sh01 = halves16(0, 1);
    let sub = |p: usize, l: usize| 2 * p + l / 2;
    let idx = [quad_idx(sub, 0, 1), quad_idx(sub, 2, 3)];
    let mut acc = [0f32; N];
    for i in 0..nb {
        let x = w.as_ptr().add(i * bs);
        let d = f16_at(x);
        let dmin = f16_at(x.add(2));
        let sm = k4_scales_mins(x.add(4));
        let sc512 = _mm512_castsi256_si512(sm);
        let mins = _mm256_extracti128_si256::<1>(sm);
        let ys = act_ptrs(&a, i);
        let mut hb = if FIVE {
            _mm512_srlv_epi16(bcast256(x.add(16)), sh01)
        } else {
            _mm512_setzero_si512()
        };
        let mut sumi = [_mm512_setzero_si512(); N];
        for k in 0..2 {
            let mut q = [_mm512_setzero_si512(); 2];
            for (j, q) in q.iter_mut().enumerate() {
                let bits = bcast256(x.add(qs_off + 32 * (2 * k + j)));
                *q = _mm512_and_si512(_mm512_srlv_epi16(bits, sh04), m4);
                if FIVE {
                    *q = _mm512_or_si512(*q, _mm512_slli_epi16::<4>(_mm512_and_si512(hb, m1)));
                    hb = _mm512_srli_epi16::<2>(hb);
                }
            }
            let sc = _mm512_permutexvar_epi16(idx[k], sc512);
            accum_quad(&mut sumi, &ys, 2 * k, q[0], q[1], sc);
        }
        let mut prods = [_mm256_setzero_si256(); N];
        for r in 0..N {
            let b = bsums16(ys[r]);
            let bp = _mm_hadd_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
            prods[r] = _mm256_zextsi128_si256(_mm_madd_epi16(mins, bp));
        }
        finish_min(&mut acc, &ys, d, dmin, &fold256(&sumi), &prods);
    }
    acc
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4k_kernel<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    q45k_body::<N, false>(w, a)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q5k_kernel<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    q45k_body::<N, true>(w, a)
}

// ---------------------------------------------------------------------------------------------
// Q6_K: step p = elements 64p..64p+64 = sub-blocks 4p..4p+4 (one per 128-bit lane).

/// Scale index of step p's 128-bit lane l for the 16-element sub-block formats.
pub(super) fn sub16(p: usize, l: usize) -> usize {
    4 * p + l
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6k_kernel<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / Q6K_BYTES;
    let m4 = _mm512_set1_epi8(0x0f);
    let m30 = _mm512_set1_epi8(0x30);
    let sh42 = halves16(4, 2);
    let sh02 = halves16(0, 2);
    let idx = [quad_idx(sub16, 0, 1), quad_idx(sub16, 2, 3)];
    let mut acc = [0f32; N];
    for i in 0..nb {
        let x = w.as_ptr().add(i * Q6K_BYTES);
        let d = f16_at(x.add(208));
        let scales8 = load128(x.add(192));
        let sc16 = _mm256_cvtepi8_epi16(scales8);
        let sc512 = _mm512_castsi256_si512(sc16);
        let ys = act_ptrs(&a, i);
        let mut sumi = [_mm512_setzero_si512(); N];
        for h in 0..2 {
            let l = load512(x.add(64 * h));
            let hh = bcast256(x.add(128 + 32 * h));
            let q01 = _mm512_or_si512(
                _mm512_and_si512(l, m4),
                _mm512_and_si512(_mm512_sllv_epi16(hh, sh42), m30),
            );
            let q23 = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(l), m4),
                _mm512_and_si512(_mm512_srlv_epi16(hh, sh02), m30),
            );
            let sc = _mm512_permutexvar_epi16(idx[h], sc512);
            accum_quad(&mut sumi, &ys, 2 * h, q01, q23, sc);
        }
        let mut s = fold256(&sumi);
        for r in 0..N {
            let corr = _mm256_madd_epi16(sc16, bsums16(ys[r]));
            s[r] = _mm256_sub_epi32(s[r], _mm256_slli_epi32::<5>(corr));
        }
        finish(&mut acc, &ys, d, &s);
    }
    acc
}

// ---------------------------------------------------------------------------------------------
// Q3_K / Q2_K: step p = chunks 2p, 2p+1 = planes 2(p%2), 2(p%2)+1 of half p/2.

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q3k_kernel<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / Q3K_BYTES;
    let m3 = _mm512_set1_epi8(3);
    let m1 = _mm512_set1_epi8(1);
    let sh02 = halves16(0, 2);
    let sh01 = halves16(0, 1);
    let idx = [quad_idx(sub16, 0, 1), quad_idx(sub16, 2, 3)];
    let mut acc = [0f32; N];
    for i in 0..nb {
        let x = w.as_ptr().add(i * Q3K_BYTES);
        let d = f16_at(x.add(108));
        let sc16 = _mm256_cvtepi8_epi16(q3k_scales(x.add(96)));
        let sc512 = _mm512_castsi256_si512(sc16);
        let ys = act_ptrs(&a, i);
        let mut hm = _mm512_srlv_epi16(bcast256(x), sh01);
        let mut sumi = [_mm512_setzero_si512(); N];
        for h in 0..2 {
            let b = _mm512_srlv_epi16(bcast256(x.add(32 + 32 * h)), sh02);
            let q0 = _mm512_or_si512(
                _mm512_and_si512(b, m3),
                _mm512_slli_epi16::<2>(_mm512_and_si512(hm, m1)),
            );
            let q1 = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(b), m3),
                _mm512_and_si512(hm, _mm512_set1_epi8(4)),
            );
            hm = _mm512_srli_epi16::<4>(hm);
            let sc = _mm512_permutexvar_epi16(idx[h], sc512);
            accum_quad(&mut sumi, &ys, 2 * h, q0, q1, sc);
        }
        let mut s = fold256(&sumi);
        for r in 0..N {
            let corr = _mm256_madd_epi16(sc16, bsums16(ys[r]));
            s[r] = _mm256_sub_epi32(s[r], _mm256_slli_epi32::<2>(corr));
        }
        finish(&mut acc, &ys, d, &s);
    }
    acc
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q2k_kernel<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / Q2K_BYTES;
    let m3 = _mm512_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    let sh02 = halves16(0, 2);
    let idx = [quad_idx(sub16, 0, 1), quad_idx(sub16, 2, 3)];
    let mut acc = [0f32; N];
    for i in 0..nb {
        let x = w.as_ptr().add(i * Q2K_BYTES);
        let d = f16_at(x.add(80));
        let dmin = f16_at(x.add(82));
        let raw = load128(x);
        let sc512 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(raw, m4)));
        let mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(raw), m4));
        let ys = act_ptrs(&a, i);
        let mut sumi = [_mm512_setzero_si512(); N];
        for h in 0..2 {
            let b = _mm512_srlv_epi16(bcast256(x.add(16 + 32 * h)), sh02);
            let q0 = _mm512_and_si512(b, m3);
            let q1 = _mm512_and_si512(_mm512_srli_epi16::<4>(b), m3);
            let sc = _mm512_permutexvar_epi16(idx[h], sc512);
            accum_quad(&mut sumi, &ys, 2 * h, q0, q1, sc);
        }
        let mut prods = [_mm256_setzero_si256(); N];
        for r in 0..N {
            prods[r] = _mm256_madd_epi16(mins16, bsums16(ys[r]));
        }
        finish_min(&mut acc, &ys, d, dmin, &fold256(&sumi), &prods);
    }
    acc
}

// ---------------------------------------------------------------------------------------------
// Safe wrappers.

macro_rules! safe_dot {
    ($dot:ident, $kernel:ident, $bs:expr) => {
        fn $dot(w: &[u8], a: &[u8]) -> f32 {
            check_rows(w, $bs, &[a]);
            // SAFETY: see simd/mod.rs (CPU checked by kernels_for); lengths checked above.
            unsafe { $kernel::<1>(w, [a])[0] }
        }
    };
}

macro_rules! safe_dot4 {
    ($dot4:ident, $kernel:ident, $bs:expr) => {
        fn $dot4(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            check_rows(w, $bs, &a);
            // SAFETY: as above.
            unsafe { $kernel::<4>(w, a) }
        }
    };
}

safe_dot!(dot_q2k, q2k_kernel, Q2K_BYTES);
safe_dot!(dot_q3k, q3k_kernel, Q3K_BYTES);
safe_dot!(dot_q6k, q6k_kernel, Q6K_BYTES);
safe_dot4!(dot4_q2k, q2k_kernel, Q2K_BYTES);
safe_dot4!(dot4_q3k, q3k_kernel, Q3K_BYTES);
safe_dot4!(dot4_q4k, q4k_kernel, Q4K_BYTES);
safe_dot4!(dot4_q5k, q5k_kernel, Q5K_BYTES);
safe_dot4!(dot4_q6k, q6k_kernel, Q6K_BYTES);

/// Q4_K and Q5_K single-row dots are left to the AVX2 kernels: with one activation row the
/// weight unpacking dominates and the AVX-512 versions measured the same (65 vs 65 ns and
/// 77 vs 76 ns per 2048-element row on the dev box), so only their 1×4 variants are here.
fn row_dot(ty: GgmlType) -> Option<RowDotFn> {
    match ty {
        GgmlType::Q2_K => Some(dot_q2k),
        GgmlType::Q3_K => Some(dot_q3k),
        GgmlType::Q6_K => Some(dot_q6k),
        _ => None,
    }
}

fn row_dot4(ty: GgmlType) -> Option<RowDot4Fn> {
    match ty {
        GgmlType::Q2_K => Some(dot4_q2k),
        GgmlType::Q3_K => Some(dot4_q3k),
        GgmlType::Q4_K => Some(dot4_q4k),
        GgmlType::Q5_K => Some(dot4_q5k),
        GgmlType::Q6_K => Some(dot4_q6k),
        _ => None,
    }
}

fn quantize(_ty: GgmlType) -> Option<QuantizeRowFn> {
    None
}

pub(crate) static PROVIDER: Provider = Provider {
    name: module_path!(),
    row_dot,
    row_dot4,
    quantize,
    ..Provider::NONE
};
