//! ggml block formats: one file per type, each a `#[repr(C)]` struct with ggml's exact byte layout
//! plus scalar reference kernels that follow llama.cpp's `ggml-quants.c` (dequantize, quantize)
//! and `ggml-cpu/quants.c` (`*_generic` vec_dot) semantics.
//!
//! The trait methods panic on mismatched lengths; the byte-level API in [`crate::dispatch`]
//! checks lengths first and returns errors instead.

use crate::table::GgmlType;

pub mod bf16;
pub mod f16;
pub mod f32;
mod k_search;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;

pub use q2_k::BlockQ2_K;
pub use q3_k::BlockQ3_K;
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q4_k::BlockQ4_K;
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q5_k::BlockQ5_K;
pub use q6_k::BlockQ6_K;
pub use q8_0::BlockQ8_0;
pub use q8_1::BlockQ8_1;
pub use q8_k::BlockQ8_K;

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;
/// Elements per legacy (Q4_0 .. Q8_1) block.
pub const QK: usize = 32;

/// A ggml block type (for F32/F16/BF16 the "block" is one element: `f32`, `half::f16`,
/// `half::bf16`).
pub trait BlockFormat: bytemuck::Pod {
    /// The ggml type; block size and element count come from its table entry.
    const TYPE: GgmlType;
    /// Elements per block (`TYPE.block_elems()`).
    const ELEMS: usize = Self::TYPE.block_elems();

    /// Dequantize `blocks` into `out`. Panics unless `out.len() == blocks.len() * ELEMS`.
    fn dequantize(blocks: &[Self], out: &mut [f32]);
}

/// A type f32 activations can be quantized into (F32, F16, BF16, Q8_0, Q8_1, Q8_K).
pub trait ActivationFormat: BlockFormat {
    /// Scalar reference quantizer with llama.cpp's `quantize_row_*_ref` semantics.
    /// Panics unless `x.len() == out.len() * ELEMS`.
    fn quantize(x: &[f32], out: &mut [Self]);
}

/// A type that can be the weight side of a dot product (every type but Q8_1 and Q8_K).
pub trait WeightFormat: BlockFormat {
    /// llama.cpp's `vec_dot_type` for this weight type.
    type Act: ActivationFormat;
    /// Scalar reference dot product (integer sums per block, then scaled, as llama.cpp's
    /// `ggml_vec_dot_*_generic`). Panics unless `w.len() * ELEMS == a.len() * Act::ELEMS`.
    fn vec_dot(w: &[Self], a: &[Self::Act]) -> f32;
}

// ---------------------------------------------------------------------------------------------
// Shared helpers for the reference kernels.

#[inline(always)]
pub(crate) fn fp16(h: half::f16) -> f32 {
    h.to_f32()
}

/// Run `f` on every (block, output chunk) pair after checking the output length.
#[inline]
pub(crate) fn dequant_each<B: BlockFormat>(
    blocks: &[B],
    out: &mut [f32],
    mut f: impl FnMut(&B, &mut [f32]),
) {
    assert_eq!(
        out.len(),
        blocks.len() * B::ELEMS,
        "dequantize {}: output length",
        B::TYPE
    );
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(B::ELEMS)) {
        f(b, y);
    }
}

/// Run `f` on every (input chunk, block) pair after checking the input length.
#[inline]
pub(crate) fn quant_each<B: BlockFormat>(x: &[f32], out: &mut [B], mut f: impl FnMut(&[f32]) -> B) {
    assert_eq!(
        x.len(),
        out.len() * B::ELEMS,
        "quantize {}: input length",
        B::TYPE
    );
    for (xb, y) in x.chunks_exact(B::ELEMS).zip(out.iter_mut()) {
        *y = f(xb);
    }
}

/// Check that a weight row and an activation row hold the same number of elements.
#[inline]
pub(crate) fn check_dot<W: BlockFormat, A: BlockFormat>(w: &[W], a: &[A]) {
    assert_eq!(
        w.len() * W::ELEMS,
        a.len() * A::ELEMS,
        "vec_dot {} x {}: element counts differ",
        W::TYPE,
        A::TYPE
    );
}

/// Legacy 4-bit layout: byte j holds element j (low nibble) and element j+16 (high nibble).
#[inline(always)]
pub(crate) fn unpack_nibbles(qs: &[u8; 16]) -> [u8; 32] {
    let mut v = [0u8; 32];
    for j in 0..16 {
        v[j] = qs[j] & 0x0F;
        v[j + 16] = qs[j] >> 4;
    }
    v
}

/// Legacy 5-bit layout: nibbles as [`unpack_nibbles`], bit j of the little-endian u32 `qh` is
/// the 5th bit of element j.
#[inline(always)]
pub(crate) fn unpack_5bit(qh: &[u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let h = u32::from_le_bytes(*qh);
    let mut v = unpack_nibbles(qs);
    for (j, x) in v.iter_mut().enumerate() {
        *x |= (((h >> j) & 1) as u8) << 4;
    }
    v
}

/// Legacy symmetric block (Q4_0, Q5_0): out = (v − offset)·d.
#[inline(always)]
pub(crate) fn dequant_sym32(d: half::f16, v: [u8; 32], offset: i32, out: &mut [f32]) {
    let d = fp16(d);
    for (o, v) in out.iter_mut().zip(v) {
        *o = (v as i32 - offset) as f32 * d;
    }
}

/// Q8_0/Q8_1 block: out = q·d.
#[inline(always)]
pub(crate) fn dequant_q8_32(d: half::f16, qs: &[i8; 32], out: &mut [f32]) {
    let d = fp16(d);
    for (o, &q) in out.iter_mut().zip(qs) {
        *o = q as f32 * d;
    }
}

/// Legacy block with a min (Q4_1, Q5_1): out = v·d + m.
#[inline(always)]
pub(crate) fn dequant_min32(d: half::f16, m: half::f16, v: [u8; 32], out: &mut [f32]) {
    let (d, m) = (fp16(d), fp16(m));
    for (o, v) in out.iter_mut().zip(v) {
        *o = v as f32 * d + m;
    }
}

/// One Q4_1/Q5_1 block times one Q8_1 block: (d_x·d_y)·Σv·q + m_x·s_y.
#[inline(always)]
pub(crate) fn dot_min32(d: half::f16, m: half::f16, v: &[u8; 32], y: &BlockQ8_1) -> f32 {
    let sumi = isum_offset(v, 0, &y.qs);
    (fp16(d) * fp16(y.d)) * sumi as f32 + fp16(m) * fp16(y.s)
}

/// K-quant dequantization per sub-block j of `q.len() / n_sub` elements:
/// out = dl_j·q − ml_j with `(dl_j, ml_j) = scale(j)` (ml = 0 for the formats without mins;
/// `x − 0.0 == x` bit for bit, including −0.0).
#[inline(always)]
pub(crate) fn dequant_sub_blocks(
    q: &[i8; QK_K],
    out: &mut [f32],
    n_sub: usize,
    scale: impl Fn(usize) -> (f32, f32),
) {
    let len = QK_K / n_sub;
    for (j, (o, qc)) in out
        .chunks_exact_mut(len)
        .zip(q.chunks_exact(len))
        .enumerate()
    {
        let (dl, ml) = scale(j);
        for (o, &v) in o.iter_mut().zip(qc) {
            *o = dl * v as f32 - ml;
        }
    }
}

/// Σ (v[i] - offset) * a[i] over one 32-block, exact in i32.
#[inline(always)]
pub(crate) fn isum_offset(v: &[u8; 32], offset: i32, a: &[i8; 32]) -> i32 {
    v.iter()
        .zip(a)
        .map(|(&x, &y)| (x as i32 - offset) * y as i32)
        .sum()
}

/// K-quant integer dot: Σ_sub scale[sub] · Σ_{i in sub} q[i]·a[i] over a 256-element super-block
/// split into `scales.len()` equal sub-blocks. Exact in i32 for all K formats.
#[inline(always)]
pub(crate) fn isum_scaled(q: &[i8; QK_K], a: &[i8; QK_K], scales: &[i32]) -> i32 {
    let sub = QK_K / scales.len();
    q.chunks_exact(sub)
        .zip(a.chunks_exact(sub))
        .zip(scales)
        .map(|((qc, ac), &s)| {
            s * qc
                .iter()
                .zip(ac)
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum::<i32>()
        })
        .sum()
}

/// Q8_0/Q8_1 reference block quantization: d = amax/127 (f32), q = roundf(x/d) (ties away from
/// zero). Returns the f32 `d` (before rounding to f16) and the quants.
#[inline]
pub(crate) fn quantize_q8_32(x: &[f32]) -> (f32, [i8; 32]) {
    let amax = x
        .iter()
        .fold(0.0f32, |m, &v| if v.abs() > m { v.abs() } else { m });
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0i8; 32];
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = (v * id).round() as i8; // f32::round == C roundf
    }
    (d, q)
}

/// Legacy symmetric block quantization (`quantize_row_q4_0_ref` with `nmax = 8`,
/// `quantize_row_q5_0_ref` with `nmax = 16`): d = max/−nmax where max is the value of largest
/// magnitude, q = min(2·nmax − 1, trunc(x/d + nmax + 0.5)). Returns the f32 `d` and the quants.
#[inline]
pub(crate) fn quantize_sym32(x: &[f32], nmax: i32) -> (f32, [u8; 32]) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -(nmax as f32);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let bias = nmax as f32 + 0.5;
    let mut q = [0u8; 32];
    for (qi, &v) in q.iter_mut().zip(x) {
        // C's (int8_t) cast truncates toward zero; the value is within 0..=16.5 here.
        *qi = ((v * id + bias) as i8).min(2 * nmax as i8 - 1) as u8;
    }
    (d, q)
}

/// Legacy block quantization with a min (`quantize_row_q4_1_ref` with `levels = 15`,
/// `quantize_row_q5_1_ref` with `levels = 31`): d = (max − min)/levels,
/// q = min(levels, trunc((x − min)/d + 0.5)). Returns `d`, `min` and the quants.
#[inline]
pub(crate) fn quantize_min32(x: &[f32], levels: u8) -> (f32, f32, [u8; 32]) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / levels as f32;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; 32];
    for (qi, &v) in q.iter_mut().zip(x) {
        // Q5_1's reference has no clamp, but (max − min)·id + 0.5 < 32 so min() never bites.
        *qi = (((v - min) * id + 0.5) as i8 as u8).min(levels);
    }
    (d, min, q)
}

/// Inverse of [`unpack_nibbles`]: element j in the low nibble of byte j, element j+16 high.
#[inline(always)]
pub(crate) fn pack_nibbles(q: &[u8; 32]) -> [u8; 16] {
    std::array::from_fn(|j| (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4))
}

/// Inverse of [`unpack_5bit`]: nibbles as [`pack_nibbles`], the 5th bits in a little-endian u32.
#[inline(always)]
pub(crate) fn pack_5bit(q: &[u8; 32]) -> ([u8; 4], [u8; 16]) {
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |h, (j, &v)| h | (((v as u32 >> 4) & 1) << j));
    (qh.to_le_bytes(), pack_nibbles(q))
}

/// Q2_K/Q3_K layout of 2-bit values: per half of 128, byte l holds elements l, l+32, l+64, l+96
/// at shifts 0, 2, 4, 6 (inverse of the unpacking in `q2_k.rs`).
#[inline]
pub(crate) fn pack_2bit_planes(l: &[u8; QK_K]) -> [u8; QK_K / 4] {
    std::array::from_fn(|i| {
        let (j, b) = (128 * (i / 32), i % 32);
        (0..4).fold(0u8, |acc, p| acc | ((l[j + b + 32 * p] & 3) << (2 * p)))
    })
}

/// f64-accumulated dot of float rows (llama.cpp's `ggml_vec_dot_f32/f16/bf16` accumulate the
/// f32 products in `ggml_float` = double).
#[inline]
pub(crate) fn dot_f64<T: Copy>(w: &[T], a: &[T], to_f32: impl Fn(T) -> f32) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot: element counts differ");
    w.iter()
        .zip(a)
        .map(|(&x, &y)| (to_f32(x) * to_f32(y)) as f64)
        .sum::<f64>() as f32
}

/// Implements the three traits' boilerplate by delegating to the named free functions.
macro_rules! impl_block {
    ($B:ty, $ty:ident, deq = $deq:path) => {
        impl $crate::formats::BlockFormat for $B {
            const TYPE: $crate::table::GgmlType = $crate::table::GgmlType::$ty;
            fn dequantize(blocks: &[Self], out: &mut [f32]) {
                $deq(blocks, out)
            }
        }
    };
    ($B:ty, $ty:ident, deq = $deq:path, quant = $q:path) => {
        impl_block!($B, $ty, deq = $deq);
        impl $crate::formats::ActivationFormat for $B {
            fn quantize(x: &[f32], out: &mut [Self]) {
                $q(x, out)
            }
        }
    };
    ($B:ty, $ty:ident, deq = $deq:path, dot = $dot:path, act = $A:ty) => {
        impl_block!($B, $ty, deq = $deq);
        impl $crate::formats::WeightFormat for $B {
            type Act = $A;
            fn vec_dot(w: &[Self], a: &[$A]) -> f32 {
                $dot(w, a)
            }
        }
    };
    ($B:ty, $ty:ident, deq = $deq:path, quant = $q:path, dot = $dot:path, act = $A:ty) => {
        impl_block!($B, $ty, deq = $deq, quant = $q);
        impl $crate::formats::WeightFormat for $B {
            type Act = $A;
            fn vec_dot(w: &[Self], a: &[$A]) -> f32 {
                $dot(w, a)
            }
        }
    };
}
pub(crate) use impl_block;
