//! The AVX2 / AVX-512 legacy-format and float kernels (`simd/avx2_legacy.rs`,
//! `simd/avx512_legacy.rs`) against the scalar reference set.
//!
//! Bounds. Integer block sums are exact in both implementations; only the f32 scaling and the
//! summation order differ. For a quantized row of `nb` blocks with
//! `A = Σ_blocks (|d_w·d_a|·Σ|q_w·q_a| + |m_w·s_a|)` we require
//! `|simd − scalar| ≤ (2·nb + 16)·2⁻²⁴·A` (a worst-case bound on the rounding of two different
//! summation orders of ≤ 8·nb + nb terms each, where the SIMD side sums per-lane partial products
//! per block). For float rows of `n` elements with `A = Σ|w_i·a_i|`:
//! `|simd − scalar| ≤ (n/8 + 16)·2⁻²⁴·A` (f32 lane accumulators vs the reference's f64 sum).
//! Quantizers must be byte-identical to the scalar ones (finite inputs; see `quantizer_edge_cases`
//! for infinities).

mod common;

use common::{activation_cases, normal, random_weight_row, rng, TestRng};
use half::f16;
use lumen_kernels::{kernels_for, GgmlType, Isa, KernelSet};
use rand::Rng;

const WEIGHT_TYPES: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];
const ACT_TYPES: [GgmlType; 5] = [
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];
const BLOCK_COUNTS: [usize; 7] = [1, 2, 3, 7, 8, 18, 64];
/// Extra float row lengths that are not multiples of 8/16/32.
const FLOAT_LENS: [usize; 10] = [1, 5, 8, 13, 33, 48, 61, 100, 577, 2048];

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

fn scalar() -> &'static KernelSet {
    kernels_for(Isa::Scalar).unwrap()
}

fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// Weight block → (d, m, element values with the offset applied), from KERNELS.md §1 layouts.
fn decode_weight(ty: GgmlType, b: &[u8]) -> (f32, f32, [i32; 32]) {
    let mut q = [0i32; 32];
    let nib = |qs: &[u8], j: usize| -> i32 {
        if j < 16 {
            (qs[j] & 15) as i32
        } else {
            (qs[j - 16] >> 4) as i32
        }
    };
    let hbit = |qh: &[u8], j: usize| -> i32 {
        ((u32::from_le_bytes(qh[..4].try_into().unwrap()) >> j) & 1) as i32
    };
    match ty {
        GgmlType::Q4_0 => {
            for (j, v) in q.iter_mut().enumerate() {
                *v = nib(&b[2..], j) - 8;
            }
            (f16_at(b, 0), 0.0, q)
        }
        GgmlType::Q5_0 => {
            for (j, v) in q.iter_mut().enumerate() {
                *v = (nib(&b[6..], j) | hbit(&b[2..], j) << 4) - 16;
            }
            (f16_at(b, 0), 0.0, q)
        }
        GgmlType::Q8_0 => {
            for (j, v) in q.iter_mut().enumerate() {
                *v = b[2 + j] as i8 as i32;
            }
            (f16_at(b, 0), 0.0, q)
        }
        GgmlType::Q4_1 => {
            for (j, v) in q.iter_mut().enumerate() {
                *v = nib(&b[4..], j);
            }
            (f16_at(b, 0), f16_at(b, 2), q)
        }
        GgmlType::Q5_1 => {
            for (j, v) in q.iter_mut().enumerate() {
                *v = nib(&b[8..], j) | hbit(&b[4..], j) << 4;
            }
            (f16_at(b, 0), f16_at(b, 2), q)
        }
        _ => unreachable!(),
    }
}

/// Activation block (Q8_0 or Q8_1) → (d, s, q).
fn decode_act(ty: GgmlType, b: &[u8]) -> (f32, f32, [i32; 32]) {
    let (s, qoff) = match ty {
        GgmlType::Q8_0 => (0.0, 2),
        GgmlType::Q8_1 => (f16_at(b, 2), 4),
        _ => unreachable!(),
    };
    let mut q = [0i32; 32];
    for (j, v) in q.iter_mut().enumerate() {
        *v = b[qoff + j] as i8 as i32;
    }
    (f16_at(b, 0), s, q)
}

fn float_vals(ty: GgmlType, b: &[u8]) -> Vec<f32> {
    match ty {
        GgmlType::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        GgmlType::F16 => b
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        GgmlType::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => unreachable!(),
    }
}

/// The allowed |simd − scalar| for this weight row and activation row (see the module docs).
fn tolerance(ty: GgmlType, w: &[u8], a: &[u8]) -> f64 {
    let u = f64::from(f32::EPSILON) / 2.0;
    if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        let (x, y) = (float_vals(ty, w), float_vals(ty, a));
        let abs: f64 = x
            .iter()
            .zip(&y)
            .map(|(&p, &q)| (p as f64 * q as f64).abs())
            .sum();
        return (x.len() as f64 / 8.0 + 16.0) * u * abs + 1e-35;
    }
    let act = ty.vec_dot_type();
    let (wb, ab) = (ty.block_bytes(), act.block_bytes());
    let nb = w.len() / wb;
    let mut abs = 0.0f64;
    for (bw, ba) in w.chunks_exact(wb).zip(a.chunks_exact(ab)) {
        let (dw, m, qw) = decode_weight(ty, bw);
        let (da, s, qa) = decode_act(act, ba);
        let isum: i64 = qw
            .iter()
            .zip(&qa)
            .map(|(&x, &y)| (x as i64 * y as i64).abs())
            .sum();
        abs += (dw as f64 * da as f64).abs() * isum as f64 + (m as f64 * s as f64).abs();
    }
    (2.0 * nb as f64 + 16.0) * u * abs + 1e-35
}

/// Weight rows to test for `ty` with `n` elements.
fn weight_rows(ty: GgmlType, n: usize, rng: &mut TestRng) -> Vec<(&'static str, Vec<u8>)> {
    let mut rows = vec![
        ("random", random_weight_row(ty, n, rng)),
        ("random2", random_weight_row(ty, n, rng)),
    ];
    let sq = scalar();
    if ty == GgmlType::Q8_0 || ty.is_activation_format() {
        // Weights quantized from normal f32 with the scalar quantizer (Q8_0; floats).
        let x: Vec<f32> = (0..n).map(|_| normal(rng)).collect();
        let mut b = vec![0u8; ty.row_bytes(n).unwrap()];
        sq.quantize(ty).unwrap()(&x, &mut b);
        rows.push(("quantized", b));
    }
    if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        // Extreme quants: every byte 0xFF / 0x00 / 0x80 (nibbles 15 / 0; Q8_0 −1 / 0 / −128;
        // Q5 high bits all set / clear) with random nonzero scales.
        for (name, fill) in [
            ("all_ff", 0xFFu8),
            ("all_00", 0x00),
            ("all_80", 0x80),
            ("all_7f", 0x7F),
        ] {
            let mut b = random_weight_row(ty, n, rng);
            let bb = ty.block_bytes();
            let scale_bytes = match ty {
                GgmlType::Q4_1 | GgmlType::Q5_1 => 4,
                _ => 2,
            };
            for blk in b.chunks_exact_mut(bb) {
                blk[scale_bytes..].fill(fill);
                let d = f16::from_f32(rng.gen_range(0.01f32..1.0)).to_le_bytes();
                blk[..2].copy_from_slice(&d);
            }
            rows.push((name, b));
        }
    }
    rows
}

/// Activation rows (scalar-quantized into the activation type) for `n` elements.
fn act_rows(act: GgmlType, n: usize, rng: &mut TestRng) -> Vec<(&'static str, Vec<u8>)> {
    let mut cases = activation_cases(n, rng);
    // ±127 after quantization: every block's amax is hit by alternating ±amax values.
    cases.push((
        "pm127",
        (0..n)
            .map(|i| if i % 2 == 0 { 3.5 } else { -3.5 })
            .collect(),
    ));
    cases.push((
        "max_neg",
        (0..n)
            .map(|i| if i % 3 == 0 { -2.0 } else { 0.7 })
            .collect(),
    ));
    let q = scalar().quantize(act).unwrap();
    cases
        .into_iter()
        .map(|(name, x)| {
            let mut b = vec![0u8; act.row_bytes(n).unwrap()];
            q(&x, &mut b);
            (name, b)
        })
        .collect()
}

fn lengths(ty: GgmlType) -> Vec<usize> {
    let mut v: Vec<usize> = BLOCK_COUNTS.iter().map(|nb| nb * 32).collect();
    if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        v.extend(FLOAT_LENS);
    }
    v
}

#[test]
fn simd_kernels_are_installed() {
    // Guards against the comparisons below passing because the SIMD set fell back to scalar.
    let sc = scalar();
    for ks in simd_sets() {
        for ty in WEIGHT_TYPES {
            let (d, d4) = (ks.row_dot(ty).unwrap(), ks.row_dot4(ty).unwrap());
            assert_ne!(
                d as usize,
                sc.row_dot(ty).unwrap() as usize,
                "{}: {ty} row_dot is scalar",
                ks.isa.name()
            );
            assert_ne!(
                d4 as usize,
                sc.row_dot4(ty).unwrap() as usize,
                "{}: {ty} row_dot4 is scalar",
                ks.isa.name()
            );
        }
        for ty in ACT_TYPES {
            let q = ks.quantize(ty).unwrap();
            assert_ne!(
                q as usize,
                sc.quantize(ty).unwrap() as usize,
                "{}: {ty} quantize is scalar",
                ks.isa.name()
            );
        }
    }
}

#[test]
fn row_dot_and_dot4_match_scalar() {
    let sc = scalar();
    for ks in simd_sets() {
        let mut rng = rng(0x5EED_0001);
        let mut checked = 0usize;
        // Largest |simd − scalar| / tolerance seen (how close to the bound the kernels get).
        let mut worst = 0.0f64;
        for ty in WEIGHT_TYPES {
            let act = ty.vec_dot_type();
            let (sdot, vdot, vdot4) = (
                sc.row_dot(ty).unwrap(),
                ks.row_dot(ty).unwrap(),
                ks.row_dot4(ty).unwrap(),
            );
            for n in lengths(ty) {
                let acts = act_rows(act, n, &mut rng);
                for (wname, w) in weight_rows(ty, n, &mut rng) {
                    for (aname, a) in &acts {
                        let (want, got) = (sdot(&w, a), vdot(&w, a));
                        let tol = tolerance(ty, &w, a);
                        assert!(
                            ((got as f64) - (want as f64)).abs() <= tol,
                            "{} {ty} n={n} w={wname} a={aname}: simd {got} scalar {want} (tol {tol:e})",
                            ks.isa.name()
                        );
                        checked += 1;
                        worst = worst.max(((got as f64) - (want as f64)).abs() / tol);
                    }
                    // row_dot4 over rotating groups of four activation rows.
                    for start in 0..acts.len() {
                        let idx = [0, 1, 2, 3].map(|k| (start + k) % acts.len());
                        let rows = idx.map(|i| acts[i].1.as_slice());
                        let got4 = vdot4(&w, rows);
                        for k in 0..4 {
                            let a = rows[k];
                            let (one, want) = (vdot(&w, a), sdot(&w, a));
                            let tol = tolerance(ty, &w, a);
                            assert!(
                                ((got4[k] as f64) - (one as f64)).abs() <= tol
                                    && ((got4[k] as f64) - (want as f64)).abs() <= tol,
                                "{} {ty} n={n} w={wname} a={}: dot4[{k}] {} dot {one} scalar {want} (tol {tol:e})",
                                ks.isa.name(),
                                acts[idx[k]].0,
                                got4[k]
                            );
                        }
                    }
                }
            }
        }
        println!(
            "{}: {checked} row dots checked, worst |simd - scalar| = {worst:.4} x bound",
            ks.isa.name()
        );
    }
}

/// Empty rows give 0, misaligned slices give the same results, and mismatched lengths panic
/// (the safe wrappers must never read out of bounds).
#[test]
fn empty_misaligned_and_mismatched_rows() {
    let sc = scalar();
    for ks in simd_sets() {
        let mut rng = rng(0x5EED_0003);
        for ty in WEIGHT_TYPES {
            let act = ty.vec_dot_type();
            let (dot, dot4) = (ks.row_dot(ty).unwrap(), ks.row_dot4(ty).unwrap());
            assert_eq!(dot(&[], &[]), 0.0, "{} {ty} empty", ks.isa.name());
            assert_eq!(
                dot4(&[], [&[]; 4]),
                [0.0; 4],
                "{} {ty} empty dot4",
                ks.isa.name()
            );
            let n = 7 * 32;
            let w = random_weight_row(ty, n, &mut rng);
            let (_, a) = act_rows(act, n, &mut rng).swap_remove(0);
            // Copies starting at an odd address.
            let mut wbuf = vec![0u8; w.len() + 1];
            wbuf[1..].copy_from_slice(&w);
            let mut abuf = vec![0u8; a.len() + 3];
            abuf[3..].copy_from_slice(&a);
            let (wm, am) = (&wbuf[1..], &abuf[3..]);
            assert_eq!(
                dot(wm, am).to_bits(),
                dot(&w, &a).to_bits(),
                "{} {ty} misaligned",
                ks.isa.name()
            );
            assert_eq!(
                dot4(wm, [am; 4]),
                dot4(&w, [&a; 4]),
                "{} {ty} misaligned dot4",
                ks.isa.name()
            );
            let want = sc.row_dot(ty).unwrap()(&w, &a);
            assert!(((dot(wm, am) - want) as f64).abs() <= tolerance(ty, &w, &a));
            // One activation block (element) short: must panic, not read past the end.
            let short = &a[..a.len() - act.block_bytes()];
            let r = std::panic::catch_unwind(|| dot(&w, short));
            assert!(
                r.is_err(),
                "{} {ty}: short activation row accepted",
                ks.isa.name()
            );
            let r = std::panic::catch_unwind(|| dot4(&w, [&a, &a, short, &a]));
            assert!(
                r.is_err(),
                "{} {ty}: short activation row accepted by dot4",
                ks.isa.name()
            );
        }
        for ty in ACT_TYPES {
            let q = ks.quantize(ty).unwrap();
            let x = vec![1.0f32; 64];
            let mut out = vec![0u8; ty.row_bytes(64).unwrap() - 1];
            let r = std::panic::catch_unwind(move || q(&x, &mut out));
            assert!(
                r.is_err(),
                "{} quantize {ty}: short output accepted",
                ks.isa.name()
            );
        }
    }
}

/// Inputs for the quantizer comparison, `n` a multiple of 32.
fn quant_inputs(n: usize, rng: &mut TestRng) -> Vec<(&'static str, Vec<f32>)> {
    let mut cases = activation_cases(n, rng);
    // Exact ties: amax 127 gives d = 1, id = 1, so x.5 values are exact ties of x·id.
    cases.push((
        "exact_ties",
        (0..n)
            .map(|i| {
                if i % 32 == 0 {
                    127.0
                } else {
                    ((i % 32) as f32 - 16.0) * 7.0 + 0.5 * (1 - 2 * (i as i32 % 2)) as f32
                }
            })
            .collect(),
    ));
    // Just below / above the ties (the floor(|v| + 0.5) trap) and huge/tiny magnitudes.
    cases.push((
        "near_ties",
        (0..n)
            .map(|i| match i % 32 {
                0 => -127.0,
                k if k % 3 == 0 => 0.49999997,
                k if k % 3 == 1 => -(k as f32 + 0.49999997),
                k => f32::from_bits((k as f32 + 0.5).to_bits() + 1),
            })
            .collect(),
    ));
    cases.push(("huge", (0..n).map(|_| normal(rng) * 1e30).collect()));
    cases.push(("tiny", (0..n).map(|_| normal(rng) * 1e-38).collect()));
    cases.push((
        "uniform",
        (0..n).map(|_| rng.gen_range(-1000.0f32..1000.0)).collect(),
    ));
    cases.push((
        "random_bits",
        (0..n)
            .map(|_| loop {
                let v = f32::from_bits(rng.gen());
                if v.is_finite() {
                    break v;
                }
            })
            .collect(),
    ));
    cases
}

#[test]
fn quantizers_match_scalar_bytes() {
    let sc = scalar();
    for ks in simd_sets() {
        let mut rng = rng(0x5EED_0002);
        for ty in ACT_TYPES {
            let (sq, vq) = (sc.quantize(ty).unwrap(), ks.quantize(ty).unwrap());
            for n in lengths(ty) {
                for (name, x) in quant_inputs(n.div_ceil(32) * 32, &mut rng) {
                    let x = &x[..n];
                    let bytes = ty.row_bytes(n).unwrap();
                    let (mut want, mut got) = (vec![0u8; bytes], vec![0xAAu8; bytes]);
                    sq(x, &mut want);
                    vq(x, &mut got);
                    if let Some(pos) = want.iter().zip(&got).position(|(a, b)| a != b) {
                        panic!(
                            "{} quantize {ty} n={n} case={name}: first difference at byte {pos} (block {}): scalar {:#04x} simd {:#04x}",
                            ks.isa.name(),
                            pos / ty.block_bytes(),
                            want[pos],
                            got[pos]
                        );
                    }
                }
            }
        }
    }
}

/// Non-finite inputs: ±inf and NaN elements. Q8_0: byte-identical (inf blocks: d = inf, q = 0;
/// NaN elements quantize to 0). F16/BF16: identical bits. The Q8_x `amax` with a NaN element and
/// Q8_1's `s` of an inf block (NaN) may differ in NaN payload / NaN-vs-value and are not
/// checked.
#[test]
fn quantizer_edge_cases() {
    let sc = scalar();
    for ks in simd_sets() {
        let mut x: Vec<f32> = (0..64).map(|i| i as f32 - 30.0).collect();
        x[3] = f32::INFINITY;
        x[40] = f32::NEG_INFINITY;
        for ty in [GgmlType::Q8_0, GgmlType::F16, GgmlType::BF16, GgmlType::F32] {
            let bytes = ty.row_bytes(64).unwrap();
            let (mut want, mut got) = (vec![0u8; bytes], vec![0u8; bytes]);
            sc.quantize(ty).unwrap()(&x, &mut want);
            ks.quantize(ty).unwrap()(&x, &mut got);
            assert_eq!(want, got, "{} quantize {ty} with infinities", ks.isa.name());
        }
        let mut y: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin() * 70000.0).collect();
        y[5] = f32::NAN;
        y[6] = -f32::NAN;
        y[7] = 65519.0;
        y[8] = 65520.0;
        y[9] = 3.0e-8;
        y[10] = f32::from_bits(0x7f7f_ffff);
        for ty in [GgmlType::F16, GgmlType::BF16] {
            let bytes = ty.row_bytes(64).unwrap();
            let (mut want, mut got) = (vec![0u8; bytes], vec![0u8; bytes]);
            sc.quantize(ty).unwrap()(&y, &mut want);
            ks.quantize(ty).unwrap()(&y, &mut got);
            assert_eq!(
                want,
                got,
                "{} quantize {ty} with NaN / overflow / subnormal",
                ks.isa.name()
            );
        }
    }
}

/// Ad-hoc timing (run with `--ignored --nocapture`): ns per call, 576 and 2048 elements.
#[test]
#[ignore]
fn time_row_dots() {
    use std::time::Instant;
    let mut rng = rng(7);
    let mut sets = vec![scalar()];
    sets.extend(simd_sets());
    for ty in WEIGHT_TYPES {
        for n in [576usize, 2048] {
            let act = ty.vec_dot_type();
            let w = random_weight_row(ty, n, &mut rng);
            let x: Vec<f32> = (0..n).map(|_| normal(&mut rng)).collect();
            let mut a = vec![0u8; act.row_bytes(n).unwrap()];
            scalar().quantize(act).unwrap()(&x, &mut a);
            let mut line = format!("{ty:>5} n={n:>4}:");
            for ks in &sets {
                let f = ks.row_dot(ty).unwrap();
                let f4 = ks.row_dot4(ty).unwrap();
                // Best of 5 runs of 20 000 calls (the machine is shared).
                let iters = 20_000;
                let (mut ns, mut ns4) = (f64::MAX, f64::MAX);
                let mut s = 0.0f32;
                for _ in 0..5 {
                    let t = Instant::now();
                    for _ in 0..iters {
                        s += f(std::hint::black_box(&w), std::hint::black_box(&a));
                    }
                    ns = ns.min(t.elapsed().as_nanos() as f64 / iters as f64);
                    let t = Instant::now();
                    for _ in 0..iters / 4 {
                        s += f4(std::hint::black_box(&w), [&a, &a, &a, &a])[0];
                    }
                    ns4 = ns4.min(t.elapsed().as_nanos() as f64 / iters as f64);
                }
                std::hint::black_box(s);
                line += &format!("  {} {ns:7.1} ns (dot4 {ns4:6.1}/row)", ks.isa.name());
            }
            println!("{line}");
        }
    }
    for ty in [GgmlType::Q8_0, GgmlType::Q8_1] {
        let n = 2048;
        let x: Vec<f32> = (0..n).map(|_| normal(&mut rng)).collect();
        let mut out = vec![0u8; ty.row_bytes(n).unwrap()];
        let mut line = format!("quantize {ty} n={n}:");
        for ks in &sets {
            let q = ks.quantize(ty).unwrap();
            let t = Instant::now();
            for _ in 0..20_000 {
                q(std::hint::black_box(&x), &mut out);
            }
            line += &format!(
                "  {} {:7.1} ns",
                ks.isa.name(),
                t.elapsed().as_nanos() as f64 / 20_000.0
            );
        }
        println!("{line}");
    }
}
