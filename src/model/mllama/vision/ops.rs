//! The encoder's building blocks: LayerNorm, GELU, and the linear layers with their int8
//! (Q8_0, packed) copies.

use lumen_kernels::dense_gemm::{self, PanelMatrix};
use lumen_kernels::matmul::{matmul_many, QuantizedRows, WeightView};
use lumen_kernels::{GgmlType, PackedMatrix};
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

/// A weight matrix of the encoder and, on the default path, its Q8_0 requantization.
///
/// Why int8: thousands of tokens per image make the linear layers compute-bound (≈10 TFLOP
/// at 11B), and the packed Q8_0 tiles (`vpdpbusd`) run them about 3× faster than the f32
/// GEMM (11B shape, 2 threads: ≈0.55 s vs ≈1.55 s per layer). The cost is Q8_0 rounding of
/// weights and activations: on tiny-mllama (a worst case: 32-wide rows) the encoder output
/// moves 1.8e-2 relative L2 from the exact path (`tools/tests/mllama_vision.rs`). F32 files
/// keep f32 weights: converting to F32 asks for exactness. `LUMEN_VISION_F32=1` keeps the f32
/// GEMM and f32 attention for every layer (A/B). Layers whose matrices run in int8 also run
/// attention in bf16 (`dense_attention::attend_bf16`, where the CPU has AVX-512 BF16).
pub(super) struct Linear {
    pub(super) matrix: Matrix,
    pub(super) int8: Option<Int8Copy>,
}

/// A Q8_0 copy of a matrix: GGUF row layout (what the matmul drivers check and fall back to)
/// and the packed layout the VNNI tiles read.
pub(super) struct Int8Copy {
    pub(super) bytes: Vec<u8>,
    pub(super) packed: PackedMatrix,
}

impl Linear {
    /// `matrix`, requantized to Q8_0 when `int8` is on and its type and shape allow it.
    pub(super) fn new(file: &GgufFile, matrix: Matrix, int8: bool) -> Result<Self, ModelError> {
        let int8 = if int8 {
            requantize_q8_0(file, &matrix)?
        } else {
            None
        };
        Ok(Self { matrix, int8 })
    }

    /// Whether the Q8_0 copy can run here: not in reference mode, and either the row layout
    /// was kept or the level has the packed Q8_0 kernels (a kernel set forced after load may
    /// lack them; the exact path then serves).
    pub(super) fn int8_usable(&self, w: &Weights) -> bool {
        self.int8.as_ref().is_some_and(|c| {
            !w.reference_matmul
                && (!c.bytes.is_empty() || w.kernels.packed_gemv(GgmlType::Q8_0).is_some())
        })
    }

    pub(super) fn int8_view(&self) -> Option<WeightView<'_>> {
        self.int8.as_ref().map(|c| WeightView {
            ty: GgmlType::Q8_0,
            rows: self.matrix.rows,
            cols: self.matrix.cols,
            bytes: &c.bytes,
            packed: Some(&c.packed),
        })
    }
}

/// Whether the encoder requantizes its matrices to Q8_0 (the default; `LUMEN_VISION_F32=1`
/// keeps the f32 GEMM).
pub(super) fn int8_enabled() -> bool {
    std::env::var("LUMEN_VISION_F32").map_or(true, |v| v != "1")
}

/// Q8_0 of every row of `m`, packed; `None` for F32
/// weights and shapes the packed layout cannot hold.
pub(super) fn requantize_q8_0(file: &GgufFile, m: &Matrix) -> Result<Option<Int8Copy>, ModelError> {
    let q8 = GgmlType::Q8_0;
    let row_bytes = q8.row_bytes(m.cols);
    let Some(row_bytes) =
        row_bytes.filter(|_| m.ty != GgmlType::F32 && PackedMatrix::supports(q8, m.rows, m.cols))
    else {
        return Ok(None);
    };
    // The level's activation quantizer writes the same Q8_0 blocks as llama.cpp's reference
    // quantizer (max-abs scale, round to nearest), vectorised: loading 11B's tower is ~0.8 G
    // weights.
    let quantize = lumen_kernels::kernels()
        .quantize(q8)
        .ok_or(lumen_kernels::KernelError::NotActivationFormat { ty: q8 })?;
    let view = m.view(file);
    let mut bytes = vec![0u8; m.rows * row_bytes];
    if m.ty == q8 {
        bytes.copy_from_slice(view.bytes);
    } else {
        bytes
            .par_chunks_mut(row_bytes)
            .enumerate()
            .try_for_each_init(
                || vec![0.0f32; m.cols],
                |buf, (r, dst)| {
                    lumen_kernels::dequantize_row(m.ty, view.row(r), buf)?;
                    quantize(buf, dst);
                    Ok::<_, ModelError>(())
                },
            )?;
    }
    let packed = PackedMatrix::pack(q8, m.rows, m.cols, &bytes)?;
    // With packed Q8_0 kernels at this level the drivers never read the row layout: keep one
    // copy, not two (~0.8 GB at 11B). The mapped original is only read again by the exact
    // reference path, so its pages need not stay resident either.
    let bytes = if lumen_kernels::kernels().packed_gemv(q8).is_some() {
        file.release_range(m.offset, m.n_bytes);
        Vec::new()
    } else {
        bytes
    };
    Ok(Some(Int8Copy { bytes, packed }))
}

/// Applies weight matrices to the activation rows `x`: reference runs through the shared
/// dequantized-f32 matmuls; otherwise the Q8_0 copies through the packed int8 GEMM (one
/// activation quantization for all of them), and matrices without one through the f32 panel
/// GEMM on dequantized weights (a few ms of repacking per matrix) where the kernel level has
/// it, else the shared quantized-activation matmuls.
pub(super) fn linear(
    w: &Weights,
    x: &[f32],
    targets: &mut [(&Linear, &mut [f32])],
) -> Result<(), ModelError> {
    let (int8, rest): (Vec<_>, Vec<_>) = targets
        .iter_mut()
        .map(|(l, out)| (*l, &mut **out))
        .partition(|(l, _)| l.int8_usable(w));
    if let Some((first, _)) = int8.first() {
        let qr = QuantizedRows::quantize(w.kernels, GgmlType::Q8_0, x, first.matrix.cols)?;
        let views: Vec<WeightView> = int8.iter().filter_map(|(l, _)| l.int8_view()).collect();
        let mut outs: Vec<&mut [f32]> = int8.into_iter().map(|(_, out)| out).collect();
        matmul_many(w.kernels, &views, &qr, &mut outs)?;
    }
    let isa = w.kernels.isa;
    if w.reference_matmul || !dense_gemm::has_fast_kernel(isa) {
        let mut targets: Vec<(&Matrix, &mut [f32])> =
            rest.into_iter().map(|(l, out)| (&l.matrix, out)).collect();
        return w.matmuls(x, &mut targets);
    }
    for (l, out) in rest {
        let m = &l.matrix;
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
