//! The weight quantizers against references we did not write, on the tensors of
//! `tools/fixtures/quantize` (made by `tools/scripts/gen_quantize_fixtures.py`):
//!
//! * Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: byte for byte equal to gguf-py's `gguf.quants.quantize`.
//! * Every type: byte for byte equal to llama.cpp's own quantizer (`ggml_quantize_chunk` from
//!   llama-cpp-python's libggml-base, no importance matrix, i.e. `quantize_row_*_ref`), and the
//!   RMSE against the f32 weights at most 1.01 × llama.cpp's (which the byte equality implies;
//!   the bound is the acceptance criterion and says how far off a difference is).

mod common;

use common::read_f32;
use lumen_kernels::{dequantize_row, quantize_weights, GgmlType};
use serde_json::Value;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/fixtures/quantize")
}

struct Fixture {
    index: Value,
    weights: Vec<f32>,
}

impl Fixture {
    fn load() -> Self {
        let p = dir().join("index.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        Fixture {
            index: serde_json::from_str(&text).unwrap(),
            weights: read_f32(&dir().join("weights.f32")),
        }
    }

    /// (name, cols, values) of every tensor.
    fn tensors(&self) -> Vec<(String, usize, &[f32])> {
        let ts = self.index["tensors"].as_array().unwrap();
        ts.iter()
            .map(|t| {
                let (cols, rows) = (t["cols"].as_u64().unwrap(), t["rows"].as_u64().unwrap());
                let off = t["offset"].as_u64().unwrap() as usize;
                let n = (cols * rows) as usize;
                let name = t["name"].as_str().unwrap().to_string();
                (name, cols as usize, &self.weights[off..off + n])
            })
            .collect()
    }

    fn bytes(&self, file: &str) -> Vec<u8> {
        std::fs::read(dir().join(file)).unwrap()
    }
}

/// Quantizes `x` row by row (rows of `cols`), as the quantize tool does.
fn quantize(ty: GgmlType, x: &[f32], cols: usize) -> Vec<u8> {
    let row_bytes = ty.row_bytes(cols).unwrap();
    let mut out = vec![0u8; x.len() / cols * row_bytes];
    for (src, dst) in x.chunks(cols).zip(out.chunks_mut(row_bytes)) {
        quantize_weights(ty, src, dst).unwrap();
    }
    out
}

fn rmse(ty: GgmlType, q: &[u8], x: &[f32]) -> f64 {
    let mut back = vec![0.0f32; x.len()];
    dequantize_row(ty, q, &mut back).unwrap();
    let s: f64 = x
        .iter()
        .zip(&back)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    (s / x.len() as f64).sqrt()
}

/// Blocks of `got` that differ from `want`, for the failure message.
fn differing_blocks(ty: GgmlType, got: &[u8], want: &[u8]) -> Vec<usize> {
    let bb = ty.block_bytes();
    got.chunks(bb)
        .zip(want.chunks(bb))
        .enumerate()
        .filter(|(_, (g, w))| g != w)
        .map(|(i, _)| i)
        .collect()
}

/// Runs `check(ty, tensor name, our bytes, reference bytes, index entry)` for every tensor the
/// fixture has a `source` ("ggml" or "gguf_py") quantization of.
fn each_reference(
    source: &str,
    mut check: impl FnMut(GgmlType, &str, &[f32], &[u8], &[u8], &Value),
) {
    let f = Fixture::load();
    let mut n = 0;
    for (tname, entry) in f.index["types"].as_object().unwrap() {
        let Some(file) = entry[source].as_str() else {
            continue;
        };
        let ty = GgmlType::from_name(tname).unwrap();
        let all = f.bytes(file);
        for (name, cols, x) in f.tensors() {
            let e = &entry["tensors"][&name];
            let Some(off) = e[format!("{source}_offset")].as_u64() else {
                continue;
            };
            let len = e["bytes"].as_u64().unwrap() as usize;
            let want = &all[off as usize..off as usize + len];
            let got = quantize(ty, x, cols);
            check(ty, &name, x, &got, want, e);
            n += 1;
        }
    }
    assert!(n >= 4, "only {n} {source} references found");
}

#[test]
fn legacy_types_equal_gguf_py_byte_for_byte() {
    let mut types = Vec::new();
    each_reference("gguf_py", |ty, name, _, got, want, _| {
        assert_eq!(got.len(), want.len(), "{ty} {name}");
        let diff = differing_blocks(ty, got, want);
        assert!(
            diff.is_empty(),
            "{ty} {name}: blocks {diff:?} differ from gguf-py"
        );
        types.push(ty);
    });
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
    ] {
        assert!(types.contains(&ty), "no gguf-py reference for {ty}");
    }
}

#[test]
fn every_type_equals_llama_cpp_and_its_rmse_bound() {
    let mut types = Vec::new();
    each_reference("ggml", |ty, name, x, got, want, e| {
        let ours = rmse(ty, got, x);
        let theirs = e["ggml_rmse"].as_f64().unwrap();
        println!("{ty} {name}: RMSE {ours:.6e} vs llama.cpp {theirs:.6e}");
        assert!(
            ours <= 1.01 * theirs + 1e-12,
            "{ty} {name}: RMSE {ours:e} > 1.01 × llama.cpp's {theirs:e}"
        );
        let diff = differing_blocks(ty, got, want);
        assert!(
            diff.is_empty(),
            "{ty} {name}: blocks {diff:?} differ from llama.cpp"
        );
        types.push(ty);
    });
    for ty in [
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        assert!(types.contains(&ty), "no llama.cpp reference for {ty}");
    }
}
