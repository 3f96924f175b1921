//! The AVX-512 F/BW/VL + VNNI level (Ice Lake, Sapphire Rapids, Zen 4 and later), on top of
//! the AVX2 set.

use crate::kernel_set::Provider;
use crate::table::GgmlType;

mod kquant_tiles;
mod kquants;
mod legacy;
mod legacy_tiles;
mod packed;

pub(crate) fn providers() -> Vec<&'static Provider> {
    vec![
        &legacy::PROVIDER,
        &kquants::PROVIDER,
        &legacy_tiles::PROVIDER,
        &kquant_tiles::PROVIDER,
        &packed::PROVIDER,
    ]
}

/// This level's packed kernel tables (checked in `simd/mod.rs`).
pub(super) const PACKED_TABLES: &[&[GgmlType]] = &[packed::PACKED_TYPES];
