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
    let len = shape.n_tok * shape.row();
    assert!(
        q.len() == len && k.len() == len && v.len() == len && out.len() == len,
        "dense attention operands must be n_tok × n_head·head_dim"
    );
    if let Some(f) = flagged {
        assert_eq!(f.len(), shape.n_tok, "one flag per token");
    }
    if isa == Isa::Scalar {
        reference(shape, q, k, v, flagged, out);
        return;
    }
    blocked(isa, shape, q, k, v, flagged, out);
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

/// Whether [`attend_bf16`] has its kernel on this CPU (AVX-512 BF16, `vdpbf16ps`).
pub fn has_bf16_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`attend`] with both products in bf16 (`vdpbf16ps`, f32 accumulation): the scaled queries,
/// keys, unnormalised probabilities and values are rounded to bf16 (8 significant bits), which
/// doubles the products' rate. The softmax and its sums stay f32. Matches
/// [`reference_bf16`] up to f32 summation order; falls back to [`attend`] when `isa` is not
/// AVX-512 or the CPU lacks AVX-512 BF16.
pub fn attend_bf16(
    isa: Isa,
    shape: &DenseShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    flagged: Option<&[bool]>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && has_bf16_kernel() {
        let len = shape.n_tok * shape.row();
        assert!(
            q.len() == len && k.len() == len && v.len() == len && out.len() == len,
            "dense attention operands must be n_tok × n_head·head_dim"
        );
        if let Some(f) = flagged {
            assert_eq!(f.len(), shape.n_tok, "one flag per token");
        }
        bf16::attend(shape, q, k, v, flagged, out);
        return;
    }
    attend(isa, shape, q, k, v, flagged, out);
}

/// `x` rounded to the nearest bf16 (ties to even), as its 16 bits. No NaN reaches it here.
#[inline(always)]
fn to_bf16(x: f32) -> u32 {
    let b = x.to_bits();
    (b + 0x7fff + ((b >> 16) & 1)) >> 16
}

/// `x` rounded to bf16 and back.
fn round_bf16(x: f32) -> f32 {
    f32::from_bits(to_bf16(x) << 16)
}

/// Two values as one bf16 pair (`lo` in the low half), the operand unit of `vdpbf16ps`.
#[inline(always)]
fn bf16_pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) | (to_bf16(hi) << 16)
}

/// The reference of [`attend_bf16`]: [`reference`] with the scaled queries, the keys, the
/// values and the unnormalised probabilities rounded to bf16 (the sums of the probabilities
/// stay unrounded, as in the kernel).
pub fn reference_bf16(
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
            let qh: Vec<f32> = q[i * row + h * hd..][..hd]
                .iter()
                .map(|&x| round_bf16(x * scale))
                .collect();
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                let kh = &k[j * row + h * hd..][..hd];
                let dot: f32 = qh.iter().zip(kh).map(|(a, &b)| a * round_bf16(b)).sum();
                *s = if blocked(i, j) {
                    f32::NEG_INFINITY
                } else {
                    dot
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
                let p = round_bf16(p);
                for (o, &x) in oh.iter_mut().zip(&v[j * row + h * hd..][..hd]) {
                    *o += p * round_bf16(x);
                }
            }
            for o in oh.iter_mut() {
                *o /= sum;
            }
        }
    });
}

/// The bf16 kernels: the f32 blocked scheme with bf16 pairs. Keys are stored as panels of
/// `KEY_TILE` keys × dimension pairs, values as key pairs × dimensions (padded to 16), so
/// one `vdpbf16ps` adds two products per f32 lane.
#[cfg(target_arch = "x86_64")]
mod bf16 {
    use std::arch::x86_64::*;

    use rayon::prelude::*;

    use super::{
        bf16_pair, block_softmax, normalise, Block, DenseShape, HeadKv, KEY_TILE, QUERIES_PER_TASK,
        QUERY_BLOCK,
    };

    /// One head in bf16 pairs: `keys` `[n_pad / 32][hd2][32]` (pair = dimensions 2p, 2p+1 of
    /// one key), `values` `[n_pad / 2][hd16]` (pair = keys 2j, 2j+1 of one dimension); zero
    /// beyond `n_tok` and `head_dim`.
    struct HeadPairs {
        keys: Vec<u32>,
        values: Vec<u32>,
    }

    struct Dims {
        n: usize,
        n_pad: usize,
        hd: usize,
        hd2: usize,
        hd16: usize,
    }

    fn gather(shape: &DenseShape, dims: &Dims, k: &[f32], v: &[f32]) -> Vec<HeadPairs> {
        let Dims {
            n,
            n_pad,
            hd,
            hd2,
            hd16,
        } = *dims;
        let row = shape.row();
        let at = |x: &[f32], j: usize, h: usize, d: usize| {
            if j < n && d < hd {
                x[j * row + h * hd + d]
            } else {
                0.0
            }
        };
        (0..shape.n_head)
            .into_par_iter()
            .map(|h| {
                let mut keys = vec![0u32; n_pad * hd2];
                for j in 0..n_pad {
                    let panel = &mut keys[(j / KEY_TILE) * hd2 * KEY_TILE..][..hd2 * KEY_TILE];
                    for p in 0..hd2 {
                        panel[p * KEY_TILE + j % KEY_TILE] =
                            bf16_pair(at(k, j, h, 2 * p), at(k, j, h, 2 * p + 1));
                    }
                }
                let mut values = vec![0u32; n_pad / 2 * hd16];
                for jp in 0..n_pad / 2 {
                    for d in 0..hd16 {
                        values[jp * hd16 + d] =
                            bf16_pair(at(v, 2 * jp, h, d), at(v, 2 * jp + 1, h, d));
                    }
                }
                HeadPairs { keys, values }
            })
            .collect()
    }

    pub(super) fn attend(
        shape: &DenseShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        flagged: Option<&[bool]>,
        out: &mut [f32],
    ) {
        let (n, hd, row) = (shape.n_tok, shape.head_dim, shape.row());
        let dims = Dims {
            n,
            n_pad: n.next_multiple_of(KEY_TILE),
            hd,
            hd2: hd.div_ceil(2),
            hd16: hd.next_multiple_of(16),
        };
        let heads = gather(shape, &dims, k, v);
        let scale = 1.0 / (hd as f32).sqrt();
        let tasks: Vec<(usize, usize)> = (0..shape.n_head)
            .flat_map(|h| (0..n).step_by(QUERIES_PER_TASK).map(move |t0| (h, t0)))
            .collect();
        let results: Vec<(usize, usize, Vec<f32>)> = tasks
            .into_par_iter()
            .map(|(h, t0)| {
                let t1 = (t0 + QUERIES_PER_TASK).min(n);
                let mut o = vec![0.0f32; (t1 - t0) * hd];
                let mut scores = vec![0.0f32; QUERY_BLOCK * dims.n_pad];
                let mut p_pairs = vec![0u32; QUERY_BLOCK * dims.n_pad / 2];
                // Queries of the block, scaled, as [hd2][QUERY_BLOCK] pairs.
                let mut q_pairs = vec![0u32; dims.hd2 * QUERY_BLOCK];
                let mut o_blk = vec![0.0f32; QUERY_BLOCK * dims.hd16];
                for b0 in (t0..t1).step_by(QUERY_BLOCK) {
                    let b1 = (b0 + QUERY_BLOCK).min(t1);
                    q_pairs.fill(0);
                    for (i, t) in (b0..b1).enumerate() {
                        let qr = &q[t * row + h * hd..][..hd];
                        let qd = |d: usize| qr.get(d).map_or(0.0, |&x| x * scale);
                        for p in 0..dims.hd2 {
                            q_pairs[p * QUERY_BLOCK + i] = bf16_pair(qd(2 * p), qd(2 * p + 1));
                        }
                    }
                    let rows_flagged: [bool; QUERY_BLOCK] =
                        std::array::from_fn(|i| flagged.is_some_and(|f| b0 + i < b1 && f[b0 + i]));
                    // SAFETY: this function runs only after `has_bf16_kernel()`.
                    unsafe {
                        block(
                            &dims,
                            &heads[h],
                            &q_pairs,
                            rows_flagged,
                            flagged,
                            (&mut scores, &mut p_pairs),
                            &mut o_blk,
                        )
                    };
                    for (i, dst) in o[(b0 - t0) * hd..(b1 - t0) * hd]
                        .chunks_exact_mut(hd)
                        .enumerate()
                    {
                        dst.copy_from_slice(&o_blk[i * dims.hd16..][..hd]);
                    }
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

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
    unsafe fn block(
        dims: &Dims,
        head: &HeadPairs,
        q_pairs: &[u32],
        rows_flagged: [bool; QUERY_BLOCK],
        flagged: Option<&[bool]>,
        (scores, p_pairs): (&mut [f32], &mut [u32]),
        out: &mut [f32],
    ) {
        scores_bf16(dims, head, q_pairs, scores);
        // The shared softmax reads only these fields of a block.
        let empty = HeadKv {
            keys_t: Vec::new(),
            values: Vec::new(),
        };
        let view = Block {
            q_t: &[],
            head: &empty,
            n: dims.n,
            n_pad: dims.n_pad,
            hd: dims.hd16,
            rows_flagged,
            flagged,
        };
        let sums = block_softmax(&view, scores);
        probabilities_to_pairs(dims, scores, p_pairs);
        values_bf16(dims, head, p_pairs, out);
        normalise(out, dims.hd16, sums);
    }

    /// Each probability row (`n` real keys, zero beyond) as bf16 key pairs: `vcvtne2ps2bf16`
    /// rounds to nearest even like [`super::to_bf16`] and, given 32 consecutive values, lays
    /// them out as 16 consecutive pairs.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn probabilities_to_pairs(dims: &Dims, scores: &mut [f32], p_pairs: &mut [u32]) {
        let (n, n_pad) = (dims.n, dims.n_pad);
        let half = n_pad / 2;
        assert!(scores.len() >= QUERY_BLOCK * n_pad && p_pairs.len() >= QUERY_BLOCK * half);
        for i in 0..QUERY_BLOCK {
            let row = &mut scores[i * n_pad..][..n_pad];
            row[n..].fill(0.0);
            let dst = &mut p_pairs[i * half..][..half];
            for (src, out) in row.chunks_exact(32).zip(dst.chunks_exact_mut(16)) {
                let lo = _mm512_loadu_ps(src.as_ptr());
                let hi = _mm512_loadu_ps(src.as_ptr().add(16));
                let pairs: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(out.as_mut_ptr().cast(), pairs);
            }
        }
    }

    #[inline(always)]
    unsafe fn bh(x: __m512i) -> __m512bh {
        std::mem::transmute(x)
    }

    /// `scores[i][j] = q_i · k_j` per tile of 32 keys: per dimension pair two key loads and
    /// eight query-pair broadcasts feed sixteen `vdpbf16ps`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn scores_bf16(dims: &Dims, head: &HeadPairs, q_pairs: &[u32], scores: &mut [f32]) {
        let (hd2, n_pad) = (dims.hd2, dims.n_pad);
        assert!(head.keys.len() >= hd2 * n_pad && q_pairs.len() >= hd2 * QUERY_BLOCK);
        assert!(scores.len() >= QUERY_BLOCK * n_pad && n_pad.is_multiple_of(KEY_TILE));
        let (kp, qp, sp) = (head.keys.as_ptr(), q_pairs.as_ptr(), scores.as_mut_ptr());
        for j0 in (0..n_pad).step_by(KEY_TILE) {
            let mut acc = [[_mm512_setzero_ps(); 2]; QUERY_BLOCK];
            for p in 0..hd2 {
                // SAFETY: panel j0/32 starts at j0·hd2 and p < hd2: inside keys (asserted);
                // q_pairs[p·8 + i] < hd2·8 (asserted).
                let k0 = bh(_mm512_loadu_si512(kp.add(j0 * hd2 + p * KEY_TILE).cast()));
                let k1 = bh(_mm512_loadu_si512(
                    kp.add(j0 * hd2 + p * KEY_TILE + 16).cast(),
                ));
                for (i, a) in acc.iter_mut().enumerate() {
                    let q = bh(_mm512_set1_epi32(*qp.add(p * QUERY_BLOCK + i) as i32));
                    a[0] = _mm512_dpbf16_ps(a[0], q, k0);
                    a[1] = _mm512_dpbf16_ps(a[1], q, k1);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                // SAFETY: i < 8 and j0 + 32 ≤ n_pad: inside scores (asserted).
                _mm512_storeu_ps(sp.add(i * n_pad + j0), a[0]);
                _mm512_storeu_ps(sp.add(i * n_pad + j0 + 16), a[1]);
            }
        }
    }

    /// `out[i][d] = Σ_j p[i][j] · v_j[d]` over key pairs, dimension tiles of 32 then 16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn values_bf16(dims: &Dims, head: &HeadPairs, p_pairs: &[u32], out: &mut [f32]) {
        let (half, hd16) = (dims.n_pad / 2, dims.hd16);
        assert!(head.values.len() >= half * hd16 && p_pairs.len() >= QUERY_BLOCK * half);
        assert!(out.len() >= QUERY_BLOCK * hd16);
        let mut d0 = 0;
        while d0 + 32 <= hd16 {
            values_tile::<2>(head, p_pairs, half, hd16, d0, out);
            d0 += 32;
        }
        while d0 + 16 <= hd16 {
            values_tile::<1>(head, p_pairs, half, hd16, d0, out);
            d0 += 16;
        }
    }

    #[inline(always)]
    unsafe fn values_tile<const W: usize>(
        head: &HeadPairs,
        p_pairs: &[u32],
        half: usize,
        hd16: usize,
        d0: usize,
        out: &mut [f32],
    ) {
        let (vp, pp) = (head.values.as_ptr(), p_pairs.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); W]; QUERY_BLOCK];
        for jp in 0..half {
            let mut v = [bh(_mm512_setzero_si512()); W];
            for (w, vw) in v.iter_mut().enumerate() {
                // SAFETY: jp < half and d0 + 16·W ≤ hd16: inside values (asserted by caller).
                *vw = bh(_mm512_loadu_si512(vp.add(jp * hd16 + d0 + 16 * w).cast()));
            }
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: i < 8, jp < half: inside p_pairs (asserted by the caller).
                let pj = bh(_mm512_set1_epi32(*pp.add(i * half + jp) as i32));
                for (aw, &vw) in a.iter_mut().zip(&v) {
                    *aw = _mm512_dpbf16_ps(*aw, pj, vw);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (w, &aw) in a.iter().enumerate() {
                _mm512_storeu_ps(out[i * hd16 + d0 + 16 * w..][..16].as_mut_ptr(), aw);
            }
        }
    }
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
    match isa {
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

/// The two products of a block with explicit AVX-512 register tiles.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Block, KEY_TILE, QUERY_BLOCK};

    /// `scores[i][j] = q_i · k_j`: per tile of 32 keys, 8 × 2 accumulators; per dimension two
    /// key loads and eight query broadcasts feed sixteen FMAs.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block_scores(block: &Block, scores: &mut [f32]) {
        let (hd, n_pad) = (block.hd, block.n_pad);
        let keys_t = &block.head.keys_t;
        assert!(keys_t.len() >= hd * n_pad && block.q_t.len() >= hd * QUERY_BLOCK);
        assert!(scores.len() >= QUERY_BLOCK * n_pad && n_pad.is_multiple_of(KEY_TILE));
        let kp = keys_t.as_ptr();
        let qp = block.q_t.as_ptr();
        for j0 in (0..n_pad).step_by(KEY_TILE) {
            let mut acc = [[_mm512_setzero_ps(); 2]; QUERY_BLOCK];
            for d in 0..hd {
                // SAFETY: panel j0/32 starts at j0·hd; d < hd, so both loads are inside
                // keys_t (hd·n_pad); the broadcasts read q_t[d·8 + i] < hd·8 (asserted above).
                let k0 = _mm512_loadu_ps(kp.add(j0 * hd + d * KEY_TILE));
                let k1 = _mm512_loadu_ps(kp.add(j0 * hd + d * KEY_TILE + 16));
                for (i, a) in acc.iter_mut().enumerate() {
                    let q = _mm512_set1_ps(*qp.add(d * QUERY_BLOCK + i));
                    a[0] = _mm512_fmadd_ps(q, k0, a[0]);
                    a[1] = _mm512_fmadd_ps(q, k1, a[1]);
                }
            }
            let sp = scores.as_mut_ptr();
            for (i, a) in acc.iter().enumerate() {
                // SAFETY: i < 8 and j0 + 32 ≤ n_pad: inside scores (asserted above).
                _mm512_storeu_ps(sp.add(i * n_pad + j0), a[0]);
                _mm512_storeu_ps(sp.add(i * n_pad + j0 + 16), a[1]);
            }
        }
    }

    /// `out[i] = Σ_j p[i][j] · v_j` over the first `n` keys: dimension tiles of 32 (then 16)
    /// for all eight queries; the last `hd mod 16` dimensions in plain code.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block_values(block: &Block, p: &[f32], out: &mut [f32]) {
        let (hd, n, n_pad) = (block.hd, block.n, block.n_pad);
        let values = &block.head.values;
        assert!(values.len() >= n * hd && p.len() >= QUERY_BLOCK * n_pad && n <= n_pad);
        assert!(out.len() >= QUERY_BLOCK * hd);
        let mut d0 = 0;
        while d0 + 32 <= hd {
            values_tile::<2>(values, p, n, n_pad, hd, d0, out);
            d0 += 32;
        }
        while d0 + 16 <= hd {
            values_tile::<1>(values, p, n, n_pad, hd, d0, out);
            d0 += 16;
        }
        for d in d0..hd {
            for i in 0..QUERY_BLOCK {
                out[i * hd + d] = (0..n).map(|j| p[i * n_pad + j] * values[j * hd + d]).sum();
            }
        }
    }

    /// Dimensions `d0..d0 + 16·W` of the eight outputs.
    #[inline(always)]
    unsafe fn values_tile<const W: usize>(
        values: &[f32],
        p: &[f32],
        n: usize,
        n_pad: usize,
        hd: usize,
        d0: usize,
        out: &mut [f32],
    ) {
        let (vp, pp) = (values.as_ptr(), p.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); W]; QUERY_BLOCK];
        for j in 0..n {
            let mut v = [_mm512_setzero_ps(); W];
            for (w, vw) in v.iter_mut().enumerate() {
                // SAFETY: j < n and d0 + 16·W ≤ hd: inside values (asserted by the caller).
                *vw = _mm512_loadu_ps(vp.add(j * hd + d0 + 16 * w));
            }
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: i < 8, j < n ≤ n_pad: inside p (asserted by the caller).
                let pj = _mm512_set1_ps(*pp.add(i * n_pad + j));
                for (aw, &vw) in a.iter_mut().zip(&v) {
                    *aw = _mm512_fmadd_ps(pj, vw, *aw);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (w, &aw) in a.iter().enumerate() {
                _mm512_storeu_ps(out[i * hd + d0 + 16 * w..][..16].as_mut_ptr(), aw);
            }
        }
    }
}

/// The two products of a block with AVX2 register tiles (16 registers: tiles of 4 queries).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Block, KEY_TILE, QUERY_BLOCK};

    /// Queries per AVX2 register tile.
    const QUARTER: usize = 4;

    /// `scores[i][j] = q_i · k_j`: per 16 keys and 4 queries, 4 × 2 accumulators.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_scores(block: &Block, scores: &mut [f32]) {
        let (hd, n_pad) = (block.hd, block.n_pad);
        let keys_t = &block.head.keys_t;
        assert!(keys_t.len() >= hd * n_pad && block.q_t.len() >= hd * QUERY_BLOCK);
        assert!(scores.len() >= QUERY_BLOCK * n_pad && n_pad.is_multiple_of(KEY_TILE));
        let (kp, qp, sp) = (keys_t.as_ptr(), block.q_t.as_ptr(), scores.as_mut_ptr());
        for j0 in (0..n_pad).step_by(KEY_TILE) {
            for half in (0..KEY_TILE).step_by(16) {
                for i0 in (0..QUERY_BLOCK).step_by(QUARTER) {
                    let mut acc = [[_mm256_setzero_ps(); 2]; QUARTER];
                    for d in 0..hd {
                        // SAFETY: panel j0/32 starts at j0·hd and d < hd: inside keys_t;
                        // q_t[d·8 + i] < hd·8 (asserted above).
                        let k = kp.add(j0 * hd + d * KEY_TILE + half);
                        let k0 = _mm256_loadu_ps(k);
                        let k1 = _mm256_loadu_ps(k.add(8));
                        for (i, a) in acc.iter_mut().enumerate() {
                            let q = _mm256_broadcast_ss(&*qp.add(d * QUERY_BLOCK + i0 + i));
                            a[0] = _mm256_fmadd_ps(q, k0, a[0]);
                            a[1] = _mm256_fmadd_ps(q, k1, a[1]);
                        }
                    }
                    for (i, a) in acc.iter().enumerate() {
                        // SAFETY: row i0 + i < 8, columns j0 + half + 16 ≤ n_pad (asserted).
                        let dst = sp.add((i0 + i) * n_pad + j0 + half);
                        _mm256_storeu_ps(dst, a[0]);
                        _mm256_storeu_ps(dst.add(8), a[1]);
                    }
                }
            }
        }
    }

    /// `out[i] = Σ_j p[i][j] · v_j`: dimension tiles of 16 (then 8) for 4 queries at a time;
    /// the last `hd mod 8` dimensions in plain code.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_values(block: &Block, p: &[f32], out: &mut [f32]) {
        let (hd, n, n_pad) = (block.hd, block.n, block.n_pad);
        let values = &block.head.values;
        assert!(values.len() >= n * hd && p.len() >= QUERY_BLOCK * n_pad && n <= n_pad);
        assert!(out.len() >= QUERY_BLOCK * hd);
        for i0 in (0..QUERY_BLOCK).step_by(QUARTER) {
            let mut d0 = 0;
            while d0 + 16 <= hd {
                values_tile::<2>(values, p, (n, n_pad, hd), i0, d0, out);
                d0 += 16;
            }
            while d0 + 8 <= hd {
                values_tile::<1>(values, p, (n, n_pad, hd), i0, d0, out);
                d0 += 8;
            }
            for d in d0..hd {
                for i in i0..i0 + QUARTER {
                    out[i * hd + d] = (0..n).map(|j| p[i * n_pad + j] * values[j * hd + d]).sum();
                }
            }
        }
    }

    /// Dimensions `d0..d0 + 8·W` of outputs `i0..i0 + 4`.
    #[inline(always)]
    unsafe fn values_tile<const W: usize>(
        values: &[f32],
        p: &[f32],
        (n, n_pad, hd): (usize, usize, usize),
        i0: usize,
        d0: usize,
        out: &mut [f32],
    ) {
        let (vp, pp) = (values.as_ptr(), p.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); W]; QUARTER];
        for j in 0..n {
            let mut v = [_mm256_setzero_ps(); W];
            for (w, vw) in v.iter_mut().enumerate() {
                // SAFETY: j < n and d0 + 8·W ≤ hd: inside values (asserted by the caller).
                *vw = _mm256_loadu_ps(vp.add(j * hd + d0 + 8 * w));
            }
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: row i0 + i < 8, j < n ≤ n_pad: inside p (asserted by the caller).
                let pj = _mm256_broadcast_ss(&*pp.add((i0 + i) * n_pad + j));
                for (aw, &vw) in a.iter_mut().zip(&v) {
                    *aw = _mm256_fmadd_ps(pj, vw, *aw);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (w, &aw) in a.iter().enumerate() {
                _mm256_storeu_ps(out[(i0 + i) * hd + d0 + 8 * w..][..8].as_mut_ptr(), aw);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-scale, scale).
    fn pseudo_random(len: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn check_level(isa: Isa, shape: DenseShape, flagged: Option<&[bool]>) {
        let len = shape.n_tok * shape.row();
        // Large q/k so the softmax is peaked (exercises the max subtraction).
        let q = pseudo_random(len, 1, 2.0);
        let k = pseudo_random(len, 2, 2.0);
        let v = pseudo_random(len, 3, 1.0);
        let mut want = vec![0.0; len];
        reference(&shape, &q, &k, &v, flagged, &mut want);
        let mut got = vec![0.0; len];
        attend(isa, &shape, &q, &k, &v, flagged, &mut got);
        if isa == Isa::Scalar {
            // The blocked code without SIMD (what non-x86 machines would run).
            blocked(isa, &shape, &q, &k, &v, flagged, &mut got);
        }
        let max_diff = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_diff < 2e-6,
            "{isa:?} {shape:?}: max abs diff {max_diff}"
        );
    }

    /// Padding-style flags: the last 7 of every 24 tokens, and the whole last 24.
    fn flags(n: usize) -> Vec<bool> {
        (0..n).map(|i| i % 24 >= 17 || i >= n - 24).collect()
    }

    #[test]
    fn every_level_matches_the_reference() {
        let shapes = [
            // mllama's tiny fixture: 4 tiles of 24 tokens, 2 heads of 16.
            DenseShape {
                n_tok: 96,
                n_head: 2,
                head_dim: 16,
            },
            // The real head size (80 = 32 + 32 + 16), ragged token count.
            DenseShape {
                n_tok: 203,
                n_head: 3,
                head_dim: 80,
            },
            // A head size with a scalar remainder.
            DenseShape {
                n_tok: 41,
                n_head: 1,
                head_dim: 19,
            },
        ];
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            for shape in shapes {
                check_level(isa, shape, None);
                let f = flags(shape.n_tok);
                check_level(isa, shape, Some(&f));
            }
        }
    }

    /// The bf16 kernel against its reference (same roundings; only the f32 summation order
    /// differs, which can flip a probability's bf16 rounding by one step, 2^-8 relative:
    /// measured max 7.6e-5 on outputs of values in [-1, 1], bound 2e-4); and against the f32
    /// reference, the cost of bf16 itself (measured max 2.8e-3 with peaked scores, q and k in
    /// [-2, 2]; bound 1e-2).
    #[test]
    fn bf16_kernel_matches_its_reference() {
        if !has_bf16_kernel() {
            eprintln!("no AVX-512 BF16 on this CPU: kernel not tested");
            return;
        }
        let shapes = [
            DenseShape {
                n_tok: 96,
                n_head: 2,
                head_dim: 16,
            },
            DenseShape {
                n_tok: 203,
                n_head: 3,
                head_dim: 80,
            },
            DenseShape {
                n_tok: 41,
                n_head: 1,
                head_dim: 19,
            },
        ];
        for shape in shapes {
            let f = flags(shape.n_tok);
            for flagged in [None, Some(&f[..])] {
                let len = shape.n_tok * shape.row();
                let q = pseudo_random(len, 1, 2.0);
                let k = pseudo_random(len, 2, 2.0);
                let v = pseudo_random(len, 3, 1.0);
                let mut want = vec![0.0; len];
                reference_bf16(&shape, &q, &k, &v, flagged, &mut want);
                let mut exact = vec![0.0; len];
                reference(&shape, &q, &k, &v, flagged, &mut exact);
                let mut got = vec![0.0; len];
                attend_bf16(Isa::Avx512, &shape, &q, &k, &v, flagged, &mut got);
                let diff = |a: &[f32], b: &[f32]| {
                    a.iter()
                        .zip(b)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0f32, f32::max)
                };
                let (d_ref, d_f32) = (diff(&got, &want), diff(&got, &exact));
                eprintln!("{shape:?}: vs bf16 reference {d_ref:.2e}, vs f32 {d_f32:.2e}");
                assert!(d_ref < 2e-4, "{shape:?}: {d_ref} from the bf16 reference");
                assert!(d_f32 < 1e-2, "{shape:?}: {d_f32} from the f32 reference");
                assert!(d_f32 > 0.0, "the bf16 kernel did not run");
            }
        }
    }

    #[test]
    fn flagged_pairs_do_not_attend_to_each_other() {
        // Two tokens, both flagged except token 0: token 1 must copy token 0's value exactly.
        let shape = DenseShape {
            n_tok: 3,
            n_head: 1,
            head_dim: 16,
        };
        let q = pseudo_random(48, 4, 1.0);
        let k = pseudo_random(48, 5, 1.0);
        let v = pseudo_random(48, 6, 1.0);
        let flagged = [false, true, true];
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let mut out = vec![0.0; 48];
            attend(isa, &shape, &q, &k, &v, Some(&flagged), &mut out);
            for t in 1..3 {
                for d in 0..16 {
                    assert!((out[t * 16 + d] - v[d]).abs() < 1e-6, "{isa:?} token {t}");
                }
            }
        }
    }
}
