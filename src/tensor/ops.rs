//! Element-wise and row-wise operations on f32 activations. The row-wise ones split many rows
//! (prefill) over the rayon pool; a single row (decode) runs on the calling thread, where a
//! parallel region would cost more than the work.

use rayon::prelude::*;

/// Elements per parallel task in the element-wise ops: below this, one thread does it all.
const PAR_ELEMS: usize = 16 * 1024;

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
    if x.len() <= n {
        return rms_norm(x, weight, eps, out);
    }
    x.par_chunks_exact(n)
        .zip(out.par_chunks_exact_mut(n))
        .with_min_len(PAR_ELEMS.div_ceil(n))
        .for_each(|(row, out_row)| rms_norm(row, weight, eps, out_row));
}

pub use lumen_kernels::math::silu;

/// `gate[i] = silu(gate[i]) * up[i]` — the SwiGLU combination, in place.
pub fn swiglu_in_place(gate: &mut [f32], up: &[f32]) {
    gated_in_place(gate, up, silu)
}

/// `gate[i] = act(gate[i]) * up[i]`, in parallel pieces when long (prefill).
#[inline]
fn gated_in_place(gate: &mut [f32], up: &[f32], act: impl Fn(f32) -> f32 + Sync) {
    let combine = |g: &mut [f32], u: &[f32]| {
        for (g, &u) in g.iter_mut().zip(u) {
            *g = act(*g) * u;
        }
    };
    if gate.len() <= PAR_ELEMS {
        return combine(gate, up);
    }
    gate.par_chunks_mut(PAR_ELEMS)
        .zip(up.par_chunks(PAR_ELEMS))
        .for_each(|(g, u)| combine(g, u));
}

/// GELU, tanh approximation (`gelu_pytorch_tanh`, ggml's `gelu`).
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// `gate[i] = gelu_tanh(gate[i]) * up[i]` — GeGLU (Gemma), in place.
pub fn geglu_in_place(gate: &mut [f32], up: &[f32]) {
    gated_in_place(gate, up, gelu_tanh)
}

/// Adds `bias` (one row) to every row of `x`.
pub fn add_bias_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// `cap · tanh(v / cap)` on every element (Gemma 2's soft-capping).
pub fn softcap_in_place(x: &mut [f32], cap: f32) {
    let apply = |x: &mut [f32]| x.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
    if x.len() <= PAR_ELEMS {
        return apply(x);
    }
    x.par_chunks_mut(PAR_ELEMS).for_each(apply);
}

/// RMSNorm of every `weight.len()`-wide piece of `x`, in place (per-head Q/K norms).
pub fn rms_norm_pieces_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let n = weight.len();
    let norm = |piece: &mut [f32]| {
        let sum_sq: f64 = piece.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let scale = 1.0 / ((sum_sq / n as f64) as f32 + eps).sqrt();
        for (v, &w) in piece.iter_mut().zip(weight) {
            *v *= scale * w;
        }
    };
    if x.len() <= PAR_ELEMS {
        return x.chunks_exact_mut(n).for_each(norm);
    }
    x.par_chunks_exact_mut(n)
        .with_min_len(PAR_ELEMS.div_ceil(n))
        .for_each(norm);
}

pub fn add_in_place(acc: &mut [f32], x: &[f32]) {
    let add = |acc: &mut [f32], x: &[f32]| {
        for (a, &b) in acc.iter_mut().zip(x) {
            *a += b;
        }
    };
    if acc.len() <= PAR_ELEMS {
        return add(acc, x);
    }
    acc.par_chunks_mut(PAR_ELEMS)
        .zip(x.par_chunks(PAR_ELEMS))
        .for_each(|(a, b)| add(a, b));
}

/// Rotary position embedding tables.
///
/// ggml's llama RoPE ("NORM" mode) rotates *adjacent* pairs `(2i, 2i+1)`; GGUF converters
/// permute `llama` Q/K rows so that this equals Hugging Face's rotate-half on the original
/// weights. The other families (Qwen, Gemma, Phi-3) keep Hugging Face's row order and use
/// ggml's "NEOX" mode: dimension i pairs with i + n_rot/2 ([`Rope::rotate_halves`]).
pub struct Rope {
    /// Per pair i: the angular frequency `base^(-2i/n_rot) / freq_factor[i]`.
    inv_freq: Vec<f64>,
    halves: bool,
    /// Multiplies cos and sin (Phi-3 LongRoPE's attention factor; 1 elsewhere).
    attn_factor: f32,
}

impl Rope {
    /// `freq_factors` is the optional `rope_freqs.weight` tensor (llama3 scaling): each base
    /// frequency is divided by its factor. `linear_scale` is `rope.scaling.factor` for "linear".
    pub fn new(n_rot: usize, base: f32, freq_factors: Option<&[f32]>, linear_scale: f32) -> Self {
        let inv_freq = (0..n_rot / 2)
            .map(|i| {
                let f = (base as f64).powf(-2.0 * i as f64 / n_rot as f64) / linear_scale as f64;
                f / freq_factors.map_or(1.0, |ff| ff[i] as f64)
            })
            .collect();
        Self {
            inv_freq,
            halves: false,
            attn_factor: 1.0,
        }
    }

    /// Multiplies cos and sin by `factor` (LongRoPE's `attn_factor`).
    pub fn attn_factor(mut self, factor: f32) -> Self {
        self.attn_factor = factor;
        self
    }

    /// NEOX mode: rotate (i, i + n_rot/2) instead of adjacent pairs.
    pub fn rotate_halves(mut self, on: bool) -> Self {
        self.halves = on;
        self
    }

    /// Rotates the first `n_rot` dimensions of every head of one token's vector at `pos`.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        self.angles(pos, 1).apply(x, head_dim, 0);
    }

    /// The (cos, sin) of every pair at positions `pos0..pos0 + n`: computed once per forward
    /// pass and shared by every layer's Q and K.
    pub fn angles(&self, pos0: usize, n: usize) -> RopeAngles {
        let positions: Vec<usize> = (pos0..pos0 + n).collect();
        self.angles_at(&positions)
    }

    /// Angles for rows at arbitrary positions (one token of each of several sequences).
    pub fn angles_at(&self, positions: &[usize]) -> RopeAngles {
        let half = self.inv_freq.len();
        let mut cos_sin = Vec::with_capacity(positions.len() * half);
        for &pos in positions {
            cos_sin.extend(self.inv_freq.iter().map(|&f| {
                let (sin, cos) = (pos as f64 * f).sin_cos();
                (cos as f32 * self.attn_factor, sin as f32 * self.attn_factor)
            }));
        }
        RopeAngles {
            cos_sin,
            half,
            halves: self.halves,
        }
    }
}

pub struct RopeAngles {
    cos_sin: Vec<(f32, f32)>,
    half: usize,
    halves: bool,
}

impl RopeAngles {
    /// Rotates every head of one token's vector by the angles of the `t`-th position.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, t: usize) {
        debug_assert!(2 * self.half <= head_dim);
        let cos_sin = &self.cos_sin[t * self.half..(t + 1) * self.half];
        if self.halves {
            for head in x.chunks_exact_mut(head_dim) {
                let (lo, hi) = head[..2 * self.half].split_at_mut(self.half);
                for ((a, b), &(cos, sin)) in lo.iter_mut().zip(hi).zip(cos_sin) {
                    let (x0, x1) = (*a, *b);
                    *a = x0 * cos - x1 * sin;
                    *b = x0 * sin + x1 * cos;
                }
            }
            return;
        }
        for head in x.chunks_exact_mut(head_dim) {
            for (pair, &(cos, sin)) in head.chunks_exact_mut(2).zip(cos_sin) {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos - b * sin;
                pair[1] = a * sin + b * cos;
            }
        }
    }

    /// Rotates the Q and K rows of every token (`[n][q_dim]`, `[n][kv_dim]`), tokens in
    /// parallel when there are many.
    pub fn apply_qk(&self, q: &mut [f32], k: &mut [f32], head_dim: usize) {
        let n = self.cos_sin.len() / self.half.max(1);
        let (q_dim, kv_dim) = (q.len() / n.max(1), k.len() / n.max(1));
        let rotate = |t: usize, (q_row, k_row): (&mut [f32], &mut [f32])| {
            self.apply(q_row, head_dim, t);
            self.apply(k_row, head_dim, t);
        };
        if n <= 1 {
            return rotate(0, (q, k));
        }
        q.par_chunks_exact_mut(q_dim)
            .zip(k.par_chunks_exact_mut(kv_dim))
            .enumerate()
            .with_min_len(PAR_ELEMS.div_ceil(q_dim + kv_dim))
            .for_each(|(t, rows)| rotate(t, rows));
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
    fn neox_rope_rotates_halves_like_pairs_after_interleaving() {
        // Rotating (i, i + half) equals rotating adjacent pairs of the interleaved vector.
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let (pairs, halves) = (
            Rope::new(8, 10000.0, None, 1.0),
            Rope::new(8, 10000.0, None, 1.0).rotate_halves(true),
        );
        let mut h = x;
        halves.apply(&mut h, 8, 5);
        let mut p: Vec<f32> = (0..4).flat_map(|i| [x[i], x[i + 4]]).collect();
        pairs.apply(&mut p, 8, 5);
        let back: Vec<f32> = (0..8)
            .map(|j| if j < 4 { p[2 * j] } else { p[2 * (j - 4) + 1] })
            .collect();
        for (a, b) in h.iter().zip(&back) {
            assert!((a - b).abs() < 1e-6, "{h:?} vs {back:?}");
        }
        assert_ne!(h, x);
    }

    #[test]
    fn gelu_tanh_matches_known_values() {
        // torch.nn.functional.gelu(x, approximate="tanh")
        for (x, y) in [(1.0f32, 0.841_192), (-1.0, -0.158_808), (2.5, 2.484_916)] {
            assert!((gelu_tanh(x) - y).abs() < 1e-5, "{x}: {}", gelu_tanh(x));
        }
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
