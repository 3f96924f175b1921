//! Type-erased, byte-level kernel entry points. Every function validates lengths and returns a
//! [`KernelError`] instead of panicking; unaligned byte slices are copied into aligned buffers.

use std::borrow::Cow;

use crate::formats::{
    ActivationFormat, BlockFormat, BlockQ2_K, BlockQ3_K, BlockQ4_0, BlockQ4_1, BlockQ4_K,
    BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K, WeightFormat,
};
use crate::table::GgmlType;
use half::{bf16, f16};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("{ty}: {what} is {len} bytes, not a whole number of {block_bytes}-byte blocks")]
    PartialBlock {
        ty: GgmlType,
        what: &'static str,
        len: usize,
        block_bytes: usize,
    },
    #[error("{ty}: {what} has {len} elements, not a whole number of {block_elems}-element blocks")]
    PartialElems {
        ty: GgmlType,
        what: &'static str,
        len: usize,
        block_elems: usize,
    },
    #[error("{ty}: {what} holds {got} elements but {expected} were expected")]
    LengthMismatch {
        ty: GgmlType,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error(
        "{ty} is not an activation format (quantize_row supports F32, F16, BF16, Q8_0, Q8_1, Q8_K)"
    )]
    NotActivationFormat { ty: GgmlType },
    #[error("{ty} is an activation-only format and cannot be the weight side of vec_dot")]
    NotWeightFormat { ty: GgmlType },
    #[error("{ty}: a {rows}×{cols} matrix has no packed layout (Q4_0/Q8_0, rows a multiple of 8)")]
    NoPackedLayout {
        ty: GgmlType,
        rows: usize,
        cols: usize,
    },
    #[error("could not allocate {bytes} bytes for a packed weight copy: {reason}")]
    Alloc { bytes: usize, reason: String },
}

/// Number of `B` blocks in `len` bytes, or an error if `len` is not a whole number of blocks.
fn whole_blocks<B: BlockFormat>(what: &'static str, len: usize) -> Result<usize, KernelError> {
    let size = std::mem::size_of::<B>();
    if len.is_multiple_of(size) {
        Ok(len / size)
    } else {
        Err(KernelError::PartialBlock {
            ty: B::TYPE,
            what,
            len,
            block_bytes: size,
        })
    }
}

/// View `bytes` as blocks of `B`: borrowed when aligned, copied into an aligned `Vec` when not.
pub fn blocks_of<B: BlockFormat>(bytes: &[u8]) -> Result<Cow<'_, [B]>, KernelError> {
    whole_blocks::<B>("input", bytes.len())?;
    Ok(match bytemuck::try_cast_slice::<u8, B>(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    })
}

/// Run `f` on `bytes` viewed as mutable blocks of `B` (through an aligned copy if needed).
fn with_blocks_mut<B: BlockFormat, R>(
    bytes: &mut [u8],
    f: impl FnOnce(&mut [B]) -> R,
) -> Result<R, KernelError> {
    let n = whole_blocks::<B>("output", bytes.len())?;
    if let Ok(blocks) = bytemuck::try_cast_slice_mut::<u8, B>(bytes) {
        return Ok(f(blocks));
    }
    let mut tmp: Vec<B> = vec![B::zeroed(); n];
    let r = f(&mut tmp);
    bytes.copy_from_slice(bytemuck::cast_slice(&tmp));
    Ok(r)
}

fn check_elems(
    ty: GgmlType,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), KernelError> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::LengthMismatch {
            ty,
            what,
            expected,
            got,
        })
    }
}

/// Dequantize bytes holding blocks of `B` into `dst` (`dst.len()` = number of elements).
pub fn dequantize_blocks<B: BlockFormat>(src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    let blocks = blocks_of::<B>(src)?;
    check_elems(
        B::TYPE,
        "dequantize output",
        blocks.len() * B::ELEMS,
        dst.len(),
    )?;
    B::dequantize(&blocks, dst);
    Ok(())
}

/// Quantize `src` into bytes holding blocks of `B`.
pub fn quantize_blocks<B: ActivationFormat>(
    src: &[f32],
    dst: &mut [u8],
) -> Result<(), KernelError> {
    quantize_blocks_with::<B>(src, dst, B::quantize)
}

/// Quantize `src` into bytes holding blocks of `B` with the block quantizer `quantize`, after
/// checking that `src` is whole blocks and `dst` exactly their size.
pub(crate) fn quantize_blocks_with<B: BlockFormat>(
    src: &[f32],
    dst: &mut [u8],
    quantize: fn(&[f32], &mut [B]),
) -> Result<(), KernelError> {
    if !src.len().is_multiple_of(B::ELEMS) {
        return Err(KernelError::PartialElems {
            ty: B::TYPE,
            what: "quantize input",
            len: src.len(),
            block_elems: B::ELEMS,
        });
    }
    let want = src.len() / B::ELEMS * std::mem::size_of::<B>();
    if dst.len() != want {
        return Err(KernelError::LengthMismatch {
            ty: B::TYPE,
            what: "quantize output bytes",
            expected: want,
            got: dst.len(),
        });
    }
    with_blocks_mut::<B, ()>(dst, |out| quantize(src, out))
}

/// Dot product of a weight row (blocks of `W`) and an activation row (blocks of `W::Act`).
pub fn vec_dot_blocks<W: WeightFormat>(w: &[u8], a: &[u8]) -> Result<f32, KernelError> {
    let wb = blocks_of::<W>(w)?;
    let ab = blocks_of::<W::Act>(a)?;
    check_elems(
        W::TYPE,
        "vec_dot activation row",
        wb.len() * W::ELEMS,
        ab.len() * <W::Act as BlockFormat>::ELEMS,
    )?;
    Ok(W::vec_dot(&wb, &ab))
}

/// Expands to `$body` with `$B` bound to the block type of `$ty`, for the listed variants.
macro_rules! with_block {
    ($ty:expr, $B:ident => $body:expr, [$($v:ident => $T:ty),* $(,)?], $other:pat => $fallback:expr) => {
        match $ty {
            $(GgmlType::$v => { type $B = $T; $body })*
            #[allow(unreachable_patterns)]
            $other => $fallback,
        }
    };
}

/// Dequantize a row of `ty` (`src` = its bytes) into `dst` (one f32 per element).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    with_block!(ty, B => dequantize_blocks::<B>(src, dst), [
        F32 => f32, F16 => f16, BF16 => bf16, Q4_0 => BlockQ4_0, Q4_1 => BlockQ4_1,
        Q5_0 => BlockQ5_0, Q5_1 => BlockQ5_1, Q8_0 => BlockQ8_0, Q8_1 => BlockQ8_1,
        Q2_K => BlockQ2_K, Q3_K => BlockQ3_K, Q4_K => BlockQ4_K, Q5_K => BlockQ5_K,
        Q6_K => BlockQ6_K, Q8_K => BlockQ8_K,
    ], _ => unreachable!())
}

/// Quantize an f32 row into `ty`, which must be an activation format
/// (F32, F16, BF16, Q8_0, Q8_1, Q8_K). `dst.len()` must equal `ty.row_bytes(src.len())`.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    with_block!(ty, B => quantize_blocks::<B>(src, dst), [
        F32 => f32, F16 => f16, BF16 => bf16, Q8_0 => BlockQ8_0, Q8_1 => BlockQ8_1, Q8_K => BlockQ8_K,
    ], ty => Err(KernelError::NotActivationFormat { ty }))
}

/// Dot product of one weight row of type `ty` with one activation row of type
/// `ty.vec_dot_type()` holding the same number of elements.
pub fn vec_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> Result<f32, KernelError> {
    with_block!(ty, B => vec_dot_blocks::<B>(w, a), [
        F32 => f32, F16 => f16, BF16 => bf16, Q4_0 => BlockQ4_0, Q4_1 => BlockQ4_1,
        Q5_0 => BlockQ5_0, Q5_1 => BlockQ5_1, Q8_0 => BlockQ8_0,
        Q2_K => BlockQ2_K, Q3_K => BlockQ3_K, Q4_K => BlockQ4_K, Q5_K => BlockQ5_K, Q6_K => BlockQ6_K,
    ], ty => Err(KernelError::NotWeightFormat { ty }))
}
