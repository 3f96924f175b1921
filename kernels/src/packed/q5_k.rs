//! Packed Q5_K: packed Q4_K's header (d, dmin, scales, mins) and nibble parts for the quants'
//! low four bits ([`super::q4_k`]), with each 64-element chunk's fifth bits as one 64-bit mask
//! per nibble part, placed just before the chunk's parts: a kernel reads each super-block front
//! to back (with the masks at the block's end, 1B decode ran 14% and 22% slower than the row
//! kernel in two of three alternating rounds, BENCHMARKS.md).
//!
//! Chunk `c` at [`chunk_at`]: eight masks `(n, k)` (low nibbles `n = 0` / high `n = 1`, part
//! `k`), then the four 64-byte parts. Bit `i` of a mask belongs to byte `i` of its part (row
//! `i / 8`, GGUF quant byte `32c + 8k + i % 8`), so a kernel ORs 16 onto exactly the bytes it
//! loaded (AVX2 half `h`: the mask's 32 bits at `+ 4h`). In the GGUF block the same bit is bit
//! `2c + n` of `qh[8k + i % 8]` (llama.cpp's `dequantize_row_q5_K`).

use std::mem::{offset_of, size_of};

use super::q4_k::{self, Row};
use super::GROUP_ROWS;
use crate::formats::{BlockQ4_K, BlockQ5_K, BlockQ8_K};

/// The GGUF Q5_K block's fields (d, dmin, scales, then qh, then qs), from the format struct.
const GGUF_QH: usize = offset_of!(BlockQ5_K, qh);
const GGUF_QS: usize = offset_of!(BlockQ5_K, qs);
const GGUF_BYTES: usize = size_of::<BlockQ5_K>();
const Q4K_BYTES: usize = size_of::<BlockQ4_K>();
// A Q4_K block is the same fields without qh.
const _: () = assert!(GGUF_QH == offset_of!(BlockQ4_K, qs) && Q4K_BYTES + 32 == GGUF_BYTES);

/// Bytes of one chunk's masks and parts, and of one packed super-block (8 rows × 256 elements).
const CHUNK_BYTES: usize = 8 * 8 + 4 * 64;
pub const PACKED_BYTES: usize = q4_k::QUANTS_AT + 4 * CHUNK_BYTES;

/// Where chunk `c` (masks, then parts) starts.
pub const fn chunk_at(c: usize) -> usize {
    q4_k::QUANTS_AT + CHUNK_BYTES * c
}

/// Where mask `(c, n, k)` is (see the module doc).
pub const fn mask_at(c: usize, n: usize, k: usize) -> usize {
    chunk_at(c) + 8 * (4 * n + k)
}

/// Where nibble part `k` of chunk `c` starts.
pub const fn part_at(c: usize, k: usize) -> usize {
    chunk_at(c) + 64 + 64 * k
}

/// Part `k` of chunk `c` in packed Q4_K (`FIVE = false`) or Q5_K (`true`): the kernels of both
/// are one generic over `FIVE`.
pub const fn k4_part_at<const FIVE: bool>(c: usize, k: usize) -> usize {
    if FIVE {
        part_at(c, k)
    } else {
        q4_k::part_at(c, k)
    }
}

/// Bytes of one packed Q4_K (`FIVE = false`) or Q5_K (`true`) super-block.
pub const fn k4_block_bytes<const FIVE: bool>() -> usize {
    if FIVE {
        PACKED_BYTES
    } else {
        q4_k::PACKED_BYTES
    }
}

/// Copies the header and the nibble parts between a packed Q4_K block and a packed Q5_K one
/// (`to_q5`: Q4_K → Q5_K), leaving the masks alone.
fn move_low_bits(q4: &mut [u8], q5: &mut [u8], to_q5: bool) {
    let mut moves = vec![(0, 0, q4_k::QUANTS_AT)];
    for c in 0..4 {
        for k in 0..4 {
            moves.push((q4_k::part_at(c, k), part_at(c, k), 64));
        }
    }
    for (at4, at5, len) in moves {
        if to_q5 {
            q5[at5..at5 + len].copy_from_slice(&q4[at4..at4 + len]);
        } else {
            q4[at4..at4 + len].copy_from_slice(&q5[at5..at5 + len]);
        }
    }
}

/// The packed Q4_K block of the low four bits.
fn low_bits(block: &[u8]) -> [u8; q4_k::PACKED_BYTES] {
    let mut q4 = [0u8; q4_k::PACKED_BYTES];
    move_low_bits(&mut q4, &mut block.to_vec(), false);
    q4
}

/// One packed super-block from the 8 rows' GGUF Q5_K blocks (`block(r)`, 176 bytes each).
pub fn pack_block<'a>(block: impl Fn(usize) -> &'a [u8], dst: &mut [u8]) {
    // The low four bits are a Q4_K block: d, dmin, scales, then the nibbles.
    let q4: [[u8; Q4K_BYTES]; GROUP_ROWS] = std::array::from_fn(|r| {
        let b = block(r);
        let mut out = [0u8; Q4K_BYTES];
        out[..GGUF_QH].copy_from_slice(&b[..GGUF_QH]);
        out[GGUF_QH..].copy_from_slice(&b[GGUF_QS..GGUF_BYTES]);
        out
    });
    let mut low = [0u8; q4_k::PACKED_BYTES];
    q4_k::pack_block(|r| &q4[r][..], &mut low);
    move_low_bits(&mut low, dst, true);
    let qh: [&[u8]; GROUP_ROWS] = std::array::from_fn(|r| &block(r)[GGUF_QH..GGUF_QS]);
    for c in 0..4 {
        for n in 0..2 {
            for k in 0..4 {
                let mut mask = 0u64;
                for (r, qh) in qh.iter().enumerate() {
                    // Bit 2c + n of each of the eight qh bytes, gathered into one byte: the
                    // multiply moves byte j's low bit to bit 56 + j with no carries.
                    let x = u64::from_le_bytes(qh[8 * k..8 * k + 8].try_into().expect("8 bytes"));
                    let bits = (x >> (2 * c + n)) & 0x0101_0101_0101_0101;
                    mask |= (bits.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * r);
                }
                dst[mask_at(c, n, k)..][..8].copy_from_slice(&mask.to_le_bytes());
            }
        }
    }
}

/// Row `r` of a packed super-block, quants with their fifth bit (0..=31).
pub fn unpack_row(block: &[u8], r: usize) -> Row {
    let mut row = q4_k::unpack_row(&low_bits(block), r);
    for c in 0..4 {
        for n in 0..2 {
            for k in 0..4 {
                let at = mask_at(c, n, k);
                let mask = u64::from_le_bytes(block[at..at + 8].try_into().expect("8 bytes"));
                for j in 0..8 {
                    let bit = (mask >> (8 * r + j) & 1) as u8;
                    row.q[64 * c + 32 * n + 8 * k + j] |= bit << 4;
                }
            }
        }
    }
    row
}

/// Row `r` of a packed super-block back in the GGUF layout (inverse of [`pack_block`]).
pub fn unpack_gguf_block(block: &[u8], r: usize) -> Vec<u8> {
    let low = q4_k::unpack_gguf_block(&low_bits(block), r);
    let row = unpack_row(block, r);
    let mut qh = [0u8; 32];
    for (l, byte) in qh.iter_mut().enumerate() {
        for c in 0..4 {
            *byte |=
                (row.q[64 * c + l] >> 4) << (2 * c) | (row.q[64 * c + 32 + l] >> 4) << (2 * c + 1);
        }
    }
    let mut out = Vec::with_capacity(GGUF_BYTES);
    out.extend_from_slice(&low[..GGUF_QH]);
    out.extend_from_slice(&qh);
    out.extend_from_slice(&low[GGUF_QH..]);
    out
}

/// Scalar reference: the 8 rows' contributions of one packed super-block against one Q8_K
/// block, with exactly the arithmetic of `vec_dot_q5_k_q8_k_ref`'s per-block term.
pub fn block_dots_ref(block: &[u8], a: &BlockQ8_K) -> [f32; GROUP_ROWS] {
    std::array::from_fn(|r| q4_k::row_dot_ref(&unpack_row(block, r), a))
}
