//! `lumen bench`: llama-bench's flags, method and table.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use lumen::bench::{run_test, BenchResult, TestKind};
use lumen::gguf::GgufFile;
use lumen::model::Model;
use serde_json::json;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// GGUF model file.
    #[arg(short = 'm', long = "model", env = "LUMEN_MODEL")]
    model: PathBuf,
    /// Prompt lengths to test (comma-separated; 0 skips).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Generation lengths to test (comma-separated; 0 skips).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_gen: Vec<usize>,
    /// Thread counts to test (comma-separated).
    #[arg(
        short = 't',
        long = "threads",
        value_delimiter = ',',
        env = "LUMEN_THREADS"
    )]
    threads: Vec<usize>,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    repetitions: usize,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Md)]
    output: Output,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Md,
    Csv,
    Json,
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let file = Arc::new(GgufFile::open(&args.model)?);
    let model = lumen::model::load(file.clone())?;
    let threads = if args.threads.is_empty() {
        vec![std::thread::available_parallelism().map_or(1, |n| n.get())]
    } else {
        args.threads.clone()
    };
    let tests: Vec<TestKind> = args
        .n_prompt
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| TestKind::Prompt(n))
        .chain(
            args.n_gen
                .iter()
                .filter(|&&n| n > 0)
                .map(|&n| TestKind::Generate(n)),
        )
        .collect();
    let info = ModelInfo::new(&args.model, &file, &*model);
    if matches!(args.output, Output::Md) {
        println!("| model | size | params | backend | threads | test | t/s |");
        println!("| --- | ---: | ---: | --- | ---: | ---: | ---: |");
    }
    if matches!(args.output, Output::Csv) {
        println!("model_filename,model_type,model_size,model_n_params,backends,n_threads,n_prompt,n_gen,avg_ns,stddev_ns,avg_ts,stddev_ts");
    }
    let mut json_rows = Vec::new();
    for &t in &threads {
        anyhow::ensure!(t > 0, "-t: thread counts must be at least 1");
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build()?;
        for &test in &tests {
            let samples = pool
                .install(|| run_test(&*model, test, args.repetitions, 1234))
                .with_context(|| format!("{} with {t} threads", test.label()))?;
            let result = BenchResult {
                test,
                n_threads: t,
                samples,
            };
            match args.output {
                Output::Md => println!(
                    "| {} | {} | {} | {} | {} | {} | {:.2} ± {:.2} |",
                    info.model_type,
                    info.size_label(),
                    info.params_label(),
                    info.backend,
                    t,
                    test.label(),
                    result.avg_ts(),
                    result.stddev_ts()
                ),
                Output::Csv => {
                    let (p, g) = counts(test);
                    println!(
                        "{},{},{},{},{},{t},{p},{g},{:.0},{:.0},{:.6},{:.6}",
                        info.filename,
                        info.model_type,
                        info.size,
                        info.n_params,
                        info.backend,
                        result.avg_ns(),
                        result.stddev_ns(),
                        result.avg_ts(),
                        result.stddev_ts()
                    )
                }
                Output::Json => json_rows.push(info.json_row(&result)),
            }
        }
    }
    if matches!(args.output, Output::Json) {
        println!("{}", serde_json::to_string_pretty(&json_rows)?);
    }
    Ok(())
}

fn counts(test: TestKind) -> (usize, usize) {
    match test {
        TestKind::Prompt(n) => (n, 0),
        TestKind::Generate(n) => (0, n),
    }
}

struct ModelInfo {
    filename: String,
    model_type: String,
    size: usize,
    n_params: usize,
    backend: String,
}

impl ModelInfo {
    fn new(path: &std::path::Path, file: &GgufFile, model: &dyn Model) -> Self {
        let n_params = file.tensors().iter().map(|t| t.n_elements()).sum();
        let size = file.tensors().iter().map(|t| t.n_bytes).sum();
        let ty = dominant_type(file);
        Self {
            filename: path.display().to_string(),
            model_type: format!("{} {}L {ty}", model.info().arch, model.info().n_layer),
            size,
            n_params,
            backend: format!(
                "CPU ({}{})",
                model.kernels().isa.name(),
                if lumen::kernels::cpu::amx_usable() {
                    ", AMX usable, unused"
                } else {
                    ""
                }
            ),
        }
    }

    fn size_label(&self) -> String {
        format!("{:.2} MiB", self.size as f64 / (1 << 20) as f64)
    }

    fn params_label(&self) -> String {
        format!("{:.2} M", self.n_params as f64 / 1e6)
    }

    fn json_row(&self, r: &BenchResult) -> serde_json::Value {
        let (n_prompt, n_gen) = counts(r.test);
        json!({
            "model_filename": self.filename,
            "model_type": self.model_type,
            "model_size": self.size,
            "model_n_params": self.n_params,
            "backends": self.backend,
            "n_threads": r.n_threads,
            "n_prompt": n_prompt,
            "n_gen": n_gen,
            "avg_ns": r.avg_ns().round() as u64,
            "stddev_ns": r.stddev_ns().round() as u64,
            "avg_ts": r.avg_ts(),
            "stddev_ts": r.stddev_ts(),
            "samples_ns": r.samples.iter().map(|d| d.as_nanos() as u64).collect::<Vec<_>>(),
            "samples_ts": r.samples_ts(),
        })
    }
}

/// The type holding most of the weight bytes (what llama-bench's "model" column names).
fn dominant_type(file: &GgufFile) -> &'static str {
    let mut bytes: std::collections::HashMap<&'static str, usize> = Default::default();
    for t in file.tensors() {
        *bytes.entry(t.ty.name()).or_default() += t.n_bytes;
    }
    bytes
        .into_iter()
        .max_by_key(|&(_, b)| b)
        .map_or("?", |(name, _)| name)
}
