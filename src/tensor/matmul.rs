//! Quantized matrix multiplication the way llama.cpp computes it on CPU: the f32 activation
//! rows are quantized once into the weight type's vec-dot format, then every output is an
//! integer block dot product. Work is split over weight rows across the rayon pool.

use lumen_kernels::GgmlType;
use rayon::prelude::*;

/// A weight matrix stored row-major in GGUF order: `rows` output features, each a contiguous
/// row of `cols` input features encoded in `ty`.
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: &'a [u8],
}

impl WeightView<'_> {
    pub fn row_bytes(&self) -> usize {
        self.bytes.len() / self.rows.max(1)
    }
}

/// Activation rows quantized into one vec-dot format. Built once and shared by every matmul
/// that reads the same activations with the same vec-dot type (Q/K/V, gate/up).
pub struct QuantizedRows {
    pub ty: GgmlType,
    pub n_rows: usize,
    pub cols: usize,
    row_bytes: usize,
    data: Vec<u8>,
}

impl QuantizedRows {
    /// Quantizes `x` (`n_rows × cols`, row-major) into `ty`, rows in parallel.
    pub fn quantize(ty: GgmlType, x: &[f32], cols: usize) -> Self {
        let n_rows = x.len() / cols;
        let row_bytes = ty
            .row_bytes(cols)
            .expect("activation width is a multiple of the block size (checked at model load)");
        let mut data = vec![0u8; row_bytes * n_rows];
        data.par_chunks_mut(row_bytes)
            .zip(x.par_chunks(cols))
            .for_each(|(dst, src)| {
                lumen_kernels::quantize_row(ty, src, dst).expect("lengths match by construction")
            });
        Self {
            ty,
            n_rows,
            cols,
            row_bytes,
            data,
        }
    }

    pub fn row(&self, i: usize) -> &[u8] {
        &self.data[i * self.row_bytes..(i + 1) * self.row_bytes]
    }
}

/// Weight rows each task computes: enough work to amortise rayon's scheduling, small enough to
/// balance two to a few dozen threads.
const ROWS_PER_TASK: usize = 16;

/// `out[t][r] = Σ_c w[r][c] · x[t][c]` for every activation row `t`; `out` is `n_rows × w.rows`.
pub fn matmul(w: &WeightView, x: &QuantizedRows, out: &mut [f32]) {
    assert_eq!(
        x.ty,
        w.ty.vec_dot_type(),
        "activations quantized for the wrong weight type"
    );
    assert_eq!(
        x.cols, w.cols,
        "activation width does not match the weight's input features"
    );
    assert_eq!(out.len(), x.n_rows * w.rows);
    let row_bytes = w.row_bytes();
    let dot = |r: usize, t: usize| {
        let w_row = &w.bytes[r * row_bytes..(r + 1) * row_bytes];
        lumen_kernels::vec_dot(w.ty, w_row, x.row(t)).expect("lengths match by construction")
    };
    if x.n_rows == 1 {
        out.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(chunk, dst)| {
                let first = chunk * ROWS_PER_TASK;
                for (i, o) in dst.iter_mut().enumerate() {
                    *o = dot(first + i, 0);
                }
            });
        return;
    }
    // Several token rows: each task takes a block of weight rows and applies it to every token
    // while those weight rows are hot in cache, writing a `[rows][tokens]` tile.
    let n_tok = x.n_rows;
    let mut transposed = vec![0.0f32; out.len()];
    transposed
        .par_chunks_mut(ROWS_PER_TASK * n_tok)
        .enumerate()
        .for_each(|(chunk, dst)| {
            let first = chunk * ROWS_PER_TASK;
            for (i, per_row) in dst.chunks_exact_mut(n_tok).enumerate() {
                for (t, o) in per_row.iter_mut().enumerate() {
                    *o = dot(first + i, t);
                }
            }
        });
    transpose_into(&transposed, n_tok, w.rows, out);
}

/// Reference matmul for validation: each weight row dequantized to f32 and dotted with the f32
/// activations in f64. No activation quantization, so a model run this way should equal a float
/// framework running the dequantized weights. Slow; for tests and debugging.
pub fn matmul_reference(w: &WeightView, x: &[f32], out: &mut [f32]) {
    let row_bytes = w.row_bytes();
    let n_tok = x.len() / w.cols;
    assert_eq!(out.len(), n_tok * w.rows);
    let mut transposed = vec![0.0f32; out.len()];
    transposed
        .par_chunks_mut(n_tok)
        .enumerate()
        .for_each(|(r, per_token)| {
            let mut w_row = vec![0.0f32; w.cols];
            lumen_kernels::dequantize_row(
                w.ty,
                &w.bytes[r * row_bytes..(r + 1) * row_bytes],
                &mut w_row,
            )
            .expect("lengths match by construction");
            for (o, x_row) in per_token.iter_mut().zip(x.chunks_exact(w.cols)) {
                *o = w_row
                    .iter()
                    .zip(x_row)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>() as f32;
            }
        });
    transpose_into(&transposed, n_tok, w.rows, out);
}

/// `out[t][r] = tiles[r][t]`.
fn transpose_into(tiles: &[f32], n_tok: usize, rows: usize, out: &mut [f32]) {
    for (r, per_token) in tiles.chunks_exact(n_tok).enumerate() {
        for (t, &v) in per_token.iter().enumerate() {
            out[t * rows + r] = v;
        }
    }
}
