//! 14-bit integer products for the same long activation batches as the f32 GEMM: the vision
//! encoder's default path.
//!
//! Why 14 bits: with Q8_0 (8-bit) weights and activations the encoder's projected states moved
//! 2.2e-2 relative L2 from Meta's reference on tiny-mllama, both sides contributing (Q8_0
//! weights alone 1.5e-2, activations alone 1.05e-2); 14-bit values round 64× finer. Why integers: `vpdpwssd` (AVX-512 VNNI) and `vpmaddwd` (AVX2) make two
//! products per 32-bit lane, twice the f32 FMA's one.
//!
//! Values lie in ±[`QMAX`] = ±8191, so a block of [`BLOCK`] = 32 products sums in i32 without
//! overflow (32 · 8191² < 2³¹): the kernels add a block in i32 and move it to f32 once.
//! Weights have one scale per row (14 bits leave room for a whole row's range, and a kernel
//! step needs no per-block weight scale); activations one per token and block of 32 columns,
//! as Q8_0 (activations have outlier channels). `out[t][r] = s_w[r] · Σ_b s_x[t][b] · Σ_{c ∈ b} q_x[t][c] · q_w[r][c]`.
//!
//! Layouts: weights in panels of [`PANEL_ROWS`] rows, `[panel][block][pair][row][2]`, so one
//! 64-byte load holds sixteen rows' column pair; activations in blocks of [`TOKEN_BLOCK`]
//! tokens, `[token block][block][pair][token][2]`, so a token's column pair is one 32-bit
//! broadcast. Columns are zero-padded to a multiple of 32.

use rayon::prelude::*;

use crate::cpu::Isa;

use super::for_each_tile;

/// Largest quantized magnitude: 32 · 8191² = 2 146 959 392 < 2³¹ − 1.
pub const QMAX: f32 = 8191.0;
/// Columns per activation scale and per i32 partial sum.
pub const BLOCK: usize = 32;
const PAIRS: usize = BLOCK / 2;
/// Output rows per weight panel (two AVX-512 vectors of 16 lanes).
pub const PANEL_ROWS: usize = 32;
/// Tokens per register tile (AVX-512: 2 × 6 i32 and 2 × 6 f32 accumulators of 32 registers).
pub const TOKEN_BLOCK: usize = 6;

/// Quantizes `x` with one scale `max|x| / QMAX`, writing `q[i]` for every `x[i]` (zeros give
/// scale 0); returns the scale.
fn quantize(x: &[f32], mut q: impl FnMut(usize, i16)) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = amax / QMAX;
    let inv = if amax > 0.0 { QMAX / amax } else { 0.0 };
    for (i, &v) in x.iter().enumerate() {
        q(i, round(v * inv));
    }
    scale
}

/// Nearest integer (ties to even) of `v`, |v| ≤ QMAX. Adding and removing 1.5·2²³ rounds in
/// the FPU's default mode and vectorises at the baseline ISA, where `f32::round` is a call.
#[inline(always)]
fn round(v: f32) -> i16 {
    const SHIFT: f32 = 12_582_912.0;
    ((v + SHIFT) - SHIFT) as i16
}

/// A `rows × cols` weight matrix as 14-bit values with one scale per row, in panels of 32 rows.
pub struct I16Matrix {
    pub rows: usize,
    pub cols: usize,
    blocks: usize,
    scales: Vec<f32>,
    data: Vec<i16>,
}

impl I16Matrix {
    /// Quantizes and packs the matrix whose row `r` `fill_row(r, buf)` writes into `buf`
    /// (`cols` values); rows are produced in parallel, so `fill_row` may dequantize from a
    /// mapped file.
    pub fn pack<E: Send>(
        rows: usize,
        cols: usize,
        fill_row: impl Fn(usize, &mut [f32]) -> Result<(), E> + Sync,
    ) -> Result<Self, E> {
        let blocks = cols.div_ceil(BLOCK);
        let n_panels = rows.div_ceil(PANEL_ROWS);
        let panel_len = blocks * BLOCK * PANEL_ROWS;
        let mut scales = vec![0.0f32; n_panels * PANEL_ROWS];
        let mut data = vec![0i16; n_panels * panel_len];
        data.par_chunks_mut(panel_len)
            .zip(scales.par_chunks_mut(PANEL_ROWS))
            .enumerate()
            .try_for_each(|(p, (panel, panel_scales))| {
                let mut row = vec![0.0f32; cols];
                for i in 0..PANEL_ROWS.min(rows - p * PANEL_ROWS) {
                    fill_row(p * PANEL_ROWS + i, &mut row)?;
                    panel_scales[i] = quantize(&row, |c, q| {
                        let (b, p, j) = (c / BLOCK, c % BLOCK / 2, c % 2);
                        panel[((b * PAIRS + p) * PANEL_ROWS + i) * 2 + j] = q;
                    });
                }
                Ok(())
            })?;
        Ok(Self {
            rows,
            cols,
            blocks,
            scales,
            data,
        })
    }

    fn panel(&self, p: usize) -> (&[i16], &[f32]) {
        let len = self.blocks * BLOCK * PANEL_ROWS;
        (
            &self.data[p * len..][..len],
            &self.scales[p * PANEL_ROWS..][..PANEL_ROWS],
        )
    }

    /// Bytes held (the start-up line reports repacked weights).
    pub fn bytes(&self) -> usize {
        self.data.len() * 2 + self.scales.len() * 4
    }

    /// Row `r`'s value at column `c` and the row's scale.
    fn get(&self, r: usize, c: usize) -> (i16, f32) {
        let (panel, scales) = self.panel(r / PANEL_ROWS);
        let (i, b, p, j) = (r % PANEL_ROWS, c / BLOCK, c % BLOCK / 2, c % 2);
        (panel[((b * PAIRS + p) * PANEL_ROWS + i) * 2 + j], scales[i])
    }
}

/// Activations `[n][cols]` as 14-bit values, one scale per token and block of 32 columns:
/// quantized once for every matrix applied to them (the vision encoder's Q, K and V).
pub struct I16Tokens {
    pub n: usize,
    pub cols: usize,
    blocks: usize,
    scales: Vec<f32>,
    data: Vec<i16>,
}

impl I16Tokens {
    /// `x` (`[n][cols]`, `cols` > 0) quantized.
    pub fn quantize(x: &[f32], cols: usize) -> Self {
        assert!(
            cols > 0 && x.len().is_multiple_of(cols),
            "activations must be [n][cols]"
        );
        let n = x.len() / cols;
        let blocks = cols.div_ceil(BLOCK);
        let n_tb = n.div_ceil(TOKEN_BLOCK);
        let mut scales = vec![0.0f32; n_tb * blocks * TOKEN_BLOCK];
        let mut data = vec![0i16; n_tb * blocks * BLOCK * TOKEN_BLOCK];
        data.par_chunks_mut(blocks * BLOCK * TOKEN_BLOCK)
            .zip(scales.par_chunks_mut(blocks * TOKEN_BLOCK))
            .enumerate()
            .for_each(|(tb, (dst, dst_scales))| {
                for t in 0..TOKEN_BLOCK.min(n - tb * TOKEN_BLOCK) {
                    let row = &x[(tb * TOKEN_BLOCK + t) * cols..][..cols];
                    for (b, part) in row.chunks(BLOCK).enumerate() {
                        let at = b * BLOCK * TOKEN_BLOCK;
                        dst_scales[b * TOKEN_BLOCK + t] = quantize(part, |c, q| {
                            dst[at + (c / 2 * TOKEN_BLOCK + t) * 2 + c % 2] = q;
                        });
                    }
                }
            });
        Self {
            n,
            cols,
            blocks,
            scales,
            data,
        }
    }

    /// Token block `tb`: its values and its scales (`[block][token]`).
    fn block(&self, tb: usize) -> (&[i16], &[f32]) {
        let (len, s_len) = (self.blocks * BLOCK * TOKEN_BLOCK, self.blocks * TOKEN_BLOCK);
        (
            &self.data[tb * len..][..len],
            &self.scales[tb * s_len..][..s_len],
        )
    }

    /// Token `t`'s value at column `c` and its block's scale.
    fn get(&self, t: usize, c: usize) -> (i16, f32) {
        let (data, scales) = self.block(t / TOKEN_BLOCK);
        let (i, b) = (t % TOKEN_BLOCK, c / BLOCK);
        let v = data[b * BLOCK * TOKEN_BLOCK + (c % BLOCK / 2 * TOKEN_BLOCK + i) * 2 + c % 2];
        (v, scales[b * TOKEN_BLOCK + i])
    }
}

/// Whether [`gemm`] has a fast kernel at this level (callers use another path otherwise).
pub fn has_fast_kernel(isa: Isa) -> bool {
    cfg!(target_arch = "x86_64") && isa != Isa::Scalar
}

/// `out[t][r] ≈ Σ_c x[t][c] · w[r][c]` from the quantized activations `xq`; `out` is
/// `[n][rows]`. Levels without a fast kernel compute the same sums with [`reference`].
pub fn gemm(isa: Isa, xq: &I16Tokens, w: &I16Matrix, out: &mut [f32]) {
    assert!(
        xq.cols == w.cols && out.len() == xq.n * w.rows,
        "gemm operands must be [n][cols] and [n][rows]"
    );
    if !has_fast_kernel(isa) {
        reference(xq, w, out);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        for_each_tile(xq.n, w.rows, w.cols * 2, out, |p, tb| {
            let (wq, w_scales) = w.panel(p);
            let (aq, a_scales) = xq.block(tb);
            // SAFETY: a kernel set's level exists only on CPUs that run it.
            let mut tile = unsafe {
                match isa {
                    Isa::Avx512 => avx512::tile(aq, a_scales, wq, w.blocks),
                    _ => x86::tile(aq, a_scales, wq, w.blocks),
                }
            };
            for row in &mut tile {
                for (v, s) in row.iter_mut().zip(w_scales) {
                    *v *= s;
                }
            }
            tile
        });
    }
}

/// The same quantized sums, one output at a time from the packed values, exact integer block
/// sums (tests, other levels).
pub fn reference(xq: &I16Tokens, w: &I16Matrix, out: &mut [f32]) {
    out.par_chunks_mut(w.rows)
        .enumerate()
        .take(xq.n)
        .for_each(|(t, o_row)| {
            for (r, o) in o_row.iter_mut().enumerate() {
                let mut sum = 0.0f32;
                for b in 0..w.blocks {
                    let mut block = 0i32;
                    let mut sx = 0.0;
                    for c in b * BLOCK..((b + 1) * BLOCK).min(w.cols) {
                        let ((qx, s), (qw, _)) = (xq.get(t, c), w.get(r, c));
                        block += qx as i32 * qw as i32;
                        sx = s;
                    }
                    sum += block as f32 * sx;
                }
                *o = sum * w.get(r, 0).1;
            }
        });
}

/// Whether a tile's operands hold `blocks` blocks: one token block's values and scales, one
/// panel's values (what the kernels' unchecked loads rely on).
#[cfg(target_arch = "x86_64")]
fn tile_operands_fit(a: &[i16], a_scales: &[f32], w: &[i16], blocks: usize) -> bool {
    a.len() >= blocks * BLOCK * TOKEN_BLOCK
        && a_scales.len() >= blocks * TOKEN_BLOCK
        && w.len() >= blocks * BLOCK * PANEL_ROWS
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{PAIRS, PANEL_ROWS, TOKEN_BLOCK};

    /// The 6 × 32 tile `Σ_b s_x[t][b] · Σ_{pairs} a[t] · w[j]` (before the row scales).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile(
        a: &[i16],
        a_scales: &[f32],
        w: &[i16],
        blocks: usize,
    ) -> [[f32; PANEL_ROWS]; TOKEN_BLOCK] {
        assert!(super::tile_operands_fit(a, a_scales, w, blocks));
        let (ap, wp) = (a.as_ptr(), w.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); 2]; TOKEN_BLOCK];
        for b in 0..blocks {
            let mut isum = [[_mm512_setzero_si512(); 2]; TOKEN_BLOCK];
            for p in b * PAIRS..(b + 1) * PAIRS {
                // SAFETY: p < blocks · PAIRS: the loads and broadcasts are inside the slices
                // (asserted).
                let w0 = _mm512_loadu_si512(wp.add(p * PANEL_ROWS * 2).cast());
                let w1 = _mm512_loadu_si512(wp.add(p * PANEL_ROWS * 2 + 32).cast());
                for (t, s) in isum.iter_mut().enumerate() {
                    let x = _mm512_set1_epi32(
                        ap.add((p * TOKEN_BLOCK + t) * 2)
                            .cast::<i32>()
                            .read_unaligned(),
                    );
                    s[0] = _mm512_dpwssd_epi32(s[0], x, w0);
                    s[1] = _mm512_dpwssd_epi32(s[1], x, w1);
                }
            }
            for (t, (a, s)) in acc.iter_mut().zip(&isum).enumerate() {
                let scale = _mm512_set1_ps(a_scales[b * TOKEN_BLOCK + t]);
                a[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[0]), scale, a[0]);
                a[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[1]), scale, a[1]);
            }
        }
        let mut out = [[0.0f32; PANEL_ROWS]; TOKEN_BLOCK];
        for (o, a) in out.iter_mut().zip(&acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), a[0]);
            _mm512_storeu_ps(o.as_mut_ptr().add(16), a[1]);
        }
        out
    }
}

/// The 256-bit levels. AVX-VNNI runs this too: its `vpdpwssd` made one dependent chain per
/// accumulator and measured slower than `vpmaddwd` + `vpaddd` (criterion `dense_gemm`).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{PAIRS, PANEL_ROWS, TOKEN_BLOCK};

    /// Rows (two 8-lane vectors) and tokens of one register tile: 6 i32 and 6 f32
    /// accumulators, two weight vectors, a broadcast and a product: all 16 registers.
    const ROWS: usize = 16;
    const TOKENS: usize = 3;

    /// The 6 × 32 tile of `super::avx512::tile`, as four 3 × 16 register tiles, each
    /// re-reading its half of the panel from L1/L2.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        a: &[i16],
        a_scales: &[f32],
        w: &[i16],
        blocks: usize,
    ) -> [[f32; PANEL_ROWS]; TOKEN_BLOCK] {
        assert!(super::tile_operands_fit(a, a_scales, w, blocks));
        let (ap, wp) = (a.as_ptr(), w.as_ptr());
        let mut out = [[0.0f32; PANEL_ROWS]; TOKEN_BLOCK];
        for r0 in (0..PANEL_ROWS).step_by(ROWS) {
            for t0 in (0..TOKEN_BLOCK).step_by(TOKENS) {
                let mut acc = [[_mm256_setzero_ps(); 2]; TOKENS];
                for b in 0..blocks {
                    let mut isum = [[_mm256_setzero_si256(); 2]; TOKENS];
                    for p in b * PAIRS..(b + 1) * PAIRS {
                        // SAFETY: p < blocks · PAIRS, r0 + 16 ≤ 32, t0 + 3 ≤ 6: inside both
                        // slices (asserted).
                        let w0 = _mm256_loadu_si256(wp.add((p * PANEL_ROWS + r0) * 2).cast());
                        let w1 = _mm256_loadu_si256(wp.add((p * PANEL_ROWS + r0 + 8) * 2).cast());
                        for (i, s) in isum.iter_mut().enumerate() {
                            let x = _mm256_set1_epi32(
                                ap.add((p * TOKEN_BLOCK + t0 + i) * 2)
                                    .cast::<i32>()
                                    .read_unaligned(),
                            );
                            s[0] = _mm256_add_epi32(s[0], _mm256_madd_epi16(x, w0));
                            s[1] = _mm256_add_epi32(s[1], _mm256_madd_epi16(x, w1));
                        }
                    }
                    for (i, (a, s)) in acc.iter_mut().zip(&isum).enumerate() {
                        let scale = _mm256_set1_ps(a_scales[b * TOKEN_BLOCK + t0 + i]);
                        a[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[0]), scale, a[0]);
                        a[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[1]), scale, a[1]);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    let o = out[t0 + i][r0..].as_mut_ptr();
                    _mm256_storeu_ps(o, a[0]);
                    _mm256_storeu_ps(o.add(8), a[1]);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dense_gemm::tests::pseudo_random;

    /// Every level computes the reference's quantized sums (integer block sums are exact, so
    /// only the f32 order of the block and scale products differs), and the reference is
    /// within 14-bit rounding of plain f64 dot products. Activations carry an outlier column
    /// (as vision activations do) that per-block scales must confine to its block.
    #[test]
    fn levels_match_the_reference_and_the_reference_the_plain_products() {
        for (n, rows, cols) in [(13, 45, 17), (520, 96, 64), (7, 33, 588), (12, 64, 1280)] {
            let mut x = pseudo_random(n * cols, 1);
            for t in 0..n {
                x[t * cols] = 40.0;
            }
            let w_rows = pseudo_random(rows * cols, 2);
            let w = I16Matrix::pack(rows, cols, |r, buf: &mut [f32]| {
                buf.copy_from_slice(&w_rows[r * cols..][..cols]);
                Ok::<(), ()>(())
            })
            .unwrap();
            let plain: Vec<f64> = (0..n * rows)
                .map(|i| {
                    let (t, r) = (i / rows, i % rows);
                    (0..cols)
                        .map(|c| x[t * cols + c] as f64 * w_rows[r * cols + c] as f64)
                        .sum::<f64>()
                })
                .collect();
            let mut want = vec![f32::NAN; n * rows];
            let xq = I16Tokens::quantize(&x, cols);
            reference(&xq, &w, &mut want);
            // Rounding moves a value by at most half a step: |δx_c| ≤ max|x in c's block| /
            // 2·QMAX, |δw_c| ≤ max|w in the row| / 2·QMAX; an output by at most
            // Σ_c |δx_c|·|w_c| + |x_c|·|δw_c| + |δx_c|·|δw_c| (plus f32 summation).
            for (i, (&p, &got)) in plain.iter().zip(&want).enumerate() {
                let (t, r) = (i / rows, i % rows);
                let (xr, wr) = (&x[t * cols..][..cols], &w_rows[r * cols..][..cols]);
                let amax = |v: &[f32]| v.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
                let dw = amax(wr) / (2.0 * QMAX as f64);
                let bound: f64 = (0..cols)
                    .map(|c| {
                        let dx = amax(&xr[c / BLOCK * BLOCK..((c / BLOCK + 1) * BLOCK).min(cols)])
                            / (2.0 * QMAX as f64);
                        dx * (wr[c].abs() as f64 + dw) + xr[c].abs() as f64 * dw
                    })
                    .sum();
                let err = (p - got as f64).abs();
                assert!(
                    err <= bound * 1.001 + 1e-5,
                    "{n}×{rows}×{cols} ({t}, {r}): {err} > {bound}"
                );
            }
            for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
                let mut got = vec![f32::NAN; n * rows];
                gemm(isa, &xq, &w, &mut got);
                let max_diff = want
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
                    .fold(0.0f32, f32::max);
                assert!(max_diff < 1e-5, "{isa:?} {n}×{rows}×{cols}: {max_diff}");
            }
        }
    }

    #[test]
    fn extreme_values_do_not_overflow_a_block() {
        // Token 0 and row 0 all ones: their blocks' 32 products reach 32·8191², the edge of
        // i32; the other signs vary.
        let (n, rows, cols) = (6, 32, 64);
        let sign = |i: usize, j: usize, c: usize| {
            if i != 0 && (c + j).is_multiple_of(3) {
                -1.0f32
            } else {
                1.0
            }
        };
        let x: Vec<f32> = (0..n * cols).map(|i| sign(i / cols, 1, i % cols)).collect();
        let w = I16Matrix::pack(rows, cols, |r, buf: &mut [f32]| {
            for (c, v) in buf.iter_mut().enumerate() {
                *v = sign(r, r, c);
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let mut got = vec![f32::NAN; n * rows];
            gemm(isa, &I16Tokens::quantize(&x, cols), &w, &mut got);
            for (i, g) in got.iter().enumerate() {
                let (t, r) = (i / rows, i % rows);
                let want: f32 = (0..cols).map(|c| sign(t, 1, c) * sign(r, r, c)).sum();
                assert!((g - want).abs() < 1e-3, "{isa:?} ({t}, {r}): {g} vs {want}");
            }
            assert_eq!(got[0], cols as f32, "{isa:?}");
        }
    }
}
