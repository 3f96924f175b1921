//! avx512_kquants: see simd/mod.rs. (Being written.)

use crate::kernel_set::{Provider, QuantizeRowFn, RowDot4Fn, RowDotFn};
use crate::table::GgmlType;

fn row_dot(_ty: GgmlType) -> Option<RowDotFn> {
    None
}

fn row_dot4(_ty: GgmlType) -> Option<RowDot4Fn> {
    None
}

fn quantize(_ty: GgmlType) -> Option<QuantizeRowFn> {
    None
}

pub(crate) static PROVIDER: Provider = Provider {
    row_dot,
    row_dot4,
    quantize,
};
