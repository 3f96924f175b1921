//! avx512::packed: AVX-512 VNNI kernels for the packed layouts of [`crate::packed`].
//!
//! Per packed block: the weights arrive as four 512-bit registers of unsigned bytes, part `k`
//! meeting activation elements `8k..8k+8` (one `vpbroadcastq` each). Four `vpdpbusd` leave row
//! `r`'s two half-sums in lanes `2r`, `2r+1`; the chain starts from the block's
//! `−offset · lane sums` ([`ActBlockAux`]), so it ends on the exact signed integer sums; one `vcvtdq2ps` and one FMA with the eight row
//! scales (one F16C conversion, each scale duplicated into its two lanes) times `d_a` add the
//! block to a 16-lane f32 accumulator. The lane pairs are summed once, at the end of the row.
//!
//! Q5_0 is Q4_0 plus one masked byte add per part: its fifth bits are stored as one 64-bit
//! mask per part, so `vpaddb` under that mask adds 16 to exactly the bytes whose bit is set.
//!
//! The prefill tile applies each unpacked block to `TILE_TOKENS` activation rows (one
//! accumulator each).

use std::arch::x86_64::*;

use crate::kernel_set::{PackedGemvFn, PackedTileFn, Provider};
use crate::packed::{
    packed_block_bytes, q4_k, q5_k, q6_k, ActBlockAux, KBlockAux, Q81Aux, Q8KAux, GROUP_ROWS,
    Q5_0_QH_AT, TILE_TOKENS,
};
use crate::simd::x86::kquant::{Q8K_BYTES, Q8K_QS};
use crate::table::GgmlType;

/// Row `r`'s scale into lanes `2r` and `2r + 1`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn row_scales(block: *const u8) -> __m512 {
    let d8 = _mm256_cvtph_ps(_mm_loadu_si128(block as *const __m128i));
    let dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(d8))
}

/// Activation elements `8k..8k+8` of the Q8_0 block at `ab` (d at 0, qs at 2) in every
/// 64-bit lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn act_part(ab: *const u8, k: usize) -> __m512i {
    _mm512_set1_epi64((ab.add(2 + 8 * k) as *const i64).read_unaligned())
}

/// Q4_0 packed block: parts 0..4 as unsigned nibbles.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn unpack_q4_0(block: *const u8) -> [__m512i; 4] {
    let m4 = _mm512_set1_epi8(0x0F);
    let v0 = _mm512_loadu_si512(block.add(16) as *const __m512i);
    let v1 = _mm512_loadu_si512(block.add(80) as *const __m512i);
    [
        _mm512_and_si512(v0, m4),
        _mm512_and_si512(v1, m4),
        _mm512_and_si512(_mm512_srli_epi16::<4>(v0), m4),
        _mm512_and_si512(_mm512_srli_epi16::<4>(v1), m4),
    ]
}

/// Q5_0 packed block: parts 0..4 as unsigned 5-bit values (`nibble + 16` where the part's
/// 64-bit mask has the byte's bit).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn unpack_q5_0(block: *const u8) -> [__m512i; 4] {
    let sixteen = _mm512_set1_epi8(16);
    let nibbles = unpack_q4_0(block);
    std::array::from_fn(|k| {
        let high = (block.add(Q5_0_QH_AT + 8 * k) as *const u64).read_unaligned();
        _mm512_mask_add_epi8(nibbles[k], high, nibbles[k], sixteen)
    })
}

/// Q8_0 packed block: parts 0..4 (already unsigned, `q + 128`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn unpack_q8_0(block: *const u8) -> [__m512i; 4] {
    let p = |k: usize| _mm512_loadu_si512(block.add(16 + 64 * k) as *const __m512i);
    [p(0), p(1), p(2), p(3)]
}

/// Σ over the four parts of u·a, starting from `start`, the format's `−offset · lane sums`
/// (from [`ActBlockAux`]): the exact signed block sums. One dependent chain; the kernels
/// overlap several (blocks in the gemv, tokens in the tile).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn block_isums(w: &[__m512i; 4], ab: *const u8, start: &[i32; 2]) -> __m512i {
    let s = _mm512_set1_epi64((start.as_ptr() as *const i64).read_unaligned());
    let s = _mm512_dpbusd_epi32(s, w[0], act_part(ab, 0));
    let s = _mm512_dpbusd_epi32(s, w[1], act_part(ab, 1));
    let s = _mm512_dpbusd_epi32(s, w[2], act_part(ab, 2));
    _mm512_dpbusd_epi32(s, w[3], act_part(ab, 3))
}

/// Bytes of one Q8_0 aux record.
const AUX: usize = std::mem::size_of::<ActBlockAux>();

/// Block `b`'s aux record (the byte buffer carries no alignment promise).
#[inline(always)]
unsafe fn aux_at(aux: *const u8, b: usize) -> ActBlockAux {
    (aux.add(b * AUX) as *const ActBlockAux).read_unaligned()
}

/// Lane pairs (2r, 2r+1) summed → the 8 rows.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn pair_sums(acc: __m512) -> [f32; GROUP_ROWS] {
    let mut lanes = [0.0f32; 16];
    _mm512_storeu_ps(lanes.as_mut_ptr(), acc);
    std::array::from_fn(|r| lanes[2 * r] + lanes[2 * r + 1])
}

macro_rules! packed_kernels {
    ($gemv_k:ident, $tile_k:ident, $ty:expr, $start:ident, $unpack:ident) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $gemv_k(
            g: *const u8,
            a: *const u8,
            aux: *const u8,
            nb: usize,
        ) -> [f32; GROUP_ROWS] {
            const PBB: usize = packed_block_bytes($ty).unwrap();
            let mut acc = _mm512_setzero_ps();
            for b in 0..nb {
                let block = g.add(b * PBB);
                let ax = aux_at(aux, b);
                let s = block_isums(&$unpack(block), a.add(b * 34), &ax.$start);
                let d = _mm512_mul_ps(row_scales(block), _mm512_set1_ps(ax.d));
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc);
            }
            pair_sums(acc)
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $tile_k(
            g: *const u8,
            a: [*const u8; TILE_TOKENS],
            aux: [*const u8; TILE_TOKENS],
            nb: usize,
        ) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
            const PBB: usize = packed_block_bytes($ty).unwrap();
            let mut acc = [_mm512_setzero_ps(); TILE_TOKENS];
            for b in 0..nb {
                let block = g.add(b * PBB);
                let w = $unpack(block);
                let dw = row_scales(block);
                for t in 0..TILE_TOKENS {
                    let ax = aux_at(aux[t], b);
                    let s = block_isums(&w, a[t].add(b * 34), &ax.$start);
                    let d = _mm512_mul_ps(dw, _mm512_set1_ps(ax.d));
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc[t]);
                }
            }
            acc.map(|v| pair_sums(v))
        }
    };
}

packed_kernels!(
    q4_0_gemv_k,
    q4_0_tile_k,
    GgmlType::Q4_0,
    neg_offset_sums_q4,
    unpack_q4_0
);
packed_kernels!(
    q5_0_gemv_k,
    q5_0_tile_k,
    GgmlType::Q5_0,
    neg_offset_sums_q5,
    unpack_q5_0
);
packed_kernels!(
    q8_0_gemv_k,
    q8_0_tile_k,
    GgmlType::Q8_0,
    neg_offset_sums_q8,
    unpack_q8_0
);

// ---------------------------------------------------------------- Q4_1 × Q8_1

/// Q8_1 block bytes (d, s, then the quants).
const Q81_BYTES: usize = std::mem::size_of::<crate::formats::BlockQ8_1>();
const Q41_BYTES: usize = packed_block_bytes(GgmlType::Q4_1).unwrap();

/// Q4_1 packed block: the nibbles after the eight d and eight m.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn unpack_q4_1(block: *const u8) -> [__m512i; 4] {
    unpack_q4_0(block.add(16))
}

/// One Q4_1 block against one Q8_1 block: acc + (d·d_a)·Σ q·a + m·s (half of s per lane).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_1_block(
    acc: __m512,
    w: &[__m512i; 4],
    dw: __m512,
    mw: __m512,
    ab: *const u8,
    aux: Q81Aux,
) -> __m512 {
    let part = |k: usize| act_part(ab.add(2), k); // act_part reads at +2 + 8k; Q8_1 qs is at +4
    let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], part(0));
    let s = _mm512_dpbusd_epi32(s, w[1], part(1));
    let s = _mm512_dpbusd_epi32(s, w[2], part(2));
    let s = _mm512_dpbusd_epi32(s, w[3], part(3));
    let acc = _mm512_fmadd_ps(
        _mm512_cvtepi32_ps(s),
        _mm512_mul_ps(dw, _mm512_set1_ps(aux.d)),
        acc,
    );
    _mm512_fmadd_ps(mw, _mm512_set1_ps(aux.half_s), acc)
}

#[inline(always)]
unsafe fn q81_aux_at(aux: *const u8, b: usize) -> Q81Aux {
    (aux.add(b * std::mem::size_of::<Q81Aux>()) as *const Q81Aux).read_unaligned()
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_1_gemv_k(g: *const u8, a: *const u8, aux: *const u8, nb: usize) -> [f32; GROUP_ROWS] {
    let mut acc = _mm512_setzero_ps();
    for b in 0..nb {
        let block = g.add(b * Q41_BYTES);
        let (dw, mw) = (row_scales(block), row_scales(block.add(16)));
        let w = unpack_q4_1(block);
        acc = q4_1_block(acc, &w, dw, mw, a.add(b * Q81_BYTES), q81_aux_at(aux, b));
    }
    pair_sums(acc)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_1_tile_k(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    let mut acc = [_mm512_setzero_ps(); TILE_TOKENS];
    for b in 0..nb {
        let block = g.add(b * Q41_BYTES);
        let (dw, mw) = (row_scales(block), row_scales(block.add(16)));
        let w = unpack_q4_1(block);
        for t in 0..TILE_TOKENS {
            let ab = a[t].add(b * Q81_BYTES);
            acc[t] = q4_1_block(acc[t], &w, dw, mw, ab, q81_aux_at(aux[t], b));
        }
    }
    acc.map(|v| pair_sums(v))
}

// ---------------------------------------------------------------- Q4_K × Q8_K

/// Q8_K aux record stride; the Q4_K part is at offset 0, the Q6_K part after it.
const KAUX: usize = std::mem::size_of::<Q8KAux>();
const Q6AUX_AT: usize = std::mem::size_of::<KBlockAux>();

/// Sub-block `j`'s scales of the 8 rows, each in its two lanes, as i32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn k_scales(block: *const u8, j: usize) -> __m512i {
    let v = _mm_loadl_epi64(block.add(q4_k::SCALES_AT + 8 * j) as *const __m128i);
    _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(v, v))
}

/// Chunk `c`'s nibbles: parts 0..4 of sub-block `2c` (low) and of `2c + 1` (high); `FIVE`
/// (packed Q5_K) ORs 16 onto the bytes its masks mark (`packed::q5_k`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn k_chunk<const FIVE: bool>(block: *const u8, c: usize) -> ([__m512i; 4], [__m512i; 4]) {
    let m4 = _mm512_set1_epi8(0x0F);
    let v: [__m512i; 4] = std::array::from_fn(|k| {
        _mm512_loadu_si512(block.add(q5_k::k4_part_at::<FIVE>(c, k)) as *const __m512i)
    });
    let (mut lo, mut hi) = (
        v.map(|x| _mm512_and_si512(x, m4)),
        v.map(|x| _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4)),
    );
    if FIVE {
        let sixteen = _mm512_set1_epi8(16);
        let mask =
            |n: usize, k: usize| (block.add(q5_k::mask_at(c, n, k)) as *const u64).read_unaligned();
        for k in 0..4 {
            lo[k] = _mm512_or_si512(lo[k], _mm512_maskz_mov_epi8(mask(0, k), sixteen));
            hi[k] = _mm512_or_si512(hi[k], _mm512_maskz_mov_epi8(mask(1, k), sixteen));
        }
    }
    (lo, hi)
}

/// Σ over four parts of u·a for the 32 activation bytes at `qa` (from zero).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn sub_isums(w: &[__m512i; 4], qa: *const u8) -> __m512i {
    let part = |k: usize| _mm512_set1_epi64((qa.add(8 * k) as *const i64).read_unaligned());
    let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], part(0));
    let s = _mm512_dpbusd_epi32(s, w[1], part(1));
    let s = _mm512_dpbusd_epi32(s, w[2], part(2));
    _mm512_dpbusd_epi32(s, w[3], part(3))
}

/// Each row's Σ_j m_j·A_j across its two lanes (see `packed::q4_k`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn k_mins(mins: (__m512i, __m512i), aux: *const u8) -> __m512i {
    let even = _mm512_set1_epi64((aux as *const i64).read_unaligned());
    let odd = _mm512_set1_epi64((aux.add(8) as *const i64).read_unaligned());
    _mm512_add_epi32(
        _mm512_madd_epi16(mins.0, even),
        _mm512_madd_epi16(mins.1, odd),
    )
}

/// The mins of a packed super-block as (even, odd) i16 words per lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn k_min_words(block: *const u8) -> (__m512i, __m512i) {
    let v = _mm512_loadu_si512(block.add(q4_k::MINS_AT) as *const __m512i);
    (
        _mm512_and_si512(v, _mm512_set1_epi16(0x00FF)),
        _mm512_srli_epi16::<8>(v),
    )
}

/// acc + (d·d_a)·isum − (dmin·d_a)·mins.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn k_finish(
    acc: __m512,
    isum: __m512i,
    mins: __m512i,
    dw: __m512,
    dmin: __m512,
    da: f32,
) -> __m512 {
    let da = _mm512_set1_ps(da);
    let acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, da), acc);
    _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins), _mm512_mul_ps(dmin, da), acc)
}

#[inline(always)]
unsafe fn k4_gemv<const FIVE: bool>(
    g: *const u8,
    a: *const u8,
    aux: *const u8,
    nb: usize,
) -> [f32; GROUP_ROWS] {
    let mut acc = _mm512_setzero_ps();
    for b in 0..nb {
        let block = g.add(b * q5_k::k4_block_bytes::<FIVE>());
        let ab = a.add(b * Q8K_BYTES);
        let mut isum = _mm512_setzero_si512();
        for c in 0..4 {
            let (lo, hi) = k_chunk::<FIVE>(block, c);
            let s_lo = sub_isums(&lo, ab.add(4 + 64 * c));
            let s_hi = sub_isums(&hi, ab.add(4 + 64 * c + 32));
            isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(s_lo, k_scales(block, 2 * c)));
            isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(s_hi, k_scales(block, 2 * c + 1)));
        }
        let mins = k_mins(k_min_words(block), aux.add(b * KAUX));
        let da = (ab as *const f32).read_unaligned();
        acc = k_finish(
            acc,
            isum,
            mins,
            row_scales(block),
            row_scales(block.add(16)),
            da,
        );
    }
    pair_sums(acc)
}

#[inline(always)]
unsafe fn k4_tile<const FIVE: bool>(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    let mut acc = [_mm512_setzero_ps(); TILE_TOKENS];
    for b in 0..nb {
        let block = g.add(b * q5_k::k4_block_bytes::<FIVE>());
        let mut isum = [_mm512_setzero_si512(); TILE_TOKENS];
        for c in 0..4 {
            let (lo, hi) = k_chunk::<FIVE>(block, c);
            let (sc_lo, sc_hi) = (k_scales(block, 2 * c), k_scales(block, 2 * c + 1));
            for t in 0..TILE_TOKENS {
                let qa = a[t].add(b * Q8K_BYTES + Q8K_QS + 64 * c);
                let s_lo = _mm512_mullo_epi32(sub_isums(&lo, qa), sc_lo);
                let s_hi = _mm512_mullo_epi32(sub_isums(&hi, qa.add(32)), sc_hi);
                isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(s_lo, s_hi));
            }
        }
        let (dw, dmin, min_words) = (
            row_scales(block),
            row_scales(block.add(16)),
            k_min_words(block),
        );
        for t in 0..TILE_TOKENS {
            let mins = k_mins(min_words, aux[t].add(b * KAUX));
            let da = (a[t].add(b * Q8K_BYTES) as *const f32).read_unaligned();
            acc[t] = k_finish(acc[t], isum[t], mins, dw, dmin, da);
        }
    }
    acc.map(|v| pair_sums(v))
}

macro_rules! k4_entries {
    ($gemv:ident, $tile:ident, $five:literal) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $gemv(
            g: *const u8,
            a: *const u8,
            aux: *const u8,
            nb: usize,
        ) -> [f32; GROUP_ROWS] {
            k4_gemv::<$five>(g, a, aux, nb)
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $tile(
            g: *const u8,
            a: [*const u8; TILE_TOKENS],
            aux: [*const u8; TILE_TOKENS],
            nb: usize,
        ) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
            k4_tile::<$five>(g, a, aux, nb)
        }
    };
}

k4_entries!(q4_k_gemv_k, q4_k_tile_k, false);
k4_entries!(q5_k_gemv_k, q5_k_tile_k, true);

// ---------------------------------------------------------------- Q6_K × Q8_K

/// Chunk `c` (elements `64c..64c+64`) of a packed Q6_K super-block: the parts of units `2c`
/// and `2c + 1` as unsigned 6-bit values (low nibble | high bits moved to bits 4, 5).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_chunk(block: *const u8, c: usize) -> ([__m512i; 4], [__m512i; 4]) {
    let (m4, m30) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
    // Part k's two high bits sit at bits 2k, 2k+1 of each byte of the unit's high plane.
    let high = |s: usize| {
        let h = _mm512_loadu_si512(block.add(q6_k::high_at(s)) as *const __m512i);
        [
            _mm512_slli_epi16::<4>(h),
            _mm512_slli_epi16::<2>(h),
            h,
            _mm512_srli_epi16::<2>(h),
        ]
        .map(|x| _mm512_and_si512(x, m30))
    };
    let (h_lo, h_hi) = (high(2 * c), high(2 * c + 1));
    let v: [__m512i; 4] =
        std::array::from_fn(
            |k| _mm512_loadu_si512(block.add(q6_k::low_at(c, k)) as *const __m512i),
        );
    (
        std::array::from_fn(|k| _mm512_or_si512(_mm512_and_si512(v[k], m4), h_lo[k])),
        std::array::from_fn(|k| {
            let low = _mm512_and_si512(_mm512_srli_epi16::<4>(v[k]), m4);
            _mm512_or_si512(low, h_hi[k])
        }),
    )
}

/// Sub-block `j`'s i8 scales of the 8 rows, each in its two lanes, as i32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_scales(block: *const u8, j: usize) -> __m512i {
    let v = _mm_loadl_epi64(block.add(q6_k::SCALES_AT + 8 * j) as *const __m128i);
    _mm512_cvtepi8_epi32(_mm_unpacklo_epi8(v, v))
}

/// Unit `s`'s two sub-blocks: exact signed integer sums (chains started from the aux's
/// `−32 ·` lane sums) times their scales.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_unit_isum(
    w: &[__m512i; 4],
    scales: (__m512i, __m512i),
    qa: *const u8,
    q6aux: *const u8,
    s: usize,
) -> __m512i {
    let part = |k: usize| _mm512_set1_epi64((qa.add(8 * k) as *const i64).read_unaligned());
    let start = |j: usize| _mm512_set1_epi64((q6aux.add(8 * j) as *const i64).read_unaligned());
    let a = _mm512_dpbusd_epi32(start(2 * s), w[0], part(0));
    let a = _mm512_dpbusd_epi32(a, w[1], part(1));
    let b = _mm512_dpbusd_epi32(start(2 * s + 1), w[2], part(2));
    let b = _mm512_dpbusd_epi32(b, w[3], part(3));
    _mm512_add_epi32(
        _mm512_mullo_epi32(a, scales.0),
        _mm512_mullo_epi32(b, scales.1),
    )
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_k_gemv_k(g: *const u8, a: *const u8, aux: *const u8, nb: usize) -> [f32; GROUP_ROWS] {
    let mut acc = _mm512_setzero_ps();
    for b in 0..nb {
        let block = g.add(b * q6_k::PACKED_BYTES);
        let ab = a.add(b * Q8K_BYTES);
        let q6aux = aux.add(b * KAUX + Q6AUX_AT);
        let mut isum = _mm512_setzero_si512();
        for c in 0..4 {
            let (lo, hi) = q6_chunk(block, c);
            for (s, w) in [(2 * c, lo), (2 * c + 1, hi)] {
                let scales = (q6_scales(block, 2 * s), q6_scales(block, 2 * s + 1));
                let part = q6_unit_isum(&w, scales, ab.add(4 + 32 * s), q6aux, s);
                isum = _mm512_add_epi32(isum, part);
            }
        }
        let da = _mm512_set1_ps((ab as *const f32).read_unaligned());
        let d = _mm512_mul_ps(row_scales(block), da);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, acc);
    }
    pair_sums(acc)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_k_tile_k(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    let mut acc = [_mm512_setzero_ps(); TILE_TOKENS];
    for b in 0..nb {
        let block = g.add(b * q6_k::PACKED_BYTES);
        let mut isum = [_mm512_setzero_si512(); TILE_TOKENS];
        for c in 0..4 {
            let (lo, hi) = q6_chunk(block, c);
            for (s, w) in [(2 * c, lo), (2 * c + 1, hi)] {
                let scales = (q6_scales(block, 2 * s), q6_scales(block, 2 * s + 1));
                for t in 0..TILE_TOKENS {
                    let qa = a[t].add(b * Q8K_BYTES + Q8K_QS + 32 * s);
                    let q6aux = aux[t].add(b * KAUX + Q6AUX_AT);
                    let part = q6_unit_isum(&w, scales, qa, q6aux, s);
                    isum[t] = _mm512_add_epi32(isum[t], part);
                }
            }
        }
        let dw = row_scales(block);
        for t in 0..TILE_TOKENS {
            let da = _mm512_set1_ps((a[t].add(b * Q8K_BYTES) as *const f32).read_unaligned());
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, da), acc[t]);
        }
    }
    acc.map(|v| pair_sums(v))
}

crate::simd::x86::packed::packed_entry_points!(
    0 => (GgmlType::Q4_0, q4_0_gemv_k, q4_0_tile_k),
    1 => (GgmlType::Q4_1, q4_1_gemv_k, q4_1_tile_k),
    2 => (GgmlType::Q5_0, q5_0_gemv_k, q5_0_tile_k),
    3 => (GgmlType::Q8_0, q8_0_gemv_k, q8_0_tile_k),
    4 => (GgmlType::Q4_K, q4_k_gemv_k, q4_k_tile_k),
    5 => (GgmlType::Q6_K, q6_k_gemv_k, q6_k_tile_k),
    6 => (GgmlType::Q5_K, q5_k_gemv_k, q5_k_tile_k),
);
