//! Causal attention over a key/value cache laid out for vector loads.
//!
//! Keys are stored transposed per KV head (`[kv_head][dim][position]`) so a query's scores are
//! `s[0..n] += q[d] · K[d][0..n]` for each dimension `d`: contiguous over positions, no
//! horizontal sums. Values are stored `[kv_head][position][dim]` so the output is
//! `o += p[j] · V[j]`, contiguous over dimensions. Both inner loops are plain Rust compiled three
//! times (baseline, AVX2+FMA, AVX-512) and chosen by the kernel set's level.

use rayon::prelude::*;

use crate::cpu::Isa;

/// Geometry of one layer's cache and of the query rows.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Positions the cache can hold (row stride of the transposed keys).
    pub n_ctx: usize,
}

/// One layer's cache: `keys` is `[kv_head][head_dim][n_ctx]`, `values` `[kv_head][n_ctx][head_dim]`.
pub struct LayerCache<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
}

/// Writes the K/V rows of `n` new tokens (`[n][n_head_kv·head_dim]`) at positions `pos0..`.
pub fn store(
    shape: &AttentionShape,
    keys: &mut [f32],
    values: &mut [f32],
    pos0: usize,
    k: &[f32],
    v: &[f32],
) {
    let (hd, n_ctx) = (shape.head_dim, shape.n_ctx);
    let kv_dim = shape.n_head_kv * hd;
    for (t, (k_row, v_row)) in k
        .chunks_exact(kv_dim)
        .zip(v.chunks_exact(kv_dim))
        .enumerate()
    {
        let pos = pos0 + t;
        for h in 0..shape.n_head_kv {
            for d in 0..hd {
                keys[(h * hd + d) * n_ctx + pos] = k_row[h * hd + d];
            }
            values[(h * n_ctx + pos) * hd..][..hd].copy_from_slice(&v_row[h * hd..][..hd]);
        }
    }
}

/// Queries per parallel task: a few tasks per head keep two to a few dozen threads busy.
const QUERIES_PER_TASK: usize = 8;

/// Causal grouped-query attention for `n` query rows at positions `pos0..pos0+n` (the cache
/// already holds them). `q` and `out` are `[n][n_head·head_dim]`.
pub fn attend(
    isa: Isa,
    shape: &AttentionShape,
    cache: &LayerCache,
    q: &[f32],
    pos0: usize,
    out: &mut [f32],
) {
    let hd = shape.head_dim;
    let q_dim = shape.n_head * hd;
    let n = q.len() / q_dim;
    let group = shape.n_head / shape.n_head_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    // Work items: (head, first query, output rows of that head for those queries) — the
    // output for head h of token t is out[t][h·hd..], so gather per task and scatter after.
    let tasks: Vec<(usize, usize)> = (0..shape.n_head)
        .flat_map(|h| (0..n).step_by(QUERIES_PER_TASK).map(move |t0| (h, t0)))
        .collect();
    let results: Vec<(usize, usize, Vec<f32>)> = tasks
        .into_par_iter()
        .map(|(h, t0)| {
            let kvh = h / group;
            let keys = &cache.keys[kvh * hd * shape.n_ctx..][..hd * shape.n_ctx];
            let values = &cache.values[kvh * shape.n_ctx * hd..][..shape.n_ctx * hd];
            let t1 = (t0 + QUERIES_PER_TASK).min(n);
            let mut o = vec![0.0f32; (t1 - t0) * hd];
            let mut scores = vec![0.0f32; pos0 + t1];
            for (t, o_row) in (t0..t1).zip(o.chunks_exact_mut(hd)) {
                let n_keys = pos0 + t + 1;
                let q_row = &q[t * q_dim + h * hd..][..hd];
                head_attention(
                    isa,
                    q_row,
                    keys,
                    values,
                    shape.n_ctx,
                    n_keys,
                    scale,
                    &mut scores[..n_keys],
                    o_row,
                );
            }
            (h, t0, o)
        })
        .collect();
    for (h, t0, o) in results {
        for (i, o_row) in o.chunks_exact(hd).enumerate() {
            out[(t0 + i) * q_dim + h * hd..][..hd].copy_from_slice(o_row);
        }
    }
}

/// One query against `n_keys` positions of one KV head.
#[allow(clippy::too_many_arguments)]
fn head_attention(
    isa: Isa,
    q: &[f32],
    keys_t: &[f32],
    values: &[f32],
    n_ctx: usize,
    n_keys: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    match isa {
        // SAFETY: a kernel set of level `isa` exists only when the CPU runs that level.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            head_attention_avx512(q, keys_t, values, n_ctx, n_keys, scale, scores, out)
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe {
            head_attention_avx2(q, keys_t, values, n_ctx, n_keys, scale, scores, out)
        },
        _ => head_attention_generic(q, keys_t, values, n_ctx, n_keys, scale, scores, out),
    }
}

/// A `#[target_feature]` copy of [`head_attention_generic`]: same source, vectorised for `$feat`.
macro_rules! head_attention_for {
    ($name:ident, $feat:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            q: &[f32],
            keys_t: &[f32],
            values: &[f32],
            n_ctx: usize,
            n_keys: usize,
            scale: f32,
            scores: &mut [f32],
            out: &mut [f32],
        ) {
            head_attention_generic(q, keys_t, values, n_ctx, n_keys, scale, scores, out)
        }
    };
}

head_attention_for!(head_attention_avx512, "avx512f,avx512bw,avx512vl,avx2,fma");
head_attention_for!(head_attention_avx2, "avx2,fma");

/// Scores over the transposed keys, softmax, weighted sum of values. `#[inline(always)]` so each
/// `#[target_feature]` wrapper above gets its own vectorised copy.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn head_attention_generic(
    q: &[f32],
    keys_t: &[f32],
    values: &[f32],
    n_ctx: usize,
    n_keys: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    scores.fill(0.0);
    // Four key dimensions per pass over the scores: a quarter of the loads and stores of the
    // scores array, which is what bounds this loop.
    let mut q_dims = q.chunks_exact(4);
    let mut d = 0;
    for q4 in &mut q_dims {
        let k0 = &keys_t[d * n_ctx..][..n_keys];
        let k1 = &keys_t[(d + 1) * n_ctx..][..n_keys];
        let k2 = &keys_t[(d + 2) * n_ctx..][..n_keys];
        let k3 = &keys_t[(d + 3) * n_ctx..][..n_keys];
        for ((((s, &a), &b), &c), &e) in scores.iter_mut().zip(k0).zip(k1).zip(k2).zip(k3) {
            *s += q4[0] * a + q4[1] * b + q4[2] * c + q4[3] * e;
        }
        d += 4;
    }
    for &qd in q_dims.remainder() {
        for (s, &k) in scores.iter_mut().zip(&keys_t[d * n_ctx..][..n_keys]) {
            *s += qd * k;
        }
        d += 1;
    }
    let mut max = f32::NEG_INFINITY;
    for s in scores.iter_mut() {
        *s *= scale;
        max = max.max(*s);
    }
    let mut sum = 0.0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    // The output in 16-float slices, each accumulated in registers over all positions.
    let mut dims = out.chunks_exact_mut(16);
    let mut d0 = 0;
    for o in &mut dims {
        let mut acc = [0.0f32; 16];
        for (j, &p) in scores.iter().enumerate() {
            let v = &values[j * hd + d0..][..16];
            for (a, &x) in acc.iter_mut().zip(v) {
                *a += p * x;
            }
        }
        for (o, a) in o.iter_mut().zip(acc) {
            *o = a * inv;
        }
        d0 += 16;
    }
    for (i, o) in dims.into_remainder().iter_mut().enumerate() {
        let acc: f32 = scores
            .iter()
            .enumerate()
            .map(|(j, &p)| p * values[j * hd + d0 + i])
            .sum();
        *o = acc * inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward attention from untransposed rows, in f64.
    fn naive(shape: &AttentionShape, q: &[f32], k: &[f32], v: &[f32], pos0: usize) -> Vec<f32> {
        let (hd, kv_dim, q_dim) = (
            shape.head_dim,
            shape.n_head_kv * shape.head_dim,
            shape.n_head * shape.head_dim,
        );
        let n = q.len() / q_dim;
        let mut out = vec![0.0f32; q.len()];
        for t in 0..n {
            for h in 0..shape.n_head {
                let kvh = h / (shape.n_head / shape.n_head_kv);
                let qh = &q[t * q_dim + h * hd..][..hd];
                let s: Vec<f64> = (0..=pos0 + t)
                    .map(|j| {
                        let kj = &k[j * kv_dim + kvh * hd..][..hd];
                        qh.iter()
                            .zip(kj)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for d in 0..hd {
                    let o: f64 = e
                        .iter()
                        .enumerate()
                        .map(|(j, w)| w / sum * v[j * kv_dim + kvh * hd + d] as f64)
                        .sum();
                    out[t * q_dim + h * hd + d] = o as f32;
                }
            }
        }
        out
    }

    #[test]
    fn every_level_matches_naive_attention_for_prefill_and_decode() {
        let shape = AttentionShape {
            n_head: 6,
            n_head_kv: 2,
            head_dim: 16,
            n_ctx: 40,
        };
        let kv_dim = shape.n_head_kv * shape.head_dim;
        let q_dim = shape.n_head * shape.head_dim;
        let mut state = 1u32;
        let mut rnd = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                    (state >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
                })
                .collect()
        };
        let n_total = 19;
        let (k, v) = (rnd(n_total * kv_dim), rnd(n_total * kv_dim));
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            // 17 tokens of prefill, then 2 decode steps.
            let mut keys = vec![0.0f32; shape.n_head_kv * shape.head_dim * shape.n_ctx];
            let mut values = vec![0.0f32; keys.len()];
            for (pos0, n) in [(0usize, 17usize), (17, 1), (18, 1)] {
                store(
                    &shape,
                    &mut keys,
                    &mut values,
                    pos0,
                    &k[pos0 * kv_dim..(pos0 + n) * kv_dim],
                    &v[pos0 * kv_dim..(pos0 + n) * kv_dim],
                );
                let q = rnd(n * q_dim);
                let mut out = vec![0.0f32; n * q_dim];
                attend(
                    isa,
                    &shape,
                    &LayerCache {
                        keys: &keys,
                        values: &values,
                    },
                    &q,
                    pos0,
                    &mut out,
                );
                let expected = naive(
                    &shape,
                    &q,
                    &k[..(pos0 + n) * kv_dim],
                    &v[..(pos0 + n) * kv_dim],
                    pos0,
                );
                for (i, (a, b)) in out.iter().zip(&expected).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "{isa:?} pos0 {pos0}: [{i}] {a} vs {b}"
                    );
                }
            }
        }
    }
}
