//! Weight quantization: an f32 row into any type a GGUF weight can have, with llama.cpp's
//! reference quantizers (`quantize_row_*_ref`, what `llama-quantize` runs when no importance
//! matrix is given). The activation formats reuse [`crate::quantize_row`].

use crate::dispatch::{quantize_blocks_with, quantize_row, KernelError};
use crate::formats::{q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k};
use crate::table::GgmlType;

/// Quantize an f32 row into `ty` with llama.cpp's reference algorithm. `dst.len()` must equal
/// `ty.row_bytes(src.len())`; every type but Q8_1 and Q8_K (activation-only) is accepted.
pub fn quantize_weights(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    use GgmlType as G;
    match ty {
        G::Q4_0 => quantize_blocks_with(src, dst, q4_0::quantize_row_q4_0_ref),
        G::Q4_1 => quantize_blocks_with(src, dst, q4_1::quantize_row_q4_1_ref),
        G::Q5_0 => quantize_blocks_with(src, dst, q5_0::quantize_row_q5_0_ref),
        G::Q5_1 => quantize_blocks_with(src, dst, q5_1::quantize_row_q5_1_ref),
        G::Q2_K => quantize_blocks_with(src, dst, q2_k::quantize_row_q2_k_ref),
        G::Q3_K => quantize_blocks_with(src, dst, q3_k::quantize_row_q3_k_ref),
        G::Q4_K => quantize_blocks_with(src, dst, q4_k::quantize_row_q4_k_ref),
        G::Q5_K => quantize_blocks_with(src, dst, q5_k::quantize_row_q5_k_ref),
        G::Q6_K => quantize_blocks_with(src, dst, q6_k::quantize_row_q6_k_ref),
        G::F32 | G::F16 | G::BF16 | G::Q8_0 => quantize_row(ty, src, dst),
        G::Q8_1 | G::Q8_K => Err(KernelError::NotWeightFormat { ty }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequantize_row;

    /// Smooth signed data: every block spans the full range, so each format's error is about
    /// its step size.
    fn row(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.37 + seed as f32).sin() * 0.05)
            .collect()
    }

    fn rmse(a: &[f32], b: &[f32]) -> f32 {
        let s: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        (s / a.len() as f64).sqrt() as f32
    }

    /// Each quantizer round-trips within the error its bit width allows (relative to the
    /// data's RMS): a broken packing or scale would be far off.
    #[test]
    fn round_trip_error_shrinks_with_bits() {
        let x = row(1024, 1);
        let rms = rmse(&x, &vec![0.0; x.len()]);
        let bounds = [
            (GgmlType::Q2_K, 0.45),
            (GgmlType::Q3_K, 0.25),
            (GgmlType::Q4_0, 0.15),
            (GgmlType::Q4_1, 0.12),
            (GgmlType::Q4_K, 0.10),
            (GgmlType::Q5_0, 0.07),
            (GgmlType::Q5_1, 0.06),
            (GgmlType::Q5_K, 0.05),
            (GgmlType::Q6_K, 0.03),
            (GgmlType::Q8_0, 0.01),
            (GgmlType::F16, 0.001),
        ];
        for (ty, bound) in bounds {
            let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
            quantize_weights(ty, &x, &mut q).unwrap();
            let mut back = vec![0.0f32; x.len()];
            dequantize_row(ty, &q, &mut back).unwrap();
            let rel = rmse(&x, &back) / rms;
            assert!(rel < bound, "{ty}: relative RMSE {rel} ≥ {bound}");
        }
    }

    #[test]
    fn zero_rows_stay_zero_and_lengths_are_checked() {
        for ty in [
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            let x = vec![0.0f32; 256];
            let mut q = vec![0xAAu8; ty.row_bytes(256).unwrap()];
            quantize_weights(ty, &x, &mut q).unwrap();
            let mut back = vec![1.0f32; 256];
            dequantize_row(ty, &q, &mut back).unwrap();
            assert!(back.iter().all(|&v| v == 0.0), "{ty}");
            assert!(quantize_weights(ty, &x[..128], &mut q).is_err(), "{ty}");
        }
        assert!(quantize_weights(GgmlType::Q8_K, &[0.0; 256], &mut [0u8; 292]).is_err());
    }
}
