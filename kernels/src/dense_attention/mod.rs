//! Non-causal multi-head attention over one whole sequence (vision encoders): every query sees
//! every key, except that an optional flag per token blocks the pairs where *both* tokens are
//! flagged (mllama's padding mask: padding attends only to real tokens, real tokens see all).
//!
//! The SIMD levels work per head on blocks of [`QUERY_BLOCK`] queries: scores are a small
//! matrix product `Q_blk · Kᵀ` computed in register tiles of `QUERY_BLOCK × KEY_TILE`, the
//! softmax runs over whole score rows (two passes: max, then exp and sum, with the
//! vectorisable [`crate::math::exp`]), and the output is `P · V` in register tiles of
//! `QUERY_BLOCK × 32` dimensions. The plain Rust loops are compiled once per level
//! (`#[target_feature]` copies) and use fused multiply-adds. The scalar level is the reference:
//! one query at a time, libm's `exp`, no blocking.

use rayon::prelude::*;

use crate::cpu::Isa;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod bf16;
#[cfg(test)]
mod tests;

pub use bf16::{attend_bf16, has_bf16_kernel, reference_bf16};

/// Queries attended together: their scores stay in cache while V streams once for all.
const QUERY_BLOCK: usize = 8;
/// Keys per register tile of the score product (8 queries × 32 keys = 16 AVX-512 registers).
const KEY_TILE: usize = 32;
/// Queries per parallel task (several blocks, so each task amortises its setup).
const QUERIES_PER_TASK: usize = 64;

/// Geometry: `n_tok` tokens, `n_head` heads of `head_dim`; rows are `[token][head·head_dim]`.
#[derive(Clone, Copy, Debug)]
pub struct DenseShape {
    pub n_tok: usize,
    pub n_head: usize,
    pub head_dim: usize,
}

impl DenseShape {
    fn row(&self) -> usize {
        self.n_head * self.head_dim
    }
}

/// `out = softmax(q·kᵀ/√head_dim + mask)·v` per head. `q`, `k`, `v`, `out` are
/// `[n_tok][n_head·head_dim]`. With `flagged`, a query and a key that are both flagged do not
/// attend to each other; a flagged query must see at least one unflagged key.
pub fn attend(
    isa: Isa,
    shape: &DenseShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    flagged: Option<&[bool]>,
    out: &mut [f32],
) {
    check_operands(shape, [q, k, v, out], flagged);
    if isa == Isa::Scalar {
        reference(shape, q, k, v, flagged, out);
        return;
    }
    blocked(isa, shape, q, k, v, flagged, out);
}

/// Panics unless every operand is `[n_tok][n_head·head_dim]` and there is one flag per token.
fn check_operands(shape: &DenseShape, operands: [&[f32]; 4], flagged: Option<&[bool]>) {
    let len = shape.n_tok * shape.row();
    assert!(
        operands.iter().all(|o| o.len() == len),
        "dense attention operands must be n_tok × n_head·head_dim"
    );
    if let Some(f) = flagged {
        assert_eq!(f.len(), shape.n_tok, "one flag per token");
    }
}

/// The reference: one query at a time, scores in f32, libm `exp`.
pub fn reference(
    shape: &DenseShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    flagged: Option<&[bool]>,
    out: &mut [f32],
) {
    let (n, hd, row) = (shape.n_tok, shape.head_dim, shape.row());
    let scale = 1.0 / (hd as f32).sqrt();
    let blocked = |i: usize, j: usize| flagged.is_some_and(|f| f[i] && f[j]);
    out.par_chunks_mut(row).enumerate().for_each(|(i, o_row)| {
        let mut scores = vec![0.0f32; n];
        for h in 0..shape.n_head {
            let qh = &q[i * row + h * hd..][..hd];
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                let kh = &k[j * row + h * hd..][..hd];
                let dot: f32 = qh.iter().zip(kh).map(|(a, b)| a * b).sum();
                *s = if blocked(i, j) {
                    f32::NEG_INFINITY
                } else {
                    dot * scale
                };
                max = max.max(*s);
            }
            let mut sum = 0.0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let oh = &mut o_row[h * hd..][..hd];
            oh.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                for (o, &x) in oh.iter_mut().zip(&v[j * row + h * hd..][..hd]) {
                    *o += p * x;
                }
            }
            for o in oh.iter_mut() {
                *o /= sum;
            }
        }
    });
}

/// One head's keys in transposed panels (`[n_pad / KEY_TILE][head_dim][KEY_TILE]`, zero beyond
/// `n_tok`) and its values (`[n_tok][head_dim]`), so the score tile reads one contiguous panel
/// and the value tiles stream rows.
struct HeadKv {
    keys_t: Vec<f32>,
    values: Vec<f32>,
}

fn gather_heads(shape: &DenseShape, k: &[f32], v: &[f32], n_pad: usize) -> Vec<HeadKv> {
    let (n, hd, row) = (shape.n_tok, shape.head_dim, shape.row());
    (0..shape.n_head)
        .into_par_iter()
        .map(|h| {
            let mut keys_t = vec![0.0f32; hd * n_pad];
            let mut values = vec![0.0f32; n * hd];
            for j in 0..n {
                let kr = &k[j * row + h * hd..][..hd];
                let panel = &mut keys_t[(j / KEY_TILE) * hd * KEY_TILE..][..hd * KEY_TILE];
                for (d, &x) in kr.iter().enumerate() {
                    panel[d * KEY_TILE + j % KEY_TILE] = x;
                }
                values[j * hd..][..hd].copy_from_slice(&v[j * row + h * hd..][..hd]);
            }
            HeadKv { keys_t, values }
        })
        .collect()
}

fn blocked(
    isa: Isa,
    shape: &DenseShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    flagged: Option<&[bool]>,
    out: &mut [f32],
) {
    let (n, hd, row) = (shape.n_tok, shape.head_dim, shape.row());
    let n_pad = n.next_multiple_of(KEY_TILE);
    let heads = gather_heads(shape, k, v, n_pad);
    let scale = 1.0 / (hd as f32).sqrt();
    let tasks: Vec<(usize, usize)> = (0..shape.n_head)
        .flat_map(|h| (0..n).step_by(QUERIES_PER_TASK).map(move |t0| (h, t0)))
        .collect();
    let results: Vec<(usize, usize, Vec<f32>)> = tasks
        .into_par_iter()
        .map(|(h, t0)| {
            let t1 = (t0 + QUERIES_PER_TASK).min(n);
            let mut o = vec![0.0f32; (t1 - t0) * hd];
            let mut scores = vec![0.0f32; QUERY_BLOCK * n_pad];
            // Queries of the block, scaled, transposed to [head_dim][QUERY_BLOCK].
            let mut q_t = vec![0.0f32; hd * QUERY_BLOCK];
            let mut o_blk = vec![0.0f32; QUERY_BLOCK * hd];
            for b0 in (t0..t1).step_by(QUERY_BLOCK) {
                let b1 = (b0 + QUERY_BLOCK).min(t1);
                q_t.fill(0.0);
                for (i, t) in (b0..b1).enumerate() {
                    for (d, &x) in q[t * row + h * hd..][..hd].iter().enumerate() {
                        q_t[d * QUERY_BLOCK + i] = x * scale;
                    }
                }
                let rows_flagged: [bool; QUERY_BLOCK] =
                    std::array::from_fn(|i| flagged.is_some_and(|f| b0 + i < b1 && f[b0 + i]));
                let block = Block {
                    q_t: &q_t,
                    head: &heads[h],
                    n,
                    n_pad,
                    hd,
                    rows_flagged,
                    flagged,
                };
                run_block(isa, &block, &mut scores, &mut o_blk);
                o[(b0 - t0) * hd..(b1 - t0) * hd].copy_from_slice(&o_blk[..(b1 - b0) * hd]);
            }
            (h, t0, o)
        })
        .collect();
    for (h, t0, o) in results {
        for (i, o_row) in o.chunks_exact(hd).enumerate() {
            out[(t0 + i) * row + h * hd..][..hd].copy_from_slice(o_row);
        }
    }
}

/// One block of queries of one head.
struct Block<'a> {
    q_t: &'a [f32],
    head: &'a HeadKv,
    n: usize,
    n_pad: usize,
    hd: usize,
    rows_flagged: [bool; QUERY_BLOCK],
    flagged: Option<&'a [bool]>,
}

fn run_block(isa: Isa, block: &Block, scores: &mut [f32], out: &mut [f32]) {
    // A level runs its float level's code (AVX-VNNI: AVX2's).
    match isa.float_level() {
        // SAFETY: a kernel set of level `isa` exists only when the CPU runs that level.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { block_avx512(block, scores, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { block_avx2(block, scores, out) },
        _ => block_generic(block, scores, out),
    }
}

/// AVX-512 and AVX2: the two products with explicit register tiles (the compiler does not
/// vectorise the generic tiles: it unrolls them into scalar FMAs), the softmax as generic code
/// compiled for the level.
macro_rules! block_for {
    ($name:ident, $feat:literal, $simd:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        unsafe fn $name(block: &Block, scores: &mut [f32], out: &mut [f32]) {
            $simd::block_scores(block, scores);
            let sums = block_softmax(block, scores);
            $simd::block_values(block, scores, out);
            normalise(out, block.hd, sums);
        }
    };
}

block_for!(block_avx512, "avx512f,avx512bw,avx512vl,avx2,fma", avx512);
block_for!(block_avx2, "avx2,fma", avx2);

/// Divides each output row by its softmax sum.
#[inline(always)]
fn normalise(out: &mut [f32], hd: usize, sums: [f32; QUERY_BLOCK]) {
    for (o_row, sum) in out.chunks_exact_mut(hd).zip(sums) {
        let inv = 1.0 / sum;
        for o in o_row {
            *o *= inv;
        }
    }
}

#[inline(always)]
fn block_generic(block: &Block, scores: &mut [f32], out: &mut [f32]) {
    block_scores(block, scores);
    finish_block(block, scores, out);
}

/// Softmax, `P·V` and the normalisation, after the scores.
#[inline(always)]
fn finish_block(block: &Block, scores: &mut [f32], out: &mut [f32]) {
    let sums = block_softmax(block, scores);
    block_values(block, scores, out);
    normalise(out, block.hd, sums);
}

/// `scores[i][j] = q_i · k_j` (q already scaled) in `QUERY_BLOCK × KEY_TILE` register tiles.
#[inline(always)]
fn block_scores(block: &Block, scores: &mut [f32]) {
    let (hd, n_pad) = (block.hd, block.n_pad);
    let keys_t = &block.head.keys_t;
    for j0 in (0..n_pad).step_by(KEY_TILE) {
        let mut acc = [[0.0f32; KEY_TILE]; QUERY_BLOCK];
        for d in 0..hd {
            let k: &[f32; KEY_TILE] = keys_t[(j0 * hd + d * KEY_TILE)..][..KEY_TILE]
                .try_into()
                .unwrap();
            let qd: &[f32; QUERY_BLOCK] = block.q_t[d * QUERY_BLOCK..][..QUERY_BLOCK]
                .try_into()
                .unwrap();
            for (acc_row, &qv) in acc.iter_mut().zip(qd) {
                for (a, &kv) in acc_row.iter_mut().zip(k) {
                    *a = qv.mul_add(kv, *a);
                }
            }
        }
        for (i, acc_row) in acc.iter().enumerate() {
            scores[i * n_pad + j0..][..KEY_TILE].copy_from_slice(acc_row);
        }
    }
}

/// Turns each score row into unnormalised probabilities `exp(s − max)` over the `n` real keys
/// (blocked pairs get 0) and returns the row sums.
#[inline(always)]
fn block_softmax(block: &Block, scores: &mut [f32]) -> [f32; QUERY_BLOCK] {
    let n = block.n;
    let mut sums = [0.0f32; QUERY_BLOCK];
    for (i, sum) in sums.iter_mut().enumerate() {
        let row = &mut scores[i * block.n_pad..][..n];
        let key_flags = block.flagged.filter(|_| block.rows_flagged[i]);
        if let Some(flags) = key_flags {
            for (s, &f) in row.iter_mut().zip(flags) {
                if f {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        // Reductions over LANES independent partials: a single f32 accumulator would pin the
        // loops to scalar code (float addition is not reassociated).
        let mut lane_max = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (m, &v) in lane_max.iter_mut().zip(c) {
                *m = m.max(v);
            }
        }
        let max = chunks
            .remainder()
            .iter()
            .chain(&lane_max)
            .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut lane_sum = [0.0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (t, v) in lane_sum.iter_mut().zip(c) {
                *v = exp_or_zero(*v - max);
                *t += *v;
            }
        }
        let mut total = 0.0f32;
        for v in chunks.into_remainder() {
            *v = exp_or_zero(*v - max);
            total += *v;
        }
        *sum = total + lane_sum.iter().sum::<f32>();
    }
    sums
}

/// Lanes of the softmax's partial reductions.
const LANES: usize = 16;

/// e^x, and exactly 0 for a blocked score (−inf): [`crate::math::exp`] clamps its argument, so
/// −inf alone would give 1e-38.
#[inline(always)]
fn exp_or_zero(x: f32) -> f32 {
    let p = crate::math::exp(x);
    if x == f32::NEG_INFINITY {
        0.0
    } else {
        p
    }
}

/// `out[i] = Σ_j p[i][j] · v_j` in register tiles of `QUERY_BLOCK × 32` (then 16) dimensions.
#[inline(always)]
fn block_values(block: &Block, p: &[f32], out: &mut [f32]) {
    let (hd, n, n_pad) = (block.hd, block.n, block.n_pad);
    let values = &block.head.values;
    let mut d0 = 0;
    while d0 + 32 <= hd {
        values_tile::<32>(values, p, n, n_pad, hd, d0, out);
        d0 += 32;
    }
    while d0 + 16 <= hd {
        values_tile::<16>(values, p, n, n_pad, hd, d0, out);
        d0 += 16;
    }
    for d in d0..hd {
        for i in 0..QUERY_BLOCK {
            let row = &p[i * n_pad..][..n];
            out[i * hd + d] = row
                .iter()
                .enumerate()
                .map(|(j, &pj)| pj * values[j * hd + d])
                .sum();
        }
    }
}

#[inline(always)]
fn values_tile<const W: usize>(
    values: &[f32],
    p: &[f32],
    n: usize,
    n_pad: usize,
    hd: usize,
    d0: usize,
    out: &mut [f32],
) {
    let mut acc = [[0.0f32; W]; QUERY_BLOCK];
    for j in 0..n {
        let v: &[f32; W] = values[j * hd + d0..][..W].try_into().unwrap();
        for (i, acc_row) in acc.iter_mut().enumerate() {
            let pj = p[i * n_pad + j];
            for (a, &x) in acc_row.iter_mut().zip(v) {
                *a = pj.mul_add(x, *a);
            }
        }
    }
    for (i, acc_row) in acc.iter().enumerate() {
        out[i * hd + d0..][..W].copy_from_slice(acc_row);
    }
}
