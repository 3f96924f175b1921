//! Causal attention over a key/value cache laid out for vector loads.
//!
//! Keys are stored transposed per KV head (`[kv_head][dim][position]`) so a query's scores are
//! `s[0..n] += q[d] · K[d][0..n]` for each dimension `d`: contiguous over positions, no
//! horizontal sums. Values are stored `[kv_head][position][dim]` so the output is
//! `o += p[j] · V[j]`, contiguous over dimensions. Both inner loops are plain Rust compiled three
//! times (baseline, AVX2+FMA, AVX-512) and chosen by the kernel set's level.
//!
//! Prefill on the SIMD levels attends eight consecutive queries of a head at once
//! ([`QueryBlock`]): each key and value chunk is loaded once for the eight, scores and outputs
//! stay in registers, and the softmax uses the vectorisable [`crate::math::exp`]. The scalar
//! level stays one query at a time, so a scalar prefill equals the same tokens decoded one by
//! one exactly.

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

/// How scores are formed besides the cache geometry: Gemma scales by `query_pre_attn_scalar`
/// rather than the head size, Gemma 2 soft-caps scores, and sliding-window layers (Gemma 2/3,
/// Mistral) see only the latest `window` positions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreOptions {
    /// Multiplies every `q·k` (usually `1/√head_dim`).
    pub scale: f32,
    /// `cap · tanh(score / cap)` after scaling.
    pub softcap: Option<f32>,
    /// A query at position p sees keys p − window + 1 ..= p (llama.cpp's `p1 - p0 >= n_swa`
    /// mask).
    pub window: Option<usize>,
}

impl ScoreOptions {
    /// Plain scaled dot-product attention over every earlier position.
    pub fn standard(head_dim: usize) -> Self {
        Self {
            scale: 1.0 / (head_dim as f32).sqrt(),
            softcap: None,
            window: None,
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
    let opts = ScoreOptions::standard(shape.head_dim);
    attend_with(isa, shape, cache, q, pos0, &opts, out)
}

/// [`attend`] with the scores formed as `opts` says.
pub fn attend_with(
    isa: Isa,
    shape: &AttentionShape,
    cache: &LayerCache,
    q: &[f32],
    pos0: usize,
    opts: &ScoreOptions,
    out: &mut [f32],
) {
    let hd = shape.head_dim;
    let q_dim = shape.n_head * hd;
    let n = q.len() / q_dim;
    let group = shape.n_head / shape.n_head_kv;
    let scale = opts.scale;
    // A softcap is applied one score at a time, and a window that cuts into the block's keys
    // gives each query its own first key: both go one query at a time.
    let block_ok = |t1: usize| opts.softcap.is_none() && opts.window.is_none_or(|w| pos0 + t1 <= w);
    // Work items: (head, first query, output rows of that head for those queries) — the
    // output for head h of token t is out[t][h·hd..], so gather per task and scatter after.
    let tasks: Vec<(usize, usize)> = (0..shape.n_head)
        .flat_map(|h| (0..n).step_by(QUERIES_PER_TASK).map(move |t0| (h, t0)))
        .collect();
    let results: Vec<(usize, usize, Vec<f32>)> = crate::team::map(tasks, |(h, t0)| {
        let kvh = h / group;
        let keys = &cache.keys[kvh * hd * shape.n_ctx..][..hd * shape.n_ctx];
        let values = &cache.values[kvh * shape.n_ctx * hd..][..shape.n_ctx * hd];
        let t1 = (t0 + QUERIES_PER_TASK).min(n);
        let mut o = vec![0.0f32; (t1 - t0) * hd];
        // The scalar level keeps one query at a time: it is the reference, and then a
        // prefill computes exactly what the same tokens decoded one by one compute.
        if isa != Isa::Scalar
            && t1 - t0 == QUERIES_PER_TASK
            && hd.is_multiple_of(LANES)
            && block_ok(t1)
        {
            let q_rows: [&[f32]; QUERIES_PER_TASK] =
                std::array::from_fn(|i| &q[(t0 + i) * q_dim + h * hd..][..hd]);
            let n_keys = std::array::from_fn(|i| pos0 + t0 + i + 1);
            let mut scores = vec![0.0f32; QUERIES_PER_TASK * (pos0 + t1).next_multiple_of(LANES)];
            let block = QueryBlock {
                q: q_rows,
                n_keys,
                scale,
            };
            block_attention(isa, &block, keys, values, shape.n_ctx, &mut scores, &mut o);
            return (h, t0, o);
        }
        let mut scores = vec![0.0f32; pos0 + t1];
        for (t, o_row) in (t0..t1).zip(o.chunks_exact_mut(hd)) {
            let end = pos0 + t + 1;
            // Keys before `first` are outside the window: start the transposed rows and
            // the values there (the key row stride stays n_ctx).
            let first = opts.window.map_or(0, |w| end.saturating_sub(w));
            let n_keys = end - first;
            let q_row = &q[t * q_dim + h * hd..][..hd];
            head_attention(
                isa,
                q_row,
                &keys[first..],
                &values[first * hd..],
                shape.n_ctx,
                n_keys,
                (scale, opts.softcap.unwrap_or(0.0)),
                &mut scores[..n_keys],
                o_row,
            );
        }
        (h, t0, o)
    });
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
    scale: (f32, f32),
    scores: &mut [f32],
    out: &mut [f32],
) {
    // A level runs its float level's code (AVX-VNNI: AVX2's).
    match isa.float_level() {
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
            scale: (f32, f32),
            scores: &mut [f32],
            out: &mut [f32],
        ) {
            head_attention_generic(q, keys_t, values, n_ctx, n_keys, scale, scores, out)
        }
    };
}

head_attention_for!(head_attention_avx512, "avx512f,avx512bw,avx512vl,avx2,fma");
head_attention_for!(head_attention_avx2, "avx2,fma");

/// Scores over the transposed keys, softmax, weighted sum of values. `(scale, softcap)`: a
/// softcap of 0 is none. `#[inline(always)]` so each `#[target_feature]` wrapper above gets its
/// own vectorised copy.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn head_attention_generic(
    q: &[f32],
    keys_t: &[f32],
    values: &[f32],
    n_ctx: usize,
    n_keys: usize,
    (scale, softcap): (f32, f32),
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
    if softcap > 0.0 {
        for s in scores.iter_mut() {
            *s = softcap * (*s * scale / softcap).tanh();
            max = max.max(*s);
        }
    } else {
        for s in scores.iter_mut() {
            *s *= scale;
            max = max.max(*s);
        }
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

/// Lanes of the score and output chunks the block kernel keeps in registers (one 512-bit or
/// two 256-bit vectors).
const LANES: usize = 16;

/// Consecutive query rows of one head (prefill), each seeing one more key than the previous.
struct QueryBlock<'a> {
    q: [&'a [f32]; QUERIES_PER_TASK],
    /// Keys visible to each query (causal: increasing by one).
    n_keys: [usize; QUERIES_PER_TASK],
    scale: f32,
}

fn block_attention(
    isa: Isa,
    block: &QueryBlock,
    keys_t: &[f32],
    values: &[f32],
    n_ctx: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    // A level runs its float level's code (AVX-VNNI: AVX2's).
    match isa.float_level() {
        // SAFETY: a kernel set of level `isa` exists only when the CPU runs that level.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { block_attention_avx512(block, keys_t, values, n_ctx, scores, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { block_attention_avx2(block, keys_t, values, n_ctx, scores, out) },
        _ => unreachable!("the scalar level attends one query at a time"),
    }
}

/// [`block_attention_generic`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_attention_avx2(
    block: &QueryBlock,
    keys_t: &[f32],
    values: &[f32],
    n_ctx: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    block_attention_generic(block, keys_t, values, n_ctx, scores, out)
}

/// [`block_attention_generic`] with the two hot loops written in AVX-512 intrinsics (the
/// compiler's own vectorisation of them is fragile: small source changes made it gather across
/// the query dimension, 4× slower). Same arithmetic, same order per output.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn block_attention_avx512(
    block: &QueryBlock,
    keys_t: &[f32],
    values: &[f32],
    n_ctx: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    const QB: usize = QUERIES_PER_TASK;
    let geo = BlockGeometry::new(block, n_ctx);
    let qt = transposed_scaled_queries(block);
    for j0 in (0..geo.chunked).step_by(LANES) {
        let mut acc = [_mm512_setzero_ps(); QB];
        for (d, qd) in qt.iter().enumerate() {
            let k = keys_t[d * n_ctx + j0..][..LANES].as_ptr();
            let k = _mm512_loadu_ps(k);
            for (a, &q) in acc.iter_mut().zip(qd) {
                *a = _mm512_fmadd_ps(_mm512_set1_ps(q), k, *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(scores[i * geo.stride + j0..][..LANES].as_mut_ptr(), *a);
        }
    }
    score_tail(block, &qt, keys_t, n_ctx, &geo, scores);
    let (pt, inv) = causal_softmax(block, &geo, scores);
    let hd = qt.len();
    for d0 in (0..hd).step_by(LANES) {
        let mut acc = [_mm512_setzero_ps(); QB];
        for (j, pj) in pt.iter().enumerate() {
            let v = _mm512_loadu_ps(values[j * hd + d0..][..LANES].as_ptr());
            for (a, &p) in acc.iter_mut().zip(pj) {
                *a = _mm512_fmadd_ps(_mm512_set1_ps(p), v, *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            let o = _mm512_mul_ps(*a, _mm512_set1_ps(inv[i]));
            _mm512_storeu_ps(out[i * hd + d0..][..LANES].as_mut_ptr(), o);
        }
    }
}

/// Score-row layout of one query block.
struct BlockGeometry {
    /// Keys the last (latest) query sees.
    nk: usize,
    /// Row stride of the scores: `nk` rounded up to [`LANES`].
    stride: usize,
    /// Keys scored in whole [`LANES`] chunks. Where the cache has room the last chunk runs past
    /// `nk` (those scores are masked) rather than falling back to strided one-key dots.
    chunked: usize,
}

impl BlockGeometry {
    fn new(block: &QueryBlock, n_ctx: usize) -> Self {
        let nk = block.n_keys[QUERIES_PER_TASK - 1];
        let stride = nk.next_multiple_of(LANES);
        let chunked = if stride <= n_ctx {
            stride
        } else {
            nk / LANES * LANES
        };
        Self {
            nk,
            stride,
            chunked,
        }
    }
}

/// The queries transposed (`[dim][query]`) and pre-scaled by 1/√d: the score loop broadcasts
/// from one base pointer instead of eight.
#[inline(always)]
fn transposed_scaled_queries(block: &QueryBlock) -> Vec<[f32; QUERIES_PER_TASK]> {
    (0..block.q[0].len())
        .map(|d| std::array::from_fn(|i| block.q[i][d] * block.scale))
        .collect()
}

/// Scores of the keys past the whole chunks, one dot product each.
#[inline(always)]
fn score_tail(
    block: &QueryBlock,
    qt: &[[f32; QUERIES_PER_TASK]],
    keys_t: &[f32],
    n_ctx: usize,
    geo: &BlockGeometry,
    scores: &mut [f32],
) {
    for j in geo.chunked..geo.nk {
        for i in 0..block.q.len() {
            scores[i * geo.stride + j] = qt
                .iter()
                .enumerate()
                .map(|(d, q)| q[i] * keys_t[d * n_ctx + j])
                .sum();
        }
    }
}

/// Causal softmax per query (keys past the query's own position get weight 0), returned
/// transposed (`[key][query]`) for the value pass, with each query's 1/Σ. Max and sum run
/// over sixteen partial lanes so both vectorise.
#[inline(always)]
fn causal_softmax(
    block: &QueryBlock,
    geo: &BlockGeometry,
    scores: &mut [f32],
) -> (Vec<[f32; QUERIES_PER_TASK]>, [f32; QUERIES_PER_TASK]) {
    let mut pt = vec![[0.0f32; QUERIES_PER_TASK]; geo.nk];
    let mut inv = [0.0f32; QUERIES_PER_TASK];
    for (i, row) in scores.chunks_exact_mut(geo.stride).enumerate() {
        let seen = &mut row[..block.n_keys[i]];
        let mut lane_max = [f32::NEG_INFINITY; LANES];
        let mut chunks = seen.chunks_exact(LANES);
        for c in &mut chunks {
            for (m, &s) in lane_max.iter_mut().zip(c) {
                *m = m.max(s);
            }
        }
        for (m, &s) in lane_max.iter_mut().zip(chunks.remainder()) {
            *m = m.max(s);
        }
        let max = lane_max.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let mut lane_sum = [0.0f32; LANES];
        let mut chunks = seen.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (s, l) in c.iter_mut().zip(lane_sum.iter_mut()) {
                *s = crate::math::exp(*s - max);
                *l += *s;
            }
        }
        for (s, l) in chunks.into_remainder().iter_mut().zip(lane_sum.iter_mut()) {
            *s = crate::math::exp(*s - max);
            *l += *s;
        }
        inv[i] = 1.0 / lane_sum.iter().sum::<f32>();
        for (p, &s) in pt.iter_mut().zip(seen.iter()) {
            p[i] = s;
        }
    }
    (pt, inv)
}

/// Attention for a block of query rows of one head: every key and value chunk is loaded once
/// for all the block's queries (the single-query kernel loads it once per query), with the
/// block's scores and outputs accumulated in registers. `scores` holds
/// `QUERIES_PER_TASK × n_keys.last()` (rounded up to [`LANES`]) floats, `out` the block's
/// `[query][head_dim]` rows; `head_dim` must be a multiple of [`LANES`]. Inlined into
/// [`block_attention_avx2`] (FMA targets only: `mul_add` is one instruction there).
#[inline(always)]
fn block_attention_generic(
    block: &QueryBlock,
    keys_t: &[f32],
    values: &[f32],
    n_ctx: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    const QB: usize = QUERIES_PER_TASK;
    let geo = BlockGeometry::new(block, n_ctx);
    let qt = transposed_scaled_queries(block);
    for j0 in (0..geo.chunked).step_by(LANES) {
        let mut acc = [[0.0f32; LANES]; QB];
        for (d, qd) in qt.iter().enumerate() {
            let k: &[f32; LANES] = keys_t[d * n_ctx + j0..][..LANES].try_into().unwrap();
            for (a, &q) in acc.iter_mut().zip(qd) {
                for (x, &kv) in a.iter_mut().zip(k) {
                    *x = q.mul_add(kv, *x);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            scores[i * geo.stride + j0..][..LANES].copy_from_slice(a);
        }
    }
    score_tail(block, &qt, keys_t, n_ctx, &geo, scores);
    let (pt, inv) = causal_softmax(block, &geo, scores);
    // Outputs: O[i] = Σ_j P[i][j]·V[j], sixteen dimensions at a time over every key.
    let hd = qt.len();
    for d0 in (0..hd).step_by(LANES) {
        let mut acc = [[0.0f32; LANES]; QB];
        for (j, pj) in pt.iter().enumerate() {
            let v: &[f32; LANES] = values[j * hd + d0..][..LANES].try_into().unwrap();
            for (a, &p) in acc.iter_mut().zip(pj) {
                for (x, &vv) in a.iter_mut().zip(v) {
                    *x = p.mul_add(vv, *x);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (o, &x) in out[i * hd + d0..][..LANES].iter_mut().zip(a) {
                *o = x * inv[i];
            }
        }
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
            n_ctx: 70,
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
        let n_total = 70;
        let (k, v) = (rnd(n_total * kv_dim), rnd(n_total * kv_dim));
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            // Prefill (several query blocks, score chunks and tails), decode, a second prefill
            // after cached positions (partial last block), decode, a prefill up to the end of the
            // cache (last score chunk cannot run past it).
            let mut keys = vec![0.0f32; shape.n_head_kv * shape.head_dim * shape.n_ctx];
            let mut values = vec![0.0f32; keys.len()];
            for (pos0, n) in [(0usize, 41usize), (41, 1), (42, 17), (59, 1), (60, 10)] {
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
