//! Quantized matrix multiplication the way llama.cpp computes it on CPU: the f32 activation
//! rows are quantized once into the weight type's vec-dot format, then every output is an
//! integer block dot product. Work is split over weight rows across the current rayon pool.
//!
//! Two drivers: decode (one activation row: a matrix-vector product, rows in coarse chunks per
//! task) and prefill (many activation rows: each weight row is applied to four activation rows
//! per kernel call, so its blocks are unpacked once per four tokens while they sit in L1).
//!
//! A matrix that carries a packed copy ([`crate::packed`]: Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K,
//! eight rows interleaved per block) goes through the packed kernels instead, when the kernel
//! set has them: eight rows per gemv call from one sequential stream, and for prefill eight
//! rows × eight tokens per tile over token chunks that stay in L2.

use rayon::prelude::*;

use crate::kernel_set::{
    KernelSet, PackedGemvFn, PackedTileFn, RowDot4Fn, RowDotFn, Rows4DotFn, Tile4x4Fn,
};
use crate::packed::{self, PackedMatrix, GROUP_ROWS, TILE_TOKENS};
use crate::table::GgmlType;
use crate::KernelError;

/// A weight matrix stored row-major in GGUF order: `rows` output features, each a contiguous
/// row of `cols` input features encoded in `ty`; optionally also a packed copy of the same
/// matrix ([`crate::packed`]), which the drivers use when the kernel set has packed kernels.
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: &'a [u8],
    pub packed: Option<&'a PackedMatrix>,
}

impl WeightView<'_> {
    pub fn row_bytes(&self) -> usize {
        self.bytes.len() / self.rows.max(1)
    }

    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.bytes[r * rb..(r + 1) * rb]
    }

    fn check(&self) -> Result<usize, KernelError> {
        let row_bytes = self
            .ty
            .row_bytes(self.cols)
            .ok_or(KernelError::PartialElems {
                ty: self.ty,
                what: "weight row",
                len: self.cols,
                block_elems: self.ty.block_elems(),
            })?;
        // A packed-only view (the row layout dropped to save memory) is checked where the
        // drivers pick their kernels: it needs the level's packed kernels.
        let packed_only = self.bytes.is_empty() && self.packed.is_some();
        if !packed_only && self.bytes.len() != row_bytes * self.rows {
            return Err(KernelError::LengthMismatch {
                ty: self.ty,
                what: "weight matrix bytes",
                expected: row_bytes * self.rows,
                got: self.bytes.len(),
            });
        }
        Ok(row_bytes)
    }
}

/// Activation rows quantized into one vec-dot format. Built once and shared by every matmul
/// that reads the same activations with the same vec-dot type (Q/K/V; gate/up).
pub struct QuantizedRows {
    pub ty: GgmlType,
    pub n_rows: usize,
    pub cols: usize,
    row_bytes: usize,
    data: Vec<u8>,
    /// Q8_0 / Q8_K only: per-block records the packed kernels need
    /// (`crate::packed::fill_aux`), `aux_row_bytes` per row.
    aux: Vec<u8>,
    aux_row_bytes: usize,
}

impl QuantizedRows {
    /// Quantizes `x` (`n_rows × cols`, row-major) into activation type `ty`, rows in parallel.
    pub fn quantize(
        ks: &KernelSet,
        ty: GgmlType,
        x: &[f32],
        cols: usize,
    ) -> Result<Self, KernelError> {
        let quantize = ks
            .quantize(ty)
            .ok_or(KernelError::NotActivationFormat { ty })?;
        let row_bytes = ty.row_bytes(cols).ok_or(KernelError::PartialElems {
            ty,
            what: "activation row",
            len: cols,
            block_elems: ty.block_elems(),
        })?;
        if cols == 0 || !x.len().is_multiple_of(cols) {
            return Err(KernelError::PartialElems {
                ty,
                what: "activations",
                len: x.len(),
                block_elems: cols,
            });
        }
        let n_rows = x.len() / cols;
        let mut data = vec![0u8; row_bytes * n_rows];
        let aux_row_bytes = packed::aux_bytes(ty) * (cols / ty.block_elems());
        let mut aux = vec![0u8; aux_row_bytes * n_rows];
        let quantize_one = |dst: &mut [u8], src: &[f32], aux: &mut [u8]| {
            quantize(src, dst);
            packed::fill_aux(ty, dst, aux);
        };
        if n_rows == 1 {
            quantize_one(&mut data, x, &mut aux);
        } else if aux.is_empty() {
            data.par_chunks_mut(row_bytes)
                .zip(x.par_chunks(cols))
                .for_each(|(dst, src)| quantize_one(dst, src, &mut []));
        } else {
            data.par_chunks_mut(row_bytes)
                .zip(x.par_chunks(cols))
                .zip(aux.par_chunks_mut(aux_row_bytes))
                .for_each(|((dst, src), aux)| quantize_one(dst, src, aux));
        }
        Ok(Self {
            ty,
            n_rows,
            cols,
            row_bytes,
            data,
            aux,
            aux_row_bytes,
        })
    }

    pub fn row(&self, i: usize) -> &[u8] {
        &self.data[i * self.row_bytes..(i + 1) * self.row_bytes]
    }

    /// Row `i`'s per-block aux records (Q8_0 / Q8_K; empty otherwise).
    pub fn aux(&self, i: usize) -> &[u8] {
        &self.aux[i * self.aux_row_bytes..(i + 1) * self.aux_row_bytes]
    }
}

/// Splits `rows` into about `per_thread` tasks per thread, in multiples of 8 rows (the packed
/// group): coarse enough that scheduling costs little next to the dots, fine enough to balance.
fn rows_per_task(rows: usize, per_thread: usize) -> usize {
    let tasks = rayon::current_num_threads() * per_thread;
    rows.div_ceil(tasks).next_multiple_of(8).max(8)
}

/// Tasks per thread in decode. Decode is bound by memory bandwidth, and the last task of a
/// region runs with one thread's bandwidth only, so small tasks pay: 16 per thread measured 8%
/// faster than 4 on Llama-3.2-1B Q4_0 (36.5 vs 33.8 t/s at 2 threads, three alternating runs
/// each), and 1 per thread was no better than 4.
const DECODE_TASKS_PER_THREAD: usize = 16;
/// Tasks per thread in prefill: each task streams every activation row, so fewer, larger tasks.
const PREFILL_TASKS_PER_THREAD: usize = 4;

/// `out[t][r] = Σ_c w[r][c] · x[t][c]` for every activation row `t`; `out` is `n_rows × w.rows`.
pub fn matmul(
    ks: &KernelSet,
    w: &WeightView,
    x: &QuantizedRows,
    out: &mut [f32],
) -> Result<(), KernelError> {
    matmul_many(ks, &[*w], x, &mut [out])
}

/// Several matrices applied to the same quantized activations in ONE parallel region (Q/K/V,
/// gate/up): fewer thread wake-ups per token and better balance than one region each.
/// `outs[i]` is `x.n_rows × ws[i].rows`.
pub fn matmul_many(
    ks: &KernelSet,
    ws: &[WeightView],
    x: &QuantizedRows,
    outs: &mut [&mut [f32]],
) -> Result<(), KernelError> {
    if ws.len() != outs.len() {
        return Err(KernelError::LengthMismatch {
            ty: x.ty,
            what: "matrices and outputs",
            expected: ws.len(),
            got: outs.len(),
        });
    }
    let mut kernels = Vec::with_capacity(ws.len());
    for (w, out) in ws.iter().zip(outs.iter()) {
        w.check()?;
        if x.ty != w.ty.vec_dot_type() || x.cols != w.cols || out.len() != x.n_rows * w.rows {
            return Err(KernelError::LengthMismatch {
                ty: w.ty,
                what: "matmul operands (activation type, width or output size)",
                expected: x.n_rows * w.rows,
                got: out.len(),
            });
        }
        let dot = ks
            .row_dot(w.ty)
            .ok_or(KernelError::NotWeightFormat { ty: w.ty })?;
        let dot4 = ks
            .row_dot4(w.ty)
            .ok_or(KernelError::NotWeightFormat { ty: w.ty })?;
        let packed = packed_kernels(ks, w);
        if packed.is_none() && w.bytes.is_empty() && w.rows > 0 {
            return Err(KernelError::LengthMismatch {
                ty: w.ty,
                what: "weight rows (only a packed copy, and no packed kernels at this level)",
                expected: w.rows,
                got: 0,
            });
        }
        kernels.push(RowKernels {
            dot,
            dot4,
            tile: ks.tile4x4(w.ty),
            rows4: ks.rows4(w.ty),
            packed,
        });
    }
    let total_rows: usize = ws.iter().map(|w| w.rows).sum();
    let n_tok = x.n_rows;
    let per_thread = if n_tok == 1 {
        DECODE_TASKS_PER_THREAD
    } else {
        PREFILL_TASKS_PER_THREAD
    };
    let chunk = rows_per_task(total_rows, per_thread);
    if n_tok == 1 {
        // Tasks: (matrix, first row, output slice), over all matrices at once.
        let mut tasks = Vec::new();
        for (m, out) in outs.iter_mut().enumerate() {
            for (c, dst) in out.chunks_mut(chunk).enumerate() {
                tasks.push((m, c * chunk, dst));
            }
        }
        crate::team::for_each(tasks, |(m, first, dst)| {
            matvec_rows(&ws[m], &kernels[m], x, first, dst)
        });
        return Ok(());
    }
    // Many tokens: each task takes a block of weight rows and applies every row to all tokens,
    // writing its results straight into the `[tokens][rows]` outputs (its own rows only).
    let mut tasks = Vec::new();
    for (m, (w, out)) in ws.iter().zip(outs.iter_mut()).enumerate() {
        let columns = OutColumns::new(out, w.rows);
        for first in (0..w.rows).step_by(chunk) {
            tasks.push((m, first, chunk.min(w.rows - first), columns));
        }
    }
    crate::team::for_each(tasks, |(m, first, n_rows, out)| {
        gemm_rows(&ws[m], &kernels[m], x, first, n_rows, out)
    });
    Ok(())
}

/// Activation rows per pass of the packed prefill: 64 rows of a 2048-wide Q8_0 activation with
/// their aux records are ~270 KiB, which stays in L2 (the task's weight groups stream through
/// it).
const PACKED_TOKEN_CHUNK: usize = 64;

/// A `[tokens][rows]` output that tasks fill by disjoint row ranges (column blocks).
#[derive(Clone, Copy)]
struct OutColumns {
    ptr: *mut f32,
    rows: usize,
    len: usize,
}

// SAFETY: every task writes only the columns (weight rows) it was given, and `matmul_many`
// hands out disjoint row ranges, so no two threads write the same element; the borrow of the
// output slice outlives the parallel loop.
unsafe impl Send for OutColumns {}
unsafe impl Sync for OutColumns {}

impl OutColumns {
    fn new(out: &mut [f32], rows: usize) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            rows,
            len: out.len(),
        }
    }

    /// out[t][r] = v.
    #[inline]
    fn set(&self, t: usize, r: usize, v: f32) {
        let at = t * self.rows + r;
        assert!(r < self.rows && at < self.len, "output index in range");
        // SAFETY: in bounds (checked above); exclusive per the type's invariant.
        unsafe { *self.ptr.add(at) = v }
    }
}

/// The kernels one weight matrix uses in the drivers.
struct RowKernels<'a> {
    dot: RowDotFn,
    dot4: RowDot4Fn,
    tile: Option<Tile4x4Fn>,
    rows4: Option<Rows4DotFn>,
    packed: Option<PackedKernels<'a>>,
}

/// A packed copy of the matrix and the level's kernels for it.
struct PackedKernels<'a> {
    matrix: &'a PackedMatrix,
    gemv: PackedGemvFn,
    tile: PackedTileFn,
}

/// The packed path for `w`, if it carries a packed copy of itself and `ks` has the kernels.
fn packed_kernels<'a>(ks: &KernelSet, w: &WeightView<'a>) -> Option<PackedKernels<'a>> {
    let matrix = w.packed?;
    if (matrix.ty, matrix.rows, matrix.cols) != (w.ty, w.rows, w.cols) {
        return None;
    }
    Some(PackedKernels {
        matrix,
        gemv: ks.packed_gemv(w.ty)?,
        tile: ks.packed_tile(w.ty)?,
    })
}

/// Decode: rows `first..first + dst.len()` of `w` against one activation row.
///
/// Packed matrices use the eight-row packed gemv. For the GGUF row layout, the four-row kernels
/// (`RowKernels::rows4`) stay off by default: in criterion's matvec bench they match or beat
/// `row_dot` (Q4_0 2048×2048: 12.0 vs 10.8 GiB/s), but inside the model's decode they halved
/// tokens/s (Llama-3.2-1B Q4_0 18 vs 35 t/s, Q4_K_M 16 vs 37): four separate row streams
/// defeat the hardware prefetcher (perf puts the time on the first loads of each block). The
/// packed layout's single stream is the fix that worked. `LUMEN_ROWS4=1` turns them on.
fn matvec_rows(w: &WeightView, k: &RowKernels, x: &QuantizedRows, first: usize, dst: &mut [f32]) {
    let a = x.row(0);
    if let Some(p) = &k.packed {
        // Task ranges start at multiples of 8 rows and packed matrices have whole groups.
        for (i, out) in dst.chunks_exact_mut(GROUP_ROWS).enumerate() {
            let g = first / GROUP_ROWS + i;
            out.copy_from_slice(&(p.gemv)(p.matrix.group(g), a, x.aux(0)));
        }
        return;
    }
    let mut i = 0;
    if let Some(rows4) = k.rows4.filter(|_| rows4_enabled()) {
        while i + 4 <= dst.len() {
            let r = first + i;
            dst[i..i + 4].copy_from_slice(&rows4(
                [w.row(r), w.row(r + 1), w.row(r + 2), w.row(r + 3)],
                a,
            ));
            i += 4;
        }
    }
    for (j, o) in dst.iter_mut().enumerate().skip(i) {
        *o = (k.dot)(w.row(first + j), a);
    }
}

fn rows4_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("LUMEN_ROWS4").is_ok_and(|v| v == "1"))
}

/// Prefill: rows `first..first + n_rows` of `w` against every activation row. 4×4 micro-tiles
/// where the level has them, then one row × four tokens, then single dots.
fn gemm_rows(
    w: &WeightView,
    k: &RowKernels,
    x: &QuantizedRows,
    first: usize,
    n_rows: usize,
    out: OutColumns,
) {
    let n_tok = x.n_rows;
    if let Some(p) = &k.packed {
        // Token chunks outermost so a chunk's activations stay in L2 while every group of the
        // task passes over them; each group's blocks stay in L1 across the chunk's tiles.
        for t0 in (0..n_tok).step_by(PACKED_TOKEN_CHUNK) {
            let tokens = t0..(t0 + PACKED_TOKEN_CHUNK).min(n_tok);
            for r in (first..first + n_rows).step_by(GROUP_ROWS) {
                packed_gemm_group(p, x, tokens.clone(), r, out);
            }
        }
        return;
    }
    let mut i = 0;
    if let Some(tile) = k.tile {
        while i + 4 <= n_rows {
            let r = first + i;
            let w4 = [w.row(r), w.row(r + 1), w.row(r + 2), w.row(r + 3)];
            let mut t = 0;
            while t + 4 <= n_tok {
                let res = tile(w4, [x.row(t), x.row(t + 1), x.row(t + 2), x.row(t + 3)]);
                for (ri, row_out) in res.iter().enumerate() {
                    for (ti, &v) in row_out.iter().enumerate() {
                        out.set(t + ti, r + ri, v);
                    }
                }
                t += 4;
            }
            for t in t..n_tok {
                for (ri, &w_row) in w4.iter().enumerate() {
                    out.set(t, r + ri, (k.dot)(w_row, x.row(t)));
                }
            }
            i += 4;
        }
    }
    for r in first + i..first + n_rows {
        let w_row = w.row(r);
        let mut t = 0;
        while t + 4 <= n_tok {
            let res = (k.dot4)(w_row, [x.row(t), x.row(t + 1), x.row(t + 2), x.row(t + 3)]);
            for (ti, &v) in res.iter().enumerate() {
                out.set(t + ti, r, v);
            }
            t += 4;
        }
        for t in t..n_tok {
            out.set(t, r, (k.dot)(w_row, x.row(t)));
        }
    }
}

/// One packed group (rows `r0..r0 + 8`) against activation rows `tokens`: `TILE_TOKENS` per
/// tile, the rest one at a time.
fn packed_gemm_group(
    p: &PackedKernels,
    x: &QuantizedRows,
    tokens: std::ops::Range<usize>,
    r0: usize,
    out: OutColumns,
) {
    let group = p.matrix.group(r0 / GROUP_ROWS);
    let mut t = tokens.start;
    while t + TILE_TOKENS <= tokens.end {
        let rows: [usize; TILE_TOKENS] = std::array::from_fn(|i| t + i);
        let res = (p.tile)(group, rows.map(|t| x.row(t)), rows.map(|t| x.aux(t)));
        for (ti, per_row) in res.iter().enumerate() {
            for (ri, &v) in per_row.iter().enumerate() {
                out.set(t + ti, r0 + ri, v);
            }
        }
        t += TILE_TOKENS;
    }
    for t in t..tokens.end {
        for (ri, &v) in (p.gemv)(group, x.row(t), x.aux(t)).iter().enumerate() {
            out.set(t, r0 + ri, v);
        }
    }
}

/// Reference matmul for validation: each weight row dequantized to f32 and dotted with the f32
/// activations in f64. No activation quantization, so a model run this way should equal a float
/// framework running the dequantized weights. Slow; for tests and debugging.
pub fn matmul_reference(w: &WeightView, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    w.check()?;
    let n_tok = x.len() / w.cols;
    if x.len() != n_tok * w.cols || out.len() != n_tok * w.rows {
        return Err(KernelError::LengthMismatch {
            ty: w.ty,
            what: "reference matmul output",
            expected: n_tok * w.rows,
            got: out.len(),
        });
    }
    let mut tiles = vec![0.0f32; out.len()];
    tiles
        .par_chunks_mut(n_tok)
        .enumerate()
        .try_for_each(|(r, per_token)| {
            let mut w_row = vec![0.0f32; w.cols];
            crate::dequantize_row(w.ty, w.row(r), &mut w_row)?;
            for (o, x_row) in per_token.iter_mut().zip(x.chunks_exact(w.cols)) {
                *o = w_row
                    .iter()
                    .zip(x_row)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>() as f32;
            }
            Ok(())
        })?;
    transpose_into(&tiles, n_tok, w.rows, out);
    Ok(())
}

/// `out[t][r] = tiles[r][t]`.
fn transpose_into(tiles: &[f32], n_tok: usize, rows: usize, out: &mut [f32]) {
    for (r, per_token) in tiles.chunks_exact(n_tok).enumerate() {
        for (t, &v) in per_token.iter().enumerate() {
            out[t * rows + r] = v;
        }
    }
}
