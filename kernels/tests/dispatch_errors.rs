//! The byte-level API returns errors (never panics) on bad input, and handles unaligned slices.

mod common;

use common::*;
use lumen_kernels::dispatch::blocks_of;
use lumen_kernels::formats::BlockQ8_K;
use lumen_kernels::{dequantize_row, quantize_row, vec_dot, GgmlType, KernelError};

#[test]
fn dequantize_row_rejects_bad_lengths() {
    let mut out = vec![0f32; 64];
    let e = dequantize_row(GgmlType::Q4_0, &[0u8; 35], &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::PartialBlock {
                ty: GgmlType::Q4_0,
                len: 35,
                block_bytes: 18,
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("Q4_0") && msg.contains("35") && msg.contains("18"),
        "{msg}"
    );

    let e = dequantize_row(GgmlType::Q4_0, &[0u8; 36], &mut out[..63]).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::LengthMismatch {
                expected: 64,
                got: 63,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("63") && e.to_string().contains("64"));

    // Every type: a partial block and a wrong output length are errors, empty input is fine.
    for ty in GgmlType::ALL {
        let bb = ty.block_bytes();
        let mut out = vec![0f32; ty.block_elems() * 2];
        if bb > 1 {
            assert!(
                dequantize_row(ty, &vec![0u8; bb + 1], &mut out).is_err(),
                "{ty}"
            );
        }
        assert!(
            dequantize_row(ty, &vec![0u8; bb], &mut out).is_err(),
            "{ty}"
        );
        assert!(
            dequantize_row(ty, &vec![0u8; 2 * bb], &mut out).is_ok(),
            "{ty}"
        );
        assert!(dequantize_row(ty, &[], &mut []).is_ok(), "{ty}");
    }
}

#[test]
fn quantize_row_rejects_weight_types_and_bad_lengths() {
    let x = vec![1.0f32; 256];
    for ty in GgmlType::ALL {
        let mut out = vec![0u8; ty.row_bytes(256).unwrap()];
        let r = quantize_row(ty, &x, &mut out);
        if ty.is_activation_format() {
            r.unwrap();
        } else {
            let e = r.unwrap_err();
            assert!(
                matches!(e, KernelError::NotActivationFormat { ty: t } if t == ty),
                "{e:?}"
            );
            assert!(e.to_string().contains(ty.name()));
        }
    }
    let mut out = vec![0u8; 34];
    let e = quantize_row(GgmlType::Q8_0, &x[..33], &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::PartialElems {
                len: 33,
                block_elems: 32,
                ..
            }
        ),
        "{e:?}"
    );
    let e = quantize_row(GgmlType::Q8_0, &x[..32], &mut [0u8; 35]).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::LengthMismatch {
                expected: 34,
                got: 35,
                ..
            }
        ),
        "{e:?}"
    );
    let e = quantize_row(GgmlType::Q8_K, &x[..255], &mut [0u8; 292]).unwrap_err();
    assert!(matches!(e, KernelError::PartialElems { .. }), "{e:?}");
}

#[test]
fn vec_dot_rejects_bad_inputs() {
    let w = vec![0u8; 2 * 18];
    let a = vec![0u8; 2 * 34];
    assert_eq!(vec_dot(GgmlType::Q4_0, &w, &a).unwrap(), 0.0);
    let e = vec_dot(GgmlType::Q4_0, &w, &a[..34]).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::LengthMismatch {
                expected: 64,
                got: 32,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(vec_dot(GgmlType::Q4_0, &w, &a[..33]).is_err());
    assert!(vec_dot(GgmlType::Q4_0, &w[..17], &a).is_err());
    for ty in [GgmlType::Q8_1, GgmlType::Q8_K] {
        let e = vec_dot(ty, &[], &[]).unwrap_err();
        assert!(
            matches!(e, KernelError::NotWeightFormat { ty: t } if t == ty),
            "{e:?}"
        );
    }
    // Activations in the wrong format are caught when their block size differs.
    assert!(vec_dot(GgmlType::Q4_K, &[0u8; 144], &[0u8; 34 * 8]).is_err());
}

#[test]
fn unaligned_slices_give_identical_results() {
    let mut rng = rng(3);
    let n = 512;
    let x: Vec<f32> = (0..n).map(|_| normal(&mut rng)).collect();
    for ty in GgmlType::ALL.into_iter().filter(|t| t.is_weight_format()) {
        let act = ty.vec_dot_type();
        let w = random_weight_row(ty, n, &mut rng);
        let rb = act.row_bytes(n).unwrap();
        let mut a = vec![0u8; rb];
        quantize_row(act, &x, &mut a).unwrap();
        // Unaligned output buffer for the quantizer.
        let mut buf = vec![0u8; rb + 1];
        quantize_row(act, &x, &mut buf[1..]).unwrap();
        assert_eq!(&buf[1..], &a[..], "{act}: unaligned quantize");
        let mut wbuf = vec![0u8; w.len() + 1];
        wbuf[1..].copy_from_slice(&w);
        let d0 = vec_dot(ty, &w, &a).unwrap();
        let d1 = vec_dot(ty, &wbuf[1..], &buf[1..]).unwrap();
        assert_eq!(d0.to_bits(), d1.to_bits(), "{ty}: unaligned vec_dot");
    }
}

#[test]
fn blocks_of_borrows_when_aligned() {
    let v = vec![
        BlockQ8_K {
            d: 1.0,
            qs: [1; 256],
            bsums: [16; 16]
        };
        2
    ];
    let bytes: &[u8] = bytemuck::cast_slice(&v);
    assert!(matches!(
        blocks_of::<BlockQ8_K>(bytes).unwrap(),
        std::borrow::Cow::Borrowed(_)
    ));
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(bytes);
    let c = blocks_of::<BlockQ8_K>(&shifted[1..]).unwrap();
    assert!(matches!(c, std::borrow::Cow::Owned(_)));
    assert_eq!(c[1].bsums[15], 16);
    assert!(blocks_of::<BlockQ8_K>(&bytes[1..]).is_err());
}
