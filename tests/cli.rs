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
fn unsupported_architecture_names_every_supported_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mamba.gguf");
    let bytes = common::tiny_gguf::tiny_llama_writer("mamba", None).to_bytes();
    std::fs::write(&path, bytes).unwrap();
    let o = lumen(&["run", "-m", path.to_str().unwrap(), "-p", "hi"], None);
    assert_clean_failure(&o, "architecture 'mamba' is not supported");
    let err = stderr(&o);
    let listed = err.split("supported: ").nth(1).unwrap_or_default();
    for (arch, _) in lumen::model::ARCHITECTURES {
        assert!(listed.contains(arch), "{arch} missing from {err}");
    }
    assert!(
        listed.contains("mllama") && listed.contains("gemma3"),
        "{err}"
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

/// `lumen inspect --kernels` names, per type and kind, the file whose kernel the level uses:
/// the scalar level is all references, a SIMD level shows its own files for what it packs.
#[test]
fn inspect_kernels_names_the_source_of_every_kernel() {
    let table = |level: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_lumen"))
            .args(["inspect", "--kernels"])
            .env("LUMEN_KERNELS", level)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let cells = |text: &str, ty: &str| -> Vec<String> {
        let row = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(ty))
            .unwrap_or_else(|| panic!("no {ty} row in:\n{text}"));
        row.split_whitespace().skip(1).map(String::from).collect()
    };
    let scalar = table("scalar");
    assert!(scalar.starts_with("kernel level: scalar"), "{scalar}");
    // Columns: row_dot row_dot4 tile4x4 rows4 packed_gemv packed_tile quantize.
    assert_eq!(cells(&scalar, "Q4_0")[0], "kernel_set");
    assert_eq!(
        cells(&scalar, "Q4_0")[6],
        "-",
        "Q4_0 is not an activation type"
    );
    assert_eq!(cells(&scalar, "Q8_K")[0], "-", "Q8_K is activation-only");
    assert_eq!(cells(&scalar, "Q8_K")[6], "kernel_set");
    use lumen::kernels::Isa;
    // (level, type, the file its packed gemv must come from): AVX-VNNI replaces AVX2's legacy
    // packed kernels and inherits its K-quant ones.
    let expected = [
        (Isa::Avx2, "Q4_0", "avx2::packed"),
        (Isa::Avx2, "Q8_0", "avx2::packed_q8_k"),
        (Isa::AvxVnni, "Q4_0", "avxvnni::packed"),
        (Isa::AvxVnni, "Q5_0", "avxvnni::packed"),
        (Isa::AvxVnni, "Q8_0", "avxvnni::packed"),
        (Isa::AvxVnni, "Q4_K", "avx2::packed_q8_k"),
        (Isa::Avx512, "Q4_0", "avx512::packed"),
        (Isa::Avx512, "Q4_K", "avx512::packed"),
    ];
    for (isa, ty, file) in expected {
        if !isa.is_available() {
            continue;
        }
        let text = table(isa.name());
        assert!(
            text.starts_with(&format!("kernel level: {} ", isa.name())),
            "{text}"
        );
        let gemv = &cells(&text, ty)[4];
        assert_eq!(
            gemv,
            &format!("simd::{file}"),
            "{ty} packed_gemv at {isa:?}"
        );
    }
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

/// A context too large for the machine's memory: SmolLM2 reserves 30 × 2 × 192 f32 a position,
/// so 2³² positions need 180 TiB. It used to abort in the allocator ("memory allocation of
/// 3298534883328 bytes failed", exit 134); now a named error before any allocation, and the
/// size of the cache that does fit is on the start-up line.
#[test]
fn a_kv_cache_larger_than_memory_is_a_clear_error() {
    let run = |ctx: &str| {
        let model = smollm2_path();
        let args = [
            "run",
            "-m",
            model.to_str().unwrap(),
            "-p",
            "Hi",
            "-n",
            "1",
            "-c",
            ctx,
        ];
        lumen(&args, None)
    };
    assert_clean_failure(&run("4294967296"), "a KV cache of 4294967296 positions");
    let fits = run("4096");
    assert!(fits.status.success(), "{}", stderr(&fits));
    assert!(
        stderr(&fits).contains("KV cache 180.0 MiB (4096 ctx)"),
        "{}",
        stderr(&fits)
    );
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

// ---------------------------------------------------------------------------------------------
// Llama 3.2 Vision (`lumen run --image`), on tiny-mllama converted by the sibling lumen-convert.

const MLLAMA_PROMPT: &str = "<|image|>If I had to write a haiku for this one";

/// tiny-mllama converted to F32 once per test process by `lumen-convert` (built beside `lumen`
/// by `cargo build --workspace` / `cargo test --workspace`).
fn tiny_mllama_gguf() -> &'static Path {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let convert = Path::new(env!("CARGO_BIN_EXE_lumen")).with_file_name(format!(
            "lumen-convert{}",
            std::env::consts::EXE_SUFFIX
        ));
        assert!(
            convert.is_file(),
            "{} is missing: the mllama CLI tests convert the fixture with it; run `cargo build --workspace` first",
            convert.display()
        );
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tiny-mllama-f32.gguf");
        let o = Command::new(convert)
            .arg(shared_dir().join("fixtures/tiny-mllama"))
            .args(["--outtype", "f32", "--force", "-o"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "lumen-convert: {}", stderr(&o));
        out
    })
}

fn mllama_refs() -> std::path::PathBuf {
    refs_dir().join("tiny-mllama")
}

/// `lumen run -m tiny-mllama --image … -p PROMPT --temp 0` plus `extra` arguments (`-n 16`
/// unless they say otherwise).
fn run_mllama(prompt: &str, images: &[&Path], extra: &[&str]) -> Output {
    let mut args: Vec<String> = ["run", "-m", tiny_mllama_gguf().to_str().unwrap()]
        .map(String::from)
        .to_vec();
    for image in images {
        args.extend(["--image".to_string(), image.to_str().unwrap().to_string()]);
    }
    args.extend(["-p", prompt, "--temp", "0"].map(String::from));
    if !extra.contains(&"-n") {
        args.extend(["-n", "16"].map(String::from));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lumen(&args, None)
}

#[test]
fn run_with_an_image_prints_the_reference_greedy_text() {
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(mllama_refs().join("meta_ref/index.json")).unwrap(),
    )
    .unwrap();
    let want = format!("{}\n", index["greedy_text"].as_str().unwrap());
    let image = mllama_refs().join("test.png");
    let o = run_mllama(MLLAMA_PROMPT, &[&image], &["--verbose-prompt"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), want);
    // The reference processor's ids: [BOS, <|image|>, BOS, text…].
    assert!(
        err.contains("prompt: 14 tokens: [128000, 128256, 128000, 2746,"),
        "{err}"
    );
    assert!(
        err.contains("vision encoder 1 image(s), tiles [4]"),
        "{err}"
    );
    // Without `<|image|>` in the prompt, one is prepended per image (same ids, same text).
    let plain = MLLAMA_PROMPT.trim_start_matches("<|image|>");
    let o = run_mllama(plain, &[&image], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), want);

    // A text-only prompt: the processor's ids ([BOS, BOS, text…]) and greedy continuation.
    let text_only = &index["text_only"];
    let o = run_mllama(
        text_only["prompt"].as_str().unwrap(),
        &[],
        &["-n", "8", "--verbose-prompt"],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let prompt_ids = ids(&text_only["input_ids"]);
    assert!(
        err.contains(&format!(
            "prompt: {} tokens: {prompt_ids:?}",
            prompt_ids.len()
        )),
        "{err}"
    );
    assert!(err.contains("vision encoder: no image"), "{err}");
    let file = lumen::gguf::GgufFile::open(tiny_mllama_gguf()).unwrap();
    let spec = lumen::tokenizer::VocabSpec::from_gguf(file.metadata()).unwrap();
    let tokenizer = lumen::tokenizer::Tokenizer::from_spec(spec).unwrap();
    let want = tokenizer.decode(&ids(&text_only["greedy8_ids"]));
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{want}\n"));
}

#[test]
fn image_and_image_token_counts_must_match() {
    let image = mllama_refs().join("test.png");
    assert_clean_failure(
        &run_mllama("<|image|><|image|>Two?", &[&image], &[]),
        "the prompt has 2 <|image|> token(s) but 1 image(s) were given",
    );
    assert_clean_failure(
        &run_mllama(MLLAMA_PROMPT, &[&image, &image], &[]),
        "the prompt has 1 <|image|> token(s) but 2 image(s) were given",
    );
    assert_clean_failure(
        &run_mllama(MLLAMA_PROMPT, &[], &[]),
        "the prompt has 1 <|image|> token(s) but 0 image(s) were given",
    );
    let missing = mllama_refs().join("no-such-image.png");
    assert_clean_failure(
        &run_mllama(MLLAMA_PROMPT, &[&missing], &[]),
        "no-such-image.png",
    );
}

#[test]
fn image_on_a_text_only_model_is_a_clear_error() {
    let image = mllama_refs().join("test.png");
    let o = lumen(
        &[
            "run",
            "-m",
            smollm2_path().to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "-p",
            "hi",
        ],
        None,
    );
    assert_clean_failure(&o, "is a text-only model (llama)");
}

/// `lumen chat` with its input piped (no terminal): the session's answers, one per message.
fn chat_piped(model: &Path, input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lumen"))
        .args(["chat", "--temp", "0", "-n", "8", "--verbose-prompt", "-m"])
        .arg(model)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lumen chat runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `/image` in `lumen chat` puts `<|image|>` in the user turn through the model's chat template
/// and binds the encoded image to it; the answer depends on the image.
#[test]
fn chat_binds_an_image_to_the_user_turn() {
    let model = tiny_mllama_gguf();
    let image = mllama_refs().join("test.png");
    let question = "If I had to write a haiku for this one";
    let with = chat_piped(
        model,
        &format!("/image {}\n{question}\n/bye\n", image.display()),
    );
    let without = chat_piped(model, &format!("{question}\n/bye\n"));
    assert!(with.status.success(), "{}", stderr(&with));
    let prompt = stderr(&with);
    assert!(
        prompt.contains("user<|end_header_id|>\n\n<|image|>If I had"),
        "{prompt}"
    );
    let (out_with, out_without) = (
        String::from_utf8_lossy(&with.stdout),
        String::from_utf8_lossy(&without.stdout),
    );
    assert!(out_with.contains("Added image"), "{out_with}");
    let answer = |out: &str| {
        out.trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string()
    };
    let (a, b) = (answer(&out_with), answer(&out_without));
    assert!(!a.trim().is_empty() && a != b, "with: {a:?} without: {b:?}");
}

#[test]
fn chat_refuses_an_image_for_a_text_only_model() {
    let image = mllama_refs().join("test.png");
    let o = chat_piped(
        &common::smollm2_path(),
        &format!("/image {}\n/bye\n", image.display()),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("text-only model"), "{out}");
}

/// A wide panorama and a tall strip in one prompt run through the whole path (preprocessing as
/// checked in `mllama_image_proc.rs`, encoder, cross-attention): 1×4 and 4×1 tile layouts.
#[test]
fn run_with_a_panorama_and_a_tall_strip_in_one_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, w: u32, h: u32| {
        let path = dir.path().join(name);
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x + y) % 256) as u8,
            ])
        });
        img.save(&path).unwrap();
        path
    };
    let wide = make("panorama.png", 1500, 300);
    let tall = make("strip.png", 200, 900);
    let o = run_mllama(
        "<|image|><|image|>Compare these two",
        &[&wide, &tall],
        &["-n", "4"],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("2 image(s), tiles [4, 4]"), "{err}");
    assert!(!String::from_utf8_lossy(&o.stdout).trim().is_empty());
}

/// `lumen inspect FILE | head -1`: the reader closing the pipe early is not an error.
#[test]
fn inspect_into_a_pipe_closed_early_exits_cleanly() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lumen"))
        // --full lists the whole vocabulary: far more than a pipe buffer holds.
        .args(["inspect", "--full"])
        .arg(smollm2_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's read end is dropped here, with most of the listing unread.
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}
