//! Random K-quant weight rows and Q8_K-shaped activations shared by the K-quant kernel tests.

use half::f16;
use lumen_kernels::{dequantize_row, kernels_for, GgmlType, Isa, KernelSet};
use rand::Rng;

use super::TestRng;

/// (block bytes, offset of d, offset of dmin).
pub fn layout(ty: GgmlType) -> (usize, usize, Option<usize>) {
    match ty {
        GgmlType::Q2_K => (84, 80, Some(82)),
        GgmlType::Q3_K => (110, 108, None),
        GgmlType::Q4_K => (144, 0, Some(2)),
        GgmlType::Q5_K => (176, 0, Some(2)),
        GgmlType::Q6_K => (210, 208, None),
        _ => unreachable!(),
    }
}

pub fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

pub fn moderate(rng: &mut TestRng, neg_prob: f64) -> f32 {
    let m: f32 = rng.gen_range(1e-3..0.2);
    if rng.gen_bool(neg_prob) {
        -m
    } else {
        m
    }
}

/// `nb` weight super-blocks: `fill` = None for random bytes, Some(byte) for constant bytes; the
/// f16 d/dmin fields are then overwritten with finite moderate values.
pub fn weight_row(
    rng: &mut TestRng,
    ty: GgmlType,
    nb: usize,
    fill: Option<u8>,
    neg_prob: f64,
) -> Vec<u8> {
    let (bs, d_off, dmin_off) = layout(ty);
    let mut w = vec![0u8; bs * nb];
    match fill {
        None => rng.fill(&mut w[..]),
        Some(v) => w.fill(v),
    }
    for b in w.chunks_exact_mut(bs) {
        put_f16(b, d_off, moderate(rng, neg_prob));
        if let Some(o) = dmin_off {
            put_f16(b, o, moderate(rng, neg_prob));
        }
    }
    w
}

/// f32 activations, one of several shapes per super-block.
pub fn activations(rng: &mut TestRng, nb: usize, kind: usize) -> Vec<f32> {
    let mut x = vec![0f32; 256 * nb];
    for (bi, b) in x.chunks_exact_mut(256).enumerate() {
        match (kind + bi) % 6 {
            0 => b.iter_mut().for_each(|v| *v = rng.gen_range(-1.0..1.0)),
            1 => {} // zeros
            2 => {
                b.iter_mut().for_each(|v| *v = rng.gen_range(-0.01..0.01));
                b[rng.gen_range(0..256)] = 1e6; // huge outlier
            }
            3 => b.iter_mut().for_each(|v| *v = -rng.gen_range(0.0..3.0)), // negative only
            4 => b.iter_mut().for_each(|v| *v = rng.gen_range(-100.0..100.0)),
            _ => b.iter_mut().for_each(|v| *v = rng.gen_range(0.0..1.0)), // positive only
        }
    }
    x
}

/// Bytes of one Q8_K block.
const Q8K_BLOCK_BYTES: usize = 292;

/// Σ_i (|d-part_i| + |min-part_i|)·|a_i| from the scalar dequantizers.
pub fn abs_terms(ty: GgmlType, w: &[u8], a: &[u8]) -> f64 {
    let n = a.len() / Q8K_BLOCK_BYTES * 256;
    let (bs, d_off, dmin_off) = layout(ty);
    let mut av = vec![0f32; n];
    dequantize_row(GgmlType::Q8_K, a, &mut av).unwrap();
    let mut parts = vec![];
    let mut wd = w.to_vec();
    if let Some(o) = dmin_off {
        let mut wm = w.to_vec();
        for (bd, bm) in wd.chunks_exact_mut(bs).zip(wm.chunks_exact_mut(bs)) {
            bd[o..o + 2].fill(0);
            bm[d_off..d_off + 2].fill(0);
        }
        parts.push(wm);
    }
    parts.push(wd);
    let mut total = 0f64;
    for p in parts {
        let mut wv = vec![0f32; n];
        dequantize_row(ty, &p, &mut wv).unwrap();
        total += wv
            .iter()
            .zip(&av)
            .map(|(&x, &y)| (x as f64 * y as f64).abs())
            .sum::<f64>();
    }
    total
}

/// The SIMD levels this CPU runs, with their kernel sets (others are reported and skipped).
pub fn isas() -> Vec<(Isa, &'static KernelSet)> {
    let mut v = vec![];
    for isa in [Isa::Avx2, Isa::Avx512] {
        match kernels_for(isa) {
            Some(set) => v.push((isa, set)),
            None => println!("{isa:?}: not available on this CPU, skipped"),
        }
    }
    v
}
