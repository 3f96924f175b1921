//! `lumen-quantize` (also `lumen quantize`): a GGUF model to another type or llama.cpp mix.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lumen_tools::cli;
use lumen_tools::progress;
use lumen_tools::quantize::{
    self, parse_tensor_type, FileType, QuantizeError, QuantizeOptions, Summary, TensorReport,
    TypeOptions,
};

#[derive(Parser, Debug)]
#[command(
    name = "lumen-quantize",
    version,
    about = "Quantize a GGUF model the way llama.cpp's llama-quantize does (same types, \
             per-tensor mixes and reference quantizers; no importance matrix)",
    after_help = "TYPE: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M, \
                  Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K (Q3_K, Q4_K, Q5_K = the _M \
                  mixes; llama.cpp's numeric ids work too)"
)]
struct Args {
    /// Input GGUF file (never modified).
    #[arg(env = "LUMEN_QUANTIZE_INPUT")]
    input: PathBuf,
    /// Output GGUF file.
    #[arg(env = "LUMEN_QUANTIZE_OUTPUT")]
    output: PathBuf,
    /// Target file type (see below).
    #[arg(value_name = "TYPE", env = "LUMEN_QUANTIZE_TYPE")]
    file_type: String,
    /// Worker threads (default: all cores).
    #[arg(env = "LUMEN_THREADS")]
    threads: Option<usize>,
    /// Allow requantizing tensors that are already quantized (dequantized first; loses
    /// accuracy compared with quantizing the original weights).
    #[arg(long, env = "LUMEN_QUANTIZE_ALLOW_REQUANTIZE")]
    allow_requantize: bool,
    /// Leave output.weight as it is (not quantized, not requantized).
    #[arg(long, env = "LUMEN_QUANTIZE_LEAVE_OUTPUT_TENSOR")]
    leave_output_tensor: bool,
    /// Give every quantized tensor the TYPE's default type (no _S/_M/_L mix).
    #[arg(long, env = "LUMEN_QUANTIZE_PURE")]
    pure: bool,
    /// Type of output.weight (a ggml type name: q8_0, f16, q6_k …).
    #[arg(
        long,
        value_name = "GGML_TYPE",
        env = "LUMEN_QUANTIZE_OUTPUT_TENSOR_TYPE"
    )]
    output_tensor_type: Option<String>,
    /// Type of token_embd.weight (a ggml type name).
    #[arg(
        long,
        value_name = "GGML_TYPE",
        env = "LUMEN_QUANTIZE_TOKEN_EMBEDDING_TYPE"
    )]
    token_embedding_type: Option<String>,
    /// Overwrite an existing output file (never the input).
    #[arg(long, env = "LUMEN_QUANTIZE_FORCE")]
    force: bool,
}

fn main() -> ExitCode {
    cli::exit_with(run(Args::parse()))
}

fn options(args: Args) -> Result<QuantizeOptions, QuantizeError> {
    let file_type = FileType::parse(&args.file_type)
        .ok_or_else(|| QuantizeError::UnknownType(args.file_type.clone()))?;
    let tensor_type = |v: &Option<String>, option| {
        v.as_deref()
            .map(|s| parse_tensor_type(s, option))
            .transpose()
    };
    let types = TypeOptions {
        pure: args.pure,
        output_tensor_type: tensor_type(&args.output_tensor_type, "--output-tensor-type")?,
        token_embedding_type: tensor_type(&args.token_embedding_type, "--token-embedding-type")?,
        leave_output_tensor: args.leave_output_tensor,
    };
    let mut opts = QuantizeOptions::new(args.input, args.output, file_type);
    opts.allow_requantize = args.allow_requantize;
    opts.types = types;
    opts.force = args.force;
    Ok(opts)
}

fn run(args: Args) -> anyhow::Result<()> {
    cli::set_threads(args.threads)?;
    cli::clean_up_on_ctrl_c()?;
    let opts = options(args)?;
    let start = std::time::Instant::now();
    let summary = progress::track(
        |on_event| quantize::quantize(&opts, on_event),
        |ft| ft.name(),
        |p, index, tensor| p.step_line(index, tensor.new_bytes as u64, &tensor_line(tensor)),
    )?;
    print_totals(&summary, start.elapsed());
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// `blk.0.attn_v.weight [2048, 512] F16 → Q6_K  2.00 MiB → 0.82 MiB`
fn tensor_line(t: &TensorReport) -> String {
    let size = if t.from == t.to {
        format!("{} (kept)", mib(t.old_bytes as u64))
    } else {
        format!("{} → {}", mib(t.old_bytes as u64), mib(t.new_bytes as u64))
    };
    format!(
        "{:<36} {:<18} {:>4} → {:<4}  {size}",
        t.name,
        format!("{:?}", t.shape),
        t.from.name(),
        t.to.name()
    )
}

/// Sizes in MiB and bits per weight, as llama-quantize reports them.
fn print_totals(s: &Summary, elapsed: std::time::Duration) {
    let bpw = |bytes: u64| bytes as f64 * 8.0 / s.n_elements.max(1) as f64;
    eprintln!(
        "model size = {} ({:.2} BPW)\nquant size = {} ({:.2} BPW)",
        mib(s.old_bytes),
        bpw(s.old_bytes),
        mib(s.new_bytes),
        bpw(s.new_bytes)
    );
    eprintln!(
        "wrote {} ({}, {} tensors, {}) in {:.2} s",
        s.output.display(),
        s.file_type.name(),
        s.n_tensors,
        mib(s.file_bytes),
        elapsed.as_secs_f64()
    );
}
