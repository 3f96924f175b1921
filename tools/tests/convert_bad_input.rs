//! Broken checkpoints and bad requests: each gives an error that names the file, key or tensor,
//! and nothing — no output, no temporary file — is left in the output directory.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use lumen_tools::convert::{ConvertError, ConvertOptions, FileType, OutType, TestHooks};
use lumen_tools::output::OutputError;
use serde_json::Value;

const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";

/// A writable copy of the fixture (model files only) that a test then damages.
struct Broken {
    _tmp: tempfile::TempDir,
    input: PathBuf,
    out: PathBuf,
}

fn broken_copy(damage: impl FnOnce(&Path)) -> Broken {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("tiny-llama");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        SHARD1,
        SHARD2,
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(tiny_llama_dir().join(f), input.join(f)).unwrap();
        let mut perm = std::fs::metadata(input.join(f)).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)] // a test copy of read-only fixtures
        perm.set_readonly(false);
        std::fs::set_permissions(input.join(f), perm).unwrap();
    }
    damage(&input);
    Broken {
        _tmp: tmp,
        input,
        out,
    }
}

impl Broken {
    fn options(&self) -> ConvertOptions {
        ConvertOptions {
            input: self.input.clone(),
            output: Some(self.out.join("model.gguf")),
            outtype: Some(FileType::BF16),
            ..Default::default()
        }
    }

    /// Converts, expects an error whose message contains every `needle`, and checks the output
    /// directory is still empty.
    fn fails_with(&self, opts: ConvertOptions, needles: &[&str]) -> ConvertError {
        let err = match convert_with(opts) {
            Ok(s) => panic!("expected an error, wrote {}", s.output.display()),
            Err(e) => e,
        };
        let msg = err.to_string();
        println!("{msg}");
        for n in needles {
            assert!(msg.contains(n), "message lacks {n:?}: {msg}");
        }
        assert_eq!(dir_entries(&self.out), Vec::<String>::new(), "{msg}");
        err
    }
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn missing_config_json_is_named() {
    let b = broken_copy(|d| std::fs::remove_file(d.join("config.json")).unwrap());
    let err = b.fails_with(b.options(), &["config.json", "tiny-llama"]);
    assert!(matches!(err, ConvertError::MissingConfig { .. }), "{err:?}");
}

#[test]
fn unsupported_architecture_is_named() {
    let b = broken_copy(|d| {
        edit_json(&d.join("config.json"), |v| {
            v["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
        })
    });
    let err = b.fails_with(
        b.options(),
        &["GPT2LMHeadModel", "LlamaForCausalLM", "config.json"],
    );
    assert!(
        matches!(err, ConvertError::UnsupportedArchitecture { .. }),
        "{err:?}"
    );
}

#[test]
fn shard_listed_in_the_index_but_absent_is_named() {
    let b = broken_copy(|d| std::fs::remove_file(d.join(SHARD2)).unwrap());
    let err = b.fails_with(b.options(), &[SHARD2, "model.safetensors.index.json"]);
    assert!(matches!(err, ConvertError::MissingShard { .. }), "{err:?}");
}

#[test]
fn tensor_shape_disagreeing_with_config_is_named() {
    let b = broken_copy(|d| {
        edit_json(&d.join("config.json"), |v| {
            v["intermediate_size"] = serde_json::json!(128);
        })
    });
    let err = b.fails_with(
        b.options(),
        &["model.layers.0.mlp.", "config.json implies", SHARD2],
    );
    assert!(matches!(err, ConvertError::ShapeMismatch { .. }), "{err:?}");
}

#[test]
fn safetensors_header_lying_about_offsets_is_named() {
    // model.norm.weight claims two more bytes than its 64 bf16 values hold.
    let b = broken_copy(|d| {
        edit_shard_header(&d.join(SHARD2), |h| {
            let off = h["model.norm.weight"]["data_offsets"]
                .as_array_mut()
                .unwrap();
            off[1] = Value::from(off[1].as_u64().unwrap() + 2);
        })
    });
    let err = b.fails_with(b.options(), &[SHARD2, "data_offsets"]);
    assert!(matches!(err, ConvertError::BadHeader { .. }), "{err:?}");
}

#[test]
fn overlapping_offsets_are_named() {
    // The first tensor by offset keeps its range; the second starts 2 bytes early.
    let b = broken_copy(|d| {
        edit_shard_header(&d.join(SHARD2), |h| {
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
        })
    });
    let err = b.fails_with(b.options(), &[SHARD2, "data_offsets"]);
    assert!(matches!(err, ConvertError::BadHeader { .. }), "{err:?}");
}

#[test]
fn truncated_shard_is_named() {
    let b = broken_copy(|d| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join(SHARD1))
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - 1000).unwrap();
    });
    let err = b.fails_with(b.options(), &[SHARD1, "truncated"]);
    assert!(
        matches!(err, ConvertError::TruncatedShard { .. }),
        "{err:?}"
    );
}

#[test]
fn write_failure_leaves_nothing_behind() {
    let b = broken_copy(|_| {});
    let mut opts = b.options();
    opts.hooks = TestHooks {
        fail_at_tensor: Some(5),
        ..Default::default()
    };
    let err = b.fails_with(opts, &["model.gguf", "injected write failure"]);
    assert!(matches!(err, ConvertError::Write { .. }), "{err:?}");
}

#[test]
fn too_little_free_space_is_refused_up_front() {
    let b = broken_copy(|_| {});
    let mut opts = b.options();
    opts.hooks = TestHooks {
        free_bytes: Some(1 << 20),
        ..Default::default()
    };
    let err = b.fails_with(opts, &["not enough free space"]);
    assert!(
        matches!(err, ConvertError::Output(OutputError::NoSpace { .. })),
        "{err:?}"
    );
}

#[test]
fn existing_output_needs_force_and_inputs_are_never_overwritten() {
    let b = broken_copy(|_| {});
    let out = b.out.join("model.gguf");
    std::fs::write(&out, b"keep me").unwrap();
    let err = convert_with(b.options()).unwrap_err();
    assert!(
        matches!(err, ConvertError::Output(OutputError::Exists(_))),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");

    let mut opts = b.options();
    opts.output = Some(b.input.join(SHARD1));
    opts.force = true;
    let err = convert_with(opts).unwrap_err();
    assert!(
        matches!(err, ConvertError::Output(OutputError::IsInput(_))),
        "{err:?}"
    );

    let mut opts = b.options();
    opts.force = true;
    convert_with(opts).unwrap();
    assert_eq!(dir_entries(&b.out), ["model.gguf"]);
}

#[test]
fn unknown_pre_tokenizer_is_an_error_with_its_hash() {
    let b = broken_copy(|d| {
        edit_json(&d.join("tokenizer.json"), |v| {
            // Digits split in twos instead of threes: a pre-tokenizer llama.cpp does not know
            // (one at a time would be Qwen2's, which the converter recognises by its regex).
            let re = v["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
                .as_str()
                .unwrap()
                .replace(r"\p{N}{1,3}", r"\p{N}{1,2}");
            v["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = Value::from(re);
        })
    });
    let err = b.fails_with(
        b.options(),
        &["tokenizer.json", "pre-tokenizer", "llama-bpe"],
    );
    assert!(
        matches!(err, ConvertError::UnknownPreTokenizer { .. }),
        "{err:?}"
    );
}

#[test]
fn k_quant_outtype_names_the_two_commands() {
    let err = "Q4_K_M".parse::<OutType>().unwrap_err().to_string();
    assert!(
        err.contains("lumen convert") && err.contains("lumen quantize"),
        "{err}"
    );
    assert!(err.contains("Q4_K_M"), "{err}");
    let err = "q3_x".parse::<OutType>().unwrap_err();
    assert!(matches!(err, ConvertError::UnknownOutType(_)), "{err:?}");
}

#[test]
fn cli_reports_errors_with_exit_status_1() {
    let tmp = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lumen-convert"))
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("config.json") && !err.contains("panicked"),
        "{err}"
    );
}

/// A small tmpfs, unmounted on drop.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    /// `None` where mounting is not allowed (not root, no mount namespace).
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A real full disk: the up-front check refuses, and when the check is bypassed the write
/// itself fails with ENOSPC and removes its temporary file.
#[test]
fn full_disk_is_refused_up_front_and_a_failed_write_leaves_nothing() {
    let b = broken_copy(|_| {});
    let mnt = b.out.join("small");
    let Some(_fs) = SmallTmpfs::mount(&mnt, "4m") else {
        eprintln!("skipped: cannot mount a tmpfs here (the injected-failure test covers writes)");
        return;
    };
    let mut opts = b.options();
    opts.output = Some(mnt.join("model.gguf"));
    let err = convert_with(opts.clone()).unwrap_err();
    assert!(
        matches!(err, ConvertError::Output(OutputError::NoSpace { .. })),
        "{err:?}"
    );
    opts.hooks.free_bytes = Some(u64::MAX);
    let err = convert_with(opts).unwrap_err();
    println!("{err}");
    assert!(matches!(err, ConvertError::Write { .. }), "{err:?}");
    assert_eq!(dir_entries(&mnt), Vec::<String>::new());
}
