//! The two products of a block with AVX2 register tiles (16 registers: tiles of 4 queries).

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
