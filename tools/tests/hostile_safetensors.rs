//! Hostile safetensors shards, each made here from a copy of the tiny-llama fixture, run
//! through `lumen-convert` in a child process: every one must end with exit status 1 and an
//! `error:` line naming the shard, in under a second and under 50 MiB peak RSS (a converter
//! that trusts the header length allocates or maps gigabytes; the bounds catch it).
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::measured::*;
use common::{edit_shard_header, tiny_llama_dir};
use serde_json::Value;

const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";

/// A writable copy of the fixture's model files in a temporary directory.
struct Checkpoint {
    tmp: tempfile::TempDir,
}

impl Checkpoint {
    fn copy() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("ckpt")).unwrap();
        let ckpt = Checkpoint { tmp };
        for f in [
            "config.json",
            "generation_config.json",
            "model.safetensors.index.json",
            SHARD1,
            SHARD2,
            "tokenizer.json",
            "tokenizer_config.json",
        ] {
            // `copy` (in the kernel), not read + write: see `run_measured` on this process's RSS.
            let to = ckpt.dir().join(f);
            std::fs::copy(tiny_llama_dir().join(f), &to).unwrap();
            let mut perm = std::fs::metadata(&to).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)] // a test copy of read-only fixtures
            perm.set_readonly(false);
            std::fs::set_permissions(&to, perm).unwrap();
        }
        ckpt
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("ckpt")
    }

    fn convert(&self) -> Outcome {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lumen-convert"));
        cmd.arg(self.dir())
            .arg("--outfile")
            .arg(self.tmp.path().join("out.gguf"))
            .arg("--outtype")
            .arg("bf16");
        run_measured(cmd, &self.tmp.path().join("stderr.txt"))
    }
}

/// Converts, then checks the named-error contract and the time and memory bounds, and that no
/// output was left. Returns the `error:` line.
fn refused_within_bounds(case: &str, ckpt: &Checkpoint, shard: &str) -> String {
    let error_line = assert_refused_within_bounds(case, &ckpt.convert(), shard);
    assert!(
        !ckpt.tmp.path().join("out.gguf").exists(),
        "{case}: an output file was left"
    );
    error_line
}

/// Overwrites the first 8 bytes in place (the 16 MB shard is never read into this process).
fn set_header_len(path: &Path, len: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&len.to_le_bytes(), 0).unwrap();
}

/// The harness itself: the undamaged copy converts (exit 0) and its RSS is a real
/// measurement, so the bounds above are not vacuous.
#[test]
fn the_undamaged_copy_converts_and_is_measured() {
    let ckpt = Checkpoint::copy();
    let o = ckpt.convert();
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.max_rss_kib > 1024,
        "implausible RSS {} KiB",
        o.max_rss_kib
    );
}

#[test]
fn header_length_of_10_gb_in_a_small_file() {
    let ckpt = Checkpoint::copy();
    set_header_len(&ckpt.dir().join(SHARD1), 10_000_000_000);
    let err = refused_within_bounds("header_10gb", &ckpt, SHARD1);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn header_length_of_10_gb_in_a_10_gb_sparse_file() {
    // The file really is that long (sparse), so only a cap on the header length stops a
    // parser from reading 10 GB of "JSON".
    let ckpt = Checkpoint::copy();
    let path = ckpt.dir().join(SHARD2);
    set_header_len(&path, 10_000_000_000);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    if f.set_len(10_000_000_016).is_err() {
        eprintln!("skipped: the temporary file system refuses a 10 GB sparse file");
        return;
    }
    drop(f);
    refused_within_bounds("header_10gb_sparse", &ckpt, SHARD2);
}

#[test]
fn header_length_of_2_pow_63() {
    let ckpt = Checkpoint::copy();
    set_header_len(&ckpt.dir().join(SHARD2), 1 << 63);
    refused_within_bounds("header_2e63", &ckpt, SHARD2);
}

#[test]
fn overlapping_offsets() {
    // The second tensor by offset starts 2 bytes inside the first.
    let ckpt = Checkpoint::copy();
    edit_shard_header(&ckpt.dir().join(SHARD2), |h| {
        let mut by_start: Vec<(u64, String)> = h
            .iter()
            .filter(|(k, _)| *k != "__metadata__")
            .map(|(k, v)| (v["data_offsets"][0].as_u64().unwrap(), k.clone()))
            .collect();
        by_start.sort();
        let second = &by_start[1].1;
        let off = h[second]["data_offsets"].as_array_mut().unwrap();
        off[0] = Value::from(off[0].as_u64().unwrap() - 2);
        off[1] = Value::from(off[1].as_u64().unwrap() - 2);
    });
    let err = refused_within_bounds("overlap", &ckpt, SHARD2);
    assert!(err.contains("data_offsets"), "{err}");
}

#[test]
fn two_tensors_claiming_the_same_bytes() {
    // Identical ranges: the shorter overlap a sort-by-start check might treat as ordered.
    let ckpt = Checkpoint::copy();
    edit_shard_header(&ckpt.dir().join(SHARD2), |h| {
        let mut by_start: Vec<(u64, String)> = h
            .iter()
            .filter(|(k, _)| *k != "__metadata__")
            .map(|(k, v)| (v["data_offsets"][0].as_u64().unwrap(), k.clone()))
            .collect();
        by_start.sort();
        let first = h[&by_start[0].1].clone();
        h.insert(by_start[1].1.clone(), first);
    });
    refused_within_bounds("same_bytes", &ckpt, SHARD2);
}

#[test]
fn data_offsets_near_u64_max() {
    let ckpt = Checkpoint::copy();
    edit_shard_header(&ckpt.dir().join(SHARD2), |h| {
        let name = h.keys().find(|k| *k != "__metadata__").unwrap().clone();
        h[&name]["data_offsets"] = serde_json::json!([u64::MAX - 1, u64::MAX]);
    });
    refused_within_bounds("offsets_u64_max", &ckpt, SHARD2);
}
