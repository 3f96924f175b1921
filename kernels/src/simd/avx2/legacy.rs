//! avx2::legacy: AVX2 + FMA + F16C kernels for the legacy block formats (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0 weights; Q8_0 / Q8_1 activations) and the float types (F32, F16, BF16).
//!
//! The kernel bodies live in the [`legacy_kernels!`] macro so the AVX-512 file can instantiate the
//! same code under its own `target_feature` set with its own `mul_sum_us8` (VNNI `vpdpbusd`
//! instead of `vpmaddubsw` + `vpmaddwd`). Every module that invokes the macro must define
//!
//! ```ignore
//! unsafe fn mul_sum_us8(ax: __m256i, sy: __m256i) -> __m256i // Σ per 4 bytes of u8(ax)·i8(sy) → i32
//! ```
//!
//! Technique (as llama.cpp's `ggml-cpu/arch/x86/quants.c`): one 32-byte vector per block with
//! elements in storage order (low nibbles = elements 0..16 in the low 128 bits, high nibbles =
//! 16..32 in the high 128 bits; Q5 high bits expanded with shuffle + OR-mask + compare), u8×i8
//! pair products (sign trick for signed weights; Q4_1/Q5_1 nibbles are already unsigned), i32 lane
//! sums converted to f32 and scaled by d_w·d_a with one FMA per block into an f32 accumulator
//! (two alternating accumulators in the 1×1 kernels), one horizontal sum per row; Q4_1/Q5_1 add
//! Σ m_w·s_a. Both f16 scales of a block pair go through one F16C conversion (in the 1×4 kernels:
//! the four activation scales at once). Integer block sums are exact; only the f32 rounding of
//! the per-lane scaling and the summation order differ from the scalar reference.
//!
//! `row_dot4` unpacks each weight block once (and, for signed formats, takes its sign once) and
//! applies it to the four activation rows with four accumulators.
//!
//! Float rows (F32/F16/BF16): f32 FMA with 4 accumulators (products exact inside the FMA, where
//! the reference sums in f64); BF16 is widened with a shift / mask (even/odd lanes), F16 with F16C.
//!
//! Quantizers (Q8_0, Q8_1) are byte-identical to the scalar reference for finite inputs: same
//! amax, same `d = amax/127`, same `id = 1/d`, `x·id` rounded half away from zero (C `roundf`,
//! computed exactly as `trunc(v + copysign(0.5 − 2⁻²⁵, v))`), saturated as `as i8`, `d` (and Q8_1's
//! `s = Σq·d`) to f16 with F16C round-to-nearest-even (as `half::f16::from_f32`). NaN elements
//! quantize to 0 as the scalar `as i8` does; a NaN in a block may change that block's `amax` (the
//! scalar fold skips NaN, `vmaxps` need not). F16 (F16C) and BF16 (ggml's rounding incl. NaN
//! quieting) quantizers are bit-identical, NaN included.
//!
//! Q8×Q8 uses the `vpsignb` trick, which is exact as long as the activation has no −128. The
//! quantizers produce −128 only in blocks with amax < ~4e-37 (x·(1/d) overflows, in the scalar
//! reference too), whose f16 `d` is 0, so the block contributes 0 either way. A Q8_0 *weight* of
//! −128 is fine.

use std::arch::x86_64::*;

use crate::kernel_set::{Provider, QuantizeRowFn, RowDot4Fn, RowDotFn};
use crate::table::GgmlType;

/// u8 × i8 products summed per 4 bytes into i32 lanes (`vpmaddubsw` + `vpmaddwd`). Adjacent pair
/// sums must fit i16: true for |ax| ≤ 128 and |sy| ≤ 127 (32 512 < 32 767).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_sum_us8(ax: __m256i, sy: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

crate::simd::x86::legacy::legacy_kernels!("avx2,fma,f16c");

fn row_dot(ty: GgmlType) -> Option<RowDotFn> {
    row_dot_legacy(ty)
}

fn row_dot4(ty: GgmlType) -> Option<RowDot4Fn> {
    row_dot4_legacy(ty)
}

fn quantize(ty: GgmlType) -> Option<QuantizeRowFn> {
    quantize_legacy(ty)
}

pub(crate) static PROVIDER: Provider = Provider {
    name: module_path!(),
    row_dot,
    row_dot4,
    quantize,
    ..Provider::NONE
};
