//! AVX2 (+FMA, F16C) kernels for the K-quants (Q2_K .. Q6_K weights × Q8_K activations) and the
//! Q8_K activation quantizer. See simd/mod.rs for the soundness rule.
//!
//! Every dot kernel works per 256-element super-block in eight chunks of 32 elements: it builds
//! the chunk's unsigned weight bytes `wq` (0..=63) and an i16 scale vector `sc` (one scale per
//! 16-element half-lane or per 32-element chunk), then for each activation row adds
//! `vpmaddwd(vpmaddubsw(wq, a), sc)` into an i32 accumulator. Offsets that make the quants
//! signed (Q3_K's −4, Q6_K's −32) and the mins of Q2_K/Q4_K/Q5_K are applied through the Q8_K
//! `bsums` (so Q3_K/Q6_K, unlike their scalar references, rely on `bsums` matching `qs`, as every
//! Q8_K block from the quantizer does). The integer super-block sums are exact; each is reduced
//! horizontally and scaled with exactly the scalar reference's f32 operations in the same order,
//! so the results are bit-identical to the scalar set.
//!
//! The kernels are generic over the number of activation rows `N` (1 for `row_dot`, 4 for
//! `row_dot4`): weights are unpacked once per chunk and applied to all `N` rows.
//!
//! The Q8_K quantizer is byte-identical to `quantize_row_q8_k_ref` (signed max, −127/max,
//! round-half-even); blocks with NaN/∞ or a subnormal max go through the scalar reference.

use std::arch::x86_64::*;

use crate::kernel_set::{Provider, QuantizeRowFn, RowDot4Fn, RowDotFn};
use crate::table::GgmlType;

use crate::simd::x86::kquant::*;

/// Shuffle mask picking byte 2c eight times, then byte 2c+1 eight times: applied to 16 per-16
/// scales it gives chunk c's (two sub-blocks') scales, one per 128-bit half after widening.
#[inline(always)]
unsafe fn pair_shuffle(c: usize) -> __m128i {
    let lo = (2 * c as i64) * 0x0101_0101_0101_0101;
    let hi = (2 * c as i64 + 1) * 0x0101_0101_0101_0101;
    _mm_set_epi64x(hi, lo)
}

/// Chunk c's i16 scale vector from 16 signed per-16 scales (i8).
#[inline(always)]
unsafe fn chunk_scales16(scales8: __m128i, c: usize) -> __m256i {
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales8, pair_shuffle(c)))
}

/// sumi[r] += madd(maddubs(wq, a_r[chunk c]), sc) for every row.
#[inline(always)]
unsafe fn accum_chunk<const N: usize>(
    sumi: &mut [__m256i; N],
    ys: &[*const u8; N],
    c: usize,
    wq: __m256i,
    sc: __m256i,
) {
    for r in 0..N {
        let y = load256(ys[r].add(Q8K_QS + 32 * c));
        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq, y), sc);
        sumi[r] = _mm256_add_epi32(sumi[r], p);
    }
}

// ---------------------------------------------------------------------------------------------
// Q4_K / Q5_K

#[inline(always)]
unsafe fn q45k_body<const N: usize, const FIVE: bool>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let bs = if FIVE { Q5K_BYTES } else { Q4K_BYTES };
    let qs_off = if FIVE { 48 } else { 16 };
    let nb = w.len() / bs;
    let m4 = _mm256_set1_epi8(0x0f);
    let m1 = _mm256_set1_epi8(1);
    let mut acc = [0f32; N];
    for i in 0..nb {
        let x = w.as_ptr().add(i * bs);
        let d = f16_at(x);
        let dmin = f16_at(x.add(2));
        let sm = k4_scales_mins(x.add(4));
        let scales = _mm256_permute2x128_si256::<0x00>(sm, sm);
        let mins = _mm256_extracti128_si256::<1>(sm);
        let ys = act_ptrs(&a, i);
        let mut hbits = if FIVE {
            load256(x.add(16))
        } else {
            _mm256_setzero_si256()
        };
        let mut sumi = [_mm256_setzero_si256(); N];
        for g in 0..4 {
            let bits = load256(x.add(qs_off + 32 * g));
            let mut ql = _mm256_and_si256(bits, m4);
            let mut qh = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
            if FIVE {
                let hl = _mm256_slli_epi16::<4>(_mm256_and_si256(hbits, m1));
                let hh =
                    _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<1>(hbits), m1));
                ql = _mm256_or_si256(ql, hl);
                qh = _mm256_or_si256(qh, hh);
                hbits = _mm256_srli_epi16::<2>(hbits);
            }
            let j = 2 * g as i16;
            let sl = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(((2 * j + 1) << 8) | (2 * j)));
            let sh =
                _mm256_shuffle_epi8(scales, _mm256_set1_epi16(((2 * j + 3) << 8) | (2 * j + 2)));
            accum_chunk(&mut sumi, &ys, 2 * g, ql, sl);
            accum_chunk(&mut sumi, &ys, 2 * g + 1, qh, sh);
        }
        let mut prods = [_mm256_setzero_si256(); N];
        for r in 0..N {
            let b = bsums16(ys[r]);
            let bp = _mm_hadd_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
            prods[r] = _mm256_zextsi128_si256(_mm_madd_epi16(mins, bp));
        }
        finish_min(&mut acc, &ys, d, dmin, &sumi, &prods);
    }
    acc
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_kernel<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    q45k_body::<N, false>(w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5k_kernel<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    q45k_body::<N, true>(w, a)
}

// ---------------------------------------------------------------------------------------------
// Q6_K: q' = low | high << 4 in 0..=63; Σ sc·(q' − 32)·a = Σ sc·q'·a − 32·Σ sc_j·bsum_j.

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_kernel<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / Q6K_BYTES;
    let m4 = _mm256_set1_epi8(0x0f);
    let m30 = _mm256_set1_epi8(0x30);
    let mut acc = [0f32; N];
    for i in 0..nb {
        let x = w.as_ptr().add(i * Q6K_BYTES);
        let d = f16_at(x.add(208));
        let scales8 = load128(x.add(192));
        let ys = act_ptrs(&a, i);
        let mut sumi = [_mm256_setzero_si256(); N];
        for h in 0..2 {
            let b1 = load256(x.add(64 * h));
            let b2 = load256(x.add(64 * h + 32));
            let hb = load256(x.add(128 + 32 * h));
            let c = 4 * h;
            let q0 = _mm256_or_si256(
                _mm256_and_si256(b1, m4),
                _mm256_and_si256(_mm256_slli_epi16::<4>(hb), m30),
            );
            let q1 = _mm256_or_si256(
                _mm256_and_si256(b2, m4),
                _mm256_and_si256(_mm256_slli_epi16::<2>(hb), m30),
            );
            let q2 = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(b1), m4),
                _mm256_and_si256(hb, m30),
            );
            let q3 = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(b2), m4),
                _mm256_and_si256(_mm256_srli_epi16::<2>(hb), m30),
            );
            accum_chunk(&mut sumi, &ys, c, q0, chunk_scales16(scales8, c));
            accum_chunk(&mut sumi, &ys, c + 1, q1, chunk_scales16(scales8, c + 1));
            accum_chunk(&mut sumi, &ys, c + 2, q2, chunk_scales16(scales8, c + 2));
            accum_chunk(&mut sumi, &ys, c + 3, q3, chunk_scales16(scales8, c + 3));
        }
        let sc16 = _mm256_cvtepi8_epi16(scales8);
        for r in 0..N {
            let corr = _mm256_madd_epi16(sc16, bsums16(ys[r]));
            sumi[r] = _mm256_sub_epi32(sumi[r], _mm256_slli_epi32::<5>(corr));
        }
        finish(&mut acc, &ys, d, &sumi);
    }
    acc
}

// ---------------------------------------------------------------------------------------------
// Q3_K: q' = low2 | hbit << 2 in 0..=7 (= q + 4); Σ sc·q·a = Σ sc·q'·a − 4·Σ sc_j·bsum_j.

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3k_kernel<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / Q3K_BYTES;
    let m3 = _mm256_set1_epi8(3);
    let m1 = _mm256_set1_epi8(1);
    let mut acc = [0f32; N];
    for i in 0..nb {
        let x = w.as_ptr().add(i * Q3K_BYTES);
        let d = f16_at(x.add(108));
        let scales8 = q3k_scales(x.add(96));
        let ys = act_ptrs(&a, i);
        let mut hbits = load256(x);
        let mut sumi = [_mm256_setzero_si256(); N];
        for h in 0..2 {
            let mut b = load256(x.add(32 + 32 * h));
            for p in 0..4 {
                let c = 4 * h + p;
                let hq = _mm256_slli_epi16::<2>(_mm256_and_si256(hbits, m1));
                let q = _mm256_or_si256(_mm256_and_si256(b, m3), hq);
                b = _mm256_srli_epi16::<2>(b);
                hbits = _mm256_srli_epi16::<1>(hbits);
                accum_chunk(&mut sumi, &ys, c, q, chunk_scales16(scales8, c));
            }
        }
        let sc16 = _mm256_cvtepi8_epi16(scales8);
        for r in 0..N {
            let corr = _mm256_madd_epi16(sc16, bsums16(ys[r]));
            sumi[r] = _mm256_sub_epi32(sumi[r], _mm256_slli_epi32::<2>(corr));
        }
        finish(&mut acc, &ys, d, &sumi);
    }
    acc
}

// ---------------------------------------------------------------------------------------------
// Q2_K: q in 0..=3, scale = low nibble, min = high nibble of each scale byte.

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q2k_kernel<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / Q2K_BYTES;
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    let mut acc = [0f32; N];
    for i in 0..nb {
        let x = w.as_ptr().add(i * Q2K_BYTES);
        let d = f16_at(x.add(80));
        let dmin = f16_at(x.add(82));
        let raw = load128(x);
        let scales8 = _mm_and_si128(raw, m4);
        let mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(raw), m4));
        let ys = act_ptrs(&a, i);
        let mut sumi = [_mm256_setzero_si256(); N];
        for h in 0..2 {
            let mut b = load256(x.add(16 + 32 * h));
            for p in 0..4 {
                let c = 4 * h + p;
                let q = _mm256_and_si256(b, m3);
                b = _mm256_srli_epi16::<2>(b);
                accum_chunk(&mut sumi, &ys, c, q, chunk_scales16(scales8, c));
            }
        }
        let mut prods = [_mm256_setzero_si256(); N];
        for r in 0..N {
            prods[r] = _mm256_madd_epi16(mins16, bsums16(ys[r]));
        }
        finish_min(&mut acc, &ys, d, dmin, &sumi, &prods);
    }
    acc
}

// ---------------------------------------------------------------------------------------------
// Q8_K quantizer (byte-identical to `quantize_row_q8_k_ref`).

/// Quantizes one block with the scalar reference (NaN/∞ inputs, where the vector conversion
/// would differ from Rust's saturating `as`).
pub(crate) fn q8k_block_scalar(x: &[f32], out: &mut [u8]) {
    use crate::formats::BlockQ8_K;
    let mut b = [BlockQ8_K {
        d: 0.0,
        qs: [0; 256],
        bsums: [0; 16],
    }];
    crate::formats::q8_k::quantize_row_q8_k_ref(x, &mut b);
    out.copy_from_slice(bytemuck::bytes_of(&b[0]));
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8k_avx2(x: &[f32], out: &mut [u8]) {
    let nb = x.len() / 256;
    let sign = _mm256_set1_ps(-0.0);
    for i in 0..nb {
        let xp = x.as_ptr().add(256 * i);
        let op = out.as_mut_ptr().add(Q8K_BYTES * i);
        let mut vmax = _mm256_setzero_ps();
        for k in 0..32 {
            let v = _mm256_loadu_ps(xp.add(8 * k));
            // max_ps returns its second operand when the first is NaN: NaNs never win (as in
            // the reference); a NaN element shows up below as a −128 byte.
            vmax = _mm256_max_ps(_mm256_andnot_ps(sign, v), vmax);
        }
        let m = _mm_max_ps(
            _mm256_castps256_ps128(vmax),
            _mm256_extractf128_ps::<1>(vmax),
        );
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        if amax == f32::INFINITY {
            q8k_block_scalar(
                &x[256 * i..256 * i + 256],
                &mut out[Q8K_BYTES * i..Q8K_BYTES * (i + 1)],
            );
            continue;
        }
        if amax == 0.0 {
            std::ptr::write_bytes(op, 0, Q8K_BYTES);
            continue;
        }
        // The first element whose magnitude is amax (the reference keeps the first maximum).
        let vam = _mm256_set1_ps(amax);
        let mut max = 0.0f32;
        for k in 0..32 {
            let v = _mm256_loadu_ps(xp.add(8 * k));
            let e = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_andnot_ps(sign, v), vam));
            if e != 0 {
                max = *xp.add(8 * k + e.trailing_zeros() as usize);
                break;
            }
        }
        let iscale = -127.0f32 / max;
        if !iscale.is_finite() {
            // Tiny subnormal max: ±∞ products, where Rust's saturating `as` differs from cvtps.
            q8k_block_scalar(
                &x[256 * i..256 * i + 256],
                &mut out[Q8K_BYTES * i..Q8K_BYTES * (i + 1)],
            );
            continue;
        }
        let vs = _mm256_set1_ps(iscale);
        let m128 = _mm256_set1_epi8(-128);
        let mut bad = _mm256_setzero_si256();
        let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut sums = [_mm256_setzero_si256(); 16];
        for g in 0..8 {
            let mut q = [_mm256_setzero_si256(); 4];
            for (j, q) in q.iter_mut().enumerate() {
                let v = _mm256_mul_ps(vs, _mm256_loadu_ps(xp.add(32 * g + 8 * j)));
                let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                // |iscale·x| ≤ 127·(1+ε)² < 127.5 for finite x, so the reference's min(127)
                // never binds; NaN gives i32::MIN, which packs to −128.
                *q = _mm256_cvtps_epi32(r);
            }
            sums[2 * g] = _mm256_add_epi32(q[0], q[1]);
            sums[2 * g + 1] = _mm256_add_epi32(q[2], q[3]);
            let p01 = _mm256_packs_epi32(q[0], q[1]);
            let p23 = _mm256_packs_epi32(q[2], q[3]);
            let b = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), perm);
            bad = _mm256_or_si256(bad, _mm256_cmpeq_epi8(b, m128));
            _mm256_storeu_si256(op.add(Q8K_QS + 32 * g) as *mut __m256i, b);
        }
        let s0 = hsum4_epi32(sums[0], sums[1], sums[2], sums[3]);
        let s1 = hsum4_epi32(sums[4], sums[5], sums[6], sums[7]);
        let s2 = hsum4_epi32(sums[8], sums[9], sums[10], sums[11]);
        let s3 = hsum4_epi32(sums[12], sums[13], sums[14], sums[15]);
        _mm_storeu_si128(op.add(Q8K_BSUMS) as *mut __m128i, _mm_packs_epi32(s0, s1));
        _mm_storeu_si128(
            op.add(Q8K_BSUMS + 16) as *mut __m128i,
            _mm_packs_epi32(s2, s3),
        );
        (op as *mut f32).write_unaligned(1.0 / iscale);
        if _mm256_movemask_epi8(bad) != 0 {
            // NaN inputs: the reference turns them into 0 (saturating `as`).
            q8k_block_scalar(
                &x[256 * i..256 * i + 256],
                &mut out[Q8K_BYTES * i..Q8K_BYTES * (i + 1)],
            );
        }
    }
}

fn quantize_q8k(x: &[f32], out: &mut [u8]) {
    assert!(
        x.len().is_multiple_of(256) && out.len() >= x.len() / 256 * Q8K_BYTES,
        "quantize Q8_K: lengths"
    );
    // SAFETY: reachable only through `kernels_for(Isa::Avx2 or higher)`, which checked the CPU;
    // the lengths were checked above.
    unsafe { quantize_q8k_avx2(x, out) }
}

// ---------------------------------------------------------------------------------------------
// Safe wrappers.

macro_rules! safe_dots {
    ($dot:ident, $dot4:ident, $kernel:ident, $bs:expr) => {
        fn $dot(w: &[u8], a: &[u8]) -> f32 {
            check_rows(w, $bs, &[a]);
            // SAFETY: see simd/mod.rs (CPU checked by kernels_for); lengths checked above.
            unsafe { $kernel::<1>(w, [a])[0] }
        }
        fn $dot4(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            check_rows(w, $bs, &a);
            // SAFETY: as above.
            unsafe { $kernel::<4>(w, a) }
        }
    };
}

safe_dots!(dot_q2k, dot4_q2k, q2k_kernel, Q2K_BYTES);
safe_dots!(dot_q3k, dot4_q3k, q3k_kernel, Q3K_BYTES);
safe_dots!(dot_q4k, dot4_q4k, q4k_kernel, Q4K_BYTES);
safe_dots!(dot_q5k, dot4_q5k, q5k_kernel, Q5K_BYTES);
safe_dots!(dot_q6k, dot4_q6k, q6k_kernel, Q6K_BYTES);

fn row_dot(ty: GgmlType) -> Option<RowDotFn> {
    match ty {
        GgmlType::Q2_K => Some(dot_q2k),
        GgmlType::Q3_K => Some(dot_q3k),
        GgmlType::Q4_K => Some(dot_q4k),
        GgmlType::Q5_K => Some(dot_q5k),
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

fn quantize(ty: GgmlType) -> Option<QuantizeRowFn> {
    match ty {
        GgmlType::Q8_K => Some(quantize_q8k),
        _ => None,
    }
}

pub(crate) static PROVIDER: Provider = Provider {
    name: module_path!(),
    row_dot,
    row_dot4,
    quantize,
    ..Provider::NONE
};
