//! Architecture-specific kernels: one folder per level (`avx2`, `avxvnni`, `avx512`), each file
//! in it offering a [`crate::kernel_set::Provider`] for one family of formats, and `x86` with what
//! the levels share (helpers, block layouts, and the kernels written once as macros or generics
//! that each level compiles with its own target features). A level's folder imports only from
//! `x86`, never from another level; `kernel_set` overlays the providers on the scalar reference
//! set along the level's `Isa::chain`.
//!
//! Every kernel here is a safe `fn` wrapping a `#[target_feature]` function. That is sound only
//! because these functions are reachable solely through `kernel_set::kernels_for`, which builds
//! a level's set only after `Isa::is_available` confirmed the CPU runs it.

mod avx2;
mod avx512;
mod avxvnni;
mod x86;

pub(crate) use avx2::providers as avx2_providers;
pub(crate) use avx512::providers as avx512_providers;
pub(crate) use avxvnni::providers as avxvnni_providers;

// One list of packed formats (`crate::packed::packed_block_bytes`) against every level's
// kernel tables, at compile time: AVX2 (the base of every x86 level) and AVX-512 have kernels
// for every packed layout; AVX-VNNI replaces some of AVX2's. No table names a type without a
// layout. A layout added without its kernels, or a kernel without its layout, does not build.
const _: () = {
    use crate::packed::{covers_packed_formats, only_packed_formats};
    assert!(covers_packed_formats(avx2::PACKED_TABLES));
    assert!(covers_packed_formats(avx512::PACKED_TABLES));
    assert!(only_packed_formats(avx2::PACKED_TABLES));
    assert!(only_packed_formats(avxvnni::PACKED_TABLES));
    assert!(only_packed_formats(avx512::PACKED_TABLES));
};
