//! The AVX-512 F/BW/VL + VNNI level (Ice Lake, Sapphire Rapids, Zen 4 and later), on top of
//! the AVX2 set.

use crate::kernel_set::Provider;

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
