//! Every dequantizer must equal gguf-py's `gguf.quants.dequantize` bit for bit on the fixtures
//! written by `tools/gen_kernel_fixtures.py` (see its docstring for where each expectation comes
//! from: gguf-py for all types it supports, gguf-py's Q8_0 for Q8_1's (d, qs), numpy d*q for
//! Q8_K). The activation quantizers must reproduce the fixture bytes exactly: gguf-py for F16,
//! BF16 and Q8_0 (ties away from zero, like llama.cpp's reference), gguf-py + numpy for Q8_1,
//! an independent numpy re-implementation of `quantize_row_q8_K_ref` for Q8_K.

mod common;

use common::{fixture_dir, read_f32};
use half::{bf16, f16};
use lumen_kernels::formats::*;
use lumen_kernels::{dequantize_row, quantize_row, BlockFormat, GgmlType};
use serde_json::Value;

fn index() -> Value {
    let p = fixture_dir().join("index.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn entry_type(e: &Value) -> GgmlType {
    let name = e["type"].as_str().unwrap();
    GgmlType::from_name(name).unwrap_or_else(|| panic!("unknown type {name}"))
}

#[test]
fn dequantize_matches_gguf_py_bit_for_bit() {
    let idx = index();
    let entries = idx["dequant"].as_array().unwrap();
    let mut seen = Vec::new();
    for e in entries {
        let ty = entry_type(e);
        seen.push(ty);
        assert_eq!(e["id"].as_u64().unwrap() as u32, ty.id(), "{ty}: id");
        assert_eq!(
            e["block_bytes"].as_u64().unwrap() as usize,
            ty.block_bytes(),
            "{ty}"
        );
        assert_eq!(
            e["block_elems"].as_u64().unwrap() as usize,
            ty.block_elems(),
            "{ty}"
        );
        let blocks = std::fs::read(fixture_dir().join(e["blocks"].as_str().unwrap())).unwrap();
        let expected = read_f32(&fixture_dir().join(e["expected"].as_str().unwrap()));
        let n_blocks = e["n_blocks"].as_u64().unwrap() as usize;
        assert_eq!(blocks.len(), n_blocks * ty.block_bytes(), "{ty}");
        assert_eq!(expected.len(), n_blocks * ty.block_elems(), "{ty}");
        assert!(
            expected.iter().all(|v| v.is_finite()),
            "{ty}: fixture must be NaN/inf-free"
        );

        let mut got = vec![f32::NAN; expected.len()];
        dequantize_row(ty, &blocks, &mut got).unwrap();
        for (i, (g, x)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(
                g.to_bits(),
                x.to_bits(),
                "{ty} ({}): element {i} (block {}, index {}): got {g:e}, expected {x:e}",
                e["source"],
                i / ty.block_elems(),
                i % ty.block_elems()
            );
        }

        // The same bytes at an odd address (forces the aligned-copy path) give the same result.
        let mut shifted = vec![0u8; blocks.len() + 1];
        shifted[1..].copy_from_slice(&blocks);
        let mut got2 = vec![0.0f32; expected.len()];
        dequantize_row(ty, &shifted[1..], &mut got2).unwrap();
        assert!(
            got.iter()
                .zip(&got2)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{ty}: unaligned"
        );
    }
    for ty in GgmlType::ALL {
        assert!(seen.contains(&ty), "no dequant fixture for {ty}");
    }
}

#[test]
fn quantize_matches_fixtures_byte_for_byte() {
    let idx = index();
    let mut seen = Vec::new();
    for e in idx["quantize"].as_array().unwrap() {
        let ty = entry_type(e);
        seen.push(ty);
        let x = read_f32(&fixture_dir().join(e["input"].as_str().unwrap()));
        let expected = std::fs::read(fixture_dir().join(e["expected"].as_str().unwrap())).unwrap();
        assert_eq!(Some(expected.len()), ty.row_bytes(x.len()), "{ty}");
        let mut got = vec![0u8; expected.len()];
        quantize_row(ty, &x, &mut got).unwrap();
        let bb = ty.block_bytes();
        for (b, (g, w)) in got.chunks(bb).zip(expected.chunks(bb)).enumerate() {
            assert_eq!(g, w, "{ty} ({}): block {b} differs", e["source"]);
        }
    }
    for ty in [
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q8_K,
    ] {
        assert!(seen.contains(&ty), "no quantize fixture for {ty}");
    }
}

/// The Q8_0 fixture has inputs that land exactly on .5 after scaling, so a ties-to-even
/// quantizer (like llama.cpp's AVX path) would NOT match it: the byte-for-byte test above really
/// pins "ties away from zero" (C `roundf`, gguf-py's `np_roundf`).
#[test]
fn q8_0_fixture_contains_exact_ties() {
    let x = read_f32(&fixture_dir().join("Q8_0.qin.f32"));
    let mut ties = 0;
    for blk in x.chunks_exact(32) {
        let amax = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        if d == 0.0 {
            continue;
        }
        let id = 1.0 / d;
        ties += blk
            .iter()
            .filter(|&&v| (v * id).fract().abs() == 0.5)
            .count();
    }
    assert!(ties >= 20, "only {ties} exact ties in the Q8_0 fixture");
}

#[test]
fn block_structs_match_table() {
    fn check<B: BlockFormat>() {
        assert_eq!(
            std::mem::size_of::<B>(),
            B::TYPE.block_bytes(),
            "{}",
            B::TYPE
        );
        assert_eq!(B::ELEMS, B::TYPE.block_elems(), "{}", B::TYPE);
    }
    check::<f32>();
    check::<f16>();
    check::<bf16>();
    check::<BlockQ4_0>();
    check::<BlockQ4_1>();
    check::<BlockQ5_0>();
    check::<BlockQ5_1>();
    check::<BlockQ8_0>();
    check::<BlockQ8_1>();
    check::<BlockQ2_K>();
    check::<BlockQ3_K>();
    check::<BlockQ4_K>();
    check::<BlockQ5_K>();
    check::<BlockQ6_K>();
    check::<BlockQ8_K>();
    // Spec table (KERNELS.md §1), independent of the crate's table.
    let spec: [(GgmlType, u32, usize, usize); 15] = [
        (GgmlType::F32, 0, 1, 4),
        (GgmlType::F16, 1, 1, 2),
        (GgmlType::BF16, 30, 1, 2),
        (GgmlType::Q4_0, 2, 32, 18),
        (GgmlType::Q4_1, 3, 32, 20),
        (GgmlType::Q5_0, 6, 32, 22),
        (GgmlType::Q5_1, 7, 32, 24),
        (GgmlType::Q8_0, 8, 32, 34),
        (GgmlType::Q8_1, 9, 32, 36),
        (GgmlType::Q2_K, 10, 256, 84),
        (GgmlType::Q3_K, 11, 256, 110),
        (GgmlType::Q4_K, 12, 256, 144),
        (GgmlType::Q5_K, 13, 256, 176),
        (GgmlType::Q6_K, 14, 256, 210),
        (GgmlType::Q8_K, 15, 256, 292),
    ];
    for (ty, id, elems, bytes) in spec {
        assert_eq!(
            (ty.id(), ty.block_elems(), ty.block_bytes()),
            (id, elems, bytes),
            "{ty}"
        );
    }
}
