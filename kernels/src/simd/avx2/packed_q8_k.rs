//! avx2::packed_q8_k: AVX2 (+FMA, F16C; no VNNI) kernels for the packed Q8_0, Q4_K, Q5_K and Q6_K
//! layouts of [`crate::packed`] (the same bytes the AVX-512 kernels read).
//!
//! As in `avx2::packed`, each 64-byte part splits into two 256-bit halves (rows 0..4 and 4..8,
//! lane `2r' + p`), and the u8 × i8 sums use llama.cpp's AVX2 idiom, `vpmaddubsw` (adjacent
//! pairs to i16) then `vpmaddwd` (pairs to i32). `vpmaddubsw` saturates, so each format keeps its
//! i16 pair sums in range:
//!
//! * Q8_0: the packed bytes are `q + 128`, up to 255, which would saturate; the kernel flips
//!   them back to `q` and uses the sign trick (`|q|` as the unsigned operand, `sign(a, q)` as the
//!   signed one: pair sums ≤ 2·128·127, exact also for q = −128; activations never hold −128).
//!   Then `vpmaddwd` against ones.
//! * Q4_K: nibbles, so a 32-element sub-block's four `vpmaddubsw` results add up in i16
//!   (≤ 4·2·15·128) and one `vpmaddwd` against the sub-block's scales (a 6-bit scale per row,
//!   in every word of the row's lanes) gives its scaled i32 sums; the mins term is the
//!   AVX-512 kernel's (`vpmaddwd` of the mins' even / odd bytes against the aux sub-block sums),
//!   subtracted in f32.
//! * Q5_K: Q4_K's kernels with each byte's fifth bit ORed on (`fifth_bits` of its mask); the
//!   four parts still add up in i16 (≤ 4·2·31·128 < 2^15).
//! * Q6_K: the 6-bit values unsigned (`q + 32` ≤ 63), so a 16-element sub-block's two
//!   `vpmaddubsw` results add up in i16 (≤ 2·2·63·128) before one `vpmaddwd` against its i8
//!   scales; the offset `−32 · Σ_j sc_j · bsum_j` is four more `vpmaddwd` per half against the
//!   Q8_K bsums, and each row's two lanes are summed in i32 before the f32 scaling.
//!
//! The gemv does both halves per block (one pass over the stream); the tile applies each
//! unpacked block to [`TILE_TOKENS`] activation rows. Integer block sums are exact; the f32
//! scaling is the AVX-512 kernels' (one FMA per block with `d_w·d_a`), so results differ from
//! the scalar reference only in f32 rounding order.

use std::arch::x86_64::*;

use crate::formats::BlockQ8_0;
use crate::kernel_set::{PackedGemvFn, PackedTileFn, Provider};
use crate::packed::{
    packed_block_bytes, q4_k, q5_k, q6_k, ActBlockAux, Q8KAux, GROUP_ROWS, TILE_TOKENS,
};
use crate::simd::x86::kquant::{Q8K_BSUMS, Q8K_BYTES, Q8K_QS};
use crate::simd::x86::packed::{bcast8, fifth_bits, half_pair_sums, half_scales};
use crate::table::GgmlType;

/// The eight rows' outputs from the two halves' accumulators.
#[inline(always)]
unsafe fn rows_of(acc: [__m256; 2]) -> [f32; GROUP_ROWS] {
    let (lo, hi) = (half_pair_sums(acc[0]), half_pair_sums(acc[1]));
    std::array::from_fn(|r| if r < 4 { lo[r] } else { hi[r - 4] })
}

/// Every token's eight row outputs from the two halves' accumulators (`acc[h][t]`).
#[inline(always)]
unsafe fn finish_halves(acc: [[__m256; TILE_TOKENS]; 2]) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    let mut out = [[0.0f32; GROUP_ROWS]; TILE_TOKENS];
    for (t, o) in out.iter_mut().enumerate() {
        *o = rows_of([acc[0][t], acc[1][t]]);
    }
    out
}

/// The four parts (8 bytes each) of the 32 activation bytes at `qa`, broadcast.
#[inline(always)]
unsafe fn act_parts(qa: *const u8) -> [__m256i; 4] {
    [
        bcast8(qa),
        bcast8(qa.add(8)),
        bcast8(qa.add(16)),
        bcast8(qa.add(24)),
    ]
}

// ---------------------------------------------------------------- Q8_0 × Q8_0

const Q8_0_PBB: usize = match packed_block_bytes(GgmlType::Q8_0) {
    Some(b) => b,
    None => 0,
};
/// Q8_0 activation block size and where its quants start.
const Q80_BYTES: usize = std::mem::size_of::<BlockQ8_0>();
const Q80_QS: usize = std::mem::offset_of!(BlockQ8_0, qs);
const AUX80: usize = std::mem::size_of::<ActBlockAux>();

/// One half of a packed Q8_0 block: per part, (|q| as u8, q).
#[inline(always)]
unsafe fn q8_0_half(block: *const u8, h: usize) -> [(__m256i, __m256i); 4] {
    let flip = _mm256_set1_epi8(-128);
    let mut w = [(_mm256_setzero_si256(), _mm256_setzero_si256()); 4];
    for (k, w) in w.iter_mut().enumerate() {
        let u = _mm256_loadu_si256(block.add(16 + 64 * k + 32 * h) as *const __m256i);
        let q = _mm256_xor_si256(u, flip);
        *w = (_mm256_sign_epi8(q, q), q);
    }
    w
}

/// Σ over the four parts of q·a (activation quants at `qa`): exact signed lane sums.
#[inline(always)]
unsafe fn q8_0_isums(w: &[(__m256i, __m256i); 4], qa: *const u8) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    let part = |k: usize| {
        let a = _mm256_sign_epi8(bcast8(qa.add(8 * k)), w[k].1);
        _mm256_madd_epi16(_mm256_maddubs_epi16(w[k].0, a), ones)
    };
    _mm256_add_epi32(
        _mm256_add_epi32(part(0), part(1)),
        _mm256_add_epi32(part(2), part(3)),
    )
}

/// Activation block `b`'s scale as f32 (from its aux record).
#[inline(always)]
unsafe fn q8_0_da(aux: *const u8, b: usize) -> f32 {
    (aux.add(b * AUX80) as *const ActBlockAux)
        .read_unaligned()
        .d
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_gemv_k(g: *const u8, a: *const u8, aux: *const u8, nb: usize) -> [f32; GROUP_ROWS] {
    let mut acc = [_mm256_setzero_ps(); 2];
    for b in 0..nb {
        let block = g.add(b * Q8_0_PBB);
        let qa = a.add(b * Q80_BYTES + Q80_QS);
        let da = _mm256_set1_ps(q8_0_da(aux, b));
        for (h, acc) in acc.iter_mut().enumerate() {
            let s = q8_0_isums(&q8_0_half(block, h), qa);
            let d = _mm256_mul_ps(half_scales(block.add(8 * h)), da);
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, *acc);
        }
    }
    rows_of(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_tile_k(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    // Four tokens per pass: a half's unpacked weights take eight registers, so four
    // accumulators (not eight) keep the loop free of spills; the group is re-read from L1.
    const PASS: usize = 4;
    let mut out = [[0.0f32; GROUP_ROWS]; TILE_TOKENS];
    for h in 0..2 {
        for t0 in (0..TILE_TOKENS).step_by(PASS) {
            let mut acc = [_mm256_setzero_ps(); PASS];
            for b in 0..nb {
                let block = g.add(b * Q8_0_PBB);
                let w = q8_0_half(block, h);
                let dw = half_scales(block.add(8 * h));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let t = t0 + i;
                    let s = q8_0_isums(&w, a[t].add(b * Q80_BYTES + Q80_QS));
                    let d = _mm256_mul_ps(dw, _mm256_set1_ps(q8_0_da(aux[t], b)));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, *acc);
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                out[t0 + i][4 * h..4 * h + 4].copy_from_slice(&half_pair_sums(*acc));
            }
        }
    }
    out
}

// ---------------------------------------------------------------- K-quants × Q8_K

/// Q8_K aux record stride; the Q4_K part is at offset 0.
const KAUX: usize = std::mem::size_of::<Q8KAux>();

/// Words `(r', p, w)` of half `h` (lane `2r' + p`, word `w`) = byte `base + r'` of a 16-byte
/// source, zero-extended (`HIGH`: in the high byte, for a sign-extending shift).
#[inline(always)]
unsafe fn row_word_mask<const HIGH: bool>(base: usize) -> __m256i {
    let mut m = [-128i8; 32];
    for (i, b) in m.iter_mut().enumerate() {
        // Byte i of the 256-bit result: word i / 2 = lane (i / 8) → row r' = i / 8.
        if (i % 2 == 1) == HIGH {
            *b = (base + i / 8) as i8;
        }
    }
    _mm256_loadu_si256(m.as_ptr() as *const __m256i)
}

/// Sub-block `j`'s per-row byte scales (8 bytes at `sc + 8j`, row order) for half `h`: each
/// row's scale in all four i16 words of its two lanes (`SIGNED`: i8, else u8).
#[inline(always)]
unsafe fn sub_scales<const SIGNED: bool>(sc: *const u8, j: usize, h: usize) -> __m256i {
    let src = _mm256_broadcastsi128_si256(_mm_loadu_si128(sc.add(8 * (j & !1)) as *const __m128i));
    let words = _mm256_shuffle_epi8(src, row_word_mask::<SIGNED>(8 * (j % 2) + 4 * h));
    if SIGNED {
        _mm256_srai_epi16::<8>(words)
    } else {
        words
    }
}

/// acc + isum·(d_w·d_a).
#[inline(always)]
unsafe fn scale_add(acc: __m256, isum: __m256i, dw: __m256, da: __m256) -> __m256 {
    _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, da), acc)
}

/// Activation row `t`'s Q8_K scale of block `b` broadcast.
#[inline(always)]
unsafe fn q8k_d(ab: *const u8) -> __m256 {
    _mm256_set1_ps((ab as *const f32).read_unaligned())
}

// ---- Q4_K: per 32-element sub-block the four parts' `vpmaddubsw` sums are added in i16
// (nibbles: |Σ| ≤ 4·2·15·128 < 2^15) and scaled by one `vpmaddwd` against the sub-block's
// scales; the mins term is `vpmaddwd` of the mins' even / odd bytes against the aux sub-block
// sums (see `packed::q4_k`).

/// One half of a packed Q4_K super-block, unpacked.
struct Q4KHalf {
    /// Chunk `c`, part `k`: sub-block `2c` (low nibbles) and `2c + 1` (high nibbles).
    lo: [[__m256i; 4]; 4],
    hi: [[__m256i; 4]; 4],
    sc: [__m256i; 8],
    /// The mins' even and odd bytes as i16 words.
    mins: (__m256i, __m256i),
    d: __m256,
    dmin: __m256,
}

/// Chunk `c` of half `h`: the parts of sub-blocks `2c` (low nibbles) and `2c + 1` (high);
/// `FIVE` (packed Q5_K) ORs each byte's fifth bit on from its mask (`packed::q5_k`).
#[inline(always)]
unsafe fn q4_chunk<const FIVE: bool>(
    block: *const u8,
    h: usize,
    c: usize,
) -> ([__m256i; 4], [__m256i; 4]) {
    let m4 = _mm256_set1_epi8(0x0F);
    let (mut lo, mut hi) = ([_mm256_setzero_si256(); 4], [_mm256_setzero_si256(); 4]);
    for k in 0..4 {
        let at = q5_k::k4_part_at::<FIVE>(c, k) + 32 * h;
        let v = _mm256_loadu_si256(block.add(at) as *const __m256i);
        lo[k] = _mm256_and_si256(v, m4);
        hi[k] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
        if FIVE {
            lo[k] = _mm256_or_si256(lo[k], fifth_bits(block.add(q5_k::mask_at(c, 0, k) + 4 * h)));
            hi[k] = _mm256_or_si256(hi[k], fifth_bits(block.add(q5_k::mask_at(c, 1, k) + 4 * h)));
        }
    }
    (lo, hi)
}

/// One 32-element sub-block (`w`: its four nibble parts) against its broadcast activation
/// parts, scaled by `sc`: the four `vpmaddubsw` sums added in i16, one `vpmaddwd`.
#[inline(always)]
unsafe fn q4_sub_isum(w: &[__m256i; 4], a: &[__m256i; 4], sc: __m256i) -> __m256i {
    let p = |k: usize| _mm256_maddubs_epi16(w[k], a[k]);
    let s16 = _mm256_add_epi16(_mm256_add_epi16(p(0), p(1)), _mm256_add_epi16(p(2), p(3)));
    _mm256_madd_epi16(s16, sc)
}

/// Half `h`'s mins (each row's `Σ_j m_j·A_j` across its two lanes) against aux record `kaux`.
#[inline(always)]
unsafe fn q4_mins(mins: (__m256i, __m256i), kaux: *const u8) -> __m256i {
    _mm256_add_epi32(
        _mm256_madd_epi16(mins.0, bcast8(kaux)),
        _mm256_madd_epi16(mins.1, bcast8(kaux.add(8))),
    )
}

/// Half `h`'s mins as (even, odd) byte words.
#[inline(always)]
unsafe fn q4_min_words(block: *const u8, h: usize) -> (__m256i, __m256i) {
    let mins = _mm256_loadu_si256(block.add(q4_k::MINS_AT + 32 * h) as *const __m256i);
    (
        _mm256_and_si256(mins, _mm256_set1_epi16(0x00FF)),
        _mm256_srli_epi16::<8>(mins),
    )
}

/// acc + (d·d_a)·isum − (dmin·d_a)·mins.
#[inline(always)]
unsafe fn q4_finish(
    acc: __m256,
    isum: __m256i,
    mins: __m256i,
    d: __m256,
    dmin: __m256,
    da: __m256,
) -> __m256 {
    let acc = scale_add(acc, isum, d, da);
    _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_mul_ps(dmin, da), acc)
}

#[inline(always)]
unsafe fn q4_k_half<const FIVE: bool>(block: *const u8, h: usize) -> Q4KHalf {
    let zero = _mm256_setzero_si256();
    let (mut lo, mut hi) = ([[zero; 4]; 4], [[zero; 4]; 4]);
    for c in 0..4 {
        (lo[c], hi[c]) = q4_chunk::<FIVE>(block, h, c);
    }
    let mut sc = [zero; 8];
    for (j, sc) in sc.iter_mut().enumerate() {
        *sc = sub_scales::<false>(block.add(q4_k::SCALES_AT), j, h);
    }
    Q4KHalf {
        lo,
        hi,
        sc,
        mins: q4_min_words(block, h),
        d: half_scales(block.add(8 * h)),
        dmin: half_scales(block.add(16 + 8 * h)),
    }
}

/// Tokens per pass over a staged half in the tiles: each weight vector loaded once for a pair
/// (the tile is bound by loads: broadcasts and staged weights).
const PAIR: usize = 2;

/// acc + one half's contribution of one super-block against a pair of Q8_K blocks `ab` (aux
/// records `kaux`).
#[inline(always)]
unsafe fn q4_k_pair(
    acc: &mut [__m256; PAIR],
    w: &Q4KHalf,
    ab: [*const u8; PAIR],
    kaux: [*const u8; PAIR],
) {
    let mut isum = [_mm256_setzero_si256(); PAIR];
    for c in 0..4 {
        for (sub, ws, sc) in [(0, &w.lo[c], w.sc[2 * c]), (1, &w.hi[c], w.sc[2 * c + 1])] {
            let mut s16 = [_mm256_setzero_si256(); PAIR];
            for (k, &wk) in ws.iter().enumerate() {
                for t in 0..PAIR {
                    let a = bcast8(ab[t].add(Q8K_QS + 64 * c + 32 * sub + 8 * k));
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(wk, a));
                }
            }
            for t in 0..PAIR {
                isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], sc));
            }
        }
    }
    for t in 0..PAIR {
        let mins = q4_mins(w.mins, kaux[t]);
        acc[t] = q4_finish(acc[t], isum[t], mins, w.d, w.dmin, q8k_d(ab[t]));
    }
}

/// The tile: per super-block each half is unpacked once and applied to every token.
#[inline(always)]
unsafe fn k4_tile<const FIVE: bool>(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    let mut acc = [[_mm256_setzero_ps(); TILE_TOKENS]; 2];
    for b in 0..nb {
        let block = g.add(b * q5_k::k4_block_bytes::<FIVE>());
        for (h, acc) in acc.iter_mut().enumerate() {
            let w = q4_k_half::<FIVE>(block, h);
            for t in (0..TILE_TOKENS).step_by(PAIR) {
                let ab = [a[t].add(b * Q8K_BYTES), a[t + 1].add(b * Q8K_BYTES)];
                let kaux = [aux[t].add(b * KAUX), aux[t + 1].add(b * KAUX)];
                let pair: &mut [__m256; PAIR] = (&mut acc[t..t + PAIR]).try_into().unwrap();
                q4_k_pair(pair, &w, ab, kaux);
            }
        }
    }
    finish_halves(acc)
}

/// The gemv: one token, so each chunk is unpacked and used at once (both halves, sharing the
/// activation broadcasts) rather than staged for several tokens.
#[inline(always)]
unsafe fn k4_gemv<const FIVE: bool>(
    g: *const u8,
    a: *const u8,
    aux: *const u8,
    nb: usize,
) -> [f32; GROUP_ROWS] {
    let mut acc = [_mm256_setzero_ps(); 2];
    for b in 0..nb {
        let block = g.add(b * q5_k::k4_block_bytes::<FIVE>());
        let ab = a.add(b * Q8K_BYTES);
        let mut isum = [_mm256_setzero_si256(); 2];
        for c in 0..4 {
            let qa = ab.add(Q8K_QS + 64 * c);
            let (a_lo, a_hi) = (act_parts(qa), act_parts(qa.add(32)));
            for (h, isum) in isum.iter_mut().enumerate() {
                let (lo, hi) = q4_chunk::<FIVE>(block, h, c);
                let sc_at = block.add(q4_k::SCALES_AT);
                let s_lo = q4_sub_isum(&lo, &a_lo, sub_scales::<false>(sc_at, 2 * c, h));
                let s_hi = q4_sub_isum(&hi, &a_hi, sub_scales::<false>(sc_at, 2 * c + 1, h));
                *isum = _mm256_add_epi32(*isum, _mm256_add_epi32(s_lo, s_hi));
            }
        }
        let (da, kaux) = (q8k_d(ab), aux.add(b * KAUX));
        for (h, acc) in acc.iter_mut().enumerate() {
            let mins = q4_mins(q4_min_words(block, h), kaux);
            let (d, dmin) = (
                half_scales(block.add(8 * h)),
                half_scales(block.add(16 + 8 * h)),
            );
            *acc = q4_finish(*acc, isum[h], mins, d, dmin, da);
        }
    }
    rows_of(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_tile_k(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    k4_tile::<false>(g, a, aux, nb)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_gemv_k(g: *const u8, a: *const u8, aux: *const u8, nb: usize) -> [f32; GROUP_ROWS] {
    k4_gemv::<false>(g, a, aux, nb)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k_tile_k(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    k4_tile::<true>(g, a, aux, nb)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k_gemv_k(g: *const u8, a: *const u8, aux: *const u8, nb: usize) -> [f32; GROUP_ROWS] {
    k4_gemv::<true>(g, a, aux, nb)
}

// ---- Q6_K: 6-bit values used unsigned (`q + 32` ≤ 63); per 16-element sub-block the two
// parts' `vpmaddubsw` sums are added in i16 (|Σ| ≤ 2·2·63·128 < 2^15) and scaled by one
// `vpmaddwd` against the sub-block's i8 scales. The `−32` offset is `−32 · Σ_j sc_j · bsum_j`:
// four `vpmaddwd` per half of the pre-multiplied scales (lane `(r', p)` holding sub-blocks
// `4i + 2p`, `4i + 2p + 1`) against 64-bit broadcasts of the Q8_K bsums (so, like the AVX2 row
// kernels, this relies on `bsums` matching `qs`, as every quantized Q8_K block does).

/// One half of a packed Q6_K super-block, unpacked.
struct Q6KHalf {
    /// Unit `s` (elements `32s..32s + 32`), part `k`: unsigned 6-bit values.
    q: [[__m256i; 4]; 8],
    /// Sub-block `j`'s scales (i16 words).
    sc: [__m256i; 16],
    /// `−32 ·` scales of sub-blocks `4i..4i + 4`, lane `(r', p)` = sub-blocks `4i + 2p + w`.
    neg: [__m256i; 4],
    /// Row scales in lanes `2r'`, zero in lanes `2r' + 1`.
    d: __m256,
}

/// Unit `s` (elements `32s..32s + 32`) of half `h`: its four parts as unsigned 6-bit values.
#[inline(always)]
unsafe fn q6_unit(block: *const u8, h: usize, s: usize) -> [__m256i; 4] {
    let (m4, m30) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    let load = |at: usize| _mm256_loadu_si256(block.add(at + 32 * h) as *const __m256i);
    // Part k's two high bits sit at bits 2k, 2k+1 of each byte of the unit's high plane.
    let hp = load(q6_k::high_at(s));
    let high = [
        _mm256_slli_epi16::<4>(hp),
        _mm256_slli_epi16::<2>(hp),
        hp,
        _mm256_srli_epi16::<2>(hp),
    ];
    let mut q = [_mm256_setzero_si256(); 4];
    for (k, q) in q.iter_mut().enumerate() {
        let v = load(q6_k::low_at(s / 2, k));
        let low = if s % 2 == 1 {
            _mm256_srli_epi16::<4>(v)
        } else {
            v
        };
        *q = _mm256_or_si256(_mm256_and_si256(low, m4), _mm256_and_si256(high[k], m30));
    }
    q
}

/// Half `h`'s offset scales: `−32 ·` the scales of sub-blocks `4i..4i + 4`, lane `(r', p)`
/// holding sub-blocks `4i + 2p + w` (matching a 64-bit broadcast of bsums `4i..4i + 4`).
#[inline(always)]
unsafe fn q6_neg_scales(block: *const u8, h: usize) -> [__m256i; 4] {
    // Scale bytes of sub-blocks 4i..4i+4 (8 rows each) → per row r' of the half, the four
    // sub-blocks' bytes: in-lane pshufb to (row, pair) order, then interleave the two pairs.
    let pairs = _mm256_setr_epi8(
        0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5,
        13, 6, 14, 7, 15,
    );
    let mut neg = [_mm256_setzero_si256(); 4];
    for (i, neg) in neg.iter_mut().enumerate() {
        let at = block.add(q6_k::SCALES_AT + 32 * i);
        let v = _mm256_shuffle_epi8(_mm256_loadu_si256(at as *const __m256i), pairs);
        let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let rows = if h == 0 {
            _mm_unpacklo_epi16(lo, hi)
        } else {
            _mm_unpackhi_epi16(lo, hi)
        };
        *neg = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(rows), _mm256_set1_epi16(-32));
    }
    neg
}

/// Half `h`'s row scales in lanes `2r'`, zero in lanes `2r' + 1` (a row's two lanes are summed
/// in i32 first, see `q6_k_pair`).
#[inline(always)]
unsafe fn q6_row_scales(block: *const u8, h: usize) -> __m256 {
    _mm256_blend_ps::<0b1010_1010>(half_scales(block.add(8 * h)), _mm256_setzero_ps())
}

/// Σ of one unit's two sub-blocks (`q`: its four parts, `sc`: the two sub-blocks' scales)
/// against the 32 activation bytes at `qa` (broadcast parts `a`).
#[inline(always)]
unsafe fn q6_unit_isum(q: &[__m256i; 4], sc: (__m256i, __m256i), a: &[__m256i; 4]) -> __m256i {
    let p = |k: usize| _mm256_maddubs_epi16(q[k], a[k]);
    let s0 = _mm256_madd_epi16(_mm256_add_epi16(p(0), p(1)), sc.0);
    let s1 = _mm256_madd_epi16(_mm256_add_epi16(p(2), p(3)), sc.1);
    _mm256_add_epi32(s0, s1)
}

/// Half `h` of a packed Q6_K super-block unpacked into `w` (in place: the staged half is
/// large, and a returned value was copied with `memcpy`).
#[inline(always)]
unsafe fn q6_k_half(w: &mut Q6KHalf, block: *const u8, h: usize) {
    for (s, q) in w.q.iter_mut().enumerate() {
        *q = q6_unit(block, h, s);
    }
    for (j, sc) in w.sc.iter_mut().enumerate() {
        *sc = sub_scales::<true>(block.add(q6_k::SCALES_AT), j, h);
    }
    w.neg = q6_neg_scales(block, h);
    w.d = q6_row_scales(block, h);
}

/// acc + one half's contribution of one super-block against a pair of Q8_K blocks `ab`. The
/// offset term sits in other lanes than the products it corrects, so the two lanes of a row are
/// summed in i32 (exact) before the one f32 scaling: scaling them apart could round two large
/// cancelling halves.
#[inline(always)]
unsafe fn q6_k_pair(acc: &mut [__m256; PAIR], w: &Q6KHalf, ab: [*const u8; PAIR]) {
    let mut isum = [_mm256_setzero_si256(); PAIR];
    for (i, &neg) in w.neg.iter().enumerate() {
        for t in 0..PAIR {
            let bsums = bcast8(ab[t].add(Q8K_BSUMS + 8 * i));
            isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(neg, bsums));
        }
    }
    for s in 0..8 {
        for j in 0..2 {
            let mut s16 = [_mm256_setzero_si256(); PAIR];
            for k in 2 * j..2 * j + 2 {
                let wk = w.q[s][k];
                for t in 0..PAIR {
                    let a = bcast8(ab[t].add(Q8K_QS + 32 * s + 8 * k));
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(wk, a));
                }
            }
            for t in 0..PAIR {
                let p = _mm256_madd_epi16(s16[t], w.sc[2 * s + j]);
                isum[t] = _mm256_add_epi32(isum[t], p);
            }
        }
    }
    for t in 0..PAIR {
        let isum = _mm256_add_epi32(isum[t], _mm256_shuffle_epi32::<0xB1>(isum[t]));
        acc[t] = scale_add(acc[t], isum, w.d, q8k_d(ab[t]));
    }
}

/// The tile: per super-block each half is unpacked once and applied to every token.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_tile_k(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    _: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    let mut acc = [[_mm256_setzero_ps(); TILE_TOKENS]; 2];
    let zero = _mm256_setzero_si256();
    let mut w = Q6KHalf {
        q: [[zero; 4]; 8],
        sc: [zero; 16],
        neg: [zero; 4],
        d: _mm256_setzero_ps(),
    };
    for b in 0..nb {
        let block = g.add(b * q6_k::PACKED_BYTES);
        for (h, acc) in acc.iter_mut().enumerate() {
            q6_k_half(&mut w, block, h);
            for t in (0..TILE_TOKENS).step_by(PAIR) {
                let ab = [a[t].add(b * Q8K_BYTES), a[t + 1].add(b * Q8K_BYTES)];
                let pair: &mut [__m256; PAIR] = (&mut acc[t..t + PAIR]).try_into().unwrap();
                q6_k_pair(pair, &w, ab);
            }
        }
    }
    finish_halves(acc)
}

/// The gemv: one token, so each unit is unpacked and used at once (both halves, sharing the
/// activation broadcasts) rather than staged for several tokens.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_gemv_k(g: *const u8, a: *const u8, _: *const u8, nb: usize) -> [f32; GROUP_ROWS] {
    let mut acc = [_mm256_setzero_ps(); 2];
    for b in 0..nb {
        let block = g.add(b * q6_k::PACKED_BYTES);
        let ab = a.add(b * Q8K_BYTES);
        let mut isum = [_mm256_setzero_si256(); 2];
        for (h, isum) in isum.iter_mut().enumerate() {
            for (i, neg) in q6_neg_scales(block, h).iter().enumerate() {
                let bsums = bcast8(ab.add(Q8K_BSUMS + 8 * i));
                *isum = _mm256_add_epi32(*isum, _mm256_madd_epi16(*neg, bsums));
            }
        }
        for s in 0..8 {
            let a = act_parts(ab.add(Q8K_QS + 32 * s));
            for (h, isum) in isum.iter_mut().enumerate() {
                let sc_at = block.add(q6_k::SCALES_AT);
                let sc = (
                    sub_scales::<true>(sc_at, 2 * s, h),
                    sub_scales::<true>(sc_at, 2 * s + 1, h),
                );
                let unit = q6_unit_isum(&q6_unit(block, h, s), sc, &a);
                *isum = _mm256_add_epi32(*isum, unit);
            }
        }
        let da = q8k_d(ab);
        for (h, acc) in acc.iter_mut().enumerate() {
            let isum = _mm256_add_epi32(isum[h], _mm256_shuffle_epi32::<0xB1>(isum[h]));
            *acc = scale_add(*acc, isum, q6_row_scales(block, h), da);
        }
    }
    rows_of(acc)
}

crate::simd::x86::packed::packed_entry_points!(
    0 => (GgmlType::Q8_0, q8_0_gemv_k, q8_0_tile_k),
    1 => (GgmlType::Q4_K, q4_k_gemv_k, q4_k_tile_k),
    2 => (GgmlType::Q6_K, q6_k_gemv_k, q6_k_tile_k),
    3 => (GgmlType::Q5_K, q5_k_gemv_k, q5_k_tile_k),
);
