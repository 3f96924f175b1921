//! The SIMD levels and the bf16 kernel against their references, on random and edge-case data.

use super::*;

/// Deterministic values in [-scale, scale).
fn pseudo_random(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn check_level(isa: Isa, shape: DenseShape, flagged: Option<&[bool]>) {
    let len = shape.n_tok * shape.row();
    // Large q/k so the softmax is peaked (exercises the max subtraction).
    let q = pseudo_random(len, 1, 2.0);
    let k = pseudo_random(len, 2, 2.0);
    let v = pseudo_random(len, 3, 1.0);
    let mut want = vec![0.0; len];
    reference(&shape, &q, &k, &v, flagged, &mut want);
    let mut got = vec![0.0; len];
    attend(isa, &shape, &q, &k, &v, flagged, &mut got);
    if isa == Isa::Scalar {
        // The blocked code without SIMD (what non-x86 machines would run).
        blocked(isa, &shape, &q, &k, &v, flagged, &mut got);
    }
    let max_diff = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        max_diff < 2e-6,
        "{isa:?} {shape:?}: max abs diff {max_diff}"
    );
}

/// Padding-style flags: the last 7 of every 24 tokens, and the whole last 24.
fn flags(n: usize) -> Vec<bool> {
    (0..n).map(|i| i % 24 >= 17 || i >= n - 24).collect()
}

#[test]
fn every_level_matches_the_reference() {
    let shapes = [
        // mllama's tiny fixture: 4 tiles of 24 tokens, 2 heads of 16.
        DenseShape {
            n_tok: 96,
            n_head: 2,
            head_dim: 16,
        },
        // The real head size (80 = 32 + 32 + 16), ragged token count.
        DenseShape {
            n_tok: 203,
            n_head: 3,
            head_dim: 80,
        },
        // A head size with a scalar remainder.
        DenseShape {
            n_tok: 41,
            n_head: 1,
            head_dim: 19,
        },
    ];
    for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
        for shape in shapes {
            check_level(isa, shape, None);
            let f = flags(shape.n_tok);
            check_level(isa, shape, Some(&f));
        }
    }
}

/// The bf16 kernel against its reference (same roundings; only the f32 summation order
/// differs, which can flip a probability's bf16 rounding by one step, 2^-8 relative:
/// measured max 7.6e-5 on outputs of values in [-1, 1], bound 2e-4); and against the f32
/// reference, the cost of bf16 itself (measured max 2.8e-3 with peaked scores, q and k in
/// [-2, 2]; bound 1e-2).
#[test]
fn bf16_kernel_matches_its_reference() {
    if !has_bf16_kernel() {
        eprintln!("no AVX-512 BF16 on this CPU: kernel not tested");
        return;
    }
    let shapes = [
        DenseShape {
            n_tok: 96,
            n_head: 2,
            head_dim: 16,
        },
        DenseShape {
            n_tok: 203,
            n_head: 3,
            head_dim: 80,
        },
        DenseShape {
            n_tok: 41,
            n_head: 1,
            head_dim: 19,
        },
    ];
    for shape in shapes {
        let f = flags(shape.n_tok);
        for flagged in [None, Some(&f[..])] {
            let len = shape.n_tok * shape.row();
            let q = pseudo_random(len, 1, 2.0);
            let k = pseudo_random(len, 2, 2.0);
            let v = pseudo_random(len, 3, 1.0);
            let mut want = vec![0.0; len];
            reference_bf16(&shape, &q, &k, &v, flagged, &mut want);
            let mut exact = vec![0.0; len];
            reference(&shape, &q, &k, &v, flagged, &mut exact);
            let mut got = vec![0.0; len];
            attend_bf16(Isa::Avx512, &shape, &q, &k, &v, flagged, &mut got);
            let diff = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max)
            };
            let (d_ref, d_f32) = (diff(&got, &want), diff(&got, &exact));
            eprintln!("{shape:?}: vs bf16 reference {d_ref:.2e}, vs f32 {d_f32:.2e}");
            assert!(d_ref < 2e-4, "{shape:?}: {d_ref} from the bf16 reference");
            assert!(d_f32 < 1e-2, "{shape:?}: {d_f32} from the f32 reference");
            assert!(d_f32 > 0.0, "the bf16 kernel did not run");
        }
    }
}

#[test]
fn flagged_pairs_do_not_attend_to_each_other() {
    // Two tokens, both flagged except token 0: token 1 must copy token 0's value exactly.
    let shape = DenseShape {
        n_tok: 3,
        n_head: 1,
        head_dim: 16,
    };
    let q = pseudo_random(48, 4, 1.0);
    let k = pseudo_random(48, 5, 1.0);
    let v = pseudo_random(48, 6, 1.0);
    let flagged = [false, true, true];
    for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
        let mut out = vec![0.0; 48];
        attend(isa, &shape, &q, &k, &v, Some(&flagged), &mut out);
        for t in 1..3 {
            for d in 0..16 {
                assert!((out[t * 16 + d] - v[d]).abs() < 1e-6, "{isa:?} token {t}");
            }
        }
    }
}
