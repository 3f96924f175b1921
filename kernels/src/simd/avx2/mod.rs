//! The AVX2 + FMA + F16C level (Haswell, Zen 1 and later).

use crate::kernel_set::Provider;
use crate::table::GgmlType;

mod kquant_tiles;
mod kquants;
mod legacy;
mod legacy_tiles;
mod packed;
mod packed_q8_k;

pub(crate) fn providers() -> Vec<&'static Provider> {
    vec![
        &legacy::PROVIDER,
        &kquants::PROVIDER,
        &legacy_tiles::PROVIDER,
        &kquant_tiles::PROVIDER,
        &packed::PROVIDER,
        &packed_q8_k::PROVIDER,
    ]
}

/// This level's packed kernel tables (checked in `simd/mod.rs`).
pub(super) const PACKED_TABLES: &[&[GgmlType]] = &[packed::PACKED_TYPES, packed_q8_k::PACKED_TYPES];
