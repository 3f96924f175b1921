//! avx512::kquant_tiles: 4×4 GEMM tiles (four weight rows × four Q8_K activation rows) and
//! four-row matvec kernels (four weight rows × one activation row) for the K-quants, AVX-512
//! (F/BW/VL + VNNI). See simd/mod.rs for the soundness rule and kernel_set.rs for the contract.
//!
//! Same integer scheme as avx512::kquants (unsigned weight bytes, `vpdpbusd` per 64 elements,
//! `vpackssdw` of two steps and one `vpdpwssd` against the sub-block scales; offsets and mins
//! through the Q8_K bsums), but per super-block each of the four weight rows is unpacked once
//! and applied to every activation row, with one i32 accumulator per (row, token) in registers.
//!
//! * Q3_K/Q6_K offsets (−4·Σsc·bsum, −32·Σsc·bsum) go into the same i32 accumulators with one
//!   more `vpdpwssd` per (row, token) against pre-negated, pre-shifted scales.
//! * Q2_K/Q4_K/Q5_K mins: one `vpmaddwd` per token of the four rows' mins (one row per 128-bit
//!   lane) against the token's bsums, then a transpose-add tree to one i32 per (row, token).
//! * Per super-block the sixteen accumulators are reduced exactly (transpose-add tree) to one
//!   zmm with lane 4r+t, and scaled with the scalar reference's f32 operations in its order
//!   ((d·yd)·isum − (dmin·yd)·summs, added to the running sum), so results are bit-identical to
//!   the scalar reference (integer sums exact, same f32 rounding sequence).

use std::arch::x86_64::*;

use super::kquants::{bcast256, halves16, load512, quad_idx, sub16};
use crate::kernel_set::{Provider, Rows4DotFn, Tile4x4Fn};
use crate::simd::x86::kquant::{
    bsums16, check_rows, f32_at, k4_scales_mins, load128, q3k_scales, Q2K_BYTES, Q3K_BYTES,
    Q4K_BYTES, Q5K_BYTES, Q6K_BYTES, Q8K_BYTES, Q8K_QS,
};
use crate::table::GgmlType;

fn sub32(p: usize, l: usize) -> usize {
    2 * p + l / 2
}

/// Weight row r's two unpacked steps p0, p0+1 (64 elements each) against every token:
/// sumi[r][t] += Σ sc·(wq·a) with `vpdpbusd` ×2, `vpackssdw`, `vpdpwssd` (|·| of each packed
/// lane ≤ 4·63·128 < 2^15, exact).
#[inline(always)]
unsafe fn accum_row<const N: usize>(
    sumi: &mut [__m512i; N],
    ys: &[*const u8; N],
    p0: usize,
    wq0: __m512i,
    wq1: __m512i,
    sc: __m512i,
) {
    for t in 0..N {
        let y0 = load512(ys[t].add(Q8K_QS + 64 * p0));
        let y1 = load512(ys[t].add(Q8K_QS + 64 * (p0 + 1)));
        let d0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq0, y0);
        let d1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq1, y1);
        sumi[t] = _mm512_dpwssd_epi32(sumi[t], _mm512_packs_epi32(d0, d1), sc);
    }
}

/// a, b → per 128-bit lane [a0+a2, b0+b2, a1+a3, b1+b3].
#[inline(always)]
unsafe fn zip32(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
}

/// c, d (each from zip32) → per 128-bit lane [c0+c2, c1+c3, d0+d2, d1+d3].
#[inline(always)]
unsafe fn zip64(c: __m512i, d: __m512i) -> __m512i {
    _mm512_add_epi32(_mm512_unpacklo_epi64(c, d), _mm512_unpackhi_epi64(c, d))
}

/// Four vectors → per 128-bit lane l: [Σ_l v0, Σ_l v1, Σ_l v2, Σ_l v3] (Σ_l: the lane's four
/// i32 values).
#[inline(always)]
unsafe fn zip4(v0: __m512i, v1: __m512i, v2: __m512i, v3: __m512i) -> __m512i {
    zip64(zip32(v0, v1), zip32(v2, v3))
}

/// One weight row's per-token accumulators, reduced as far as possible before the next row
/// (keeps four live vectors per row instead of sixteen): for N = 4, 128-bit lane l holds the
/// lane-l partial sums of tokens 0..4; for N = 1 the accumulator itself.
#[inline(always)]
unsafe fn row_red<const N: usize>(s: &[__m512i; N]) -> __m512i {
    if N == 4 {
        zip4(s[0], s[1], s[2 % N], s[3 % N])
    } else {
        s[0]
    }
}

/// The four rows' [`row_red`] vectors → exact i32 sums in the [`Acc`] layout: lane 4r+t
/// (N = 4) or lane r (N = 1, upper lanes zero).
#[inline(always)]
unsafe fn isums<const N: usize>(w: &[__m512i; 4]) -> __m512i {
    if N == 4 {
        // Lanes of w[r]: 128-bit lane j = partials of (r, 0..4) → sum over j.
        let h = _mm512_add_epi32(
            _mm512_shuffle_i64x2::<0x44>(w[0], w[1]),
            _mm512_shuffle_i64x2::<0xEE>(w[0], w[1]),
        );
        let k = _mm512_add_epi32(
            _mm512_shuffle_i64x2::<0x44>(w[2], w[3]),
            _mm512_shuffle_i64x2::<0xEE>(w[2], w[3]),
        );
        _mm512_add_epi32(
            _mm512_shuffle_i64x2::<0x88>(h, k),
            _mm512_shuffle_i64x2::<0xDD>(h, k),
        )
    } else {
        let w = zip4(w[0], w[1], w[2], w[3]);
        let y = _mm256_add_epi32(_mm512_castsi512_si256(w), _mm512_extracti64x4_epi64::<1>(w));
        let x = _mm_add_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256::<1>(y));
        _mm512_zextsi128_si512(x)
    }
}

/// From `p[t]` (128-bit lane r: four i32 partials of (row r, token t)) to the [`Acc`] layout.
#[inline(always)]
unsafe fn min_sums<const N: usize>(p: &[__m512i; N]) -> __m512i {
    if N == 4 {
        zip4(p[0], p[1], p[2], p[3])
    } else {
        let x = _mm512_add_epi32(p[0], _mm512_shuffle_epi32::<0x4E>(p[0]));
        let x = _mm512_add_epi32(x, _mm512_shuffle_epi32::<0xB1>(x));
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_maskz_permutexvar_epi32(0x000f, idx, x)
    }
}

#[inline(always)]
unsafe fn f16x4(p: [*const u8; 4]) -> __m128 {
    let h = |p: *const u8| (p as *const u16).read_unaligned() as i16;
    _mm_cvtph_ps(_mm_setr_epi16(
        h(p[0]),
        h(p[1]),
        h(p[2]),
        h(p[3]),
        0,
        0,
        0,
        0,
    ))
}

/// Per-row f32 values (4 lanes) spread to the [`Acc`] layout.
#[inline(always)]
unsafe fn per_row<const N: usize>(v: __m128) -> __m512 {
    if N == 4 {
        let idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v))
    } else {
        _mm512_zextps128_ps512(v)
    }
}

/// Per-token activation scales in the [`Acc`] layout.
#[inline(always)]
unsafe fn per_tok<const N: usize>(ys: &[*const u8; N]) -> __m512 {
    if N == 4 {
        let v = _mm_setr_ps(f32_at(ys[0]), f32_at(ys[1]), f32_at(ys[2]), f32_at(ys[3]));
        _mm512_broadcast_f32x4(v)
    } else {
        _mm512_set1_ps(f32_at(ys[0]))
    }
}

/// Running f32 sums, lane 4r+t (N = 4) or lane r (N = 1).
struct Acc(__m512);

impl Acc {
    /// acc += (d·yd)·isum.
    #[inline(always)]
    unsafe fn add(&mut self, d: __m512, yd: __m512, isum: __m512i) {
        let t = _mm512_mul_ps(_mm512_mul_ps(d, yd), _mm512_cvtepi32_ps(isum));
        self.0 = _mm512_add_ps(self.0, t);
    }

    /// acc += (d·yd)·isum − (dmin·yd)·summs.
    #[inline(always)]
    unsafe fn add_min(
        &mut self,
        d: __m512,
        dmin: __m512,
        yd: __m512,
        isum: __m512i,
        summs: __m512i,
    ) {
        let t = _mm512_mul_ps(_mm512_mul_ps(d, yd), _mm512_cvtepi32_ps(isum));
        let m = _mm512_mul_ps(_mm512_mul_ps(dmin, yd), _mm512_cvtepi32_ps(summs));
        self.0 = _mm512_add_ps(self.0, _mm512_sub_ps(t, m));
    }

    #[inline(always)]
    unsafe fn out<const N: usize>(&self) -> [[f32; N]; 4] {
        let mut buf = [0f32; 16];
        _mm512_storeu_ps(buf.as_mut_ptr(), self.0);
        std::array::from_fn(|r| {
            std::array::from_fn(|t| if N == 4 { buf[4 * r + t] } else { buf[r] })
        })
    }
}

#[inline(always)]
unsafe fn act_ptrs<const N: usize>(a: &[&[u8]; N], i: usize) -> [*const u8; N] {
    let mut p = [std::ptr::null(); N];
    for t in 0..N {
        p[t] = a[t].as_ptr().add(i * Q8K_BYTES);
    }
    p
}

#[inline(always)]
unsafe fn row_ptrs(w: &[&[u8]; 4], i: usize, bs: usize) -> [*const u8; 4] {
    let o = i * bs;
    [
        w[0].as_ptr().add(o),
        w[1].as_ptr().add(o),
        w[2].as_ptr().add(o),
        w[3].as_ptr().add(o),
    ]
}

#[inline(always)]
unsafe fn off4(x: &[*const u8; 4], o: usize) -> [*const u8; 4] {
    [x[0].add(o), x[1].add(o), x[2].add(o), x[3].add(o)]
}

// ---------------------------------------------------------------------------------------------
// Q4_K / Q5_K: step p = 64-element group p (sub-blocks 2p, 2p+1, one per 256-bit half).

#[inline(always)]
unsafe fn q45k_body<const N: usize, const FIVE: bool>(
    w: [&[u8]; 4],
    a: [&[u8]; N],
) -> [[f32; N]; 4] {
    let bs = if FIVE { Q5K_BYTES } else { Q4K_BYTES };
    let qs_off = if FIVE { 48 } else { 16 };
    let nb = w[0].len() / bs;
    let m4 = _mm512_set1_epi8(0x0f);
    let m1 = _mm512_set1_epi8(1);
    let sh04 = halves16(0, 4);
    let sh01 = halves16(0, 1);
    let idx = [quad_idx(sub32, 0, 1), quad_idx(sub32, 2, 3)];
    let mut acc = Acc(_mm512_setzero_ps());
    for i in 0..nb {
        let xs = row_ptrs(&w, i, bs);
        let ys = act_ptrs(&a, i);
        let mut red = [_mm512_setzero_si512(); 4];
        let mut sm = [_mm256_setzero_si256(); 4];
        for r in 0..4 {
            let x = xs[r];
            let mut sumi = [_mm512_setzero_si512(); N];
            sm[r] = k4_scales_mins(x.add(4));
            let sc512 = _mm512_castsi256_si512(sm[r]);
            let mut hb = if FIVE {
                _mm512_srlv_epi16(bcast256(x.add(16)), sh01)
            } else {
                _mm512_setzero_si512()
            };
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
                accum_row(&mut sumi, &ys, 2 * k, q[0], q[1], sc);
            }
            red[r] = row_red(&sumi);
        }
        // Mins: row r's eight mins in 128-bit lane r, against each token's pair-summed bsums.
        let m01 = _mm256_permute2x128_si256::<0x31>(sm[0], sm[1]);
        let m23 = _mm256_permute2x128_si256::<0x31>(sm[2], sm[3]);
        let mz = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(m01), m23);
        let mut p = [_mm512_setzero_si512(); N];
        for t in 0..N {
            let b = bsums16(ys[t]);
            let bp = _mm_hadd_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
            p[t] = _mm512_madd_epi16(mz, _mm512_broadcast_i32x4(bp));
        }
        let d = per_row::<N>(f16x4(xs));
        let dmin = per_row::<N>(f16x4(off4(&xs, 2)));
        acc.add_min(d, dmin, per_tok(&ys), isums::<N>(&red), min_sums(&p));
    }
    acc.out()
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4k_tile<const N: usize>(w: [&[u8]; 4], a: [&[u8]; N]) -> [[f32; N]; 4] {
    q45k_body::<N, false>(w, a)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q5k_tile<const N: usize>(w: [&[u8]; 4], a: [&[u8]; N]) -> [[f32; N]; 4] {
    q45k_body::<N, true>(w, a)
}

// ---------------------------------------------------------------------------------------------
// Q6_K: step p = elements 64p..64p+64 = sub-blocks 4p..4p+4 (one per 128-bit lane).
// Σ sc·(q' − 32)·a = Σ sc·q'·a + Σ (−32·sc_j)·bsum_j, the latter one vpdpwssd per (row, token).

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6k_tile<const N: usize>(w: [&[u8]; 4], a: [&[u8]; N]) -> [[f32; N]; 4] {
    let nb = w[0].len() / Q6K_BYTES;
    let m4 = _mm512_set1_epi8(0x0f);
    let m30 = _mm512_set1_epi8(0x30);
    let sh42 = halves16(4, 2);
    let sh02 = halves16(0, 2);
    let idx = [quad_idx(sub16, 0, 1), quad_idx(sub16, 2, 3)];
    let mut acc = Acc(_mm512_setzero_ps());
    for i in 0..nb {
        let xs = row_ptrs(&w, i, Q6K_BYTES);
        let ys = act_ptrs(&a, i);
        let mut bz = [_mm512_setzero_si512(); N];
        for t in 0..N {
            bz[t] = _mm512_zextsi256_si512(bsums16(ys[t]));
        }
        let mut red = [_mm512_setzero_si512(); 4];
        for r in 0..4 {
            let x = xs[r];
            let mut sumi = [_mm512_setzero_si512(); N];
            let sc16 = _mm256_cvtepi8_epi16(load128(x.add(192)));
            let sc512 = _mm512_castsi256_si512(sc16);
            // −32·sc fits i16 (|sc| ≤ 128).
            let neg = _mm512_zextsi256_si512(_mm256_mullo_epi16(sc16, _mm256_set1_epi16(-32)));
            for t in 0..N {
                sumi[t] = _mm512_dpwssd_epi32(sumi[t], neg, bz[t]);
            }
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
                accum_row(&mut sumi, &ys, 2 * h, q01, q23, sc);
            }
            red[r] = row_red(&sumi);
        }
        let d = per_row::<N>(f16x4(off4(&xs, 208)));
        acc.add(d, per_tok(&ys), isums::<N>(&red));
    }
    acc.out()
}

// ---------------------------------------------------------------------------------------------
// Q3_K / Q2_K: step p = chunks 2p, 2p+1 = planes 2(p%2), 2(p%2)+1 of half p/2.

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q3k_tile<const N: usize>(w: [&[u8]; 4], a: [&[u8]; N]) -> [[f32; N]; 4] {
    let nb = w[0].len() / Q3K_BYTES;
    let m3 = _mm512_set1_epi8(3);
    let m1 = _mm512_set1_epi8(1);
    let m4b = _mm512_set1_epi8(4);
    let sh02 = halves16(0, 2);
    let sh01 = halves16(0, 1);
    let idx = [quad_idx(sub16, 0, 1), quad_idx(sub16, 2, 3)];
    let mut acc = Acc(_mm512_setzero_ps());
    for i in 0..nb {
        let xs = row_ptrs(&w, i, Q3K_BYTES);
        let ys = act_ptrs(&a, i);
        let mut bz = [_mm512_setzero_si512(); N];
        for t in 0..N {
            bz[t] = _mm512_zextsi256_si512(bsums16(ys[t]));
        }
        let mut red = [_mm512_setzero_si512(); 4];
        for r in 0..4 {
            let x = xs[r];
            let mut sumi = [_mm512_setzero_si512(); N];
            let sc16 = _mm256_cvtepi8_epi16(q3k_scales(x.add(96)));
            let sc512 = _mm512_castsi256_si512(sc16);
            let neg = _mm512_zextsi256_si512(_mm256_mullo_epi16(sc16, _mm256_set1_epi16(-4)));
            for t in 0..N {
                sumi[t] = _mm512_dpwssd_epi32(sumi[t], neg, bz[t]);
            }
            let mut hm = _mm512_srlv_epi16(bcast256(x), sh01);
            for h in 0..2 {
                let b = _mm512_srlv_epi16(bcast256(x.add(32 + 32 * h)), sh02);
                let q0 = _mm512_or_si512(
                    _mm512_and_si512(b, m3),
                    _mm512_slli_epi16::<2>(_mm512_and_si512(hm, m1)),
                );
                let q1 = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(b), m3),
                    _mm512_and_si512(hm, m4b),
                );
                hm = _mm512_srli_epi16::<4>(hm);
                let sc = _mm512_permutexvar_epi16(idx[h], sc512);
                accum_row(&mut sumi, &ys, 2 * h, q0, q1, sc);
            }
            red[r] = row_red(&sumi);
        }
        let d = per_row::<N>(f16x4(off4(&xs, 108)));
        acc.add(d, per_tok(&ys), isums::<N>(&red));
    }
    acc.out()
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q2k_tile<const N: usize>(w: [&[u8]; 4], a: [&[u8]; N]) -> [[f32; N]; 4] {
    let nb = w[0].len() / Q2K_BYTES;
    let m3 = _mm512_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    let sh02 = halves16(0, 2);
    let idx = [quad_idx(sub16, 0, 1), quad_idx(sub16, 2, 3)];
    let mut acc = Acc(_mm512_setzero_ps());
    for i in 0..nb {
        let xs = row_ptrs(&w, i, Q2K_BYTES);
        let ys = act_ptrs(&a, i);
        let mut red = [_mm512_setzero_si512(); 4];
        let mut mins = [_mm256_setzero_si256(); 4];
        for r in 0..4 {
            let x = xs[r];
            let mut sumi = [_mm512_setzero_si512(); N];
            let raw = load128(x);
            let sc512 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(raw, m4)));
            mins[r] = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(raw), m4));
            for h in 0..2 {
                let b = _mm512_srlv_epi16(bcast256(x.add(16 + 32 * h)), sh02);
                let q0 = _mm512_and_si512(b, m3);
                let q1 = _mm512_and_si512(_mm512_srli_epi16::<4>(b), m3);
                let sc = _mm512_permutexvar_epi16(idx[h], sc512);
                accum_row(&mut sumi, &ys, 2 * h, q0, q1, sc);
            }
            red[r] = row_red(&sumi);
        }
        // Rows 0,1 and 2,3 in the two halves; per token, regroup to one row per 128-bit lane.
        let mz01 = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(mins[0]), mins[1]);
        let mz23 = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(mins[2]), mins[3]);
        let mut p = [_mm512_setzero_si512(); N];
        for t in 0..N {
            let b = _mm512_broadcast_i64x4(bsums16(ys[t]));
            let v01 = _mm512_madd_epi16(mz01, b);
            let v23 = _mm512_madd_epi16(mz23, b);
            p[t] = _mm512_add_epi32(
                _mm512_shuffle_i64x2::<0x88>(v01, v23),
                _mm512_shuffle_i64x2::<0xDD>(v01, v23),
            );
        }
        let d = per_row::<N>(f16x4(off4(&xs, 80)));
        let dmin = per_row::<N>(f16x4(off4(&xs, 82)));
        acc.add_min(d, dmin, per_tok(&ys), isums::<N>(&red), min_sums(&p));
    }
    acc.out()
}

// ---------------------------------------------------------------------------------------------
// Safe wrappers.

#[inline(always)]
fn check4(w: &[&[u8]; 4], bs: usize, a: &[&[u8]]) {
    let len = w[0].len();
    assert!(
        w.iter().all(|r| r.len() == len),
        "tile kernel: weight rows of different lengths"
    );
    check_rows(w[0], bs, a);
}

macro_rules! safe_tiles {
    ($tile:ident, $rows4:ident, $kernel:ident, $bs:expr) => {
        fn $tile(w: [&[u8]; 4], a: [&[u8]; 4]) -> [[f32; 4]; 4] {
            check4(&w, $bs, &a);
            // SAFETY: see simd/mod.rs (CPU checked by kernels_for); lengths checked above.
            unsafe { $kernel::<4>(w, a) }
        }
        fn $rows4(w: [&[u8]; 4], a: &[u8]) -> [f32; 4] {
            check4(&w, $bs, &[a]);
            // SAFETY: as above.
            unsafe { $kernel::<1>(w, [a]).map(|r| r[0]) }
        }
    };
}

safe_tiles!(tile_q2k, rows4_q2k, q2k_tile, Q2K_BYTES);
safe_tiles!(tile_q3k, rows4_q3k, q3k_tile, Q3K_BYTES);
safe_tiles!(tile_q4k, rows4_q4k, q4k_tile, Q4K_BYTES);
safe_tiles!(tile_q5k, rows4_q5k, q5k_tile, Q5K_BYTES);
safe_tiles!(tile_q6k, rows4_q6k, q6k_tile, Q6K_BYTES);

fn tile4x4(ty: GgmlType) -> Option<Tile4x4Fn> {
    match ty {
        GgmlType::Q2_K => Some(tile_q2k),
        GgmlType::Q3_K => Some(tile_q3k),
        GgmlType::Q4_K => Some(tile_q4k),
        GgmlType::Q5_K => Some(tile_q5k),
        GgmlType::Q6_K => Some(tile_q6k),
        _ => None,
    }
}

fn rows4(ty: GgmlType) -> Option<Rows4DotFn> {
    match ty {
        GgmlType::Q2_K => Some(rows4_q2k),
        GgmlType::Q3_K => Some(rows4_q3k),
        GgmlType::Q4_K => Some(rows4_q4k),
        GgmlType::Q5_K => Some(rows4_q5k),
        GgmlType::Q6_K => Some(rows4_q6k),
        _ => None,
    }
}

pub(crate) static PROVIDER: Provider = Provider {
    name: module_path!(),
    tile4x4,
    rows4,
    ..Provider::NONE
};
