//! The matmul drivers (chunking, 1×4 grouping, transposes, several matrices per region) against
//! the plain per-row dispatch dot, for every kernel set this CPU runs.

use lumen_kernels::matmul::{matmul, matmul_many, QuantizedRows, WeightView};
use lumen_kernels::{dequantize_row, kernels_for, quantize_row, vec_dot, GgmlType, Isa};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random_f32(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// A weight matrix made by quantizing random values with the activation quantizer of the same
/// block layout where one exists, else by dequantizable random f32 through Q8_0.
fn weights(rng: &mut StdRng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let row_bytes = ty.row_bytes(cols).unwrap();
    let mut out = vec![0u8; rows * row_bytes];
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0 => {
            for row in out.chunks_exact_mut(row_bytes) {
                quantize_row(ty, &random_f32(rng, cols), row).unwrap();
            }
        }
        _ => {
            // Random bytes with small, finite f16 scales at the start of each block.
            rng.fill(&mut out[..]);
            let bb = ty.block_bytes();
            let scale_at = match ty {
                GgmlType::Q2_K => 80,
                GgmlType::Q3_K => 108,
                GgmlType::Q6_K => 208,
                _ => 0,
            };
            for block in out.chunks_exact_mut(bb) {
                let d = half::f16::from_f32(rng.gen_range(0.001f32..0.01));
                block[scale_at..scale_at + 2].copy_from_slice(&d.to_le_bytes());
                if matches!(
                    ty,
                    GgmlType::Q4_1
                        | GgmlType::Q5_1
                        | GgmlType::Q2_K
                        | GgmlType::Q4_K
                        | GgmlType::Q5_K
                ) {
                    let at = if ty == GgmlType::Q2_K { 82 } else { 2 };
                    block[at..at + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
        }
    }
    out
}

#[test]
fn drivers_equal_per_row_dots_for_every_type_shape_and_kernel_set() {
    let mut rng = StdRng::seed_from_u64(11);
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::F16,
    ];
    for isa in Isa::ALL {
        let Some(ks) = kernels_for(isa) else { continue };
        for ty in types {
            let cols = 512;
            for (rows, n_tok) in [(1, 1), (37, 1), (200, 1), (37, 3), (64, 4), (45, 9)] {
                let wb = weights(&mut rng, ty, rows, cols);
                let w = WeightView {
                    packed: None,
                    ty,
                    rows,
                    cols,
                    bytes: &wb,
                };
                let x = random_f32(&mut rng, n_tok * cols);
                let act = ty.vec_dot_type();
                let qr = QuantizedRows::quantize(ks, act, &x, cols).unwrap();
                let mut out = vec![0.0f32; n_tok * rows];
                matmul(ks, &w, &qr, &mut out).unwrap();
                let rb = ty.row_bytes(cols).unwrap();
                let ab = act.row_bytes(cols).unwrap();
                let mut aq = vec![0u8; ab];
                for t in 0..n_tok {
                    quantize_row(act, &x[t * cols..(t + 1) * cols], &mut aq).unwrap();
                    for r in 0..rows {
                        let expected = vec_dot(ty, &wb[r * rb..(r + 1) * rb], &aq).unwrap();
                        let got = out[t * rows + r];
                        // Kernels differ only in float summation order: bound by Σ|w·x|.
                        let mut w_f32 = vec![0.0f32; cols];
                        dequantize_row(ty, &wb[r * rb..(r + 1) * rb], &mut w_f32).unwrap();
                        let scale: f32 = w_f32
                            .iter()
                            .zip(&x[t * cols..])
                            .map(|(a, b)| (a * b).abs())
                            .sum();
                        assert!(
                            (got - expected).abs() <= 1e-5 * scale + 1e-7,
                            "{isa:?} {ty:?} rows {rows} tokens {n_tok}: [{t}][{r}] {got} vs {expected}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn several_matrices_in_one_region_equal_separate_calls() {
    let mut rng = StdRng::seed_from_u64(5);
    let ks = kernels_for(Isa::best_available()).unwrap();
    let cols = 256;
    let shapes = [
        (24, GgmlType::Q4_0),
        (8, GgmlType::Q8_0),
        (8, GgmlType::Q5_0),
    ];
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|&(rows, ty)| weights(&mut rng, ty, rows, cols))
        .collect();
    let views: Vec<WeightView> = shapes
        .iter()
        .zip(&data)
        .map(|(&(rows, ty), b)| WeightView {
            packed: None,
            ty,
            rows,
            cols,
            bytes: b,
        })
        .collect();
    for n_tok in [1, 6] {
        let x = random_f32(&mut rng, n_tok * cols);
        let qr = QuantizedRows::quantize(ks, GgmlType::Q8_0, &x, cols).unwrap();
        let mut together: Vec<Vec<f32>> = views.iter().map(|w| vec![0.0; n_tok * w.rows]).collect();
        let mut outs: Vec<&mut [f32]> = together.iter_mut().map(|v| &mut v[..]).collect();
        matmul_many(ks, &views, &qr, &mut outs).unwrap();
        for (w, got) in views.iter().zip(&together) {
            let mut alone = vec![0.0; n_tok * w.rows];
            matmul(ks, w, &qr, &mut alone).unwrap();
            assert_eq!(&alone, got);
        }
    }
}

#[test]
fn operand_mismatches_are_errors_not_panics() {
    let ks = kernels_for(Isa::Scalar).unwrap();
    let wb = vec![0u8; 18 * 2];
    let w = WeightView {
        packed: None,
        ty: GgmlType::Q4_0,
        rows: 2,
        cols: 32,
        bytes: &wb,
    };
    let qr = QuantizedRows::quantize(ks, GgmlType::Q8_1, &[0.0; 32], 32).unwrap();
    assert!(
        matmul(ks, &w, &qr, &mut [0.0; 2]).is_err(),
        "wrong activation type"
    );
    let qr = QuantizedRows::quantize(ks, GgmlType::Q8_0, &[0.0; 32], 32).unwrap();
    assert!(
        matmul(ks, &w, &qr, &mut [0.0; 3]).is_err(),
        "wrong output size"
    );
    let short = WeightView {
        bytes: &wb[..20],
        ..w
    };
    assert!(
        matmul(ks, &short, &qr, &mut [0.0; 2]).is_err(),
        "truncated weights"
    );
    assert!(
        QuantizedRows::quantize(ks, GgmlType::Q4_0, &[0.0; 32], 32).is_err(),
        "not an activation type"
    );
}
