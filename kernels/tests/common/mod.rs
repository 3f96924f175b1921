//! Helpers shared by the integration tests.
#![allow(dead_code)]

use half::{bf16, f16};
use lumen_kernels::GgmlType;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

pub mod kquant;

pub type TestRng = rand::rngs::StdRng;

pub fn rng(seed: u64) -> TestRng {
    TestRng::seed_from_u64(seed)
}

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/fixtures/kernels")
}

pub fn read_f32(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Byte offsets of the f16 scale fields in one block, taken from KERNELS.md §1 (not from the
/// crate), and the offset of the field that multiplies the quants (`d`) for the formats whose
/// value has an additive min/offset term (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K).
pub fn scale_fields(ty: GgmlType) -> (&'static [usize], Option<usize>) {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => (&[0], None),
        Q4_1 | Q5_1 | Q4_K | Q5_K => (&[0, 2], Some(0)),
        Q8_1 => (&[0, 2], None),
        Q2_K => (&[80, 82], Some(80)),
        Q3_K => (&[108], None),
        Q6_K => (&[208], None),
        F32 | F16 | BF16 | Q8_K => (&[], None),
    }
}

/// Standard normal sample (Box-Muller).
pub fn normal(rng: &mut TestRng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// A finite f16 scale with magnitude in [1e-3, 1] and random sign.
pub fn random_scale(rng: &mut TestRng) -> f16 {
    let mag = (rng.gen_range(1e-3f32.ln()..0.0)).exp();
    f16::from_f32(if rng.gen_bool(0.25) { -mag } else { mag })
}

/// A random weight row of `n` elements of type `ty`: float types get normal values, quantized
/// types get random bytes with finite random scales; block `0` is all-zero bytes and block `1`
/// all-0xFF bytes (with a scale) when the row has at least 3 blocks.
pub fn random_weight_row(ty: GgmlType, n: usize, rng: &mut TestRng) -> Vec<u8> {
    match ty {
        GgmlType::F32 => return (0..n).flat_map(|_| normal(rng).to_le_bytes()).collect(),
        GgmlType::F16 => {
            return (0..n)
                .flat_map(|_| f16::from_f32(normal(rng)).to_le_bytes())
                .collect()
        }
        GgmlType::BF16 => {
            return (0..n)
                .flat_map(|_| bf16::from_f32(normal(rng)).to_le_bytes())
                .collect()
        }
        _ => {}
    }
    let bb = ty.block_bytes();
    let nb = n / ty.block_elems();
    let mut bytes: Vec<u8> = (0..nb * bb).map(|_| rng.gen()).collect();
    let (fields, _) = scale_fields(ty);
    for (i, block) in bytes.chunks_exact_mut(bb).enumerate() {
        if nb >= 3 && i == 0 {
            block.fill(0);
        } else if nb >= 3 && i == 1 {
            block.fill(0xFF);
        }
        for &off in fields {
            let s = if nb >= 3 && i == 0 {
                f16::ZERO
            } else {
                random_scale(rng)
            };
            block[off..off + 2].copy_from_slice(&s.to_le_bytes());
        }
    }
    bytes
}

/// Named activation vectors of length `n`: random normal plus the edge cases.
pub fn activation_cases(n: usize, rng: &mut TestRng) -> Vec<(&'static str, Vec<f32>)> {
    let normal_v: Vec<f32> = (0..n).map(|_| normal(rng)).collect();
    let mut outlier: Vec<f32> = (0..n).map(|_| normal(rng) * 1e-2).collect();
    outlier[n / 3] = 3.0e4;
    let mut mixed_scale: Vec<f32> = (0..n).map(|_| normal(rng)).collect();
    for (i, v) in mixed_scale.iter_mut().enumerate() {
        *v *= 10f32.powi((i / 32 % 7) as i32 - 3);
    }
    vec![
        ("normal", normal_v),
        ("zeros", vec![0.0; n]),
        ("outlier", outlier),
        ("constant", vec![0.3125; n]),
        (
            "negative",
            (0..n).map(|_| -normal(rng).abs() - 0.01).collect(),
        ),
        ("mixed_scale", mixed_scale),
        (
            "ties",
            (0..n).map(|i| (i % 255) as f32 - 127.0 + 0.5).collect(),
        ),
    ]
}
