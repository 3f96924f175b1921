//! Command-line interface: every option defined once, with its environment variable, using
//! llama.cpp's flag names where a user would look for them.

mod bench;
mod chat;
mod convert;
mod forward;
mod inspect;
mod load;
mod perplexity;
mod pull;
mod quantize;
mod run;
mod serve;
mod sigbus;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "lumen",
    version,
    about = "Run quantized LLMs from GGUF files on the CPU"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate text from a prompt, streaming it to stdout.
    Run(run::RunArgs),
    /// Chat with a model in the terminal (its chat template, streamed answers, /? for help).
    Chat(chat::ChatArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions).
    Serve(serve::ServeArgs),
    /// Show a GGUF file's metadata and tensors.
    Inspect(inspect::InspectArgs),
    /// Measure prompt and generation speed (llama-bench's method and table).
    Bench(bench::BenchArgs),
    /// Convert a Hugging Face checkpoint directory to GGUF (runs lumen-convert; --help for options).
    Convert(forward::ForwardArgs),
    /// Quantize a GGUF model to another type or llama.cpp mix (runs lumen-quantize; --help for options).
    Quantize(forward::ForwardArgs),
    /// Perplexity of a model on a text file, computed the way llama.cpp's `llama-perplexity` does.
    Perplexity(perplexity::PerplexityArgs),
    /// Download a model from models.toml into the cache.
    Pull(pull::PullArgs),
    /// List the models in models.toml and which are in the cache.
    Models(pull::ModelsArgs),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Chat(args) => chat::chat(args),
        Command::Serve(args) => serve::serve(args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Bench(args) => bench::bench(args),
        Command::Convert(args) => convert::convert(args),
        Command::Quantize(args) => quantize::quantize(args),
        Command::Perplexity(args) => perplexity::perplexity(args),
        Command::Pull(args) => pull::pull(args),
        Command::Models(args) => pull::models(args),
    }
}
