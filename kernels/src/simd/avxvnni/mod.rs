//! The AVX-VNNI level (AVX2 plus the 256-bit `vpdpbusd`: Intel client CPUs since Alder Lake,
//! Zen 5), on top of the AVX2 set: it replaces the kernels whose u8 × i8 products VNNI does in
//! one instruction.

use crate::kernel_set::Provider;
use crate::table::GgmlType;

mod packed;

pub(crate) fn providers() -> Vec<&'static Provider> {
    vec![&packed::PROVIDER]
}

/// This level's packed kernel tables (checked in `simd/mod.rs`).
pub(super) const PACKED_TABLES: &[&[GgmlType]] = &[packed::PACKED_TYPES];
