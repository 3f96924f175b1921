//! The `lumen` binary end to end: exit codes, messages, streaming output, the default model.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn lumen(args: &[&str], home: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lumen"));
    cmd.args(args);
    if let Some(home) = home {
        cmd.env("LUMEN_HOME", home);
    }
    cmd.output().expect("lumen runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
}

#[test]
fn bad_files_give_named_errors_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbage.gguf");
    std::fs::write(&bad, b"this is not a model at all, not even close....").unwrap();
    let bad = bad.to_str().unwrap();
    assert_clean_failure(
        &lumen(&["run", "-m", bad, "-p", "hi"], None),
        "garbage.gguf: not a GGUF file",
    );
    assert_clean_failure(&lumen(&["inspect", bad], None), "not a GGUF file");
    let missing = dir.path().join("missing.gguf");
    assert_clean_failure(
        &lumen(&["run", "-m", missing.to_str().unwrap(), "-p", "hi"], None),
        "missing.gguf",
    );
}

#[test]
fn inspect_lists_metadata_and_tensors_as_json() {
    let o = lumen(
        &["inspect", "--json", smollm2_path().to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["metadata"]["general.architecture"], "llama");
    // SmolLM2-135M: 30 blocks × 9 tensors + embeddings + output norm.
    assert_eq!(doc["tensors"].as_array().unwrap().len(), 272);
    assert_eq!(
        doc["metadata"]["tokenizer.ggml.tokens"]["len"], 49152,
        "long arrays are summarised"
    );
    let embd = doc["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "token_embd.weight")
        .unwrap();
    assert_eq!(embd["type"], "Q8_0");
    assert_eq!(embd["shape"], serde_json::json!([576, 49152]));
}

#[test]
fn greedy_run_streams_the_reference_continuation() {
    let o = lumen(
        &[
            "run",
            "-m",
            smollm2_path().to_str().unwrap(),
            "-p",
            "The capital of France is",
            "-n",
            "3",
            "--temp",
            "0",
            "-t",
            "2",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // HF's greedy continuation starts [7042, 30, 198] = " Paris", ".", "\n" (index.json, p0).
    assert_eq!(String::from_utf8_lossy(&o.stdout), " Paris.\n\n");
    let err = stderr(&o);
    assert!(
        err.contains("prompt 5 tokens") && err.contains("generation 3 tokens"),
        "{err}"
    );
}

#[test]
fn every_kernel_path_forced_by_the_variable_gives_the_reference_continuation() {
    for isa in lumen::kernels::Isa::ALL {
        let o = Command::new(env!("CARGO_BIN_EXE_lumen"))
            .args([
                "run",
                "-m",
                smollm2_path().to_str().unwrap(),
                "-p",
                "The capital of France is",
                "-n",
                "3",
                "--temp",
                "0",
            ])
            .env("LUMEN_KERNELS", isa.name())
            .output()
            .unwrap();
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        if isa.is_available() {
            assert!(
                err.contains(&format!("kernels {}", isa.name())),
                "{isa:?} not chosen: {err}"
            );
        } else {
            assert!(err.contains("this CPU cannot run it"), "{err}");
        }
        assert_eq!(String::from_utf8_lossy(&o.stdout), " Paris.\n\n", "{isa:?}");
    }
}

#[test]
fn prompt_plus_n_beyond_the_context_is_a_clear_error() {
    let o = lumen(
        &[
            "run",
            "-m",
            smollm2_path().to_str().unwrap(),
            "-p",
            "The capital of France is",
            "-n",
            "100",
            "-c",
            "32",
        ],
        None,
    );
    assert_clean_failure(&o, "the context holds 32");
}

#[test]
fn default_model_is_fetched_once_then_cached() {
    let home = tempfile::tempdir().unwrap();
    let first = lumen(
        &["run", "-p", "Hello", "-n", "2", "--temp", "0"],
        Some(home.path()),
    );
    let err = stderr(&first);
    assert!(first.status.success(), "{err}");
    assert!(
        err.contains("fetching smollm2-135m-instruct") && err.contains("verified (sha256)"),
        "{err}"
    );
    let second = lumen(
        &["run", "-p", "Hello", "-n", "2", "--temp", "0"],
        Some(home.path()),
    );
    let err2 = stderr(&second);
    assert!(second.status.success(), "{err2}");
    assert!(
        !err2.contains("fetching"),
        "second run fetched again: {err2}"
    );
    assert_eq!(
        first.stdout, second.stdout,
        "greedy output differs between runs"
    );
}

/// `lumen SUBCOMMAND --help` run through the sibling `tool`: its help text, or `None` (after
/// checking the error says how to build it) when the tools are not built.
fn forwarded_help(subcommand: &str, tool: &str) -> Option<String> {
    let lumen_exe = Path::new(env!("CARGO_BIN_EXE_lumen"));
    let tool = lumen_exe.with_file_name(format!("{tool}{}", std::env::consts::EXE_SUFFIX));
    let help = lumen(&[subcommand, "--help"], None);
    if !tool.is_file() {
        assert_clean_failure(&help, "cargo build --release --workspace");
        return None;
    }
    assert!(help.status.success(), "{}", stderr(&help));
    Some(String::from_utf8_lossy(&help.stdout).into_owned())
}

/// `lumen convert` runs the sibling `lumen-convert` (built by `cargo build --workspace`),
/// passing `--help` and the exit status through; without it, it says how to build it.
#[test]
fn convert_forwards_to_the_lumen_convert_tool() {
    let Some(out) = forwarded_help("convert", "lumen-convert") else {
        return;
    };
    assert!(
        out.contains("--outtype") && out.contains("--force"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let o = lumen(&["convert", dir.path().to_str().unwrap()], None);
    assert_clean_failure(&o, "config.json");
}

/// `lumen quantize` runs the sibling `lumen-quantize` the same way: `--help` passes through,
/// and a bad TYPE comes back as the tool's named error and exit status.
#[test]
fn quantize_forwards_to_the_lumen_quantize_tool() {
    let Some(out) = forwarded_help("quantize", "lumen-quantize") else {
        return;
    };
    assert!(
        out.contains("--allow-requantize") && out.contains("--output-tensor-type"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.gguf");
    std::fs::write(&input, b"not a gguf").unwrap();
    let output = dir.path().join("out.gguf");
    let o = lumen(
        &[
            "quantize",
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "Q4_2",
        ],
        None,
    );
    assert_clean_failure(&o, "unknown TYPE");
    assert!(!output.exists());
}
