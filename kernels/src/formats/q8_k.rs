//! Q8_K: 256 elements, d:f32 + 256 signed bytes + 16 block sums (i16). Activation-only (the
//! vec_dot type of the K-quants).

use super::{dequant_each, impl_block, quant_each, QK_K};

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_K {
    pub d: f32,
    pub qs: [i8; QK_K],
    /// `bsums[i] = Σ qs[16i .. 16i+16]`.
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_K>() == 292);

pub fn dequantize_row_q8_k_ref(x: &[BlockQ8_K], y: &mut [f32]) {
    dequant_each(x, y, |b, out| {
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = b.d * q as f32;
        }
    });
}

/// `quantize_row_q8_K_ref`: scale against the *signed* element of largest magnitude (first one
/// wins), iscale = -127/max, q = min(127, nearest_int(iscale·x)) with nearest_int rounding half
/// to even, d = 1/iscale. An all-zero block gives d = 0, q = 0 and (unlike llama.cpp, which leaves
/// them untouched) bsums = 0.
pub fn quantize_row_q8_k_ref(x: &[f32], y: &mut [BlockQ8_K]) {
    quant_each(x, y, |xb| {
        let mut b = BlockQ8_K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        };
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            return b;
        }
        let iscale = -127.0f32 / max;
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        for (s, qc) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = qc.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
        b
    });
}

impl_block!(
    BlockQ8_K,
    Q8_K,
    deq = dequantize_row_q8_k_ref,
    quant = quantize_row_q8_k_ref
);
