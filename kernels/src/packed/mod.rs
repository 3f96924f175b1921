//! Load-time interleaved ("packed") weight layouts: Q4_0, Q4_1, Q5_0 and Q8_0 here, Q4_K,
//! Q5_K and Q6_K in [`q4_k`], [`q5_k`] and [`q6_k`] (same lane scheme, super-blocks of 256).
//!
//! Why: a one-row dot reads one weight row and pays a horizontal sum and per-block scale work
//! for every 32 elements of every row. Four-row kernels over the GGUF layout read four separate
//! row streams, which defeats the hardware prefetcher (measured: decode halves, see
//! `matmul.rs`). The packed layout interleaves eight rows block by block into ONE stream, laid
//! out so that a 512-bit `vpdpbusd` multiplies eight rows by one broadcast activation chunk and
//! leaves each row's partial sums in its own lanes: no horizontal sums until the row ends, the
//! eight row scales converted with one instruction, and a sequential stream for the prefetcher.
//! llama.cpp's CPU backend does the same (its `q4_0_8x8` / `q8_0_4x8` repacks); this layout is
//! our own, chosen for VNNI's unsigned × signed operands.
//!
//! Layout of one group of [`GROUP_ROWS`] rows: the blocks of the row group in order; one packed
//! block (32 elements of each of the 8 rows) is
//!
//! * the 8 row scales `d` (f16, row order), 16 bytes (Q4_1: then the 8 mins `m`, 16 bytes);
//!   then
//! * the quants as unsigned bytes (`u = q + offset`, offset 8 for Q4_0, 128 for Q8_0) in
//!   *lane order*: lane `2r + p` of part `k` holds 4 consecutive elements of row `r`. Part `k`
//!   covers activation elements `8k..8k + 8` (`p` picks the first or second four), so one 64-bit
//!   activation broadcast feeds all 16 lanes.
//!   - Q8_0: 4 parts × 64 bytes; part `k` = for each row `r`: `u[8k..8k + 8]`.
//!   - Q4_0: 2 × 64 bytes; byte `j` of a row's 8-byte slot in the first 64 bytes holds elements
//!     `j` (low nibble, part 0) and `16 + j` (high nibble, part 2); the second 64 bytes hold
//!     elements `8 + j` (part 1) and `24 + j` (part 3). This is ggml's own nibble order, only
//!     regrouped: 16 + 128 = 144 bytes = 8 × 18, no memory overhead. Q4_1 is the same after
//!     its 32 bytes of scales and mins (160 = 8 × 20); its nibbles are used as they are
//!     (offset 0) and each row's `m·s` term is added half in each of its two lanes.
//!   - Q5_0: Q4_0's nibbles, then the fifth bits, 32 bytes: byte `8k + r` is row `r`'s `qh`
//!     byte `k` (the fifth bits of its elements `8k..8k + 8`). Read as a little-endian u64,
//!     part `k`'s eight bytes are a bit mask over part `k`'s 64 quant bytes (bit `8r + j` ↔ byte
//!     `8r + j`), which AVX-512 applies as it is (a masked byte add of 16) and AVX2 expands
//!     per 32-bit half. `u = nibble | bit << 4`, offset 16; 176 = 8 × 22 bytes.
//!
//! Integer sums use unsigned weights, so each block's sum carries `offset · Σ a` per lane; the
//! activation side precomputes, per block, the two sums of its elements that fall in even and
//! odd lanes ([`ActBlockAux`]) and the kernels subtract them exactly. Per row, the packed dot
//! equals llama.cpp's `Σ_b (Σ_i (q_i − offset)·a_i) · d_w · d_a` except for f32 rounding order.

use std::mem::{offset_of, size_of};

use half::f16;
use rayon::prelude::*;

use crate::formats::{
    BlockFormat, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1, BlockQ8_K, QK,
};
use crate::table::GgmlType;
use crate::KernelError;

pub mod q4_k;
pub mod q5_k;
pub mod q6_k;

pub use q4_k::KBlockAux;
pub use q6_k::Q6Aux;

/// Per Q8_K activation block: the records the packed Q4_K, Q5_K and Q6_K kernels read (Q5_K
/// reads Q4_K's: same scales and mins).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Q8KAux {
    pub q4_k: KBlockAux,
    pub q6_k: Q6Aux,
}

/// Rows interleaved per group.
pub const GROUP_ROWS: usize = 8;
/// Activation rows per prefill tile: each unpacked block is applied to this many tokens.
pub const TILE_TOKENS: usize = 8;

/// Per activation block (Q8_0): `d` as f32, and minus the packed formats' offsets times the
/// sums of the quants that meet the even and odd lanes of a packed part (elements `8k..8k+4`
/// and `8k+4..8k+8` over `k = 0..4`). The kernels start each block's integer accumulator from
/// the `neg_offset_sums` of their format, so the unsigned products land on the exact signed sum
/// with no extra instruction.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ActBlockAux {
    /// `−8 ·` lane sums (Q4_0).
    pub neg_offset_sums_q4: [i32; 2],
    /// `−128 ·` lane sums (Q8_0).
    pub neg_offset_sums_q8: [i32; 2],
    pub d: f32,
    /// `−16 ·` lane sums (Q5_0).
    pub neg_offset_sums_q5: [i32; 2],
    pad: u32,
}

/// The aux record of one Q8_0 block.
pub fn act_aux(b: &BlockQ8_0) -> ActBlockAux {
    let mut sums = [0i32; 2];
    for (c, chunk) in b.qs.chunks_exact(4).enumerate() {
        sums[c % 2] += chunk.iter().map(|&q| q as i32).sum::<i32>();
    }
    ActBlockAux {
        neg_offset_sums_q4: sums.map(|s| -packed_offset(GgmlType::Q4_0) * s),
        neg_offset_sums_q8: sums.map(|s| -packed_offset(GgmlType::Q8_0) * s),
        d: b.d.to_f32(),
        neg_offset_sums_q5: sums.map(|s| -packed_offset(GgmlType::Q5_0) * s),
        pad: 0,
    }
}

/// Bytes of one packed block (8 rows × one block of `ty`) of `ty`, or `None` if `ty` has no
/// packed layout.
pub const fn packed_block_bytes(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_0 => Some(16 + 128),
        GgmlType::Q4_1 => Some(32 + 128),
        GgmlType::Q5_0 => Some(Q5_0_QH_AT + GROUP_ROWS * Q5_0_QH_BYTES),
        GgmlType::Q8_0 => Some(16 + 256),
        GgmlType::Q4_K => Some(q4_k::PACKED_BYTES),
        GgmlType::Q5_K => Some(q5_k::PACKED_BYTES),
        GgmlType::Q6_K => Some(q6_k::PACKED_BYTES),
        _ => None,
    }
}

/// Whether every type with a packed layout ([`packed_block_bytes`]) appears in one of
/// `tables` (a level's packed kernel tables). The scalar set, the AVX2 level (which every x86
/// level builds on) and the AVX-512 level assert it at compile time: a format given a layout
/// but no kernels there does not build.
pub const fn covers_packed_formats(tables: &[&[GgmlType]]) -> bool {
    let mut i = 0;
    while i < GgmlType::ALL.len() {
        let ty = GgmlType::ALL[i];
        if packed_block_bytes(ty).is_some() && !listed(ty, tables) {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether every type in `tables` has a packed layout (a kernel table names no other type).
pub const fn only_packed_formats(tables: &[&[GgmlType]]) -> bool {
    let mut t = 0;
    while t < tables.len() {
        let mut k = 0;
        while k < tables[t].len() {
            if packed_block_bytes(tables[t][k]).is_none() {
                return false;
            }
            k += 1;
        }
        t += 1;
    }
    true
}

const fn listed(ty: GgmlType, tables: &[&[GgmlType]]) -> bool {
    let mut t = 0;
    while t < tables.len() {
        let mut k = 0;
        while k < tables[t].len() {
            if tables[t][k] as u8 == ty as u8 {
                return true;
            }
            k += 1;
        }
        t += 1;
    }
    false
}

/// Bytes of the per-block aux record the packed kernels read beside activation type `act`
/// (Q8_0: [`ActBlockAux`], Q8_K: [`Q8KAux`]), or 0.
pub const fn aux_bytes(act: GgmlType) -> usize {
    match act {
        GgmlType::Q8_0 => std::mem::size_of::<ActBlockAux>(),
        GgmlType::Q8_K => std::mem::size_of::<Q8KAux>(),
        GgmlType::Q8_1 => std::mem::size_of::<Q81Aux>(),
        _ => 0,
    }
}

/// The aux records of one activation row of type `act` (Q8_0 or Q8_K blocks) into `aux`
/// (`aux_bytes(act)` per block); nothing for other types.
pub fn fill_aux(act: GgmlType, row: &[u8], aux: &mut [u8]) {
    match act {
        GgmlType::Q8_0 => write_records(row, aux, act_aux),
        GgmlType::Q8_K => write_records(row, aux, |b: &BlockQ8_K| Q8KAux {
            q4_k: q4_k::act_aux_k(b),
            q6_k: q6_k::q6_aux(b),
        }),
        GgmlType::Q8_1 => write_records(row, aux, |b: &BlockQ8_1| Q81Aux {
            d: b.d.to_f32(),
            half_s: 0.5 * b.s.to_f32(),
        }),
        _ => {}
    }
}

/// `record(block)` of every block of `row`, written straight into `aux` (this runs per token
/// per matmul, so no temporary vector).
fn write_records<B: BlockFormat, R: bytemuck::Pod>(
    row: &[u8],
    aux: &mut [u8],
    record: impl Fn(&B) -> R,
) {
    let blocks = crate::dispatch::blocks_of::<B>(row).expect("whole blocks");
    for (b, out) in blocks
        .iter()
        .zip(aux.chunks_exact_mut(std::mem::size_of::<R>()))
    {
        out.copy_from_slice(bytemuck::bytes_of(&record(b)));
    }
}

/// Offset added to a quant to make it unsigned in the packed layout.
pub const fn packed_offset(ty: GgmlType) -> i32 {
    match ty {
        GgmlType::Q8_0 => 128,
        GgmlType::Q4_1 => 0,
        GgmlType::Q5_0 => 16,
        _ => 8,
    }
}

/// Where the quants start in a legacy packed block: after the eight `d` (and, for Q4_1, the
/// eight `m`).
pub const fn quants_at(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_1 => 32,
        _ => 16,
    }
}

/// Where the quants start in a legacy GGUF block.
const fn gguf_qs_at(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_1 => offset_of!(BlockQ4_1, qs),
        GgmlType::Q5_0 => offset_of!(BlockQ5_0, qs),
        GgmlType::Q8_0 => offset_of!(BlockQ8_0, qs),
        _ => offset_of!(BlockQ4_0, qs),
    }
}

/// Bytes of one row's fifth bits (`qh`) in a Q5_0 block.
const Q5_0_QH_BYTES: usize = offset_of!(BlockQ5_0, qs) - offset_of!(BlockQ5_0, qh);
/// Where the fifth bits start in a packed Q5_0 block: after the scales and Q4_0-style nibbles.
pub const Q5_0_QH_AT: usize = quants_at(GgmlType::Q5_0) + GROUP_ROWS * QK / 2;
const _: () = assert!(
    packed_block_bytes(GgmlType::Q5_0).unwrap() == GROUP_ROWS * size_of::<BlockQ5_0>(),
    "packed Q5_0 is the 8 rows' bytes regrouped"
);

/// Per Q8_1 activation block, for packed Q4_1: `d` and half of `s = d·Σq` as f32 (each row's
/// `m·s` is added half in each of its two lanes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Q81Aux {
    pub d: f32,
    pub half_s: f32,
}

/// A weight matrix in the packed layout: `rows / 8` groups, each `cols / 32` packed blocks.
pub struct PackedMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    data: Storage,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PackedMatrix({:?}, {}×{})",
            self.ty, self.rows, self.cols
        )
    }
}

impl PackedMatrix {
    /// Whether a `rows × cols` matrix of `ty` can be packed.
    pub fn supports(ty: GgmlType, rows: usize, cols: usize) -> bool {
        packed_block_bytes(ty).is_some()
            && rows > 0
            && rows.is_multiple_of(GROUP_ROWS)
            && cols > 0
            && cols.is_multiple_of(ty.block_elems())
    }

    /// Repacks a row-major GGUF matrix (`bytes` = `rows` rows of `cols` elements of `ty`).
    pub fn pack(ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self, KernelError> {
        if !Self::supports(ty, rows, cols) {
            return Err(KernelError::NoPackedLayout { ty, rows, cols });
        }
        let row_bytes = cols / ty.block_elems() * ty.block_bytes();
        if bytes.len() != rows * row_bytes {
            return Err(KernelError::LengthMismatch {
                ty,
                what: "weight matrix bytes (packing)",
                expected: rows * row_bytes,
                got: bytes.len(),
            });
        }
        let pbb = packed_block_bytes(ty).expect("supported");
        let nb = cols / ty.block_elems();
        let mut data = Storage::new(rows / GROUP_ROWS * nb * pbb)?;
        data.par_chunks_exact_mut(nb * pbb)
            .zip(bytes.par_chunks_exact(GROUP_ROWS * row_bytes))
            .for_each(|(out, group)| {
                for (b, dst) in out.chunks_exact_mut(pbb).enumerate() {
                    let block = |r: usize| {
                        let at = r * row_bytes + b * ty.block_bytes();
                        &group[at..at + ty.block_bytes()]
                    };
                    pack_block(ty, block, dst);
                }
            });
        Ok(Self {
            ty,
            rows,
            cols,
            data,
        })
    }

    pub fn groups(&self) -> usize {
        self.rows / GROUP_ROWS
    }

    pub fn blocks_per_row(&self) -> usize {
        self.cols / self.ty.block_elems()
    }

    /// The packed bytes of row group `g`.
    pub fn group(&self, g: usize) -> &[u8] {
        let gb = self.blocks_per_row() * packed_block_bytes(self.ty).expect("packed type");
        &self.data[g * gb..(g + 1) * gb]
    }

    /// Heap bytes held by the packed copy.
    pub fn heap_bytes(&self) -> usize {
        self.data.len()
    }
}

/// Zeroed bytes for a packed matrix: an anonymous mapping with transparent huge pages
/// requested. A decode step streams every byte once, and the hardware prefetchers stop at page
/// boundaries, so 2 MiB pages keep them running (and spare the TLB). Where the kernel declines
/// the advice, the mapping is ordinary 4 KiB pages.
struct Storage(memmap2::MmapMut);

impl Storage {
    fn new(bytes: usize) -> Result<Self, KernelError> {
        let map = memmap2::MmapMut::map_anon(bytes.max(1)).map_err(|e| KernelError::Alloc {
            bytes,
            reason: e.to_string(),
        })?;
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage); // advice only: fine if refused
        Ok(Self(map))
    }
}

impl std::ops::Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for Storage {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// One packed block from the 8 rows' GGUF blocks (`block(r)` = row `r`'s block bytes).
fn pack_block<'a>(ty: GgmlType, block: impl Fn(usize) -> &'a [u8], dst: &mut [u8]) {
    match ty {
        GgmlType::Q4_K => return q4_k::pack_block(block, dst),
        GgmlType::Q5_K => return q5_k::pack_block(block, dst),
        GgmlType::Q6_K => return q6_k::pack_block(block, dst),
        _ => {}
    }
    let (scales, quants) = dst.split_at_mut(quants_at(ty));
    // d of every row, then (Q4_1) m of every row.
    for r in 0..GROUP_ROWS {
        for (f, field) in scales.chunks_exact_mut(16).enumerate() {
            field[2 * r..2 * r + 2].copy_from_slice(&block(r)[2 * f..2 * f + 2]);
        }
    }
    for r in 0..GROUP_ROWS {
        let qs = &block(r)[gguf_qs_at(ty)..];
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 => {
                quants[8 * r..8 * r + 8].copy_from_slice(&qs[..8]);
                quants[64 + 8 * r..64 + 8 * r + 8].copy_from_slice(&qs[8..16]);
                if ty == GgmlType::Q5_0 {
                    let qh = &block(r)[offset_of!(BlockQ5_0, qh)..];
                    let qh_area = &mut quants[Q5_0_QH_AT - quants_at(ty)..];
                    for k in 0..Q5_0_QH_BYTES {
                        qh_area[8 * k + r] = qh[k];
                    }
                }
            }
            _ => {
                for k in 0..4 {
                    for j in 0..8 {
                        quants[64 * k + 8 * r + j] = qs[8 * k + j] ^ 0x80;
                    }
                }
            }
        }
    }
}

/// Row `r`'s unsigned quants (`q + offset`, element order) and scale in one packed block.
pub fn unpack_row(ty: GgmlType, block: &[u8], r: usize) -> ([u8; QK], f16) {
    let d = f16::from_le_bytes([block[2 * r], block[2 * r + 1]]);
    let quants = &block[quants_at(ty)..];
    let mut u = [0u8; QK];
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 => {
            for j in 0..8 {
                let (lo, hi) = (quants[8 * r + j], quants[64 + 8 * r + j]);
                u[j] = lo & 0x0F;
                u[16 + j] = lo >> 4;
                u[8 + j] = hi & 0x0F;
                u[24 + j] = hi >> 4;
            }
            if ty == GgmlType::Q5_0 {
                let qh = q5_0_qh(block, r);
                for (e, x) in u.iter_mut().enumerate() {
                    *x |= (qh[e / 8] >> (e % 8) & 1) << 4;
                }
            }
        }
        _ => {
            for k in 0..4 {
                for j in 0..8 {
                    u[8 * k + j] = quants[64 * k + 8 * r + j];
                }
            }
        }
    }
    (u, d)
}

/// Row `r`'s GGUF `qh` bytes from a packed Q5_0 block.
fn q5_0_qh(block: &[u8], r: usize) -> [u8; Q5_0_QH_BYTES] {
    std::array::from_fn(|k| block[Q5_0_QH_AT + 8 * k + r])
}

/// Scalar reference: one packed row group · one activation row (`a`: the row's Q8_0 or Q8_K
/// bytes) → the 8 rows' dots, with exactly the arithmetic (and order) of the formats' reference
/// `vec_dot` (integer block sums scaled by the block scales, summed in f32), so it equals
/// `vec_dot_q4_0_q8_0_ref` / `vec_dot_q5_0_q8_0_ref` / `vec_dot_q8_0_q8_0_ref` /
/// `vec_dot_q4_k_q8_k_ref` / `vec_dot_q5_k_q8_k_ref` on the unpacked rows bit for bit.
pub fn packed_gemv_ref(ty: GgmlType, group: &[u8], a: &[u8]) -> [f32; GROUP_ROWS] {
    let pbb = packed_block_bytes(ty).expect("packed type");
    let mut out = [0.0f32; GROUP_ROWS];
    if matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K) {
        let a = crate::dispatch::blocks_of::<BlockQ8_K>(a).expect("whole blocks");
        assert_eq!(
            group.len(),
            a.len() * pbb,
            "packed gemv: block counts differ"
        );
        for (block, ab) in group.chunks_exact(pbb).zip(a.iter()) {
            let terms = match ty {
                GgmlType::Q4_K => q4_k::block_dots_ref(block, ab),
                GgmlType::Q5_K => q5_k::block_dots_ref(block, ab),
                _ => q6_k::block_dots_ref(block, ab),
            };
            for (o, term) in out.iter_mut().zip(terms) {
                *o += term;
            }
        }
        return out;
    }
    if ty == GgmlType::Q4_1 {
        let a = crate::dispatch::blocks_of::<BlockQ8_1>(a).expect("whole blocks");
        assert_eq!(
            group.len(),
            a.len() * pbb,
            "packed gemv: block counts differ"
        );
        for (block, ab) in group.chunks_exact(pbb).zip(a.iter()) {
            for (r, o) in out.iter_mut().enumerate() {
                let (u, d) = unpack_row(ty, block, r);
                let m = f16::from_le_bytes([block[16 + 2 * r], block[17 + 2 * r]]);
                let w = BlockQ4_1 {
                    d,
                    m,
                    qs: std::array::from_fn(|j| u[j] | u[16 + j] << 4),
                };
                *o += crate::formats::q4_1::vec_dot_q4_1_q8_1_ref(&[w], std::slice::from_ref(ab));
            }
        }
        return out;
    }
    let a = crate::dispatch::blocks_of::<BlockQ8_0>(a).expect("whole blocks");
    assert_eq!(
        group.len(),
        a.len() * pbb,
        "packed gemv: block counts differ"
    );
    let offset = packed_offset(ty);
    for (block, ab) in group.chunks_exact(pbb).zip(a.iter()) {
        for (r, o) in out.iter_mut().enumerate() {
            let (u, d) = unpack_row(ty, block, r);
            let isum: i32 = u
                .iter()
                .zip(&ab.qs)
                .map(|(&w, &x)| (w as i32 - offset) * x as i32)
                .sum();
            // Each format's reference rounds the scale product its own way (as llama.cpp's
            // generic kernels do).
            *o += match ty {
                GgmlType::Q8_0 | GgmlType::Q5_0 => isum as f32 * (d.to_f32() * ab.d.to_f32()),
                _ => isum as f32 * d.to_f32() * ab.d.to_f32(),
            };
        }
    }
    out
}

/// The GGUF blocks of row `r` of a packed group (inverse of [`PackedMatrix::pack`]), for tests.
pub fn unpack_group_row(ty: GgmlType, group: &[u8], r: usize) -> Vec<u8> {
    let pbb = packed_block_bytes(ty).expect("packed type");
    let offset = packed_offset(ty);
    let mut out = Vec::new();
    for block in group.chunks_exact(pbb) {
        match ty {
            GgmlType::Q4_K => {
                out.extend(q4_k::unpack_gguf_block(block, r));
                continue;
            }
            GgmlType::Q5_K => {
                out.extend(q5_k::unpack_gguf_block(block, r));
                continue;
            }
            GgmlType::Q6_K => {
                out.extend(q6_k::unpack_gguf_block(block, r));
                continue;
            }
            _ => {}
        }
        let (u, d) = unpack_row(ty, block, r);
        out.extend_from_slice(&d.to_le_bytes());
        if ty == GgmlType::Q4_1 {
            out.extend_from_slice(&block[16 + 2 * r..16 + 2 * r + 2]);
        }
        if ty == GgmlType::Q5_0 {
            out.extend_from_slice(&q5_0_qh(block, r));
        }
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 => {
                let mut b = BlockQ4_0 { d, qs: [0; 16] };
                for j in 0..16 {
                    // (Q5_0's fifth bits went to qh above; the shift drops u[16 + j]'s.)
                    b.qs[j] = (u[j] & 0x0F) | u[16 + j] << 4;
                }
                out.extend_from_slice(&b.qs);
            }
            _ => out.extend(u.iter().map(|&x| (x as i32 - offset) as i8 as u8)),
        }
    }
    out
}
