//! avx2::kquant_tiles: 4×4 GEMM tiles and four-row matvec kernels for the K-quants × Q8_K
//! (see kernel_set.rs), AVX2 (+FMA, F16C). See simd/mod.rs for the soundness rule.
//!
//! Same integer scheme as avx2::kquants (unsigned weight bytes, `vpmaddubsw` + `vpmaddwd`
//! against the sub-block scales, offsets and mins through the Q8_K bsums), but with `M` weight
//! rows × `N` activation rows per pass: per 32-element chunk, each weight row is unpacked once and
//! each activation chunk is loaded once, and the `M·N` i32 accumulators stay in registers. With
//! 16 ymm registers the 4×4 tile runs as two 2×4 passes (8 accumulators + 2 weight vectors + 2
//! scale vectors + 1 activation + temporaries), the four-row matvec as one 4×1 pass (Q2_K: two
//! 2×1 passes, which measured faster).
//!
//! Q3_K is not provided: its tile and four-row kernels measured no faster than the 1×4 / 1×1
//! kernels of avx2::kquants (0.97× on 64×64×2048 and 64×512×4096, single thread, Zen 4).
//!
//! Per super-block every (row, token) sum is reduced exactly and scaled with the scalar
//! reference's f32 operations in its order (the `finish`/`finish_min` of avx2::kquants), so
//! the results are bit-identical to the scalar reference.

use std::arch::x86_64::*;

use crate::kernel_set::{Provider, Rows4DotFn, Tile4x4Fn};
use crate::simd::x86::kquant::{
    bsums16, check_rows, f16_at, finish, finish_min, k4_scales_mins, load128, load256, Q2K_BYTES,
    Q4K_BYTES, Q5K_BYTES, Q6K_BYTES, Q8K_BYTES, Q8K_QS,
};
use crate::table::GgmlType;

#[inline(always)]
unsafe fn ptrs<const K: usize>(v: &[&[u8]; K], off: usize) -> [*const u8; K] {
    let mut p = [std::ptr::null(); K];
    for k in 0..K {
        p[k] = v[k].as_ptr().add(off);
    }
    p
}

/// Chunk c's i16 scale vector from 16 signed per-16 scales (i8): scale 2c in the low 128 bits,
/// 2c+1 in the high.
#[inline(always)]
unsafe fn chunk_scales16(scales8: __m128i, c: usize) -> __m256i {
    let lo = (2 * c as i64) * 0x0101_0101_0101_0101;
    let hi = (2 * c as i64 + 1) * 0x0101_0101_0101_0101;
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales8, _mm_set_epi64x(hi, lo)))
}

/// sumi[r][t] += madd(maddubs(wq[r], a_t[chunk c]), sc[r]): each activation chunk loaded once.
#[inline(always)]
unsafe fn accum<const M: usize, const N: usize>(
    sumi: &mut [[__m256i; N]; M],
    ys: &[*const u8; N],
    c: usize,
    wq: &[__m256i; M],
    sc: &[__m256i; M],
) {
    for t in 0..N {
        let y = load256(ys[t].add(Q8K_QS + 32 * c));
        for r in 0..M {
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[r], y), sc[r]);
            sumi[r][t] = _mm256_add_epi32(sumi[r][t], p);
        }
    }
}

/// The body eight times with `$c` bound to the literals 0..8 (fully unrolled, so per-chunk
/// offsets, shifts and shuffle masks are constants).
macro_rules! unroll8 {
    ($c:ident => $body:block) => {{
        let $c: usize = 0;
        $body
    }
    {
        let $c: usize = 1;
        $body
    }
    {
        let $c: usize = 2;
        $body
    }
    {
        let $c: usize = 3;
        $body
    }
    {
        let $c: usize = 4;
        $body
    }
    {
        let $c: usize = 5;
        $body
    }
    {
        let $c: usize = 6;
        $body
    }
    {
        let $c: usize = 7;
        $body
    }};
}

/// `v >> n` per 16-bit lane, for `n` a constant after unrolling (immediate shifts).
#[inline(always)]
unsafe fn srli16(v: __m256i, n: usize) -> __m256i {
    match n {
        0 => v,
        1 => _mm256_srli_epi16::<1>(v),
        2 => _mm256_srli_epi16::<2>(v),
        3 => _mm256_srli_epi16::<3>(v),
        4 => _mm256_srli_epi16::<4>(v),
        5 => _mm256_srli_epi16::<5>(v),
        6 => _mm256_srli_epi16::<6>(v),
        _ => _mm256_srli_epi16::<7>(v),
    }
}

// ---------------------------------------------------------------------------------------------
// Q4_K / Q5_K: chunk c = sub-block c (low nibbles of group c/2 for even c, high for odd).

#[inline(always)]
unsafe fn q45k_body<const M: usize, const N: usize, const FIVE: bool>(
    w: [&[u8]; M],
    a: [&[u8]; N],
) -> [[f32; N]; M] {
    let bs = if FIVE { Q5K_BYTES } else { Q4K_BYTES };
    let qs_off = if FIVE { 48 } else { 16 };
    let nb = w[0].len() / bs;
    let m4 = _mm256_set1_epi8(0x0f);
    let m1 = _mm256_set1_epi8(1);
    let mut acc = [[0f32; N]; M];
    for i in 0..nb {
        let xs = ptrs(&w, i * bs);
        let ys = ptrs(&a, i * Q8K_BYTES);
        let mut scales = [_mm256_setzero_si256(); M];
        let mut mins = [_mm_setzero_si128(); M];
        for r in 0..M {
            let sm = k4_scales_mins(xs[r].add(4));
            scales[r] = _mm256_permute2x128_si256::<0x00>(sm, sm);
            mins[r] = _mm256_extracti128_si256::<1>(sm);
        }
        let mut sumi = [[_mm256_setzero_si256(); N]; M];
        unroll8!(c => {
            let mut wq = [_mm256_setzero_si256(); M];
            let mut sc = [_mm256_setzero_si256(); M];
            for r in 0..M {
                let bits = load256(xs[r].add(qs_off + 32 * (c / 2)));
                let bits = if c % 2 == 1 { _mm256_srli_epi16::<4>(bits) } else { bits };
                wq[r] = _mm256_and_si256(bits, m4);
                if FIVE {
                    let hb = srli16(load256(xs[r].add(16)), c);
                    wq[r] = _mm256_or_si256(wq[r], _mm256_slli_epi16::<4>(_mm256_and_si256(hb, m1)));
                }
                let j = c as i16;
                sc[r] = _mm256_shuffle_epi8(scales[r], _mm256_set1_epi16(((2 * j + 1) << 8) | (2 * j)));
            }
            accum(&mut sumi, &ys, c, &wq, &sc);
        });
        for r in 0..M {
            let d = f16_at(xs[r]);
            let dmin = f16_at(xs[r].add(2));
            let mut prods = [_mm256_setzero_si256(); N];
            for t in 0..N {
                let b = bsums16(ys[t]);
                let bp =
                    _mm_hadd_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
                prods[t] = _mm256_zextsi128_si256(_mm_madd_epi16(mins[r], bp));
            }
            finish_min(&mut acc[r], &ys, d, dmin, &sumi[r], &prods);
        }
    }
    acc
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_kernel<const M: usize, const N: usize>(
    w: [&[u8]; M],
    a: [&[u8]; N],
) -> [[f32; N]; M] {
    q45k_body::<M, N, false>(w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5k_kernel<const M: usize, const N: usize>(
    w: [&[u8]; M],
    a: [&[u8]; N],
) -> [[f32; N]; M] {
    q45k_body::<M, N, true>(w, a)
}

// ---------------------------------------------------------------------------------------------
// Q6_K: chunk c = 4h + p: plane p of half h. Σ sc·(q' − 32)·a = Σ sc·q'·a − 32·Σ sc_j·bsum_j.

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_kernel<const M: usize, const N: usize>(
    w: [&[u8]; M],
    a: [&[u8]; N],
) -> [[f32; N]; M] {
    let nb = w[0].len() / Q6K_BYTES;
    let m4 = _mm256_set1_epi8(0x0f);
    let m30 = _mm256_set1_epi8(0x30);
    let mut acc = [[0f32; N]; M];
    for i in 0..nb {
        let xs = ptrs(&w, i * Q6K_BYTES);
        let ys = ptrs(&a, i * Q8K_BYTES);
        let mut sumi = [[_mm256_setzero_si256(); N]; M];
        unroll8!(c => {
            let (h, p) = (c / 4, c % 4);
            let mut wq = [_mm256_setzero_si256(); M];
            let mut sc = [_mm256_setzero_si256(); M];
            for r in 0..M {
                let x = xs[r];
                let b = load256(x.add(64 * h + 32 * (p % 2)));
                let b = if p >= 2 { _mm256_srli_epi16::<4>(b) } else { b };
                let hb = load256(x.add(128 + 32 * h));
                // High bits of plane p sit at bit 2p: bring them to bits 4..5.
                let hq = match p {
                    0 => _mm256_slli_epi16::<4>(hb),
                    1 => _mm256_slli_epi16::<2>(hb),
                    2 => hb,
                    _ => _mm256_srli_epi16::<2>(hb),
                };
                wq[r] = _mm256_or_si256(_mm256_and_si256(b, m4), _mm256_and_si256(hq, m30));
                sc[r] = chunk_scales16(load128(x.add(192)), c);
            }
            accum(&mut sumi, &ys, c, &wq, &sc);
        });
        for r in 0..M {
            let sc16 = _mm256_cvtepi8_epi16(load128(xs[r].add(192)));
            for t in 0..N {
                let corr = _mm256_madd_epi16(sc16, bsums16(ys[t]));
                sumi[r][t] = _mm256_sub_epi32(sumi[r][t], _mm256_slli_epi32::<5>(corr));
            }
            finish(&mut acc[r], &ys, f16_at(xs[r].add(208)), &sumi[r]);
        }
    }
    acc
}

// ---------------------------------------------------------------------------------------------
// Q2_K: chunk c = 4h + p: 2-bit plane p of half h; scale = low nibble, min = high nibble.

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q2k_kernel<const M: usize, const N: usize>(
    w: [&[u8]; M],
    a: [&[u8]; N],
) -> [[f32; N]; M] {
    let nb = w[0].len() / Q2K_BYTES;
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    let mut acc = [[0f32; N]; M];
    for i in 0..nb {
        let xs = ptrs(&w, i * Q2K_BYTES);
        let ys = ptrs(&a, i * Q8K_BYTES);
        let mut scales8 = [_mm_setzero_si128(); M];
        for r in 0..M {
            scales8[r] = _mm_and_si128(load128(xs[r]), m4);
        }
        let mut sumi = [[_mm256_setzero_si256(); N]; M];
        unroll8!(c => {
            let (h, p) = (c / 4, c % 4);
            let mut wq = [_mm256_setzero_si256(); M];
            let mut sc = [_mm256_setzero_si256(); M];
            for r in 0..M {
                let x = xs[r];
                let b = srli16(load256(x.add(16 + 32 * h)), 2 * p);
                wq[r] = _mm256_and_si256(b, m3);
                sc[r] = chunk_scales16(scales8[r], c);
            }
            accum(&mut sumi, &ys, c, &wq, &sc);
        });
        for r in 0..M {
            let raw = load128(xs[r]);
            let mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(raw), m4));
            let mut prods = [_mm256_setzero_si256(); N];
            for t in 0..N {
                prods[t] = _mm256_madd_epi16(mins16, bsums16(ys[t]));
            }
            let d = f16_at(xs[r].add(80));
            let dmin = f16_at(xs[r].add(82));
            finish_min(&mut acc[r], &ys, d, dmin, &sumi[r], &prods);
        }
    }
    acc
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
    ($tile:ident, $rows4:ident, $kernel:ident, $bs:expr, $rows4_pairs:expr) => {
        fn $tile(w: [&[u8]; 4], a: [&[u8]; 4]) -> [[f32; 4]; 4] {
            check4(&w, $bs, &a);
            // SAFETY: see simd/mod.rs (CPU checked by kernels_for); lengths checked above.
            let (lo, hi) = unsafe {
                (
                    $kernel::<2, 4>([w[0], w[1]], a),
                    $kernel::<2, 4>([w[2], w[3]], a),
                )
            };
            [lo[0], lo[1], hi[0], hi[1]]
        }
        fn $rows4(w: [&[u8]; 4], a: &[u8]) -> [f32; 4] {
            check4(&w, $bs, &[a]);
            // SAFETY: as above.
            if $rows4_pairs {
                // SAFETY: as above.
                let (lo, hi) = unsafe {
                    (
                        $kernel::<2, 1>([w[0], w[1]], [a]),
                        $kernel::<2, 1>([w[2], w[3]], [a]),
                    )
                };
                [lo[0][0], lo[1][0], hi[0][0], hi[1][0]]
            } else {
                // SAFETY: as above.
                unsafe { $kernel::<4, 1>(w, [a]).map(|r| r[0]) }
            }
        }
    };
}

// Q2_K's four-row pass spills (per-chunk scale unpack of four rows): two 2-row passes.
safe_tiles!(tile_q2k, rows4_q2k, q2k_kernel, Q2K_BYTES, true);
safe_tiles!(tile_q4k, rows4_q4k, q4k_kernel, Q4K_BYTES, false);
safe_tiles!(tile_q5k, rows4_q5k, q5k_kernel, Q5K_BYTES, false);
safe_tiles!(tile_q6k, rows4_q6k, q6k_kernel, Q6K_BYTES, false);

fn tile4x4(ty: GgmlType) -> Option<Tile4x4Fn> {
    match ty {
        GgmlType::Q2_K => Some(tile_q2k),
        GgmlType::Q4_K => Some(tile_q4k),
        GgmlType::Q5_K => Some(tile_q5k),
        GgmlType::Q6_K => Some(tile_q6k),
        _ => None,
    }
}

fn rows4(ty: GgmlType) -> Option<Rows4DotFn> {
    match ty {
        GgmlType::Q2_K => Some(rows4_q2k),
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
