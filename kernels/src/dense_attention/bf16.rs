//! Dense attention with both products in bf16 (`vdpbf16ps`, AVX-512 BF16), its reference and
//! the kernel.

use rayon::prelude::*;

use super::{attend, check_operands, DenseShape};
use crate::cpu::Isa;

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
        check_operands(shape, [q, k, v, out], flagged);
        kernel::attend(shape, q, k, v, flagged, out);
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
mod kernel {
    use std::arch::x86_64::*;

    use rayon::prelude::*;

    use super::super::{
        block_softmax, normalise, Block, DenseShape, HeadKv, KEY_TILE, QUERIES_PER_TASK,
        QUERY_BLOCK,
    };
    use super::bf16_pair;

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
