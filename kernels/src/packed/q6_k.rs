//! Packed Q6_K: eight rows interleaved per 256-element super-block, same lane scheme as the
//! other packed layouts (lane `2r + p` of a part holds four consecutive elements of row `r`).
//!
//! One packed super-block, 1680 bytes (exactly 8 × 210, the GGUF size):
//!
//! * `d[8]` (f16, row order), 16 bytes;
//! * `sc[j][r]`: the sixteen i8 scales (per 16 elements), 128 bytes;
//! * per 64-element chunk `c`, 384 bytes, in the order the kernel reads them (one forward
//!   stream for the prefetcher):
//!   - the high 2 bits of units `2c` and `2c + 1` (32 elements each), 64 bytes per unit: row
//!     `r`'s byte `j` holds the high bits of element `32s + 8k + j` at bits `2k, 2k+1` for
//!     `k = 0..4`;
//!   - the low 4 bits, arranged as packed Q4_K's nibbles: four 64-byte parts; in part `k` row
//!     `r`'s byte `j` holds element `64c + 8k + j` (low nibble) and `64c + 32 + 8k + j` (high
//!     nibble).
//!
//! The 6-bit values are used unsigned (`q`, not `q − 32`); each 16-element sub-block's integer
//! chain starts from `−32 ·` the activation's lane sums over it ([`Q6Aux`]), so it ends on the
//! exact signed sum, which is then scaled by the row's i8 scale in the integer domain. Per row
//! the packed dot equals llama.cpp's `d·d_a·Σ_j sc_j·Σ (q − 32)·a` per super-block up to f32
//! rounding order.

use half::f16;

use crate::formats::q6_k::unpack_q6_k;
use crate::formats::{BlockQ6_K, BlockQ8_K, QK_K};

use super::GROUP_ROWS;

/// Bytes of one packed super-block (8 rows × 256 elements).
pub const PACKED_BYTES: usize = 16 + 128 + 1024 + 512;
/// Offsets inside a packed super-block.
pub const SCALES_AT: usize = 16;
const CHUNKS_AT: usize = 144;
const CHUNK_BYTES: usize = 384;

/// Offset of unit `s`'s high-bit plane.
pub const fn high_at(s: usize) -> usize {
    CHUNKS_AT + CHUNK_BYTES * (s / 2) + 64 * (s % 2)
}

/// Offset of chunk `c`'s low-nibble part `k`.
pub const fn low_at(c: usize, k: usize) -> usize {
    CHUNKS_AT + CHUNK_BYTES * c + 128 + 64 * k
}

/// Per Q8_K activation block, for packed Q6_K: for each 16-element sub-block `j`, `−32 ·` the
/// sums of its quants that meet the even and odd lanes of a part (elements `8k..8k+4` and
/// `8k+4..8k+8` of its two parts).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Q6Aux {
    pub neg_offset_sums: [[i32; 2]; 16],
}

/// The Q6_K aux record of one Q8_K block.
pub fn q6_aux(b: &BlockQ8_K) -> Q6Aux {
    let mut out = Q6Aux::default();
    for (e, &q) in b.qs.iter().enumerate() {
        // Sub-block e/16; lane parity by the 4-element group within the 8-element part.
        out.neg_offset_sums[e / 16][(e % 8) / 4] -= 32 * q as i32;
    }
    out
}

/// One packed super-block from the 8 rows' GGUF Q6_K blocks (`block(r)`, 210 bytes each).
pub fn pack_block<'a>(block: impl Fn(usize) -> &'a [u8], dst: &mut [u8]) {
    for r in 0..GROUP_ROWS {
        let b: BlockQ6_K = bytemuck::pod_read_unaligned(block(r));
        dst[2 * r..2 * r + 2].copy_from_slice(&b.d.to_le_bytes());
        for (j, &sc) in b.scales.iter().enumerate() {
            dst[SCALES_AT + 8 * j + r] = sc as u8;
        }
        let u = unpack_q6_k(&b).map(|v| (v + 32) as u8);
        for c in 0..4 {
            for k in 0..4 {
                for j in 0..8 {
                    let (e_lo, e_hi) = (64 * c + 8 * k + j, 64 * c + 32 + 8 * k + j);
                    dst[low_at(c, k) + 8 * r + j] = (u[e_lo] & 0xF) | (u[e_hi] & 0xF) << 4;
                }
            }
        }
        for s in 0..8 {
            for j in 0..8 {
                let bits = (0..4).fold(0u8, |acc, k| acc | (u[32 * s + 8 * k + j] >> 4) << (2 * k));
                dst[high_at(s) + 8 * r + j] = bits;
            }
        }
    }
}

/// Row `r` of a packed super-block: (d, scales, 6-bit values in element order).
pub fn unpack_row(block: &[u8], r: usize) -> (f16, [i8; 16], [u8; QK_K]) {
    let mut u = [0u8; QK_K];
    for (e, v) in u.iter_mut().enumerate() {
        let (c, hi, k, j) = (e / 64, (e % 64) / 32, (e % 32) / 8, e % 8);
        let low = block[low_at(c, k) + 8 * r + j] >> (4 * hi) & 0xF;
        let high = block[high_at(e / 32) + 8 * r + j] >> (2 * k) & 3;
        *v = low | high << 4;
    }
    let d = f16::from_le_bytes([block[2 * r], block[2 * r + 1]]);
    (
        d,
        std::array::from_fn(|j| block[SCALES_AT + 8 * j + r] as i8),
        u,
    )
}

/// Row `r` of a packed super-block back in the GGUF layout (inverse of [`pack_block`]).
pub fn unpack_gguf_block(block: &[u8], r: usize) -> Vec<u8> {
    let (d, scales, u) = unpack_row(block, r);
    let mut b = BlockQ6_K {
        ql: [0; QK_K / 2],
        qh: [0; QK_K / 4],
        scales,
        d,
    };
    for (e, &v) in u.iter().enumerate() {
        let (half, x) = (e / 128, e % 128);
        b.ql[64 * half + x % 64] |= (v & 0xF) << (4 * (x / 64));
        b.qh[32 * half + x % 32] |= (v >> 4) << (2 * (x / 32));
    }
    bytemuck::bytes_of(&b).to_vec()
}

/// Scalar reference: the 8 rows' contributions of one packed super-block against one Q8_K
/// block, with exactly the arithmetic of `vec_dot_q6_k_q8_k_ref`'s per-block term.
pub fn block_dots_ref(block: &[u8], a: &BlockQ8_K) -> [f32; GROUP_ROWS] {
    std::array::from_fn(|r| {
        let (d, scales, u) = unpack_row(block, r);
        let isum: i32 = (0..16)
            .map(|j| {
                let s: i32 = (16 * j..16 * j + 16)
                    .map(|e| (u[e] as i32 - 32) * a.qs[e] as i32)
                    .sum();
                scales[j] as i32 * s
            })
            .sum();
        d.to_f32() * a.d * isum as f32
    })
}
