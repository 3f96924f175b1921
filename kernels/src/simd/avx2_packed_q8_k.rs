//! avx2_packed_q8_k: AVX2 (+FMA, F16C; no VNNI) kernels for the packed Q8_0, Q4_K and Q6_K
//! layouts of [`crate::packed`] (the same bytes the AVX-512 kernels read).
//!
//! As in `avx2_packed`, each 64-byte part splits into two 256-bit halves (rows 0..4 and 4..8,
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

use crate::kernel_set::{PackedGemvFn, PackedTileFn, Provider};
use crate::packed::{packed_block_bytes, q4_k, q6_k, ActBlockAux, Q8KAux, GROUP_ROWS, TILE_TOKENS};
use crate::table::GgmlType;

/// Half `h`'s four row scales (f16 at `at`, row order), each in its two lanes.
#[inline(always)]
unsafe fn half_scales(at: *const u8) -> __m256 {
    let d4 = _mm_cvtph_ps(_mm_loadl_epi64(at as *const __m128i));
    _mm256_permutevar8x32_ps(
        _mm256_castps128_ps256(d4),
        _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
    )
}

/// Lane pairs of one half summed → its four rows.
#[inline(always)]
unsafe fn half_pair_sums(acc: __m256) -> [f32; 4] {
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
    std::array::from_fn(|r| lanes[2 * r] + lanes[2 * r + 1])
}

/// The eight rows' outputs from the two halves' accumulators.
#[inline(always)]
unsafe fn rows_of(acc: [__m256; 2]) -> [f32; GROUP_ROWS] {
    let (lo, hi) = (half_pair_sums(acc[0]), half_pair_sums(acc[1]));
    std::array::from_fn(|r| if r < 4 { lo[r] } else { hi[r - 4] })
}

/// 64-bit broadcast of the eight bytes at `p`.
#[inline(always)]
unsafe fn bcast8(p: *const u8) -> __m256i {
    _mm256_set1_epi64x((p as *const i64).read_unaligned())
}

// ---------------------------------------------------------------- Q8_0 × Q8_0

const Q8_0_PBB: usize = match packed_block_bytes(GgmlType::Q8_0) {
    Some(b) => b,
    None => 0,
};
/// Q8_0 activation block: d (f16) at 0, qs at 2.
const Q80_BYTES: usize = 34;
const AUX80: usize = std::mem::size_of::<ActBlockAux>();

/// One half of a packed Q8_0 block: per part, (|q| as u8, q).
#[inline(always)]
unsafe fn q8_0_half(block: *const u8, h: usize) -> [(__m256i, __m256i); 4] {
    let flip = _mm256_set1_epi8(-128);
    std::array::from_fn(|k| {
        let u = _mm256_loadu_si256(block.add(16 + 64 * k + 32 * h) as *const __m256i);
        let q = _mm256_xor_si256(u, flip);
        (_mm256_sign_epi8(q, q), q)
    })
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
        let qa = a.add(b * Q80_BYTES + 2);
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
    let mut out = [[0.0f32; GROUP_ROWS]; TILE_TOKENS];
    for h in 0..2 {
        let mut acc = [_mm256_setzero_ps(); TILE_TOKENS];
        for b in 0..nb {
            let block = g.add(b * Q8_0_PBB);
            let w = q8_0_half(block, h);
            let dw = half_scales(block.add(8 * h));
            for t in 0..TILE_TOKENS {
                let s = q8_0_isums(&w, a[t].add(b * Q80_BYTES + 2));
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(q8_0_da(aux[t], b)));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, acc[t]);
            }
        }
        for t in 0..TILE_TOKENS {
            out[t][4 * h..4 * h + 4].copy_from_slice(&half_pair_sums(acc[t]));
        }
    }
    out
}

// ---------------------------------------------------------------- K-quants × Q8_K

/// Q8_K block bytes: d (f32) at 0, qs at 4, bsums (16 × i16) at 260.
const Q8K_BYTES: usize = 292;
const Q8K_QS: usize = 4;
const Q8K_BSUMS: usize = 260;
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

#[inline(always)]
unsafe fn q4_k_half(block: *const u8, h: usize) -> Q4KHalf {
    let m4 = _mm256_set1_epi8(0x0F);
    let v: [[__m256i; 4]; 4] = std::array::from_fn(|c| {
        std::array::from_fn(|k| {
            let at = q4_k::QUANTS_AT + 256 * c + 64 * k + 32 * h;
            _mm256_loadu_si256(block.add(at) as *const __m256i)
        })
    });
    let mins = _mm256_loadu_si256(block.add(q4_k::MINS_AT + 32 * h) as *const __m256i);
    Q4KHalf {
        lo: v.map(|c| c.map(|x| _mm256_and_si256(x, m4))),
        hi: v.map(|c| c.map(|x| _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4))),
        sc: std::array::from_fn(|j| sub_scales::<false>(block.add(q4_k::SCALES_AT), j, h)),
        mins: (
            _mm256_and_si256(mins, _mm256_set1_epi16(0x00FF)),
            _mm256_srli_epi16::<8>(mins),
        ),
        d: half_scales(block.add(8 * h)),
        dmin: half_scales(block.add(16 + 8 * h)),
    }
}

/// acc + one half's contribution of one super-block against one Q8_K block `ab` (aux record
/// `kaux`).
#[inline(always)]
unsafe fn q4_k_token(acc: __m256, w: &Q4KHalf, ab: *const u8, kaux: *const u8) -> __m256 {
    let mut isum = _mm256_setzero_si256();
    for c in 0..4 {
        let qa = ab.add(Q8K_QS + 64 * c);
        let sub = |ws: &[__m256i; 4], qa: *const u8| {
            let p = |k: usize| _mm256_maddubs_epi16(ws[k], bcast8(qa.add(8 * k)));
            _mm256_add_epi16(_mm256_add_epi16(p(0), p(1)), _mm256_add_epi16(p(2), p(3)))
        };
        let s_lo = _mm256_madd_epi16(sub(&w.lo[c], qa), w.sc[2 * c]);
        let s_hi = _mm256_madd_epi16(sub(&w.hi[c], qa.add(32)), w.sc[2 * c + 1]);
        isum = _mm256_add_epi32(isum, _mm256_add_epi32(s_lo, s_hi));
    }
    let mins = _mm256_add_epi32(
        _mm256_madd_epi16(w.mins.0, bcast8(kaux)),
        _mm256_madd_epi16(w.mins.1, bcast8(kaux.add(8))),
    );
    let da = q8k_d(ab);
    let acc = scale_add(acc, isum, w.d, da);
    _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_mul_ps(w.dmin, da), acc)
}

/// `N` activation rows against one packed Q4_K group: per super-block each half is unpacked
/// once and applied to every row.
#[inline(always)]
unsafe fn q4_k_rows<const N: usize>(
    g: *const u8,
    a: [*const u8; N],
    aux: [*const u8; N],
    nb: usize,
) -> [[f32; GROUP_ROWS]; N] {
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    for b in 0..nb {
        let block = g.add(b * q4_k::PACKED_BYTES);
        for h in 0..2 {
            let w = q4_k_half(block, h);
            for t in 0..N {
                let ab = a[t].add(b * Q8K_BYTES);
                acc[t][h] = q4_k_token(acc[t][h], &w, ab, aux[t].add(b * KAUX));
            }
        }
    }
    acc.map(|v| rows_of(v))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_gemv_k(g: *const u8, a: *const u8, aux: *const u8, nb: usize) -> [f32; GROUP_ROWS] {
    q4_k_rows::<1>(g, [a], [aux], nb)[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_tile_k(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    q4_k_rows::<TILE_TOKENS>(g, a, aux, nb)
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

#[inline(always)]
unsafe fn q6_k_half(block: *const u8, h: usize) -> Q6KHalf {
    let (m4, m30) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    let load = |at: usize| _mm256_loadu_si256(block.add(at + 32 * h) as *const __m256i);
    let q: [[__m256i; 4]; 8] = std::array::from_fn(|s| {
        let (c, upper) = (s / 2, s % 2 == 1);
        // Part k's two high bits sit at bits 2k, 2k+1 of each byte of the unit's high plane.
        let hp = load(q6_k::high_at(s));
        let high = [
            _mm256_slli_epi16::<4>(hp),
            _mm256_slli_epi16::<2>(hp),
            hp,
            _mm256_srli_epi16::<2>(hp),
        ];
        std::array::from_fn(|k| {
            let v = load(q6_k::low_at(c, k));
            let low = if upper { _mm256_srli_epi16::<4>(v) } else { v };
            _mm256_or_si256(_mm256_and_si256(low, m4), _mm256_and_si256(high[k], m30))
        })
    });
    let sc_at = block.add(q6_k::SCALES_AT);
    // Scale bytes of sub-blocks 4i..4i+4 (8 rows each) → per row r' of the half, the four
    // sub-blocks' bytes: in-lane pshufb to (row, pair) order, then interleave the two pairs.
    let pairs = _mm256_setr_epi8(
        0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5,
        13, 6, 14, 7, 15,
    );
    let neg = std::array::from_fn(|i| {
        let v = _mm256_shuffle_epi8(
            _mm256_loadu_si256(sc_at.add(32 * i) as *const __m256i),
            pairs,
        );
        let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let rows = if h == 0 {
            _mm_unpacklo_epi16(lo, hi)
        } else {
            _mm_unpackhi_epi16(lo, hi)
        };
        _mm256_mullo_epi16(_mm256_cvtepi8_epi16(rows), _mm256_set1_epi16(-32))
    });
    Q6KHalf {
        q,
        sc: std::array::from_fn(|j| sub_scales::<true>(sc_at, j, h)),
        neg,
        // The row's sum goes to its first lane only (see `q6_k_token`).
        d: _mm256_blend_ps::<0b1010_1010>(half_scales(block.add(8 * h)), _mm256_setzero_ps()),
    }
}

/// acc + one half's contribution of one super-block against one Q8_K block `ab`. The offset
/// term sits in other lanes than the products it corrects, so the two lanes of a row are summed
/// in i32 (exact) before the one f32 scaling: scaling them apart could round two large
/// cancelling halves.
#[inline(always)]
unsafe fn q6_k_token(acc: __m256, w: &Q6KHalf, ab: *const u8) -> __m256 {
    let mut isum = _mm256_setzero_si256();
    for i in 0..4 {
        let bsums = bcast8(ab.add(Q8K_BSUMS + 8 * i));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(w.neg[i], bsums));
    }
    for s in 0..8 {
        let qa = ab.add(Q8K_QS + 32 * s);
        let p = |k: usize| _mm256_maddubs_epi16(w.q[s][k], bcast8(qa.add(8 * k)));
        let s0 = _mm256_madd_epi16(_mm256_add_epi16(p(0), p(1)), w.sc[2 * s]);
        let s1 = _mm256_madd_epi16(_mm256_add_epi16(p(2), p(3)), w.sc[2 * s + 1]);
        isum = _mm256_add_epi32(isum, _mm256_add_epi32(s0, s1));
    }
    let isum = _mm256_add_epi32(isum, _mm256_shuffle_epi32::<0xB1>(isum));
    scale_add(acc, isum, w.d, q8k_d(ab))
}

#[inline(always)]
unsafe fn q6_k_rows<const N: usize>(
    g: *const u8,
    a: [*const u8; N],
    nb: usize,
) -> [[f32; GROUP_ROWS]; N] {
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    for b in 0..nb {
        let block = g.add(b * q6_k::PACKED_BYTES);
        for h in 0..2 {
            let w = q6_k_half(block, h);
            for t in 0..N {
                acc[t][h] = q6_k_token(acc[t][h], &w, a[t].add(b * Q8K_BYTES));
            }
        }
    }
    acc.map(|v| rows_of(v))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_gemv_k(g: *const u8, a: *const u8, _: *const u8, nb: usize) -> [f32; GROUP_ROWS] {
    q6_k_rows::<1>(g, [a], nb)[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_tile_k(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    _: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    q6_k_rows::<TILE_TOKENS>(g, a, nb)
}

super::avx512_packed::packed_entry_points!(
    0 => (GgmlType::Q8_0, q8_0_gemv_k, q8_0_tile_k),
    1 => (GgmlType::Q4_K, q4_k_gemv_k, q4_k_tile_k),
    2 => (GgmlType::Q6_K, q6_k_gemv_k, q6_k_tile_k),
);
