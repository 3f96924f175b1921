//! The x86 K-quant 4×4 GEMM tiles and four-row matvec kernels (simd/avx2_kquant_tiles.rs,
//! simd/avx512_kquant_tiles.rs) against the scalar reference `vec_dot`.
//!
//! Bound: |tile[r][t] − vec_dot(w_r, a_t)| ≤ 1e-6 · Σ|terms| + 1e-30, where Σ|terms| =
//! Σ_i (|d-part_i| + |min-part_i|)·|a_i| from the scalar dequantizers (the d-part with dmin zeroed
//! and the min-part with d zeroed). The kernels compute the integer super-block sums exactly and
//! then the reference's f32 operations, so the observed difference is expected to be 0 (the
//! tests also count bit-exact results and print them).

use lumen_kernels::{kernels_for, quantize_row, vec_dot, GgmlType, Isa};
use rand::SeedableRng;

mod common;

use common::kquant::{abs_terms, activations, isas, layout, weight_row};
use common::TestRng;

/// Share of negative d/dmin among the generated weight scales.
const NEG_SCALE_SHARE: f64 = 0.3;

const Q8K_BYTES: usize = 292;

/// The types each level must provide tiles and rows4 for.
fn expected(isa: Isa) -> Vec<GgmlType> {
    use GgmlType::*;
    match isa {
        Isa::Avx512 => vec![Q2_K, Q3_K, Q4_K, Q5_K, Q6_K],
        // Q3_K: measured no faster than row_dot4/row_dot on AVX2, left out.
        Isa::Avx2 | Isa::AvxVnni => vec![Q2_K, Q4_K, Q5_K, Q6_K],
        Isa::Scalar => vec![],
    }
}

fn q8k(x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; x.len() / 256 * Q8K_BYTES];
    quantize_row(GgmlType::Q8_K, x, &mut out).unwrap();
    out
}

fn check(ty: GgmlType, what: &str, got: f32, w: &[u8], a: &[u8], exact: &mut usize) {
    let want = vec_dot(ty, w, a).unwrap();
    let bound = 1e-6 * abs_terms(ty, w, a) + 1e-30;
    let err = (got as f64 - want as f64).abs();
    assert!(
        err <= bound,
        "{ty:?} {what}: got {got}, reference {want}, |err| {err:e} > bound {bound:e}"
    );
    if got.to_bits() == want.to_bits() {
        *exact += 1;
    }
}

#[test]
fn tiles_and_rows4_match_scalar_reference() {
    let mut rng = TestRng::seed_from_u64(0x711e5);
    for (isa, set) in isas() {
        let scalar = kernels_for(Isa::Scalar).unwrap();
        for ty in expected(isa) {
            let tile = set
                .tile4x4(ty)
                .unwrap_or_else(|| panic!("{isa:?} lacks a {ty:?} tile"));
            let rows4 = set
                .rows4(ty)
                .unwrap_or_else(|| panic!("{isa:?} lacks {ty:?} rows4"));
            // Not the scalar level's reference-made tiles.
            assert!(tile as usize != scalar.tile4x4(ty).unwrap() as usize);
            assert!(rows4 as usize != scalar.rows4(ty).unwrap() as usize);
            let (mut n, mut exact) = (0usize, 0usize);
            for nb in [1usize, 2, 3, 8] {
                for case in 0..6 {
                    let fills = [None, Some(0x00), Some(0xFF), None];
                    let w: Vec<Vec<u8>> = (0..4)
                        .map(|r| {
                            let fill = if case < 3 {
                                fills[(case + r) % 4]
                            } else {
                                None
                            };
                            weight_row(&mut rng, ty, nb, fill, NEG_SCALE_SHARE)
                        })
                        .collect();
                    let a: Vec<Vec<u8>> = (0..4)
                        .map(|t| q8k(&activations(&mut rng, nb, case + t)))
                        .collect();
                    let w4 = [&w[0][..], &w[1][..], &w[2][..], &w[3][..]];
                    let a4 = [&a[0][..], &a[1][..], &a[2][..], &a[3][..]];
                    let res = tile(w4, a4);
                    for r in 0..4 {
                        for t in 0..4 {
                            let what = format!("{isa:?} tile nb={nb} case={case} [{r}][{t}]");
                            check(ty, &what, res[r][t], w4[r], a4[t], &mut exact);
                            n += 1;
                        }
                    }
                    for (t, &a_t) in a4.iter().enumerate() {
                        let res = rows4(w4, a_t);
                        for r in 0..4 {
                            let what = format!("{isa:?} rows4 nb={nb} case={case} [{r}] tok {t}");
                            check(ty, &what, res[r], w4[r], a_t, &mut exact);
                            n += 1;
                        }
                    }
                }
            }
            println!("{isa:?} {ty:?}: {n} results within bound, {exact} bit-identical to scalar");
        }
    }
}

/// Ad-hoc speed: 64 rows × 64 tokens × 2048 elements, single thread. `cargo test -p
/// lumen-kernels --release --test tiles_kquants -- --ignored --nocapture`.
#[test]
#[ignore]
fn speed_tile_vs_row_dot4() {
    use std::time::Instant;
    let mut rng = TestRng::seed_from_u64(7);
    for (rows, toks, nb, reps) in [(64usize, 64usize, 8usize, 20), (64, 512, 16, 3)] {
        println!(
            "{rows} rows x {toks} tokens x {} elements, best of {reps}:",
            nb * 256
        );
        for (isa, set) in isas() {
            for ty in expected(isa) {
                let (bs, _, _) = layout(ty);
                let w: Vec<u8> = (0..rows)
                    .flat_map(|_| weight_row(&mut rng, ty, nb, None, NEG_SCALE_SHARE))
                    .collect();
                let a: Vec<u8> = (0..toks)
                    .flat_map(|t| q8k(&activations(&mut rng, nb, t % 6)))
                    .collect();
                let wr = |r: usize| &w[r * bs * nb..(r + 1) * bs * nb];
                let ar = |t: usize| &a[t * Q8K_BYTES * nb..(t + 1) * Q8K_BYTES * nb];
                let tile = set.tile4x4(ty).unwrap();
                let dot4 = set.row_dot4(ty).unwrap();
                let rows4 = set.rows4(ty).unwrap();
                let dot = set.row_dot(ty).unwrap();
                let macs = (rows * toks * nb * 256) as f64;
                let mut sink = 0f32;
                let mut best = [f64::MAX; 4];
                for _ in 0..reps {
                    let t0 = Instant::now();
                    for r in (0..rows).step_by(4) {
                        for t in (0..toks).step_by(4) {
                            let o = tile(
                                [wr(r), wr(r + 1), wr(r + 2), wr(r + 3)],
                                [ar(t), ar(t + 1), ar(t + 2), ar(t + 3)],
                            );
                            sink += o[0][0] + o[3][3];
                        }
                    }
                    best[0] = best[0].min(t0.elapsed().as_secs_f64());
                    let t0 = Instant::now();
                    for r in 0..rows {
                        for t in (0..toks).step_by(4) {
                            let o = dot4(wr(r), [ar(t), ar(t + 1), ar(t + 2), ar(t + 3)]);
                            sink += o[0] + o[3];
                        }
                    }
                    best[1] = best[1].min(t0.elapsed().as_secs_f64());
                    // Decode: 64 rows × 1 token, repeated per token.
                    let t0 = Instant::now();
                    for t in 0..toks {
                        for r in (0..rows).step_by(4) {
                            let o = rows4([wr(r), wr(r + 1), wr(r + 2), wr(r + 3)], ar(t));
                            sink += o[0] + o[3];
                        }
                    }
                    best[2] = best[2].min(t0.elapsed().as_secs_f64());
                    let t0 = Instant::now();
                    for t in 0..toks {
                        for r in 0..rows {
                            sink += dot(wr(r), ar(t));
                        }
                    }
                    best[3] = best[3].min(t0.elapsed().as_secs_f64());
                }
                let g = |s: f64| macs / s / 1e9;
                println!(
                "{isa:?} {ty:?}: tile4x4 {:.1} GMAC/s, row_dot4 {:.1} GMAC/s ({:.2}x); rows4 {:.1} GMAC/s, row_dot {:.1} GMAC/s ({:.2}x)  [{sink:.1e}]",
                g(best[0]),
                g(best[1]),
                best[1] / best[0],
                g(best[2]),
                g(best[3]),
                best[3] / best[2],
            );
            }
        }
    }
}
