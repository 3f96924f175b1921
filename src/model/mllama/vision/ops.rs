//! The encoder's building blocks: LayerNorm, GELU, and the linear layers with their 14-bit
//! integer copies.

use lumen_kernels::dense_gemm::int16::{self, I16Matrix, I16Tokens};
use lumen_kernels::dense_gemm::{self, PanelMatrix};
use lumen_kernels::GgmlType;
use rayon::prelude::*;

use crate::gguf::GgufFile;
use crate::model::weights::{vector, Matrix, Weights};
use crate::model::ModelError;

/// A LayerNorm's weight and bias.
pub(super) struct LayerNorm {
    pub(super) weight: Vec<f32>,
    pub(super) bias: Vec<f32>,
}

impl LayerNorm {
    pub(super) fn load(
        file: &GgufFile,
        weight: &str,
        bias: &str,
        n: usize,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            weight: vector(file, weight, n)?,
            bias: vector(file, bias, n)?,
        })
    }

    /// Normalises every row of `x` (`[rows][n]`) into `out`.
    pub(super) fn apply(&self, x: &[f32], eps: f32, out: &mut [f32]) {
        let n = self.weight.len();
        out.par_chunks_mut(n)
            .zip(x.par_chunks(n))
            .for_each(|(o, row)| layer_norm_row(row, &self.weight, &self.bias, eps, o));
    }
}

/// `(x − mean)/√(var + eps)·w + b` with the biased variance, as PyTorch's LayerNorm.
pub(super) fn layer_norm_row(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
        *o = (v - mean) * inv * w + b;
    }
}

/// erf(x), Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), branch-free so loops over it
/// vectorise; with it GELU differs from the exact form by under 1e-7·|x|.
#[inline(always)]
pub(super) fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * lumen_kernels::math::exp(-a * a);
    y.copysign(x)
}

/// GELU in its exact (erf) form, Hugging Face's `"gelu"`.
pub(super) fn gelu_in_place(x: &mut [f32]) {
    x.par_chunks_mut(4096).for_each(|chunk| {
        for v in chunk {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
}

/// A weight matrix of the encoder and, on the default path, its 14-bit integer copy.
///
/// Why integers: thousands of tokens per image make the linear layers compute-bound (≈10 TFLOP
/// at 11B), and `vpdpwssd`/`vpmaddwd` make twice the products per instruction of the f32 FMA
/// (`dense_gemm::int16`). Why 14 bits, not Q8_0's 8: Q8_0 weights and activations moved
/// tiny-mllama's projected states 2.2e-2 relative L2 from Meta's reference, both sides
/// contributing (weights alone 1.5e-2, activations alone 1.05e-2); 14-bit rounding is 64× finer (`tools/tests/mllama_vision.rs` holds the figure).
/// F32 files keep f32 weights: converting to F32 asks for exactness. `LUMEN_VISION_F32=1`
/// keeps the f32 GEMM and f32 attention for every layer (A/B).
pub(super) struct Linear {
    pub(super) matrix: Matrix,
    pub(super) int16: Option<I16Matrix>,
}

impl Linear {
    /// `matrix`, with a 14-bit copy when `int16` is on and the matrix is not F32.
    pub(super) fn new(file: &GgufFile, matrix: Matrix, int16: bool) -> Result<Self, ModelError> {
        let int16 = if int16 && matrix.ty != GgmlType::F32 {
            let view = matrix.view(file);
            let copy = I16Matrix::pack(matrix.rows, matrix.cols, |r, buf: &mut [f32]| {
                lumen_kernels::dequantize_row(matrix.ty, view.row(r), buf).map_err(ModelError::from)
            })?;
            // The drivers read the copy; the mapped original only serves the exact reference
            // path, so its pages need not stay resident (~1.6 GB of F16 at 11B).
            file.release_range(matrix.offset, matrix.n_bytes);
            Some(copy)
        } else {
            None
        };
        Ok(Self { matrix, int16 })
    }

    /// The 14-bit copy, when it can run here: not in reference mode, on a level with the
    /// kernels (a kernel set forced after load may lack them; the exact path then serves).
    pub(super) fn int16_usable(&self, w: &Weights) -> Option<&I16Matrix> {
        self.int16
            .as_ref()
            .filter(|_| !w.reference_matmul && int16::has_fast_kernel(w.kernels.isa))
    }
}

/// Whether the encoder makes 14-bit copies of its matrices (the default; `LUMEN_VISION_F32=1`
/// keeps the f32 GEMM).
pub(super) fn int16_enabled() -> bool {
    std::env::var("LUMEN_VISION_F32").map_or(true, |v| v != "1")
}

/// Applies weight matrices to the activation rows `x`: reference runs through the shared
/// dequantized-f32 matmuls; otherwise the 14-bit copies through the integer GEMM, and matrices
/// without one through the f32 panel GEMM on dequantized weights (a few ms of repacking per
/// matrix) where the kernel level has it, else the shared quantized-activation matmuls.
pub(super) fn linear(
    w: &Weights,
    x: &[f32],
    targets: &mut [(&Linear, &mut [f32])],
) -> Result<(), ModelError> {
    let isa = w.kernels.isa;
    let mut rest = Vec::new();
    // Quantized once for every matrix with an integer copy (all take the same columns).
    let mut xq = None;
    for (l, out) in targets.iter_mut() {
        match l.int16_usable(w) {
            Some(copy) => {
                let xq = xq.get_or_insert_with(|| I16Tokens::quantize(x, copy.cols));
                int16::gemm(isa, xq, copy, out)
            }
            None => rest.push((&l.matrix, &mut **out)),
        }
    }
    if w.reference_matmul || !dense_gemm::has_fast_kernel(isa) {
        return w.matmuls(x, &mut rest);
    }
    for (m, out) in rest {
        let view = m.view(w.file);
        let panels = PanelMatrix::pack(m.rows, m.cols, |r, buf: &mut [f32]| {
            lumen_kernels::dequantize_row(m.ty, view.row(r), buf).map_err(ModelError::from)
        })?;
        dense_gemm::gemm(isa, x, &panels, out);
    }
    Ok(())
}

/// `x[t][..] += bias` for every row.
pub(super) fn add_bias(x: &mut [f32], bias: &[f32]) {
    x.par_chunks_mut(bias.len()).for_each(|row| {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    });
}

/// `acc += scale · x`.
pub(super) fn add_scaled(acc: &mut [f32], x: &[f32], scale: f32) {
    acc.par_chunks_mut(4096)
        .zip(x.par_chunks(4096))
        .for_each(|(a, b)| {
            for (a, &b) in a.iter_mut().zip(b) {
                *a += scale * b;
            }
        });
}

impl LayerNorm {
    /// [`Self::apply`] without the parallel split (callers already run per tile).
    pub(super) fn apply_rows(&self, x: &[f32], eps: f32, out: &mut [f32]) {
        let n = self.weight.len();
        for (o, row) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
            layer_norm_row(row, &self.weight, &self.bias, eps, o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::test_files::{one_tensor, touch};
    use crate::model::weights::matrix;

    /// Issue 18's memory goal rests on this: once the 14-bit copy is made, the mapped F16
    /// original of a matrix stops counting in the resident set (at 11B that is ~1.6 GB that
    /// would otherwise sit beside the copies). One 1280×1280 matrix, the tower's real width.
    #[test]
    fn the_mapped_original_is_released_once_the_integer_copy_exists() {
        let (rows, cols) = (1280, 1280);
        let data: Vec<u8> = (0..rows * cols)
            .flat_map(|i| half::f16::from_f32(((i % 97) as f32 - 48.0) * 0.01).to_le_bytes())
            .collect();
        let (_dir, file) = one_tensor(GgmlType::F16, rows, cols, data);
        let m = matrix(&file, "w", cols, rows).unwrap();
        let (offset, n_bytes) = (m.offset, m.n_bytes);
        let sum = touch(&file, offset, n_bytes);
        let linear = Linear::new(&file, m, true).unwrap();
        assert!(linear.int16.is_some());
        assert_eq!(file.resident_bytes(offset, n_bytes), 0);
        // Still readable (the exact path): the kernel reads it back from the file.
        let again: u64 = file
            .bytes_at(offset, n_bytes)
            .iter()
            .map(|&b| b as u64)
            .sum();
        assert_eq!(again, sum);
    }

    #[test]
    fn erf_matches_known_values() {
        // erf at a few points (Abramowitz & Stegun table 7.1).
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (-1.0, -0.842_700_8),
            (4.0, 0.999_999_98),
        ] {
            assert!((erf(x) - want).abs() < 3e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn layer_norm_matches_the_definition() {
        let x = [1.0f32, 2.0, 3.0, 6.0];
        let (w, b) = ([1.0f32, 2.0, 1.0, 1.0], [0.0f32, 0.0, 1.0, 0.0]);
        let mut out = [0.0f32; 4];
        layer_norm_row(&x, &w, &b, 0.0, &mut out);
        // mean 3, var (4+1+0+9)/4 = 3.5.
        let s = 3.5f32.sqrt();
        let want = [-2.0 / s, -2.0 / s, 1.0, 3.0 / s];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6);
        }
    }
}
