//! Hostile GGUF files, each built here by a generator, run through `lumen inspect` in a child
//! process: every one must end with exit status 1 and an `error:` line naming the file, in under
//! a second and under 50 MiB peak RSS (a parser that trusts a length allocates gigabytes or
//! reads forever; the bounds catch both, which an in-process `is_err()` check cannot).
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::process::Command;

use common::measured::*;
use common::tiny_gguf::*;

/// Far above what inspecting a small file maps, far below the 1 GiB strings gguf-rs would
/// allocate for a length it has not checked against the file.
const ADDRESS_SPACE_LIMIT_KIB: u64 = 384 * 1024;

/// `lumen inspect FILE` with its address space capped at `ADDRESS_SPACE_LIMIT_KIB`: an
/// allocation sized by an unchecked length (even one the kernel would back lazily and that
/// never shows in RSS) then fails, and Rust aborts, which the exit-status check catches.
fn inspect(path: &Path) -> Outcome {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_LIMIT_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_lumen"))
        .arg("inspect")
        .arg(path);
    run_measured(cmd, &path.with_extension("stderr"))
}

/// Writes `bytes` as `<name>.gguf`, inspects it, and checks the named-error contract and the
/// time and memory bounds. Returns the error text for case-specific checks.
fn refused_within_bounds(name: &str, bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    assert_refused_within_bounds(name, &inspect(&path), &format!("{name}.gguf"))
}

/// The harness itself: a valid file is inspected successfully, and the RSS it reports is a
/// real measurement (a zero would make every memory bound pass).
#[test]
fn the_valid_tiny_model_is_inspected_and_measured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.gguf");
    std::fs::write(&path, tiny_llama_bytes()).unwrap();
    let o = inspect(&path);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.max_rss_kib > 1024,
        "implausible RSS {} KiB",
        o.max_rss_kib
    );
}

/// The harness catches a process that allocates and touches more than the bound: `sh`
/// building a 64 MiB string.
#[test]
fn the_rss_bound_catches_a_big_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("head -c 67108864 /dev/zero | tr '\\0' x | { v=$(cat); echo ${#v}; }");
    let o = run_measured(cmd, &dir.path().join("sh.stderr"));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.max_rss_kib > RSS_LIMIT_KIB, "{} KiB", o.max_rss_kib);
}

/// One metadata key holding an array; the rest of the file is `tail` zero bytes.
fn one_array(key: &str, elem_type: u32, len: u64, tail: usize) -> Vec<u8> {
    let mut g = RawGguf::new(0, 1);
    g.array_head(key, elem_type, len).pad(tail);
    g.bytes
}

#[test]
fn metadata_array_of_2_pow_60_numbers() {
    refused_within_bounds(
        "array_u32_2e60",
        &one_array("general.hostile", GGUF_TYPE_U32, 1 << 60, 4096),
    );
}

#[test]
fn tokenizer_array_of_2_pow_60_strings() {
    // `tokenizer.*` arrays are the ones parsers cap and keep reading past the cap.
    refused_within_bounds(
        "array_str_2e60",
        &one_array("tokenizer.ggml.tokens", GGUF_TYPE_STRING, 1 << 60, 4096),
    );
}

#[test]
fn metadata_array_of_bytes_longer_than_the_cap() {
    // 5 Mi bytes really present: a parser keeping one boxed value per entry needs ~160 MiB.
    let err = refused_within_bounds(
        "array_u8_5m",
        &one_array("general.hostile", 0, 5 << 20, 5 << 20),
    );
    assert!(
        err.contains("general.hostile") && err.contains("cap"),
        "{err}"
    );
}

#[test]
fn array_of_2_pow_60_arrays() {
    let mut g = RawGguf::new(0, 1);
    g.array_head("general.nested", GGUF_TYPE_ARRAY, 1 << 60)
        .u32(GGUF_TYPE_U32)
        .u64(1 << 60)
        .pad(64);
    refused_within_bounds("array_nested_2e60", &g.bytes);
}

#[test]
fn key_string_length_past_the_end_of_the_file() {
    for (name, len) in [
        ("key_len_512m", 512 << 20),
        ("key_len_1g", 1 << 30),
        ("key_len_2e60", 1 << 60),
    ] {
        let mut g = RawGguf::new(0, 1);
        g.str_claiming(len, "general.name").pad(64);
        refused_within_bounds(name, &g.bytes);
    }
}

#[test]
fn value_string_length_past_the_end_of_the_file() {
    for (name, len) in [("value_len_512m", 512 << 20), ("value_len_2e60", 1 << 60)] {
        let mut g = RawGguf::new(0, 1);
        g.str("general.name")
            .u32(GGUF_TYPE_STRING)
            .str_claiming(len, "tiny")
            .pad(64);
        refused_within_bounds(name, &g.bytes);
    }
}

#[test]
fn string_array_element_length_past_the_end_of_the_file() {
    let mut g = RawGguf::new(0, 1);
    g.array_head("tokenizer.ggml.tokens", GGUF_TYPE_STRING, 3)
        .str("a")
        .str_claiming(768 << 20, "b")
        .pad(64);
    refused_within_bounds("token_len_768m", &g.bytes);
}

#[test]
fn tensor_name_length_past_the_end_of_the_file() {
    let mut g = RawGguf::new(1, 0);
    g.str_claiming(900 << 20, "token_embd.weight").pad(64);
    refused_within_bounds("tensor_name_len_900m", &g.bytes);
}

#[test]
fn overlapping_tensors() {
    let mut bytes = tiny_llama_bytes();
    let at = tensor_type_field(&bytes, "output_norm.weight") + 4;
    bytes[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    let err = refused_within_bounds("overlap", &bytes);
    assert!(err.contains("overlaps"), "{err}");
}

#[test]
fn tensor_offset_past_the_end_of_the_file() {
    for (name, offset) in [("offset_1t", 1u64 << 40), ("offset_max", !31u64)] {
        let mut bytes = tiny_llama_bytes();
        let at = tensor_type_field(&bytes, "blk.0.ffn_up.weight") + 4;
        bytes[at..at + 8].copy_from_slice(&offset.to_le_bytes());
        let err = refused_within_bounds(name, &bytes);
        assert!(err.contains("blk.0.ffn_up.weight"), "{err}");
    }
}

#[test]
fn dims_whose_product_overflows() {
    let mut bytes = tiny_llama_bytes();
    let at = tensor_type_field(&bytes, "blk.0.ffn_gate.weight");
    // The two dims sit just before the type field.
    bytes[at - 16..at - 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    bytes[at - 8..at].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let err = refused_within_bounds("dims_overflow", &bytes);
    assert!(err.contains("blk.0.ffn_gate.weight"), "{err}");
}

#[test]
fn duplicate_tensor_names() {
    let mut w = tiny_llama_writer("llama", None);
    w.add_tensor(f32_tensor("output_norm.weight", &[N_EMBD], 98));
    let err = refused_within_bounds("dup_tensor", &w.to_bytes());
    assert!(
        err.contains("'output_norm.weight'") && err.contains("twice"),
        "{err}"
    );
}

#[test]
fn duplicate_keys() {
    let mut w = tiny_llama_writer("llama", None);
    w.add_meta(
        "llama.feed_forward_length",
        lumen::gguf::writer::MetaValue::U32(48),
    );
    let err = refused_within_bounds("dup_key", &w.to_bytes());
    assert!(err.contains("appears twice"), "{err}");
}

#[test]
fn absurd_tensor_and_key_counts() {
    let mut bytes = tiny_llama_bytes();
    bytes[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    refused_within_bounds("tensor_count_2e60", &bytes);
    let mut bytes = tiny_llama_bytes();
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    refused_within_bounds("kv_count_max", &bytes);
}
