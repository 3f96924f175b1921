//! Scalar dot products and activation quantizers against bounds.
//!
//! Dots: for every weight type W (activation type A = W's vec_dot type),
//!   got = vec_dot(W row, quantize_A(a))
//!   ref = Σ dequant(W)_i · dequant(quantize_A(a))_i      (in f64)
//! The dequantizers are pinned bit for bit to gguf-py by `dequant_vs_gguf_py.rs`, so this compares
//! the integer-sum kernels with an independent route to the same math. Bound:
//!
//!   |got − ref| ≤ (n_blocks + 10) · 2⁻²⁴ · S_ext  [+ 2⁻⁹ · S_off for Q4_1/Q5_1]  + 1e-30
//!
//!   S_ext = Σ (|w_i| + |off_i|) · |â_i|   with off_i the additive min/offset term of element i
//!           (m for Q4_1/Q5_1, −dmin·m for Q2_K/Q4_K/Q5_K, 0 otherwise), â the dequantized
//!           activation;  S_off = Σ |off_i| · |â_i|.
//!
//! Why: the integer sums are exact; each block contributes one or two products of f32 scales
//! with an (exact or once-rounded) integer, i.e. a few roundings (≤ 4u) relative to the block's
//! Σ|terms|, and accumulating n_blocks terms in f32 adds ≤ n_blocks·u; the dequantized weights
//! carry ≤ 2u rounding of (|d·sc·q| + |off|) each. The scaled terms themselves are bounded by
//! |w_i| + |off_i| (min formats can cancel large terms, so Σ|w·a| alone is not a valid scale).
//! Q4_1/Q5_1 use the activation's stored s = f16(d·Σq), which differs from d₁₆·Σq by up to
//! ~2·2⁻¹¹ relative, hence the extra S_off term. For F32/F16/BF16 (f32 products, f64
//! accumulation, as ggml) the bound is 3·2⁻²⁴·Σ|w·â|. A wrong nibble order, scale index or
//! offset gives errors of order S itself, far outside these bounds.

mod common;

use common::*;
use half::f16;
use lumen_kernels::{dequantize_row, quantize_row, vec_dot, GgmlType};

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn quantize_dequant(ty: GgmlType, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    quantize_row(ty, x, &mut q).unwrap();
    let mut back = vec![0f32; x.len()];
    dequantize_row(ty, &q, &mut back).unwrap();
    (q, back)
}

/// Per-element offset term of a weight row (dequantize with the quant multiplier `d` zeroed).
fn offsets(ty: GgmlType, w: &[u8], n: usize) -> Vec<f32> {
    let Some(d_off) = scale_fields(ty).1 else {
        return vec![0.0; n];
    };
    let mut z = w.to_vec();
    for block in z.chunks_exact_mut(ty.block_bytes()) {
        block[d_off..d_off + 2].copy_from_slice(&f16::ZERO.to_le_bytes());
    }
    let mut out = vec![0f32; n];
    dequantize_row(ty, &z, &mut out).unwrap();
    out
}

const WEIGHT_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

#[test]
fn vec_dot_within_bounds_of_dequantized_f64_dot() {
    let mut rng = rng(42);
    for ty in WEIGHT_TYPES {
        let act = ty.vec_dot_type();
        for &n in &[256usize, 1024] {
            for trial in 0..4 {
                let w = random_weight_row(ty, n, &mut rng);
                let mut wd = vec![0f32; n];
                dequantize_row(ty, &w, &mut wd).unwrap();
                let off = offsets(ty, &w, n);
                for (name, a) in activation_cases(n, &mut rng) {
                    let (aq, ad) = quantize_dequant(act, &a);
                    let got = vec_dot(ty, &w, &aq).unwrap() as f64;
                    let reference: f64 =
                        wd.iter().zip(&ad).map(|(&x, &y)| x as f64 * y as f64).sum();
                    let s_abs: f64 = wd
                        .iter()
                        .zip(&ad)
                        .map(|(&x, &y)| (x as f64 * y as f64).abs())
                        .sum();
                    let s_off: f64 = off
                        .iter()
                        .zip(&ad)
                        .map(|(&o, &y)| (o as f64 * y as f64).abs())
                        .sum();
                    let bound = if ty.block_elems() == 1 {
                        3.0 * U * s_abs
                    } else {
                        let nb = (n / ty.block_elems()) as f64;
                        let mut b = (nb + 10.0) * U * (s_abs + s_off);
                        if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                            b += s_off / 512.0;
                        }
                        b
                    } + 1e-30;
                    let err = (got - reference).abs();
                    assert!(
                        err <= bound,
                        "{ty} x {act}, n={n}, trial {trial}, activations {name}: got {got}, ref {reference}, \
                         err {err:e} > bound {bound:e} (S={s_abs:e}, S_off={s_off:e})"
                    );
                    if name == "zeros" {
                        assert_eq!(got, 0.0, "{ty}: zero activations");
                    }
                }
            }
        }
    }
}

/// Per-element quantize→dequantize error bounds for the activation formats.
#[test]
fn activation_quantizers_error_bounds() {
    let mut rng = rng(7);
    for &n in &[256usize, 2048] {
        for (name, x) in activation_cases(n, &mut rng) {
            // F32: exact.
            let (_, b) = quantize_dequant(GgmlType::F32, &x);
            assert!(
                x.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "F32 {name}"
            );
            // F16: half-ulp, 2^-11 relative in the normal range (inputs here are within it or 0).
            let (_, b) = quantize_dequant(GgmlType::F16, &x);
            for (&p, &q) in x.iter().zip(&b) {
                assert!(
                    (p - q).abs() <= p.abs() * 2f32.powi(-11) + 2f32.powi(-25),
                    "F16 {name}: {p} -> {q}"
                );
            }
            // BF16: 2^-8 relative.
            let (_, b) = quantize_dequant(GgmlType::BF16, &x);
            for (&p, &q) in x.iter().zip(&b) {
                assert!(
                    (p - q).abs() <= p.abs() * 2f32.powi(-8),
                    "BF16 {name}: {p} -> {q}"
                );
            }
            // Q8_0 / Q8_1: |x - q·d16| ≤ d/2 + 127·|d - d16| + 2^-20·amax with d = amax/127.
            for ty in [GgmlType::Q8_0, GgmlType::Q8_1] {
                let (q, b) = quantize_dequant(ty, &x);
                for (blk, (xs, bs)) in x.chunks(32).zip(b.chunks(32)).enumerate() {
                    let bytes = &q[blk * ty.block_bytes()..(blk + 1) * ty.block_bytes()];
                    let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let d16 = f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
                    let qs = &bytes[ty.block_bytes() - 32..];
                    assert!(
                        qs.iter().all(|&v| v as i8 != -128),
                        "{ty} {name}: -128 produced"
                    );
                    let bound = d / 2.0 + 127.0 * (d - d16).abs() + amax * 2f32.powi(-20);
                    for (&p, &r) in xs.iter().zip(bs) {
                        assert!(
                            (p - r).abs() <= bound,
                            "{ty} {name} block {blk}: {p} -> {r} (bound {bound})"
                        );
                    }
                    if ty == GgmlType::Q8_1 {
                        let sum: i32 = qs.iter().map(|&v| v as i8 as i32).sum();
                        let s = f16::from_le_bytes([bytes[2], bytes[3]]);
                        assert_eq!(
                            s,
                            f16::from_f32(sum as f32 * d),
                            "Q8_1 {name} block {blk}: s"
                        );
                    }
                    if amax == 0.0 {
                        assert!(bytes.iter().all(|&v| v == 0), "{ty} {name}: zero block");
                    }
                }
            }
            // Q8_K: |x - d·q| ≤ |d|/2 + 2^-20·amax; the signed max maps to exactly -127;
            // bsums are the sums of 16 quants; zero block → all zero bytes.
            let (q, b) = quantize_dequant(GgmlType::Q8_K, &x);
            for (blk, (xs, bs)) in x.chunks(256).zip(b.chunks(256)).enumerate() {
                let bytes = &q[blk * 292..(blk + 1) * 292];
                let d = f32::from_le_bytes(bytes[0..4].try_into().unwrap());
                let qs: Vec<i32> = bytes[4..260].iter().map(|&v| v as i8 as i32).collect();
                let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                if amax == 0.0 {
                    assert!(bytes.iter().all(|&v| v == 0), "Q8_K {name}: zero block");
                    continue;
                }
                let imax = xs.iter().position(|v| v.abs() == amax).unwrap();
                assert_eq!(qs[imax], -127, "Q8_K {name}: signed max must map to -127");
                assert!(
                    qs.iter().all(|&v| (-127..=127).contains(&v)),
                    "Q8_K {name}: range"
                );
                for j in 0..16 {
                    let bsum = i16::from_le_bytes([bytes[260 + 2 * j], bytes[261 + 2 * j]]) as i32;
                    assert_eq!(
                        bsum,
                        qs[16 * j..16 * j + 16].iter().sum::<i32>(),
                        "Q8_K {name}: bsums[{j}]"
                    );
                }
                let bound = d.abs() / 2.0 * (1.0 + 1e-6) + amax * 2f32.powi(-20);
                for (&p, &r) in xs.iter().zip(bs) {
                    assert!(
                        (p - r).abs() <= bound,
                        "Q8_K {name} block {blk}: {p} -> {r} (bound {bound})"
                    );
                }
            }
        }
    }
}

/// Q8_K rounds half to even (nearest_int), Q8_0 rounds half away from zero (roundf).
#[test]
fn rounding_modes_at_ties() {
    // Q8_K: signed max -127 → iscale = 1 exactly, so x is its own scaled value.
    let mut x = vec![0f32; 256];
    x[0] = -127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 3.5;
    x[4] = 0.5;
    let (q, _) = quantize_dequant(GgmlType::Q8_K, &x);
    let qs: Vec<i8> = q[4..9].iter().map(|&v| v as i8).collect();
    assert_eq!(qs, [-127, 2, -2, 4, 0]);
    assert_eq!(f32::from_le_bytes(q[0..4].try_into().unwrap()), 1.0);
    // Q8_0: amax 127 → d = 1.
    let mut x = vec![0f32; 32];
    x[0] = -127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 3.5;
    x[4] = 0.5;
    let (q, _) = quantize_dequant(GgmlType::Q8_0, &x);
    let qs: Vec<i8> = q[2..7].iter().map(|&v| v as i8).collect();
    assert_eq!(qs, [-127, 3, -3, 4, 1]);
    // Q8_K with a positive signed max: the max maps to -127 (iscale negative).
    let mut x = vec![0f32; 256];
    x[7] = 4.0;
    x[8] = -2.0;
    let (q, b) = quantize_dequant(GgmlType::Q8_K, &x);
    assert_eq!(q[4 + 7] as i8, -127);
    assert_eq!(q[4 + 8] as i8, 64); // -2 * (-127/4) = 63.5 → 64 (even)
    assert!((b[7] - 4.0).abs() <= 4.0 * 2e-7, "{}", b[7]);
}
