//! `lumen perplexity`: llama-perplexity's flags, method and output lines.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use lumen::gguf::GgufFile;
use lumen::perplexity::{
    perplexity as run_perplexity, tokenize, PerplexityEvent, PerplexityOptions,
};
use lumen::tokenizer::{Tokenizer, VocabSpec};

#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    /// GGUF model file.
    #[arg(short = 'm', long = "model", env = "LUMEN_MODEL")]
    model: PathBuf,
    /// Text file to measure (at least 2 × context tokens long).
    #[arg(short = 'f', long = "file", env = "LUMEN_FILE")]
    file: PathBuf,
    /// Tokens per chunk; the second half of each chunk is scored.
    #[arg(
        short = 'c',
        long = "ctx-size",
        env = "LUMEN_CTX_SIZE",
        default_value_t = lumen::perplexity::DEFAULT_N_CTX
    )]
    ctx_size: usize,
    /// Tokens per forward pass (capped at the context size).
    #[arg(
        short = 'b',
        long = "batch-size",
        env = "LUMEN_BATCH_SIZE",
        default_value_t = 2048
    )]
    batch_size: usize,
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads", env = "LUMEN_THREADS")]
    threads: Option<usize>,
    /// Stop after this many chunks (default: all).
    #[arg(long = "chunks", env = "LUMEN_CHUNKS")]
    chunks: Option<usize>,
}

pub fn perplexity(args: PerplexityArgs) -> anyhow::Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        bail!("-t must be at least 1");
    }
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read the text file {}", args.file.display()))?;
    let file = Arc::new(GgufFile::open(&args.model)?);
    let model = lumen::model::load(file.clone())?;
    let tokenizer = Tokenizer::from_spec(VocabSpec::from_gguf(file.metadata())?)
        .with_context(|| format!("{}: cannot build the tokenizer", args.model.display()))?;
    let n_ctx_train = model.info().n_ctx_train;
    if args.ctx_size > n_ctx_train && n_ctx_train > 0 {
        eprintln!(
            "perplexity: warning: the model was trained on only {n_ctx_train} context tokens ({} specified)",
            args.ctx_size
        );
    }

    eprintln!(
        "perplexity: {}",
        super::load::kv_cache(&*model, args.ctx_size, 1)?
    );
    eprintln!("perplexity: tokenizing the input ..");
    let (tokens, bos) = tokenize(&tokenizer, &text)
        .with_context(|| format!("cannot tokenize {}", args.file.display()))?;
    let opts = PerplexityOptions {
        n_ctx: args.ctx_size,
        n_batch: args.batch_size,
        max_chunks: args.chunks,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let mut stdout = std::io::stdout();
    let result = pool
        .install(|| {
            run_perplexity(&*model, &tokens, bos, &opts, &mut |event| {
                print_event(&mut stdout, event)
            })
        })
        .with_context(|| format!("perplexity of {}", args.file.display()))?;
    println!();
    match result.ppl_err {
        Some(err) => println!("Final estimate: PPL = {:.4} +/- {:.5}", result.ppl, err),
        None => println!(
            "Final estimate: PPL = {:.4} (no uncertainty: the log-probabilities do not vary)",
            result.ppl
        ),
    }
    Ok(())
}

/// llama-perplexity's lines: the setup and ETA on stderr, `[i]ppl,` per chunk on stdout.
fn print_event(stdout: &mut std::io::Stdout, event: PerplexityEvent) {
    match event {
        PerplexityEvent::Start {
            n_tokens,
            n_chunks,
            n_ctx,
            n_batch,
        } => eprintln!(
            "perplexity: {n_tokens} tokens; calculating perplexity over {n_chunks} chunks, n_ctx={n_ctx}, batch_size={n_batch}"
        ),
        PerplexityEvent::Chunk {
            index,
            n_chunks,
            running_ppl,
            elapsed,
        } => {
            if index == 1 {
                let secs = elapsed.as_secs_f64();
                eprintln!(
                    "perplexity: {secs:.2} seconds per pass - ETA {:.2} minutes",
                    secs * n_chunks as f64 / 60.0
                );
            }
            print!("[{index}]{running_ppl:.4},");
            let _ = stdout.flush();
        }
    }
}
