//! The packed legacy-format kernels' loops (Q4_0, Q4_1, Q5_0; Q8_0 where products do not
//! saturate), shared by the x86 levels whose registers are 256 bits wide: AVX2 and AVX-VNNI.
//!
//! Same layout as the AVX-512 kernels ([`crate::packed`]). Each 64-byte part splits into two
//! 256-bit halves: rows 0..4 and rows 4..8, lane `2r' + p`. The gemv does both halves per block
//! (one pass over the stream); the tile does one half at a time, so eight 8-lane accumulators
//! fit sixteen registers. Q5_0's fifth bits come from the 32-bit half of each part's mask,
//! spread to one byte per bit (ggml's `bytes_from_bits_32`). A level supplies only its
//! [`Products`] (the u8 × i8 lane sums) and its entry points.
//!
//! Also here: [`packed_entry_points`], the safe entry points and `Provider` every level's packed
//! file ends with.

use std::arch::x86_64::*;

use crate::packed::{
    aux_bytes, packed_block_bytes, ActBlockAux, Q81Aux, GROUP_ROWS, Q5_0_QH_AT, TILE_TOKENS,
};
use crate::table::GgmlType;

/// 64-bit broadcast of the eight bytes at `p`: one activation part (elements `8k..8k + 8`)
/// for all sixteen lanes of a packed half-part.
#[inline(always)]
pub(crate) unsafe fn bcast8(p: *const u8) -> __m256i {
    _mm256_set1_epi64x((p as *const i64).read_unaligned())
}

/// Half `h`'s four row scales (f16 at `at`), each in its two lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn half_scales(at: *const u8) -> __m256 {
    let d4 = _mm_cvtph_ps(_mm_loadl_epi64(at as *const __m128i));
    _mm256_permutevar8x32_ps(
        _mm256_castps128_ps256(d4),
        _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
    )
}

/// Half `h` of a Q4_0-style nibble area at `q` (2 × 64 bytes): parts 0..4, unsigned.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn half_nibbles(q: *const u8, h: usize) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0x0F);
    let v0 = _mm256_loadu_si256(q.add(32 * h) as *const __m256i);
    let v1 = _mm256_loadu_si256(q.add(64 + 32 * h) as *const __m256i);
    [
        _mm256_and_si256(v0, m4),
        _mm256_and_si256(v1, m4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v0), m4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v1), m4),
    ]
}

/// 16 in byte `i` where bit `i` of the little-endian u32 at `at` is set: a Q5_0 half-part's
/// fifth bits, ready to OR onto its nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn fifth_bits(at: *const u8) -> __m256i {
    let x = _mm256_set1_epi32((at as *const i32).read_unaligned());
    // Byte i takes byte i / 8 of x, then keeps only its bit i % 8.
    let spread = _mm256_shuffle_epi8(
        x,
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(16))
}

/// How a level forms the u8 × i8 lane sums of a half-block: AVX2's `vpmaddubsw` chain (`simd::avx2::packed`),
/// or AVX-VNNI's `vpdpbusd` (`simd::avxvnni::packed`). Everything else in these kernels is shared.
pub(crate) trait Products {
    /// Σ over the four parts of `w[k]` · the activation bytes `qa[8k..8k + 8]`, plus `start`.
    unsafe fn isums(w: &[__m256i; 4], qa: *const u8, start: __m256i) -> __m256i;
}

/// acc + (d_w·d_a)·isum for one half, with the four row scales (f16) at `scales`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn add_scaled(acc: __m256, isum: __m256i, scales: *const u8, da: f32) -> __m256 {
    let d = _mm256_mul_ps(half_scales(scales), _mm256_set1_ps(da));
    _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc)
}

/// Lane pairs of one half summed → its four rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn half_pair_sums(acc: __m256) -> [f32; 4] {
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
    std::array::from_fn(|r| lanes[2 * r] + lanes[2 * r + 1])
}

/// Format-specific parts of one block for half `h`: (acc update for one token).
pub(crate) trait Half {
    const TY: GgmlType;
    /// Half `h`'s four parts of a packed block as unsigned weights.
    #[inline(always)]
    unsafe fn weights(block: *const u8, h: usize) -> [__m256i; 4] {
        half_nibbles(block.add(Self::QUANTS_AT), h)
    }
    /// acc + this block's contribution for rows `4h..4h+4` against one activation block.
    unsafe fn block<P: Products>(
        acc: __m256,
        block: *const u8,
        w: &[__m256i; 4],
        h: usize,
        ab: *const u8,
        aux: *const u8,
    ) -> __m256;
    /// Where the quants start in a packed block ([`crate::packed::quants_at`]).
    const QUANTS_AT: usize = crate::packed::quants_at(Self::TY);
}

pub(crate) struct Q40;
pub(crate) struct Q41;
pub(crate) struct Q50;

/// acc + one block against a Q8_0 activation block, the integer chain started from the
/// format's `−offset · lane sums` (`start` picks them from the aux record).
#[inline(always)]
pub(crate) unsafe fn q8_0_act_block<P: Products>(
    acc: __m256,
    block: *const u8,
    w: &[__m256i; 4],
    h: usize,
    ab: *const u8,
    aux: *const u8,
    start: impl Fn(&ActBlockAux) -> [i32; 2],
) -> __m256 {
    let ax = (aux as *const ActBlockAux).read_unaligned();
    let start: i64 = bytemuck::cast(start(&ax));
    let s = P::isums(w, ab.add(2), _mm256_set1_epi64x(start));
    add_scaled(acc, s, block.add(8 * h), ax.d)
}

impl Half for Q40 {
    const TY: GgmlType = GgmlType::Q4_0;
    #[inline(always)]
    unsafe fn block<P: Products>(
        acc: __m256,
        block: *const u8,
        w: &[__m256i; 4],
        h: usize,
        ab: *const u8,
        aux: *const u8,
    ) -> __m256 {
        q8_0_act_block::<P>(acc, block, w, h, ab, aux, |ax| ax.neg_offset_sums_q4)
    }
}

impl Half for Q50 {
    const TY: GgmlType = GgmlType::Q5_0;
    #[inline(always)]
    unsafe fn weights(block: *const u8, h: usize) -> [__m256i; 4] {
        let nibbles = half_nibbles(block.add(Self::QUANTS_AT), h);
        // Part k's mask is the u64 at QH_AT + 8k; half h is its 32 bits at + 4h.
        std::array::from_fn(|k| {
            _mm256_or_si256(
                nibbles[k],
                fifth_bits(block.add(Q5_0_QH_AT + 8 * k + 4 * h)),
            )
        })
    }
    #[inline(always)]
    unsafe fn block<P: Products>(
        acc: __m256,
        block: *const u8,
        w: &[__m256i; 4],
        h: usize,
        ab: *const u8,
        aux: *const u8,
    ) -> __m256 {
        q8_0_act_block::<P>(acc, block, w, h, ab, aux, |ax| ax.neg_offset_sums_q5)
    }
}

impl Half for Q41 {
    const TY: GgmlType = GgmlType::Q4_1;
    #[inline(always)]
    unsafe fn block<P: Products>(
        acc: __m256,
        block: *const u8,
        w: &[__m256i; 4],
        h: usize,
        ab: *const u8,
        aux: *const u8,
    ) -> __m256 {
        let ax = (aux as *const Q81Aux).read_unaligned();
        let s = P::isums(w, ab.add(4), _mm256_setzero_si256());
        let acc = add_scaled(acc, s, block.add(8 * h), ax.d);
        _mm256_fmadd_ps(
            half_scales(block.add(16 + 8 * h)),
            _mm256_set1_ps(ax.half_s),
            acc,
        )
    }
}

#[inline(always)]
pub(crate) unsafe fn gemv_k<F: Half, P: Products>(
    g: *const u8,
    a: *const u8,
    aux: *const u8,
    nb: usize,
) -> [f32; GROUP_ROWS] {
    let pbb = packed_block_bytes(F::TY).unwrap_or(0);
    let (ab_bytes, aux_b) = (
        F::TY.vec_dot_type().block_bytes(),
        aux_bytes(F::TY.vec_dot_type()),
    );
    // One pass over the group, both halves per block: the stream is read once, in order.
    let mut acc = [_mm256_setzero_ps(); 2];
    for b in 0..nb {
        let block = g.add(b * pbb);
        let (ab, ax) = (a.add(b * ab_bytes), aux.add(b * aux_b));
        for (h, acc) in acc.iter_mut().enumerate() {
            let w = F::weights(block, h);
            *acc = F::block::<P>(*acc, block, &w, h, ab, ax);
        }
    }
    let mut out = [0.0f32; GROUP_ROWS];
    for (h, acc) in acc.iter().enumerate() {
        out[4 * h..4 * h + 4].copy_from_slice(&half_pair_sums(*acc));
    }
    out
}

#[inline(always)]
pub(crate) unsafe fn tile_k<F: Half, P: Products>(
    g: *const u8,
    a: [*const u8; TILE_TOKENS],
    aux: [*const u8; TILE_TOKENS],
    nb: usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    let pbb = packed_block_bytes(F::TY).unwrap_or(0);
    let (ab_bytes, aux_b) = (
        F::TY.vec_dot_type().block_bytes(),
        aux_bytes(F::TY.vec_dot_type()),
    );
    let mut out = [[0.0f32; GROUP_ROWS]; TILE_TOKENS];
    for h in 0..2 {
        let mut acc = [_mm256_setzero_ps(); TILE_TOKENS];
        for b in 0..nb {
            let block = g.add(b * pbb);
            let w = F::weights(block, h);
            for t in 0..TILE_TOKENS {
                acc[t] = F::block::<P>(
                    acc[t],
                    block,
                    &w,
                    h,
                    a[t].add(b * ab_bytes),
                    aux[t].add(b * aux_b),
                );
            }
        }
        for t in 0..TILE_TOKENS {
            out[t][4 * h..4 * h + 4].copy_from_slice(&half_pair_sums(acc[t]));
        }
    }
    out
}

// ---------------------------------------------------------------- safe entry points

/// A packed kernel's raw form: group, activation row, aux row, block count.
pub(crate) type GemvKernel = unsafe fn(*const u8, *const u8, *const u8, usize) -> [f32; GROUP_ROWS];
/// The tile's raw form: group, activation rows, aux rows, block count.
pub(crate) type TileKernel = unsafe fn(
    *const u8,
    [*const u8; TILE_TOKENS],
    [*const u8; TILE_TOKENS],
    usize,
) -> [[f32; GROUP_ROWS]; TILE_TOKENS];

/// Block counts of one packed group, one activation row and its aux row, if they agree.
pub(crate) fn block_count(ty: GgmlType, group: &[u8], a: &[u8], aux: &[u8]) -> Option<usize> {
    let act = ty.vec_dot_type();
    let nb = a.len() / act.block_bytes();
    let agree = group.len() == nb * packed_block_bytes(ty)?
        && a.len() == nb * act.block_bytes()
        && aux.len() == nb * aux_bytes(act);
    agree.then_some(nb)
}

/// The safe entry points and the [`Provider`] of a file of packed kernels: one table of
/// `index => (type, gemv kernel, tile kernel)` (indices 0, 1, … in order) and one
/// length-checked `gemv`/`tile` per table index.
/// The kernels must be `#[target_feature]` functions of a level the caller only reaches once
/// `Isa::is_available` confirmed it (simd/mod.rs).
macro_rules! packed_entry_points {
    ($($i:literal => ($ty:expr, $gemv_k:ident, $tile_k:ident)),+ $(,)?) => {
        const KERNELS: &[(
            GgmlType,
            $crate::simd::x86::packed::GemvKernel,
            $crate::simd::x86::packed::TileKernel,
        )] = &[$(($ty, $gemv_k, $tile_k)),+];

        fn gemv<const K: usize>(group: &[u8], a: &[u8], aux: &[u8]) -> [f32; GROUP_ROWS] {
            let (ty, kernel, _) = KERNELS[K];
            let nb = $crate::simd::x86::packed::block_count(ty, group, a, aux)
                .expect("packed gemv: block counts differ");
            // SAFETY: every operand holds `nb` whole blocks (checked above); the CPU runs the
            // kernel's level (simd/mod.rs).
            unsafe { kernel(group.as_ptr(), a.as_ptr(), aux.as_ptr(), nb) }
        }

        fn tile<const K: usize>(
            group: &[u8],
            a: [&[u8]; TILE_TOKENS],
            aux: [&[u8]; TILE_TOKENS],
        ) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
            let (ty, _, kernel) = KERNELS[K];
            let counts: [Option<usize>; TILE_TOKENS] = std::array::from_fn(|t| {
                $crate::simd::x86::packed::block_count(ty, group, a[t], aux[t])
            });
            let nb = counts[0].filter(|&nb| counts.iter().all(|&c| c == Some(nb)));
            let nb = nb.expect("packed tile: block counts differ");
            // SAFETY: every operand holds `nb` whole blocks (checked above); the CPU runs the
            // kernel's level (simd/mod.rs).
            unsafe {
                kernel(
                    group.as_ptr(),
                    a.map(|r| r.as_ptr()),
                    aux.map(|r| r.as_ptr()),
                    nb,
                )
            }
        }

        /// The types this file has kernels for (checked against the packed layouts).
        pub(crate) const PACKED_TYPES: &[GgmlType] = &[$($ty),+];

        fn packed_gemv(ty: GgmlType) -> Option<PackedGemvFn> {
            $(if ty == $ty {
                return Some(gemv::<$i>);
            })+
            None
        }

        fn packed_tile(ty: GgmlType) -> Option<PackedTileFn> {
            $(if ty == $ty {
                return Some(tile::<$i>);
            })+
            None
        }

        pub(crate) static PROVIDER: Provider = Provider {
            name: module_path!(),
            packed_gemv,
            packed_tile,
            ..Provider::NONE
        };
    };
}
pub(crate) use packed_entry_points;
