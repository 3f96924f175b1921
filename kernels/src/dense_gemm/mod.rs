//! f32 matrix products for long activation batches (vision encoders: thousands of tokens
//! through every weight matrix), where the quantized-activation matmuls of `matmul` spend their
//! time converting and re-reading activations.
//!
//! The weights are repacked in panels of [`PANEL_ROWS`] output rows, `[panel][col][32]`, so the
//! AVX-512 micro-kernel reads one contiguous stream per panel; the activations are repacked in
//! blocks of [`TOKEN_BLOCK`] tokens, `[block][col][8]`, so a column's eight values are eight
//! broadcasts. One kernel step is two panel loads, eight broadcasts and sixteen FMAs into an
//! 8 × 32 register tile (AVX2: four 4 × 16 tiles, its sixteen registers hold no more). Tasks
//! take one panel and a run of tokens whose activations stay in L2 ([`for_each_tile`], shared
//! with the 14-bit products of [`int16`]).

use rayon::prelude::*;

use crate::cpu::Isa;

pub mod int16;

/// Output rows per weight panel (two AVX-512 vectors).
pub const PANEL_ROWS: usize = 32;
/// Tokens per register tile.
pub const TOKEN_BLOCK: usize = 8;

/// A `rows × cols` weight matrix (output `r` = row `r`) in panels of 32 rows, zero-padded.
pub struct PanelMatrix {
    pub rows: usize,
    pub cols: usize,
    data: Vec<f32>,
}

impl PanelMatrix {
    /// Packs the matrix whose row `r` `fill_row(r, buf)` writes into `buf` (`cols` values);
    /// rows are produced in parallel, so `fill_row` may dequantize from a mapped file.
    pub fn pack<E: Send>(
        rows: usize,
        cols: usize,
        fill_row: impl Fn(usize, &mut [f32]) -> Result<(), E> + Sync,
    ) -> Result<Self, E> {
        let n_panels = rows.div_ceil(PANEL_ROWS);
        let mut data = vec![0.0f32; n_panels * cols * PANEL_ROWS];
        data.par_chunks_mut(cols * PANEL_ROWS)
            .enumerate()
            .try_for_each(|(p, panel)| {
                let mut row = vec![0.0f32; cols];
                for i in 0..PANEL_ROWS.min(rows - p * PANEL_ROWS) {
                    fill_row(p * PANEL_ROWS + i, &mut row)?;
                    for (c, &v) in row.iter().enumerate() {
                        panel[c * PANEL_ROWS + i] = v;
                    }
                }
                Ok(())
            })?;
        Ok(Self { rows, cols, data })
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.cols * PANEL_ROWS..][..self.cols * PANEL_ROWS]
    }
}

/// Whether [`gemm`] has a fast kernel at this level (callers use another path otherwise).
pub fn has_fast_kernel(isa: Isa) -> bool {
    cfg!(target_arch = "x86_64") && matches!(isa.float_level(), Isa::Avx2 | Isa::Avx512)
}

/// `out[t][r] = Σ_c x[t][c] · w[r][c]`; `x` is `[n][cols]`, `out` `[n][rows]`. Levels without a
/// fast kernel compute the same sums with [`reference`].
pub fn gemm(isa: Isa, x: &[f32], w: &PanelMatrix, out: &mut [f32]) {
    let n = x.len() / w.cols.max(1);
    assert!(
        x.len() == n * w.cols && out.len() == n * w.rows,
        "gemm operands must be [n][cols] and [n][rows]"
    );
    if !has_fast_kernel(isa) {
        reference(x, w, out);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let blocks = pack_tokens(x, w.cols);
        for_each_tile(n, w.rows, w.cols * 4, out, |p, b| {
            let block = &blocks[b * w.cols * TOKEN_BLOCK..][..w.cols * TOKEN_BLOCK];
            // SAFETY: a kernel set's level exists only on CPUs that run it, and
            // `has_fast_kernel` admitted only these two levels.
            unsafe {
                if isa.float_level() == Isa::Avx512 {
                    avx512::tile(block, w.panel(p), w.cols)
                } else {
                    avx2::tile(block, w.panel(p), w.cols)
                }
            }
        });
    }
}

/// Bytes of activations a parallel task keeps in L2 while the weight panels pass by.
const TASK_ACTIVATION_BYTES: usize = 512 << 10;

/// `out[t][r]` (`[n][rows]`) from `tile(panel, token block)`, the `T × R` products of panel
/// `panel`'s `R` rows and block `block`'s `T` tokens; a token's activations take
/// `token_bytes`. Tasks take one panel and a run of token blocks whose activations fit
/// [`TASK_ACTIVATION_BYTES`], and are ordered token-run first: a run's activations stay in L2
/// while the panels stream through (ordered panel first, the whole activation batch went
/// through the caches once per panel, and at 11B's 6,432 tokens throughput halved). Rows and
/// tokens past the ends are computed and dropped.
fn for_each_tile<const R: usize, const T: usize>(
    n: usize,
    rows: usize,
    token_bytes: usize,
    out: &mut [f32],
    tile: impl Fn(usize, usize) -> [[f32; R]; T] + Sync,
) {
    assert_eq!(out.len(), n * rows);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let per_task = (TASK_ACTIVATION_BYTES / token_bytes.max(1) / T).max(4) * T;
    let n_panels = rows.div_ceil(R);
    let tasks: Vec<(usize, usize)> = (0..n)
        .step_by(per_task)
        .flat_map(|t0| (0..n_panels).map(move |p| (p, t0)))
        .collect();
    tasks.into_par_iter().for_each(|(p, t0)| {
        let t1 = (t0 + per_task).min(n);
        let r0 = p * R;
        let n_rows = R.min(rows - r0);
        for b0 in (t0..t1).step_by(T) {
            let tile = tile(p, b0 / T);
            for (i, tile_row) in tile.iter().enumerate().take(t1.min(b0 + T) - b0) {
                // SAFETY: token b0 + i < n and rows r0..r0 + n_rows ≤ rows: inside `out`
                // (asserted); tasks own disjoint (panel, token range) blocks.
                unsafe {
                    let dst = out_ptr.get().add((b0 + i) * rows + r0);
                    std::ptr::copy_nonoverlapping(tile_row.as_ptr(), dst, n_rows);
                }
            }
        }
    });
}

/// The output pointer shared by the tasks, each writing its own blocks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements (see `gemm`) and the borrow outlives the parallel loop.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method, so closures capture the whole (Send) wrapper rather than its raw field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `x` (`[n][cols]`) as blocks of eight tokens, `[block][col][8]`, zero-padded.
fn pack_tokens(x: &[f32], cols: usize) -> Vec<f32> {
    let n = x.len() / cols;
    let mut blocks = vec![0.0f32; n.div_ceil(TOKEN_BLOCK) * cols * TOKEN_BLOCK];
    blocks
        .par_chunks_mut(cols * TOKEN_BLOCK)
        .enumerate()
        .for_each(|(b, block)| {
            for i in 0..TOKEN_BLOCK.min(n - b * TOKEN_BLOCK) {
                let row = &x[(b * TOKEN_BLOCK + i) * cols..][..cols];
                for (c, &v) in row.iter().enumerate() {
                    block[c * TOKEN_BLOCK + i] = v;
                }
            }
        });
    blocks
}

/// The same product, one dot product per output in f32 column order (tests, other levels).
pub fn reference(x: &[f32], w: &PanelMatrix, out: &mut [f32]) {
    let cols = w.cols;
    out.par_chunks_mut(w.rows)
        .zip(x.par_chunks(cols))
        .for_each(|(o_row, x_row)| {
            for (r, o) in o_row.iter_mut().enumerate() {
                let panel = w.panel(r / PANEL_ROWS);
                let i = r % PANEL_ROWS;
                *o = x_row
                    .iter()
                    .enumerate()
                    .map(|(c, &v)| v * panel[c * PANEL_ROWS + i])
                    .sum();
            }
        });
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{PANEL_ROWS, TOKEN_BLOCK};

    /// The 8 × 32 tile `Σ_c block[c][i] · panel[c][j]` over all `cols` columns.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(
        block: &[f32],
        panel: &[f32],
        cols: usize,
    ) -> [[f32; PANEL_ROWS]; TOKEN_BLOCK] {
        assert!(block.len() >= cols * TOKEN_BLOCK && panel.len() >= cols * PANEL_ROWS);
        let (bp, pp) = (block.as_ptr(), panel.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); 2]; TOKEN_BLOCK];
        for c in 0..cols {
            // SAFETY: c < cols: both loads and the broadcasts are inside the slices (asserted).
            let w0 = _mm512_loadu_ps(pp.add(c * PANEL_ROWS));
            let w1 = _mm512_loadu_ps(pp.add(c * PANEL_ROWS + 16));
            for (i, a) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*bp.add(c * TOKEN_BLOCK + i));
                a[0] = _mm512_fmadd_ps(x, w0, a[0]);
                a[1] = _mm512_fmadd_ps(x, w1, a[1]);
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{PANEL_ROWS, TOKEN_BLOCK};

    /// Rows (two 8-lane vectors) and tokens of one register tile: 8 accumulators, enough
    /// independent FMA chains to cover their latency on two FMA pipes, within 16 registers.
    const ROWS: usize = 16;
    const TOKENS: usize = 4;

    /// The 8 × 32 tile of [`super::avx512::tile`], as four 4 × 16 register tiles: each
    /// re-reads a quarter of the panel from L1/L2 rather than spilling accumulators.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        block: &[f32],
        panel: &[f32],
        cols: usize,
    ) -> [[f32; PANEL_ROWS]; TOKEN_BLOCK] {
        assert!(block.len() >= cols * TOKEN_BLOCK && panel.len() >= cols * PANEL_ROWS);
        let (bp, pp) = (block.as_ptr(), panel.as_ptr());
        let mut out = [[0.0f32; PANEL_ROWS]; TOKEN_BLOCK];
        for r0 in (0..PANEL_ROWS).step_by(ROWS) {
            for t0 in (0..TOKEN_BLOCK).step_by(TOKENS) {
                let mut acc = [[_mm256_setzero_ps(); 2]; TOKENS];
                for c in 0..cols {
                    // SAFETY: c < cols, r0 + 16 ≤ 32 and t0 + 4 ≤ 8: inside both slices.
                    let w0 = _mm256_loadu_ps(pp.add(c * PANEL_ROWS + r0));
                    let w1 = _mm256_loadu_ps(pp.add(c * PANEL_ROWS + r0 + 8));
                    for (i, a) in acc.iter_mut().enumerate() {
                        let x = _mm256_broadcast_ss(&*bp.add(c * TOKEN_BLOCK + t0 + i));
                        a[0] = _mm256_fmadd_ps(x, w0, a[0]);
                        a[1] = _mm256_fmadd_ps(x, w1, a[1]);
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

    pub(super) fn pseudo_random(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn packed_product_matches_plain_dot_products() {
        // Ragged rows (not a multiple of 32), ragged tokens (not a multiple of 8 or 512).
        for (n, rows, cols) in [(13, 45, 17), (520, 96, 64), (3, 32, 588)] {
            let x = pseudo_random(n * cols, 1);
            let w_rows = pseudo_random(rows * cols, 2);
            let w = PanelMatrix::pack(rows, cols, |r, buf: &mut [f32]| {
                buf.copy_from_slice(&w_rows[r * cols..][..cols]);
                Ok::<(), ()>(())
            })
            .unwrap();
            // Plain row-major dot products in f64: independent of the panel layout.
            let want: Vec<f32> = (0..n * rows)
                .map(|i| {
                    let (t, r) = (i / rows, i % rows);
                    (0..cols)
                        .map(|c| x[t * cols + c] as f64 * w_rows[r * cols + c] as f64)
                        .sum::<f64>() as f32
                })
                .collect();
            for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
                let mut got = vec![f32::NAN; n * rows];
                gemm(isa, &x, &w, &mut got);
                let max_diff = want
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(max_diff < 1e-4, "{isa:?} {n}×{rows}×{cols}: {max_diff}");
            }
        }
    }
}
