//! Element-wise and row-wise operations on f32 activations.

/// RMSNorm of one row: `out[i] = x[i] / sqrt(mean(x²) + eps) * weight[i]`.
/// The sum is taken in f64, as llama.cpp's `ggml_compute_forward_rms_norm_f32` does.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let sum_sq: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let scale = 1.0 / ((sum_sq / x.len() as f64) as f32 + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// RMSNorm of each row of a `[n_rows, weight.len()]` matrix.
pub fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    for (row, out_row) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        rms_norm(row, weight, eps, out_row);
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `gate[i] = silu(gate[i]) * up[i]` — the SwiGLU combination, in place.
pub fn swiglu_in_place(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

pub fn add_in_place(acc: &mut [f32], x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// Rotary position embedding tables for GGUF `llama` files.
///
/// ggml's llama RoPE ("NORM" mode) rotates *adjacent* pairs `(2i, 2i+1)`; GGUF converters
/// permute the Q/K rows so that this equals Hugging Face's rotate-half on the original weights.
pub struct Rope {
    /// Per pair i: the angular frequency `base^(-2i/n_rot) / freq_factor[i]`.
    inv_freq: Vec<f64>,
    n_rot: usize,
}

impl Rope {
    /// `freq_factors` is the optional `rope_freqs.weight` tensor (llama3 scaling): each base
    /// frequency is divided by its factor. `linear_scale` is `rope.scaling.factor` for "linear".
    /// `n_rot` is at most 512 (checked at model load), so the angles of one position fit a
    /// stack buffer in [`Self::apply`].
    pub fn new(n_rot: usize, base: f32, freq_factors: Option<&[f32]>, linear_scale: f32) -> Self {
        let inv_freq = (0..n_rot / 2)
            .map(|i| {
                let f = (base as f64).powf(-2.0 * i as f64 / n_rot as f64) / linear_scale as f64;
                f / freq_factors.map_or(1.0, |ff| ff[i] as f64)
            })
            .collect();
        Self { inv_freq, n_rot }
    }

    /// Rotates the first `n_rot` dimensions of every head of one token's vector at `pos`.
    /// The angles depend only on the position and pair, so they are computed once for all heads.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        debug_assert!(self.n_rot <= head_dim);
        let mut cos_sin = [(0.0f32, 0.0f32); 256];
        let cos_sin = &mut cos_sin[..self.inv_freq.len()];
        for (cs, &f) in cos_sin.iter_mut().zip(&self.inv_freq) {
            let (sin, cos) = (pos as f64 * f).sin_cos();
            *cs = (cos as f32, sin as f32);
        }
        for head in x.chunks_exact_mut(head_dim) {
            for (pair, &(cos, sin)) in head.chunks_exact_mut(2).zip(cos_sin.iter()) {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos - b * sin;
                pair[1] = a * sin + b * cos;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_weight_gives_unit_rms() {
        let x = [3.0f32, -4.0, 0.0, 5.0];
        let mut out = [0.0; 4];
        rms_norm(&x, &[1.0; 4], 0.0, &mut out);
        let rms = (out.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        let rope = Rope::new(4, 10000.0, None, 1.0);
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        rope.apply(&mut x, 4, 0);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
        rope.apply(&mut x, 4, 7);
        let norm: f32 = x.iter().map(|v| v * v).sum();
        assert!((norm - 30.0).abs() < 1e-4);
    }
}
