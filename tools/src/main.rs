//! `lumen-tools`: developer tools that are not part of the runtime.

mod membw;
mod synth;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lumen::registry::Registry;

#[derive(Parser)]
#[command(name = "lumen-tools", about = "Lumen developer tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a random-weight GGUF with the exact shapes of a real model (see models.toml).
    Synth {
        /// Shape id from models.toml's [[synthetic]] list, e.g. llama-3.2-1b.
        #[arg(long)]
        shape: String,
        /// Weight type: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K … Q6_K, or Q4_K_M.
        #[arg(long = "type", default_value = "Q4_0")]
        ty: String,
        /// Output file.
        #[arg(short = 'o', long)]
        output: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// List the shapes `synth` knows.
    Shapes,
    /// Measure main-memory read bandwidth (the decode-speed bound).
    Membw {
        /// Thread counts (comma-separated).
        #[arg(short = 't', long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Buffer size in MiB (far above the last-level cache).
        #[arg(long, default_value_t = 2048)]
        size_mib: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let registry = Registry::builtin();
    match Cli::parse().command {
        Command::Synth {
            shape,
            ty,
            output,
            seed,
        } => {
            let known = || {
                registry
                    .synthetic
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let shape = registry
                .synthetic
                .iter()
                .find(|s| s.id == shape)
                .with_context(|| format!("unknown shape '{shape}' (known: {})", known()))?;
            let mix = synth::WeightMix::parse(&ty)?;
            let bytes = synth::synth(shape, mix, &output, seed)?;
            eprintln!(
                "wrote {} ({:.2} GiB, {} {ty})",
                output.display(),
                bytes as f64 / (1u64 << 30) as f64,
                shape.id
            );
        }
        Command::Membw { threads, size_mib } => {
            for t in threads {
                let bw = membw::read_bandwidth(t, size_mib << 20, 5)?;
                println!(
                    "read bandwidth, {t} thread(s), {size_mib} MiB buffer: {:.1} GB/s",
                    bw / 1e9
                );
            }
        }
        Command::Shapes => {
            for s in &registry.synthetic {
                println!(
                    "{}: {} layers, embd {}, ffn {}, heads {}/{}, vocab {}",
                    s.id, s.n_layer, s.n_embd, s.n_ff, s.n_head, s.n_head_kv, s.n_vocab
                );
            }
        }
    }
    Ok(())
}
