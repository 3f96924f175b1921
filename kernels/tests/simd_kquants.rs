//! The x86 K-quant kernels (simd/avx2_kquants.rs, simd/avx512_kquants.rs) against the scalar
//! reference set.
//!
//! * Q8_K quantizer: byte-identical to the scalar reference.
//! * row_dot: |simd − scalar| ≤ 1e-6 · Σ|terms| (+1e-30), where Σ|terms| = Σ_i (|d·sc·q_i| +
//!   |dmin·m|)·|a_i| computed from the scalar dequantizers (the d-part with dmin zeroed and the
//!   min-part with d zeroed). The integer super-block sums are exact in both, so only the f32
//!   scaling/summation order differs, whose error is a few ulps of Σ|terms|.
//! * row_dot4: each of the four results equals row_dot of that activation row within the same
//!   bound.

use lumen_kernels::{kernels_for, GgmlType, Isa, KernelSet};
use rand::{Rng, SeedableRng};

mod common;

use common::kquant::{abs_terms, activations, isas, weight_row};
use common::TestRng;

/// Share of negative d/dmin among the generated weight scales.
const NEG_SCALE_SHARE: f64 = 0.2;

const Q8K_BYTES: usize = 292;
const KTYPES: [GgmlType; 5] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn quantize_q8k(set: &KernelSet, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; x.len() / 256 * Q8K_BYTES];
    (set.quantize(GgmlType::Q8_K).unwrap())(x, &mut out);
    out
}

fn scalar() -> &'static KernelSet {
    kernels_for(Isa::Scalar).unwrap()
}

fn is_simd<T: Copy + PartialEq>(simd: Option<T>, scalar: Option<T>) -> bool {
    simd.is_some() && simd != scalar
}

#[test]
fn kquant_kernels_are_provided() {
    let s = scalar();
    for (isa, set) in isas() {
        let avx2 = kernels_for(Isa::Avx2).unwrap();
        for ty in KTYPES {
            if isa == Isa::Avx512 {
                let own =
                    set.row_dot(ty).map(|f| f as usize) != avx2.row_dot(ty).map(|f| f as usize);
                let own4 =
                    set.row_dot4(ty).map(|f| f as usize) != avx2.row_dot4(ty).map(|f| f as usize);
                println!(
                    "Avx512 {ty}: own row_dot={own} own row_dot4={own4} (else the AVX2 kernel)"
                );
            }
            let d = is_simd(
                set.row_dot(ty).map(|f| f as usize),
                s.row_dot(ty).map(|f| f as usize),
            );
            let d4 = is_simd(
                set.row_dot4(ty).map(|f| f as usize),
                s.row_dot4(ty).map(|f| f as usize),
            );
            println!("{isa:?} {ty}: row_dot simd={d} row_dot4 simd={d4}");
            if isa == Isa::Avx2 {
                assert!(d && d4, "{isa:?} {ty}: no SIMD kernel");
            }
        }
        let q = set.quantize(GgmlType::Q8_K).map(|f| f as usize);
        let qs = is_simd(q, s.quantize(GgmlType::Q8_K).map(|f| f as usize));
        println!("{isa:?} Q8_K quantize simd={qs}");
        if isa == Isa::Avx2 {
            assert!(qs);
        }
    }
}

#[test]
fn q8k_quantizer_byte_identical() {
    let mut rng = TestRng::seed_from_u64(7);
    let mut inputs: Vec<Vec<f32>> = vec![];
    for nb in [1usize, 2, 3, 8] {
        for kind in 0..6 {
            inputs.push(activations(&mut rng, nb, kind));
        }
    }
    // Exact .5 ties: max = −127 gives iscale = 1, max = 127 gives iscale = −1.
    for m in [-127.0f32, 127.0] {
        let mut t: Vec<f32> = (0..256)
            .map(|i| (i as f32 - 128.0) * 0.5 + 0.5)
            .map(|v| v.clamp(-126.5, 126.5))
            .collect();
        t[17] = m;
        inputs.push(t);
        let mut t2: Vec<f32> = (0..256).map(|i| ((i % 64) as f32 - 32.0) + 0.5).collect();
        t2[200] = m;
        inputs.push(t2);
    }
    // Equal magnitudes of both signs: the first one wins.
    let mut t: Vec<f32> = (0..256).map(|i| (i as f32).sin()).collect();
    t[5] = 3.0;
    t[9] = -3.0;
    inputs.push(t.clone());
    t[5] = -3.0;
    t[9] = 3.0;
    inputs.push(t);
    inputs.push(vec![0.0; 512]);
    inputs.push(vec![-0.0; 256]);
    let mut sub: Vec<f32> = (0..256).map(|i| f32::from_bits(i as u32 + 1)).collect(); // subnormals
    sub[3] = -f32::from_bits(7);
    inputs.push(sub);
    // Non-finite inputs (handled by the scalar fallback) next to a finite block.
    let mut nf = activations(&mut rng, 3, 0);
    nf[10] = f32::NAN;
    nf[256 + 3] = f32::INFINITY;
    nf[256 + 9] = f32::NEG_INFINITY;
    inputs.push(nf);
    let mut nz = vec![0f32; 512]; // NaN among zeros, NaN with a finite max in the second block
    nz[77] = f32::NAN;
    nz[256 + 200] = f32::NAN;
    nz[256 + 3] = -2.5;
    inputs.push(nz);

    let s = scalar();
    for (isa, set) in isas() {
        for (k, x) in inputs.iter().enumerate() {
            let want = quantize_q8k(s, x);
            let got = quantize_q8k(set, x);
            assert!(want == got, "{isa:?} Q8_K quantize input {k}: bytes differ");
        }
        // Random scaled inputs with many ties.
        for _ in 0..200 {
            let scale = 2f32.powi(rng.gen_range(-20..20));
            let x: Vec<f32> = (0..256)
                .map(|_| rng.gen_range(-254i32..=254) as f32 * 0.5 * scale)
                .collect();
            assert!(
                quantize_q8k(s, &x) == quantize_q8k(set, &x),
                "{isa:?} Q8_K quantize tie input"
            );
        }
        println!(
            "{isa:?}: Q8_K quantizer byte-identical on {} inputs",
            inputs.len() + 200
        );
    }
}

fn check_close(what: &str, got: f32, want: f32, terms: f64) {
    let tol = 1e-6 * terms + 1e-30;
    let err = (got as f64 - want as f64).abs();
    assert!(
        err <= tol,
        "{what}: got {got}, want {want}, |err| {err:e} > tol {tol:e}"
    );
}

#[test]
fn kquant_row_dot_matches_scalar() {
    let s = scalar();
    let mut rng = TestRng::seed_from_u64(11);
    for (isa, set) in isas() {
        for ty in KTYPES {
            let (sd, simd_dot, simd_dot4) = (
                s.row_dot(ty).unwrap(),
                set.row_dot(ty).unwrap(),
                set.row_dot4(ty).unwrap(),
            );
            let mut checked = 0;
            let mut max_rel = 0f64;
            for nb in [1usize, 2, 3, 8] {
                for fill in [None, None, None, Some(0x00u8), Some(0xFF)] {
                    let w = weight_row(&mut rng, ty, nb, fill, NEG_SCALE_SHARE);
                    for kind in 0..6 {
                        let acts: Vec<Vec<u8>> = (0..4)
                            .map(|r| quantize_q8k(s, &activations(&mut rng, nb, kind + r)))
                            .collect();
                        let four = simd_dot4(&w, [&acts[0], &acts[1], &acts[2], &acts[3]]);
                        for (r, a) in acts.iter().enumerate() {
                            let terms = abs_terms(ty, &w, a);
                            let want = sd(&w, a);
                            let got = simd_dot(&w, a);
                            let what =
                                format!("{isa:?} {ty} nb={nb} fill={fill:?} kind={kind} row={r}");
                            check_close(&format!("{what} row_dot"), got, want, terms);
                            check_close(
                                &format!("{what} row_dot4 vs row_dot"),
                                four[r],
                                got,
                                terms,
                            );
                            if terms > 0.0 {
                                max_rel = max_rel.max((got as f64 - want as f64).abs() / terms);
                            }
                            checked += 1;
                        }
                    }
                }
            }
            println!("{isa:?} {ty}: {checked} rows match scalar, max |err|/Σ|terms| = {max_rel:e}");
        }
    }
}

/// Best-of-7 mean ns per call of `f` over 3000 calls.
fn time_ns(mut f: impl FnMut()) -> f64 {
    let iters = 3000;
    (0..7)
        .map(|_| {
            let t = std::time::Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Ad-hoc timing (2048-element rows): `cargo test --release --test simd_kquants -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_2048() {
    use std::hint::black_box;
    let mut rng = TestRng::seed_from_u64(3);
    let nb = 8;
    let s = scalar();
    let x = activations(&mut rng, nb, 0);
    let a = quantize_q8k(s, &x);
    let mut sets = vec![(Isa::Scalar, s)];
    sets.extend(isas());
    let ws: Vec<Vec<u8>> = KTYPES
        .iter()
        .map(|&ty| weight_row(&mut rng, ty, nb, None, NEG_SCALE_SHARE))
        .collect();
    for (isa, set) in &sets {
        let q = set.quantize(GgmlType::Q8_K).unwrap();
        let mut out = vec![0u8; nb * Q8K_BYTES];
        let tq = time_ns(|| q(black_box(&x), black_box(&mut out)));
        println!("{isa:?} Q8_K quantize: {tq:.0} ns");
        for (ty, w) in KTYPES.iter().zip(&ws) {
            let f = set.row_dot(*ty).unwrap();
            let f4 = set.row_dot4(*ty).unwrap();
            let t1 = time_ns(|| {
                black_box(f(black_box(w), black_box(&a)));
            });
            let t4 = time_ns(|| {
                black_box(f4(black_box(w), black_box([&a, &a, &a, &a])));
            });
            println!(
                "{isa:?} {ty}: row_dot {t1:.0} ns, row_dot4 {t4:.0} ns ({:.0} ns/row)",
                t4 / 4.0
            );
        }
    }
}
