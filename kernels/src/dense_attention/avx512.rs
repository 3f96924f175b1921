//! The two products of a block with explicit AVX-512 register tiles.

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
