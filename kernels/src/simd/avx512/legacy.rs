//! avx512::legacy: the legacy-format and float kernels of `avx2::legacy` (same code, via its
//! `legacy_kernels!` macro) compiled for AVX-512 F/BW/VL + VNNI, with the u8×i8 pair sums done
//! by one 256-bit `vpdpbusd` (AVX-512 VL + VNNI) instead of `vpmaddubsw` + `vpmaddwd`.
//!
//! 256-bit on purpose: a 512-bit Q4_1 row dot (two blocks per register, `vpdpbusd` zmm, scales
//! permuted per 256-bit half) measured within noise of this one on the dev box (AMD EPYC, Zen 4,
//! where 512-bit ops are double-pumped): 2048 elements 66.8 vs 69.7 ns, 576: 23.0 vs 23.3 ns.

use std::arch::x86_64::*;

use crate::kernel_set::{Provider, QuantizeRowFn, RowDot4Fn, RowDotFn};
use crate::table::GgmlType;

/// u8 × i8 products summed per 4 bytes into i32 lanes (`vpdpbusd`, no i16 saturation).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn mul_sum_us8(ax: __m256i, sy: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy)
}

crate::simd::x86::legacy::legacy_kernels!("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");

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
