//! Packed Q4_K: eight rows interleaved per 256-element super-block, same lane scheme as the
//! legacy packed layouts (lane `2r + p` of a part holds four consecutive elements of row `r`).
//!
//! One packed super-block (1184 bytes for 8 × 144 in the GGUF layout: the 6-bit scales and mins
//! are stored as bytes, +2.8%):
//!
//! * `d[8]`, `dmin[8]` (f16, row order), 32 bytes;
//! * `sc[j][r]`: sub-block `j`'s scale for each row, 64 bytes (one 8-byte load per sub-block,
//!   widened to the 16 lanes);
//! * `m[r][j]`: each row's eight mins, 64 bytes. As 16 little-endian i16 lanes... see
//!   [`KBlockAux`]: lane `(r, p)` holds `m[r][4p..4p+4]`, so a `vpmaddwd` of its even bytes
//!   against (A₀, A₂ | A₄, A₆) and of its odd bytes against (A₁, A₃ | A₅, A₇) leaves each row's
//!   `Σ_j m_j·A_j` across its two lanes, A_j being the activation's sub-block sums;
//! * the nibbles, 1024 bytes: for each 64-element chunk `c` (GGUF bytes `32c..32c+32` of every
//!   row), four 64-byte parts; part `k` holds, per row, GGUF bytes `32c + 8k..32c + 8k + 8`:
//!   low nibbles are elements `64c + 8k..+8` (sub-block `2c`), high nibbles elements
//!   `64c + 32 + 8k..+8` (sub-block `2c + 1`).
//!
//! Integer sums are exact; per row the packed dot equals llama.cpp's
//! `d·d_a·Σ_j sc_j·Σ q·a − dmin·d_a·Σ_j m_j·A_j` per super-block up to f32 rounding order.

use half::f16;

use crate::formats::q4_k::get_scale_min_k4;
use crate::formats::{BlockQ8_K, QK_K};

use super::GROUP_ROWS;

/// Bytes of one packed super-block (8 rows × 256 elements).
pub const PACKED_BYTES: usize = 32 + 64 + 64 + 1024;
/// Offsets inside a packed super-block.
pub const SCALES_AT: usize = 32;
pub const MINS_AT: usize = 96;
pub const QUANTS_AT: usize = 160;

/// Where nibble part `k` of chunk `c` starts (64 bytes: 8 bytes of each row).
pub const fn part_at(c: usize, k: usize) -> usize {
    QUANTS_AT + 256 * c + 64 * k
}

/// Per Q8_K activation block: the eight 32-element sub-block sums `A_j`, laid out for the
/// mins term (`[A₀, A₂, A₄, A₆]` then `[A₁, A₃, A₅, A₇]`, each 64-bit group broadcast).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct KBlockAux {
    pub even: [i16; 4],
    pub odd: [i16; 4],
}

/// The Q4_K aux record of one Q8_K block.
pub fn act_aux_k(b: &BlockQ8_K) -> KBlockAux {
    // bsums are per 16 elements; a 32-element sub-block sum fits i16 (|Σ| ≤ 32·128).
    let sub = |j: usize| b.bsums[2 * j] + b.bsums[2 * j + 1];
    KBlockAux {
        even: [sub(0), sub(2), sub(4), sub(6)],
        odd: [sub(1), sub(3), sub(5), sub(7)],
    }
}

/// One packed super-block from the 8 rows' GGUF Q4_K blocks (`block(r)`, 144 bytes each).
pub fn pack_block<'a>(block: impl Fn(usize) -> &'a [u8], dst: &mut [u8]) {
    for r in 0..GROUP_ROWS {
        let b = block(r);
        dst[2 * r..2 * r + 2].copy_from_slice(&b[0..2]);
        dst[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&b[2..4]);
        let scales: &[u8; 12] = b[4..16].try_into().expect("12 scale bytes");
        for j in 0..8 {
            let (sc, m) = get_scale_min_k4(j, scales);
            dst[SCALES_AT + 8 * j + r] = sc;
            dst[MINS_AT + 8 * r + j] = m;
        }
        let qs = &b[16..144];
        for c in 0..4 {
            for k in 0..4 {
                let at = part_at(c, k) + 8 * r;
                dst[at..at + 8].copy_from_slice(&qs[32 * c + 8 * k..32 * c + 8 * k + 8]);
            }
        }
    }
}

/// Row `r` of a packed super-block: (d, dmin, scales, mins, nibbles in element order).
pub struct Row {
    pub d: f16,
    pub dmin: f16,
    pub sc: [u8; 8],
    pub m: [u8; 8],
    pub q: [u8; QK_K],
}

pub fn unpack_row(block: &[u8], r: usize) -> Row {
    let f16_at = |at: usize| f16::from_le_bytes([block[at], block[at + 1]]);
    let mut q = [0u8; QK_K];
    for c in 0..4 {
        for k in 0..4 {
            for j in 0..8 {
                let byte = block[part_at(c, k) + 8 * r + j];
                q[64 * c + 8 * k + j] = byte & 0x0F;
                q[64 * c + 32 + 8 * k + j] = byte >> 4;
            }
        }
    }
    Row {
        d: f16_at(2 * r),
        dmin: f16_at(16 + 2 * r),
        sc: std::array::from_fn(|j| block[SCALES_AT + 8 * j + r]),
        m: std::array::from_fn(|j| block[MINS_AT + 8 * r + j]),
        q,
    }
}

/// Row `r` of a packed super-block back in the GGUF layout (inverse of [`pack_block`]; the
/// 12-byte scale encoding uses all 96 bits, so it is recovered exactly).
pub fn unpack_gguf_block(block: &[u8], r: usize) -> Vec<u8> {
    let row = unpack_row(block, r);
    let (sc, m) = (row.sc, row.m);
    let mut scales = [0u8; 12];
    for j in 0..4 {
        scales[j] = sc[j] | (sc[j + 4] >> 4) << 6;
        scales[j + 4] = m[j] | (m[j + 4] >> 4) << 6;
        scales[j + 8] = (sc[j + 4] & 0x0F) | (m[j + 4] & 0x0F) << 4;
    }
    let mut qs = [0u8; 128];
    for c in 0..4 {
        for l in 0..32 {
            qs[32 * c + l] = row.q[64 * c + l] | row.q[64 * c + 32 + l] << 4;
        }
    }
    let mut out = Vec::with_capacity(144);
    out.extend_from_slice(&row.d.to_le_bytes());
    out.extend_from_slice(&row.dmin.to_le_bytes());
    out.extend_from_slice(&scales);
    out.extend_from_slice(&qs);
    out
}

/// Scalar reference: the 8 rows' contributions of one packed super-block against one Q8_K
/// block, with exactly the arithmetic of `vec_dot_q4_k_q8_k_ref`'s per-block term.
pub fn block_dots_ref(block: &[u8], a: &BlockQ8_K) -> [f32; GROUP_ROWS] {
    std::array::from_fn(|r| row_dot_ref(&unpack_row(block, r), a))
}

/// One unpacked row's term against one Q8_K block (`dot_k_min`'s arithmetic): shared with
/// packed Q5_K, whose rows differ only in their quants' fifth bit.
pub fn row_dot_ref(row: &Row, a: &BlockQ8_K) -> f32 {
    let summs: i32 = a
        .bsums
        .iter()
        .enumerate()
        .map(|(i, &s)| s as i32 * row.m[i / 2] as i32)
        .sum();
    let isum: i32 = (0..8)
        .map(|j| {
            let s: i32 = (32 * j..32 * j + 32)
                .map(|e| row.q[e] as i32 * a.qs[e] as i32)
                .sum();
            s * row.sc[j] as i32
        })
        .sum();
    row.d.to_f32() * a.d * isum as f32 - row.dmin.to_f32() * a.d * summs as f32
}
