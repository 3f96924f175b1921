//! `lumen-convert` (also `lumen convert`): a Hugging Face checkpoint directory to GGUF.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lumen_tools::convert::{self, ConvertOptions, Event, OutType};
use lumen_tools::progress::Progress;

#[derive(Parser, Debug)]
#[command(
    name = "lumen-convert",
    version,
    about = "Convert a Hugging Face checkpoint directory (LlamaForCausalLM, safetensors) to GGUF, \
             as llama.cpp's convert_hf_to_gguf.py does"
)]
struct Args {
    /// Model directory: config.json, tokenizer.json, model.safetensors or its sharded index.
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
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()?;
    }
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
    let mut progress: Option<Progress> = None;
    let summary = convert::convert(&opts, &mut |event| match event {
        Event::Start {
            output,
            file_type,
            n_tensors,
            total_bytes,
        } => {
            eprintln!(
                "writing {} ({}, {n_tensors} tensors, {:.1} MiB)",
                output.display(),
                file_type.name(),
                total_bytes as f64 / (1u64 << 20) as f64
            );
            progress = Some(Progress::new(total_bytes, n_tensors));
        }
        Event::Tensor { index, tensor } => {
            if let Some(p) = &progress {
                let label = format!("{} {} {:?}", tensor.name, tensor.ty.name(), tensor.shape);
                p.step(index, tensor.n_bytes() as u64, &label);
            }
        }
    })?;
    if let Some(p) = &progress {
        p.finish();
    }
    eprintln!(
        "wrote {} ({}, {} tensors, {:.1} MiB)",
        summary.output.display(),
        summary.file_type.name(),
        summary.n_tensors,
        summary.bytes as f64 / (1u64 << 20) as f64
    );
    Ok(())
}
