//! Architecture-specific kernels. Each file offers a [`Provider`] for one level and one family
//! of formats; `kernel_set` overlays them on the scalar reference set.
//!
//! Every kernel here is a safe `fn` wrapping a `#[target_feature]` function. That is sound only
//! because these functions are reachable solely through `kernel_set::kernels_for`, which builds
//! a level's set only after `Isa::is_available` confirmed the CPU runs it.

use crate::kernel_set::Provider;

mod avx2_kquant_tiles;
mod avx2_kquants;
mod avx2_legacy;
mod avx2_legacy_tiles;
mod avx2_packed;
mod avx2_packed_q8_k;
mod avx512_kquant_tiles;
mod avx512_kquants;
mod avx512_legacy;
mod avx512_legacy_tiles;
mod avx512_packed;
mod avxvnni_packed;

pub(crate) fn avx2_providers() -> Vec<&'static Provider> {
    vec![
        &avx2_legacy::PROVIDER,
        &avx2_kquants::PROVIDER,
        &avx2_legacy_tiles::PROVIDER,
        &avx2_kquant_tiles::PROVIDER,
        &avx2_packed::PROVIDER,
        &avx2_packed_q8_k::PROVIDER,
    ]
}

pub(crate) fn avx512_providers() -> Vec<&'static Provider> {
    vec![
        &avx512_legacy::PROVIDER,
        &avx512_kquants::PROVIDER,
        &avx512_legacy_tiles::PROVIDER,
        &avx512_kquant_tiles::PROVIDER,
        &avx512_packed::PROVIDER,
    ]
}

/// AVX-VNNI builds on the AVX2 set (`Isa::base`) and replaces its packed legacy kernels.
pub(crate) fn avxvnni_providers() -> Vec<&'static Provider> {
    vec![&avxvnni_packed::PROVIDER]
}
