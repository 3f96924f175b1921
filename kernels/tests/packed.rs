//! The packed (eight-row interleaved) Q4_0 / Q4_1 / Q5_0 / Q8_0 / Q4_K / Q5_K / Q6_K layouts and
//! their kernels.
//!
//! * Packing is lossless: unpacking every row gives back the GGUF bytes.
//! * The scalar packed reference equals the formats' reference `vec_dot` bit for bit (same
//!   integer block sums, same f32 order), row by row.
//! * Every level's packed gemv and 4-token tile equal that reference within
//!   `1e-6 · Σ_blocks |d_w·d_a|·Σ|q_w·q_a|` (K-quants: with each sub-block's scale, and Q4_K/Q5_K's
//!   `|dmin·d_a·m_j·a|` terms)
//!   (integer sums exact; the SIMD kernels differ only in
//!   the f32 rounding of per-lane scaling and the order of the final sums), on random rows,
//!   all-0x00 / all-0xFF blocks, odd block counts and the activation edge cases (zeros, outliers,
//!   ±127 extremes, ties).
//! * The matmul drivers give the same outputs from a packed matrix as from the GGUF rows.

mod common;

use common::{activation_cases, random_weight_row, rng};
use half::f16;
use lumen_kernels::formats::q4_k::get_scale_min_k4;
use lumen_kernels::matmul::{matmul, QuantizedRows, WeightView};
use lumen_kernels::packed::{self, PackedMatrix, GROUP_ROWS, TILE_TOKENS};
use lumen_kernels::{kernels_for, quantize_row, vec_dot, GgmlType, Isa};

const TYPES: [GgmlType; 7] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];
/// Blocks per row (32 elements each for Q4_0/Q4_1/Q5_0/Q8_0, 256 for the K-quants).
const BLOCK_COUNTS: [usize; 6] = [1, 2, 3, 7, 18, 64];

fn weight_rows(ty: GgmlType, rows: usize, nb: usize, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    (0..rows)
        .flat_map(|_| random_weight_row(ty, nb * ty.block_elems(), &mut r))
        .collect()
}

/// Activation rows (in `ty`'s vec-dot type) for every edge case, with their aux records.
fn activations(ty: GgmlType, nb: usize, seed: u64) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let mut r = rng(seed);
    let act = ty.vec_dot_type();
    let n = nb * ty.block_elems();
    activation_cases(n, &mut r)
        .into_iter()
        .map(|(name, x)| {
            let mut a = vec![0u8; act.row_bytes(n).unwrap()];
            quantize_row(act, &x, &mut a).unwrap();
            let mut aux = vec![0u8; packed::aux_bytes(act) * (n / act.block_elems())];
            packed::fill_aux(act, &a, &mut aux);
            (name, a, aux)
        })
        .collect()
}

/// The error scale of one GGUF row's dot with one activation row: Σ over blocks of the
/// absolute values of every product the exact result is a sum of.
fn abs_mass(ty: GgmlType, w: &[u8], a: &[u8]) -> f64 {
    let f16_at = |b: &[u8], at: usize| f16::from_le_bytes([b[at], b[at + 1]]).to_f32() as f64;
    if ty == GgmlType::Q6_K {
        return w
            .chunks_exact(210)
            .zip(a.chunks_exact(292))
            .map(|(bw, ba)| {
                let da = f32::from_le_bytes(ba[0..4].try_into().unwrap()) as f64;
                let d = f16_at(bw, 208);
                (0..256)
                    .map(|e| {
                        let (half, x) = (e / 128, e % 128);
                        let low = (bw[64 * half + x % 64] >> (4 * (x / 64))) & 0xF;
                        let high = (bw[128 + 32 * half + x % 32] >> (2 * (x / 32))) & 3;
                        let q = (low | high << 4) as f64 - 32.0;
                        let sc = bw[192 + e / 16] as i8 as f64;
                        (d * da * sc * q * ba[4 + e] as i8 as f64).abs()
                    })
                    .sum::<f64>()
            })
            .sum();
    }
    if matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K) {
        // Q5_K is Q4_K's fields with qh[32] before the nibbles: bit e / 32 of qh[e % 32].
        let five = ty == GgmlType::Q5_K;
        let qs_at = if five { 48 } else { 16 };
        return w
            .chunks_exact(ty.block_bytes())
            .zip(a.chunks_exact(292))
            .map(|(bw, ba)| {
                let da = f32::from_le_bytes(ba[0..4].try_into().unwrap()) as f64;
                let (d, dmin) = (f16_at(bw, 0), f16_at(bw, 2));
                let scales: &[u8; 12] = bw[4..16].try_into().unwrap();
                (0..256)
                    .map(|e| {
                        let (sc, m) = get_scale_min_k4(e / 32, scales);
                        let byte = bw[qs_at + 32 * (e / 64) + e % 32];
                        let high = if five {
                            (bw[16 + e % 32] >> (e / 32)) & 1
                        } else {
                            0
                        };
                        let q = if e % 64 < 32 { byte & 15 } else { byte >> 4 } + 16 * high;
                        let x = (ba[4 + e] as i8 as f64).abs() * da.abs();
                        x * ((d * sc as f64 * q as f64).abs() + (dmin * m as f64).abs())
                    })
                    .sum::<f64>()
            })
            .sum();
    }
    if ty == GgmlType::Q4_1 {
        return w
            .chunks_exact(20)
            .zip(a.chunks_exact(36))
            .map(|(bw, ba)| {
                let s: i64 = (0..32)
                    .map(|j| {
                        let byte = bw[4 + j % 16];
                        let q = if j < 16 { byte & 15 } else { byte >> 4 } as i64;
                        (q * ba[4 + j] as i8 as i64).abs()
                    })
                    .sum();
                (f16_at(bw, 0) * f16_at(ba, 0)).abs() * s as f64
                    + (f16_at(bw, 2) * f16_at(ba, 2)).abs()
            })
            .sum();
    }
    let wb = ty.block_bytes();
    w.chunks_exact(wb)
        .zip(a.chunks_exact(34))
        .map(|(bw, ba)| {
            let q = |j: usize| -> i64 {
                match ty {
                    GgmlType::Q4_0 => {
                        let byte = bw[2 + j % 16];
                        (if j < 16 { byte & 15 } else { byte >> 4 }) as i64 - 8
                    }
                    GgmlType::Q5_0 => {
                        let byte = bw[6 + j % 16];
                        let high = u32::from_le_bytes(bw[2..6].try_into().unwrap()) >> j & 1;
                        (if j < 16 { byte & 15 } else { byte >> 4 }) as i64 + 16 * high as i64 - 16
                    }
                    _ => bw[2 + j] as i8 as i64,
                }
            };
            let s: i64 = (0..32).map(|j| (q(j) * ba[2 + j] as i8 as i64).abs()).sum();
            (f16_at(bw, 0) * f16_at(ba, 0)).abs() * s as f64
        })
        .sum()
}

fn row(w: &[u8], r: usize, row_bytes: usize) -> &[u8] {
    &w[r * row_bytes..(r + 1) * row_bytes]
}

#[test]
fn packing_is_lossless() {
    for ty in TYPES {
        for nb in BLOCK_COUNTS {
            let rows = 3 * GROUP_ROWS;
            let w = weight_rows(ty, rows, nb, 1 + nb as u64);
            let p = PackedMatrix::pack(ty, rows, nb * ty.block_elems(), &w).unwrap();
            let overhead = p.heap_bytes() as f64 / w.len() as f64 - 1.0;
            assert!(overhead < 0.03, "{ty} packs with {overhead} overhead");
            let rb = nb * ty.block_bytes();
            for r in 0..rows {
                let back = packed::unpack_group_row(ty, p.group(r / GROUP_ROWS), r % GROUP_ROWS);
                assert_eq!(back, row(&w, r, rb), "{ty} nb={nb} row {r}");
            }
        }
    }
}

#[test]
fn packing_rejects_unsupported_shapes() {
    let w = weight_rows(GgmlType::Q4_0, 12, 2, 5);
    assert!(
        PackedMatrix::pack(GgmlType::Q4_0, 12, 64, &w).is_err(),
        "12 rows"
    );
    let w = weight_rows(GgmlType::Q5_1, 8, 2, 5);
    assert!(
        PackedMatrix::pack(GgmlType::Q5_1, 8, 64, &w).is_err(),
        "Q5_1 has no packed layout"
    );
    let w = weight_rows(GgmlType::Q4_K, 8, 1, 5);
    assert!(
        PackedMatrix::pack(GgmlType::Q4_K, 8, 128, &w[..8 * 72]).is_err(),
        "Q4_K rows of 128 elements are not whole super-blocks"
    );
    let w = weight_rows(GgmlType::Q4_0, 8, 2, 5);
    assert!(
        PackedMatrix::pack(GgmlType::Q4_0, 8, 64, &w[1..]).is_err(),
        "short bytes"
    );
}

#[test]
fn scalar_packed_reference_equals_vec_dot_exactly() {
    for ty in TYPES {
        for nb in BLOCK_COUNTS {
            let w = weight_rows(ty, GROUP_ROWS, nb, 10 + nb as u64);
            let p = PackedMatrix::pack(ty, GROUP_ROWS, nb * ty.block_elems(), &w).unwrap();
            let rb = nb * ty.block_bytes();
            for (name, a, _) in activations(ty, nb, 20 + nb as u64) {
                let got = packed::packed_gemv_ref(ty, p.group(0), &a);
                for (r, &g) in got.iter().enumerate() {
                    let want = vec_dot(ty, row(&w, r, rb), &a).unwrap();
                    assert_eq!(g.to_bits(), want.to_bits(), "{ty} nb={nb} {name} row {r}");
                }
            }
        }
    }
}

#[test]
fn every_level_packed_kernels_match_the_reference() {
    let mut levels = 0;
    for isa in Isa::ALL {
        let Some(ks) = kernels_for(isa) else {
            println!("{}: not available on this CPU, skipped", isa.name());
            continue;
        };
        for ty in TYPES {
            let (Some(gemv), Some(tile)) = (ks.packed_gemv(ty), ks.packed_tile(ty)) else {
                continue;
            };
            println!("{}: packed {ty} gemv and tile checked", isa.name());
            levels += 1;
            for nb in BLOCK_COUNTS {
                let w = weight_rows(ty, GROUP_ROWS, nb, 30 + nb as u64);
                let p = PackedMatrix::pack(ty, GROUP_ROWS, nb * ty.block_elems(), &w).unwrap();
                let rb = nb * ty.block_bytes();
                let acts = activations(ty, nb, 40 + nb as u64);
                let check = |what: &str, name: &str, a: &[u8], got: &[f32; GROUP_ROWS]| {
                    for (r, &g) in got.iter().enumerate() {
                        let wr = row(&w, r, rb);
                        let want = vec_dot(ty, wr, a).unwrap() as f64;
                        let tol = 1e-6 * abs_mass(ty, wr, a) + 1e-30;
                        assert!(
                            (g as f64 - want).abs() <= tol,
                            "{} {ty} {what} nb={nb} {name} row {r}: {g} vs {want} (tol {tol:e})",
                            isa.name()
                        );
                    }
                };
                for (name, a, aux) in &acts {
                    check("gemv", name, a, &gemv(p.group(0), a, aux));
                }
                // Tiles over different edge cases at once (rotated so each case sits in every
                // token slot).
                for shift in 0..acts.len() {
                    let pick: [usize; TILE_TOKENS] =
                        std::array::from_fn(|t| (shift + t) % acts.len());
                    let res = tile(
                        p.group(0),
                        pick.map(|i| acts[i].1.as_slice()),
                        pick.map(|i| acts[i].2.as_slice()),
                    );
                    for (t, &i) in pick.iter().enumerate() {
                        check("tile", acts[i].0, &acts[i].1, &res[t]);
                    }
                }
            }
        }
    }
    assert!(
        levels >= 2,
        "the scalar level always has packed kernels for Q4_0 and Q8_0"
    );
}

#[test]
fn drivers_give_the_same_results_packed_and_unpacked() {
    let (rows, nb) = (40, 9);
    for isa in Isa::ALL {
        let Some(ks) = kernels_for(isa) else { continue };
        for ty in TYPES {
            let w = weight_rows(ty, rows, nb, 50);
            let cols = nb * ty.block_elems();
            let p = PackedMatrix::pack(ty, rows, cols, &w).unwrap();
            let view = |packed| WeightView {
                ty,
                rows,
                cols,
                bytes: &w,
                packed,
            };
            // 1 token (decode); prefill with whole tiles, a partial tile, and more than one
            // token chunk.
            for n_tok in [1, 7, TILE_TOKENS + 3, 70] {
                let mut r = rng(60 + n_tok as u64);
                let x: Vec<f32> = (0..n_tok * cols).map(|_| common::normal(&mut r)).collect();
                let q = QuantizedRows::quantize(ks, ty.vec_dot_type(), &x, cols).unwrap();
                let mut plain = vec![0.0; n_tok * rows];
                let mut fast = vec![0.0; n_tok * rows];
                matmul(ks, &view(None), &q, &mut plain).unwrap();
                matmul(ks, &view(Some(&p)), &q, &mut fast).unwrap();
                for (i, (a, b)) in plain.iter().zip(&fast).enumerate() {
                    let (t, rr) = (i / rows, i % rows);
                    let tol = 2e-6 * abs_mass(ty, row(&w, rr, nb * ty.block_bytes()), q.row(t));
                    assert!(
                        ((a - b) as f64).abs() <= tol + 1e-30,
                        "{} {ty} n_tok={n_tok} out[{t}][{rr}]: {a} vs {b}",
                        isa.name()
                    );
                }
            }
        }
    }
}

/// The packed kernels each SIMD level offers at least (the checks above skip a type a level
/// lacks, so a level losing one would go unnoticed).
#[test]
fn simd_levels_have_their_packed_kernels() {
    use GgmlType::{Q4_0, Q4_1, Q4_K, Q5_0, Q5_K, Q6_K, Q8_0};
    let expected: [(Isa, &[GgmlType]); 3] = [
        (Isa::Avx2, &[Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K]),
        (Isa::AvxVnni, &[Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K]),
        (Isa::Avx512, &[Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K]),
    ];
    for (isa, types) in expected {
        let Some(ks) = kernels_for(isa) else {
            println!("{}: not available on this CPU, skipped", isa.name());
            continue;
        };
        for &ty in types {
            assert!(
                ks.packed_gemv(ty).is_some() && ks.packed_tile(ty).is_some(),
                "{}: no packed {ty} kernels",
                isa.name()
            );
        }
    }
}
