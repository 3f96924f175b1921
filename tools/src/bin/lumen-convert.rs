//! `lumen-convert` (also `lumen convert`): a Hugging Face checkpoint directory to GGUF.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lumen_tools::cli;
use lumen_tools::convert::{self, ConvertOptions, OutType};
use lumen_tools::progress;

#[derive(Parser, Debug)]
#[command(
    name = "lumen-convert",
    version,
    about = "Convert a Hugging Face checkpoint directory (safetensors; Llama, Mistral, Qwen2, \
             Qwen3, Gemma 2, Gemma 3, Phi-3, Llama 3.2 Vision) to GGUF, as llama.cpp's \
             convert_hf_to_gguf.py does"
)]
struct Args {
    /// Model directory: config.json, tokenizer.json or tokenizer.model (SentencePiece),
    /// model.safetensors or its sharded index.
    #[arg(env = "LUMEN_CONVERT_INPUT")]
    input: PathBuf,
    /// Output file (default: HF_DIR/<dir name>-<TYPE>.gguf).
    #[arg(
        short = 'o',
        long = "outfile",
        visible_alias = "output",
        env = "LUMEN_CONVERT_OUTPUT"
    )]
    output: Option<PathBuf>,
    /// f32, f16, bf16, q8_0, or auto (the checkpoint's own 16-bit type). For K-quants and
    /// other types, convert then run `lumen quantize`.
    #[arg(long, default_value = "auto", env = "LUMEN_CONVERT_OUTTYPE")]
    outtype: String,
    /// Overwrite an existing output file (never an input file).
    #[arg(long, env = "LUMEN_CONVERT_FORCE")]
    force: bool,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long, env = "LUMEN_THREADS")]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    cli::exit_with(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    cli::set_threads(args.threads)?;
    cli::clean_up_on_ctrl_c()?;
    let outtype: OutType = args.outtype.parse()?;
    let opts = ConvertOptions {
        input: args.input,
        output: args.output,
        outtype: match outtype {
            OutType::Auto => None,
            OutType::Fixed(ft) => Some(ft),
        },
        force: args.force,
        hooks: Default::default(),
    };
    let summary = progress::track(
        |on_event| convert::convert(&opts, on_event),
        |ft| ft.name(),
        |p, index, tensor| {
            let label = format!("{} {} {:?}", tensor.name, tensor.ty.name(), tensor.shape);
            p.step(index, tensor.n_bytes() as u64, &label);
        },
    )?;
    eprintln!(
        "wrote {} ({}, {} tensors, {:.1} MiB)",
        summary.output.display(),
        summary.file_type.name(),
        summary.n_tensors,
        summary.bytes as f64 / (1u64 << 20) as f64
    );
    Ok(())
}
