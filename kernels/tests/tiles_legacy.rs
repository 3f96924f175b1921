//! The legacy-format 4×4 GEMM tiles and four-row matvec kernels (`simd/avx2_legacy_tiles.rs`,
//! `simd/avx512_legacy_tiles.rs`) against the scalar reference `vec_dot`.
//!
//! Bound. Integer block sums are exact on both sides and d_w·d_a is the same f32 product; only
//! the rounding of the per-lane scaling and the summation order differ. With
//! `A = Σ_blocks (|d_w·d_a|·Σ|q_w·q_a| + |m_w·s_a|)` (q_w offset-corrected: Q4_0 q−8, Q5_0 q−16)
//! we require `|simd − scalar| ≤ 1e-6·A` (+1e-30 so all-zero rows compare exactly).

use half::f16;
use lumen_kernels::{kernels_for, quantize_row, vec_dot, GgmlType, Isa, KernelSet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TYPES: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
];
const BLOCK_COUNTS: [usize; 7] = [1, 2, 3, 7, 8, 18, 48];

fn simd_sets() -> Vec<&'static KernelSet> {
    let mut v = Vec::new();
    for isa in [Isa::Avx2, Isa::Avx512] {
        match kernels_for(isa) {
            Some(ks) => v.push(ks),
            None => println!("{}: not available on this CPU, skipped", isa.name()),
        }
    }
    v
}

fn block_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_0 => 18,
        GgmlType::Q4_1 => 20,
        GgmlType::Q5_0 => 22,
        GgmlType::Q5_1 => 24,
        GgmlType::Q8_0 => 34,
        _ => unreachable!(),
    }
}

fn act_type(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q8_1,
        _ => GgmlType::Q8_0,
    }
}

fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Finite f16 with magnitude in [1e-3, 1], random sign.
fn scale(rng: &mut StdRng) -> [u8; 2] {
    let mag = rng.gen_range(1e-3f32.ln()..0.0).exp();
    f16::from_f32(if rng.gen_bool(0.3) { -mag } else { mag }).to_le_bytes()
}

/// Weight block quants (offset-corrected) and (d, m).
fn weight_block(ty: GgmlType, b: &[u8]) -> ([i32; 32], f32, f32) {
    let mut q = [0i32; 32];
    let d = f16_at(b, 0);
    let (m, qh_off, qs_off) = match ty {
        GgmlType::Q4_0 => (0.0, None, 2),
        GgmlType::Q4_1 => (f16_at(b, 2), None, 4),
        GgmlType::Q5_0 => (0.0, Some(2), 6),
        GgmlType::Q5_1 => (f16_at(b, 2), Some(4), 8),
        GgmlType::Q8_0 => {
            for j in 0..32 {
                q[j] = b[2 + j] as i8 as i32;
            }
            return (q, d, 0.0);
        }
        _ => unreachable!(),
    };
    let qh = qh_off.map_or(0u32, |o| {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    });
    for j in 0..32 {
        let nib = if j < 16 {
            b[qs_off + j] & 15
        } else {
            b[qs_off + j - 16] >> 4
        } as i32;
        q[j] = nib | (((qh >> j) & 1) as i32) << 4;
        q[j] -= match ty {
            GgmlType::Q4_0 => 8,
            GgmlType::Q5_0 => 16,
            _ => 0,
        };
    }
    (q, d, m)
}

/// Σ_blocks |d_w·d_a|·Σ|q_w·q_a| + |m_w·s_a|.
fn abs_mass(ty: GgmlType, w: &[u8], a: &[u8]) -> f64 {
    let (wb, ab) = (
        block_bytes(ty),
        if act_type(ty) == GgmlType::Q8_1 {
            36
        } else {
            34
        },
    );
    let aq = if ab == 36 { 4 } else { 2 };
    let mut sum = 0.0f64;
    for (bw, ba) in w.chunks_exact(wb).zip(a.chunks_exact(ab)) {
        let (q, d, m) = weight_block(ty, bw);
        let da = f16_at(ba, 0) as f64;
        let s = if ab == 36 { f16_at(ba, 2) as f64 } else { 0.0 };
        let qa: i64 = (0..32)
            .map(|j| (q[j] as i64 * (ba[aq + j] as i8 as i64)).abs())
            .sum();
        sum += (d as f64 * da).abs() * qa as f64 + (m as f64 * s).abs();
    }
    sum
}

/// A weight row of `nb` blocks: random bytes with finite scales, plus all-0x00 and all-0xFF
/// quant blocks; for Q8_0 every other row is a quantized random f32 row.
fn weight_row(ty: GgmlType, nb: usize, rng: &mut StdRng) -> Vec<u8> {
    if ty == GgmlType::Q8_0 && rng.gen_bool(0.5) {
        let x: Vec<f32> = (0..nb * 32).map(|_| normal(rng) * 0.1).collect();
        let mut out = vec![0u8; nb * 34];
        quantize_row(GgmlType::Q8_0, &x, &mut out).unwrap();
        return out;
    }
    let bs = block_bytes(ty);
    let n_scales = if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        2
    } else {
        1
    };
    let mut row = Vec::with_capacity(nb * bs);
    for b in 0..nb {
        let mut blk: Vec<u8> = match (b + rng.gen_range(0..3)) % 5 {
            0 => vec![0x00; bs],
            1 => vec![0xFF; bs],
            _ => (0..bs).map(|_| rng.gen()).collect(),
        };
        for k in 0..n_scales {
            blk[2 * k..2 * k + 2].copy_from_slice(&scale(rng));
        }
        row.extend_from_slice(&blk);
    }
    row
}

/// Activation rows (f32) for `nb` blocks: normal, all-zero, huge outlier, negative-only,
/// ±127 extremes (equal magnitudes per block), mixed block scales.
fn activation_cases(nb: usize, rng: &mut StdRng) -> Vec<(&'static str, Vec<f32>)> {
    let n = nb * 32;
    let normal_v: Vec<f32> = (0..n).map(|_| normal(rng)).collect();
    let mut outlier: Vec<f32> = (0..n).map(|_| normal(rng) * 1e-2).collect();
    outlier[n / 3] = 3.0e4;
    let neg: Vec<f32> = (0..n).map(|_| -normal(rng).abs() - 0.01).collect();
    let extremes: Vec<f32> = (0..n)
        .map(|i| if rng.gen_bool(0.5) { 2.5 } else { -2.5 } * (1 + i / 32) as f32)
        .collect();
    let mixed: Vec<f32> = (0..n)
        .map(|i| normal(rng) * 10f32.powi((i / 32 % 7) as i32 - 3))
        .collect();
    vec![
        ("normal", normal_v),
        ("zero", vec![0.0; n]),
        ("outlier", outlier),
        ("negative", neg),
        ("extremes", extremes),
        ("mixed", mixed),
    ]
}

fn quantized_acts(ty: GgmlType, nb: usize, rng: &mut StdRng) -> Vec<(&'static str, Vec<u8>)> {
    let at = act_type(ty);
    let ab = if at == GgmlType::Q8_1 { 36 } else { 34 };
    activation_cases(nb, rng)
        .into_iter()
        .map(|(name, x)| {
            let mut out = vec![0u8; nb * ab];
            quantize_row(at, &x, &mut out).unwrap();
            (name, out)
        })
        .collect()
}

fn check(what: &str, ty: GgmlType, w: &[u8], a: &[u8], got: f32) -> f64 {
    let want = vec_dot(ty, w, a).unwrap();
    let tol = 1e-6 * abs_mass(ty, w, a) + 1e-30;
    let err = (got as f64 - want as f64).abs();
    assert!(
        err <= tol,
        "{what}: got {got}, scalar {want}, |diff| {err:e} > tol {tol:e}"
    );
    if tol > 0.0 {
        err / tol
    } else {
        0.0
    }
}

/// Whether level `isa` provides a 4×4 tile for `ty` (AVX2 leaves Q4_1 / Q5_1 to `row_dot4`,
/// which measured faster there).
fn expects_tile(isa: Isa, ty: GgmlType) -> bool {
    !(isa == Isa::Avx2 && matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1))
}

/// Whether level `isa` provides a four-row kernel for `ty` (AVX2 leaves Q5_1 to `row_dot`).
fn expects_rows4(isa: Isa, ty: GgmlType) -> bool {
    !(isa == Isa::Avx2 && ty == GgmlType::Q5_1)
}

#[test]
fn sets_provide_tiles_and_rows4() {
    for ks in simd_sets() {
        for ty in TYPES {
            assert_eq!(
                ks.tile4x4(ty).is_some(),
                expects_tile(ks.isa, ty),
                "{}: tile4x4 for {ty:?}",
                ks.isa.name()
            );
            assert_eq!(
                ks.rows4(ty).is_some(),
                expects_rows4(ks.isa, ty),
                "{}: rows4 for {ty:?}",
                ks.isa.name()
            );
        }
    }
}

#[test]
fn tiles_and_rows4_match_scalar() {
    for ks in simd_sets() {
        let mut worst = 0.0f64;
        for ty in TYPES {
            let (tile, rows4) = (ks.tile4x4(ty), ks.rows4(ty));
            for (i, &nb) in BLOCK_COUNTS.iter().enumerate() {
                let mut rng = StdRng::seed_from_u64(0x711e_5000 + 97 * i as u64 + ty as u64);
                for rep in 0..3 {
                    let w: Vec<Vec<u8>> = (0..4).map(|_| weight_row(ty, nb, &mut rng)).collect();
                    let acts = quantized_acts(ty, nb, &mut rng);
                    let wr = [&w[0][..], &w[1][..], &w[2][..], &w[3][..]];
                    // Tiles over rotating groups of 4 activation cases.
                    let starts = if tile.is_some() { 0..acts.len() } else { 0..0 };
                    for start in starts {
                        let tile = tile.expect("only iterated when provided");
                        let idx: [usize; 4] = std::array::from_fn(|k| (start + k) % acts.len());
                        let ar = idx.map(|k| &acts[k].1[..]);
                        let out = tile(wr, ar);
                        for r in 0..4 {
                            for t in 0..4 {
                                let what = format!(
                                    "{} {ty:?} tile nb={nb} rep={rep} r={r} t={t} ({})",
                                    ks.isa.name(),
                                    acts[idx[t]].0
                                );
                                worst = worst.max(check(&what, ty, wr[r], ar[t], out[r][t]));
                            }
                        }
                    }
                    for (name, a) in rows4.map_or(&acts[..0], |_| &acts[..]) {
                        let out = rows4.expect("only iterated when provided")(wr, a);
                        for r in 0..4 {
                            let what = format!(
                                "{} {ty:?} rows4 nb={nb} rep={rep} r={r} ({name})",
                                ks.isa.name()
                            );
                            worst = worst.max(check(&what, ty, wr[r], a, out[r]));
                        }
                    }
                }
            }
        }
        println!("{}: worst |diff|/tol = {worst:.3}", ks.isa.name());
    }
}

/// Activation blocks as raw bytes (finite scale, every i8 incl. −128) for the formats whose
/// kernels accept any activation byte: all but Q8_0 on AVX2 (its sign trick needs no −128, the
/// same contract as `avx2_legacy`; the quantizers never emit −128 for nonzero d).
#[test]
fn raw_activation_bytes() {
    for ks in simd_sets() {
        for ty in TYPES {
            if ks.isa == Isa::Avx2 && ty == GgmlType::Q8_0 {
                continue;
            }
            let ab = if act_type(ty) == GgmlType::Q8_1 {
                36
            } else {
                34
            };
            let mut rng = StdRng::seed_from_u64(0x5eed + ty as u64);
            for nb in [1usize, 5, 9, 17] {
                let w: Vec<Vec<u8>> = (0..4).map(|_| weight_row(ty, nb, &mut rng)).collect();
                let wr = [&w[0][..], &w[1][..], &w[2][..], &w[3][..]];
                let acts: Vec<Vec<u8>> = (0..4)
                    .map(|k| {
                        let mut a = Vec::with_capacity(nb * ab);
                        for _ in 0..nb {
                            a.extend_from_slice(&scale(&mut rng));
                            if ab == 36 {
                                a.extend_from_slice(&scale(&mut rng));
                            }
                            // Token 0: all −128; others random bytes.
                            a.extend((0..32).map(|_| if k == 0 { 0x80 } else { rng.gen::<u8>() }));
                        }
                        a
                    })
                    .collect();
                let ar = [&acts[0][..], &acts[1][..], &acts[2][..], &acts[3][..]];
                if let Some(tile) = ks.tile4x4(ty) {
                    let out = tile(wr, ar);
                    for r in 0..4 {
                        for t in 0..4 {
                            let what =
                                format!("{} {ty:?} raw tile nb={nb} r={r} t={t}", ks.isa.name());
                            check(&what, ty, wr[r], ar[t], out[r][t]);
                        }
                    }
                }
                let rows4_cases = if ks.rows4(ty).is_some() {
                    &ar[..]
                } else {
                    &ar[..0]
                };
                for (t, a) in rows4_cases.iter().enumerate() {
                    let out = ks.rows4(ty).expect("only iterated when provided")(wr, a);
                    for r in 0..4 {
                        let what =
                            format!("{} {ty:?} raw rows4 nb={nb} r={r} t={t}", ks.isa.name());
                        check(&what, ty, wr[r], a, out[r]);
                    }
                }
            }
        }
    }
}

/// G MAC/s of the tile vs 4×row_dot4 (and rows4 vs row_dot), single thread:
/// 64 weight rows × 64 tokens of 2048 elements (contiguous matrices).
#[test]
#[ignore]
fn tile_speed() {
    const ROWS: usize = 64;
    const TOKS: usize = 64;
    const N: usize = 2048;
    let nb = N / 32;
    for ks in simd_sets() {
        for ty in TYPES {
            let (tile, rows4) = (ks.tile4x4(ty), ks.rows4(ty));
            let dot4 = ks.row_dot4(ty).unwrap();
            let dot = ks.row_dot(ty).unwrap();
            let mut rng = StdRng::seed_from_u64(7);
            // Contiguous matrices, as the drivers see them.
            let wbuf: Vec<u8> = (0..ROWS)
                .flat_map(|_| weight_row(ty, nb, &mut rng))
                .collect();
            let w: Vec<&[u8]> = wbuf.chunks_exact(nb * block_bytes(ty)).collect();
            let at = act_type(ty);
            let ab = if at == GgmlType::Q8_1 { 36 } else { 34 };
            let abuf: Vec<u8> = (0..TOKS)
                .flat_map(|_| {
                    let x: Vec<f32> = (0..N).map(|_| normal(&mut rng)).collect();
                    let mut out = vec![0u8; nb * ab];
                    quantize_row(at, &x, &mut out).unwrap();
                    out
                })
                .collect();
            let a: Vec<&[u8]> = abuf.chunks_exact(nb * ab).collect();
            let macs = (ROWS * TOKS * N) as f64;
            let time = |f: &mut dyn FnMut() -> f32| {
                let mut best = f64::MAX;
                let mut sink = 0.0f32;
                for _ in 0..15 {
                    let t0 = std::time::Instant::now();
                    sink += f();
                    best = best.min(t0.elapsed().as_secs_f64());
                }
                std::hint::black_box(sink);
                macs / best / 1e9
            };
            let g_tile = tile.map(|tile| {
                time(&mut || {
                    let mut s = 0.0;
                    for r in (0..ROWS).step_by(4) {
                        let wr = [w[r], w[r + 1], w[r + 2], w[r + 3]];
                        for t in (0..TOKS).step_by(4) {
                            let o = tile(wr, [a[t], a[t + 1], a[t + 2], a[t + 3]]);
                            s += o[0][0] + o[3][3];
                        }
                    }
                    s
                })
            });
            let g_dot4 = time(&mut || {
                let mut s = 0.0;
                for &w_r in &w[..ROWS] {
                    for t in (0..TOKS).step_by(4) {
                        let o = dot4(w_r, [a[t], a[t + 1], a[t + 2], a[t + 3]]);
                        s += o[0] + o[3];
                    }
                }
                s
            });
            let mv_macs = (ROWS * N) as f64;
            let time_mv = |f: &mut dyn FnMut() -> f32| {
                let mut best = f64::MAX;
                let mut sink = 0.0f32;
                for _ in 0..200 {
                    let t0 = std::time::Instant::now();
                    sink += f();
                    best = best.min(t0.elapsed().as_secs_f64());
                }
                std::hint::black_box(sink);
                mv_macs / best / 1e9
            };
            let g_rows4 = rows4.map(|rows4| {
                time_mv(&mut || {
                    let mut s = 0.0;
                    for r in (0..ROWS).step_by(4) {
                        let o = rows4([w[r], w[r + 1], w[r + 2], w[r + 3]], a[0]);
                        s += o[0] + o[3];
                    }
                    s
                })
            });
            let g_dot = time_mv(&mut || {
                let mut s = 0.0;
                for &w_r in &w[..ROWS] {
                    s += dot(w_r, a[0]);
                }
                s
            });
            let tile_txt = match g_tile {
                Some(g) => format!(
                    "tile {g:6.1} G MAC/s vs row_dot4 {g_dot4:6.1} ({:.2}x)",
                    g / g_dot4
                ),
                None => format!("no tile (row_dot4 {g_dot4:6.1} G MAC/s)"),
            };
            let rows4_txt = match g_rows4 {
                Some(g) => format!("rows4 {g:6.1} vs row_dot {g_dot:6.1} ({:.2}x)", g / g_dot),
                None => format!("no rows4 (row_dot {g_dot:6.1})"),
            };
            println!("{:6} {:?}: {tile_txt} | {rows4_txt}", ks.isa.name(), ty);
        }
    }
}
