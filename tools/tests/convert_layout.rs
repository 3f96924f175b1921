//! Lumen's converter writes the GGUF layout llama.cpp's `convert_hf_to_gguf.py` writes for the
//! same checkpoint: the same metadata keys with the same stored value types, and the same
//! tensors with the same types and shapes. The llama.cpp side is saved in
//! `tests/fixtures/tiny_llama_llamacpp_layout_*.txt` by
//! `tools/scripts/llamacpp_convert_reference.sh` (which runs llama.cpp's converter and
//! `tools/scripts/gguf_layout.py`); this test prints the same lines for our output.

mod common;

use std::path::Path;

use common::*;
use lumen::gguf::GgufFile;
use lumen::kernels::GgmlType;
use lumen_tools::convert::FileType;

/// gguf-py's `GGUFValueType` names, by type id.
const VALUE_TYPES: [&str; 13] = [
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL", "STRING", "ARRAY",
    "UINT64", "INT64", "FLOAT64",
];

/// A cursor over the GGUF header: Lumen's reader keeps values, not their stored widths, so
/// the key types are read here straight from the bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
    /// Skips one value of type `ty`.
    fn skip_value(&mut self, ty: u32) {
        match ty {
            0 | 1 | 7 => drop(self.take(1)),
            2 | 3 => drop(self.take(2)),
            4..=6 => drop(self.take(4)),
            10..=12 => drop(self.take(8)),
            8 => drop(self.string()),
            9 => {
                let (item, n) = (self.u32(), self.u64());
                (0..n).for_each(|_| self.skip_value(item));
            }
            _ => panic!("bad value type {ty}"),
        }
    }
}

/// `key NAME TYPE` lines, arrays as `ARRAY[ELEM;LEN]`, read from the file's header.
fn key_lines(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let mut c = Cursor {
        bytes: &bytes,
        pos: 8,
    };
    let _n_tensors = c.u64();
    let n_kv = c.u64();
    (0..n_kv)
        .map(|_| {
            let key = c.string();
            let ty = c.u32();
            let text = if ty == 9 {
                let start = c.pos;
                let (item, n) = (c.u32(), c.u64());
                c.pos = start;
                format!("ARRAY[{};{n}]", VALUE_TYPES[item as usize])
            } else {
                VALUE_TYPES[ty as usize].to_string()
            };
            c.skip_value(ty);
            format!("key {key} {text}")
        })
        .collect()
}

fn layout(path: &Path) -> Vec<String> {
    let file = GgufFile::open(path).unwrap();
    let mut lines = key_lines(path);
    lines.extend(file.tensors().iter().map(|t| {
        let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
        format!("tensor {} {} [{}]", t.name, t.ty.name(), shape.join(","))
    }));
    lines.sort();
    lines
}

fn check(ft: FileType, fixture: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let summary = convert_to(&tiny_llama_dir(), tmp.path(), Some(ft)).unwrap();
    let ours = layout(&summary.output);
    let text = std::fs::read_to_string(root_fixtures_dir().join(fixture)).unwrap();
    let theirs: Vec<String> = text.lines().map(str::to_string).collect();
    let only_ours: Vec<_> = ours.iter().filter(|l| !theirs.contains(l)).collect();
    let only_theirs: Vec<_> = theirs.iter().filter(|l| !ours.contains(l)).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "{ft:?}: only in Lumen's output: {only_ours:#?}\nonly in llama.cpp's: {only_theirs:#?}"
    );
}

#[test]
fn bf16_layout_equals_llama_cpp_converter() {
    check(FileType::BF16, "tiny_llama_llamacpp_layout_bf16.txt");
}

#[test]
fn f32_layout_equals_llama_cpp_converter() {
    check(FileType::F32, "tiny_llama_llamacpp_layout_f32.txt");
}

#[test]
fn q8_0_layout_equals_llama_cpp_converter() {
    check(FileType::Q8_0, "tiny_llama_llamacpp_layout_q8_0.txt");
}

/// The permuted Q/K rows and generated rope_freqs, checked value by value on a small case:
/// row `h·d + 2b + a` of GGUF's attn_q holds HF row `h·d + a·d/2 + b`.
#[test]
fn q_rows_are_permuted_for_ggml_rope_and_v_rows_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let summary = convert_to(&tiny_llama_dir(), tmp.path(), Some(FileType::F32)).unwrap();
    let file = GgufFile::open(&summary.output).unwrap();
    let ckpt = lumen_tools::convert::safetensors::Checkpoint::open(&tiny_llama_dir()).unwrap();
    let rows_of = |gguf: &str| -> Vec<Vec<f32>> {
        let info = file.require(gguf).unwrap();
        assert_eq!(info.ty, GgmlType::F32);
        let bytes = file.tensor_bytes(info);
        bytes
            .chunks_exact(4 * info.shape[0])
            .map(|r| {
                r.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect()
            })
            .collect()
    };
    let hf_rows = |name: &str| -> Vec<Vec<f32>> {
        let t = ckpt.find(name).unwrap();
        let cols = t.shape[1];
        ckpt.bytes(t)
            .chunks_exact(2 * cols)
            .map(|r| {
                r.chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect()
            })
            .collect()
    };
    let (q, hf_q) = (
        rows_of("blk.1.attn_q.weight"),
        hf_rows("model.layers.1.self_attn.q_proj.weight"),
    );
    let d = 16;
    for h in 0..4 {
        for b in 0..d / 2 {
            for a in 0..2 {
                assert_eq!(
                    q[h * d + 2 * b + a],
                    hf_q[h * d + a * d / 2 + b],
                    "h{h} b{b} a{a}"
                );
            }
        }
    }
    let (v, hf_v) = (
        rows_of("blk.1.attn_v.weight"),
        hf_rows("model.layers.1.self_attn.v_proj.weight"),
    );
    assert_eq!(v, hf_v);
}

/// Stronger than the layout: for this checkpoint Lumen's output is byte for byte the file
/// llama.cpp's converter writes (same key order and values, same tensor order, same bytes,
/// including Q8_0 rounding and rope_freqs), for every output type.
#[test]
fn whole_files_are_byte_identical_to_llama_cpp_converter() {
    use sha2::{Digest, Sha256};
    let sums = std::fs::read_to_string(root_fixtures_dir().join("tiny_llama_llamacpp_sha256.txt"))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for line in sums.lines() {
        let (want, file) = line.split_once("  ").unwrap();
        let t = file
            .trim_start_matches("llamacpp-")
            .trim_end_matches(".gguf");
        let ft = match t.parse().unwrap() {
            lumen_tools::convert::OutType::Fixed(ft) => ft,
            other => panic!("{other:?}"),
        };
        let out = tmp.path().join(format!("{t}.gguf"));
        let opts = lumen_tools::convert::ConvertOptions {
            input: tiny_llama_dir(),
            output: Some(out.clone()),
            outtype: Some(ft),
            ..Default::default()
        };
        convert_with(opts).unwrap();
        let got: String = Sha256::digest(std::fs::read(&out).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got != want {
            failures.push(format!("{t}: sha256 {got}, llama.cpp's {want}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
