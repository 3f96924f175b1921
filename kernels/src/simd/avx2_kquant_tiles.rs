//! avx2_kquant_tiles: 4×4 GEMM tiles and four-row matvec kernels (see kernel_set.rs). Being written.

use crate::kernel_set::Provider;

pub(crate) static PROVIDER: Provider = Provider::NONE;
