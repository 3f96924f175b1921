//! Loading a model for an interactive command: the file, the model, its tokenizer and chat
//! template, with the one-line start-up summary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lumen::chat::ChatTemplate;
use lumen::gguf::{GgufFile, OpenOptions};
use lumen::model::Model;
use lumen::tokenizer::{Tokenizer, VocabSpec};

pub struct LoadedModel {
    pub path: PathBuf,
    pub file: Arc<GgufFile>,
    pub model: Box<dyn Model>,
    pub tokenizer: Tokenizer,
    pub load_time: Duration,
}

pub fn load_model(path: &Path, mmap: bool) -> anyhow::Result<LoadedModel> {
    let start = Instant::now();
    let file = Arc::new(GgufFile::open_with(path, OpenOptions { mmap })?);
    if mmap {
        super::sigbus::report_shrunk_model_file(path);
    }
    let model = lumen::model::load(file.clone())?;
    let tokenizer = Tokenizer::from_spec(VocabSpec::from_gguf(file.metadata())?)
        .with_context(|| format!("{}: cannot build the tokenizer", path.display()))?;
    Ok(LoadedModel {
        path: path.to_path_buf(),
        file,
        model,
        tokenizer,
        load_time: start.elapsed(),
    })
}

impl LoadedModel {
    /// The chat template: `override_file` if given, else the GGUF's. No silent fallback: a
    /// model without a template is an error that says how to supply one.
    pub fn chat_template(&self, override_file: Option<&Path>) -> anyhow::Result<ChatTemplate> {
        let tok = &self.tokenizer;
        let text = |id: Option<u32>| {
            id.map(|i| String::from_utf8_lossy(&tok.token_bytes(i)).into_owned())
                .unwrap_or_default()
        };
        let (bos, eos) = (text(tok.bos()), text(tok.eos()));
        if let Some(path) = override_file {
            let source = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read chat template {}", path.display()))?;
            return Ok(ChatTemplate::new(
                &path.display().to_string(),
                &source,
                &bos,
                &eos,
            )?);
        }
        ChatTemplate::from_gguf(&self.file, &bos, &eos)?.with_context(|| {
            format!(
                "{} has no chat template (tokenizer.chat_template); pass --chat-template-file FILE",
                self.path.display()
            )
        })
    }

    /// The start-up summary line.
    pub fn summary(&self, threads: usize) -> String {
        format!(
            "lumen: {} | {} | {} | {} | kernels {} | {} threads | loaded in {:.0} ms",
            self.path.display(),
            model_summary(&*self.model),
            file_summary(&self.file),
            packed_summary(self.model.packed_bytes()),
            self.model.kernels().isa.name(),
            threads,
            self.load_time.as_secs_f64() * 1e3,
        )
    }
}

/// Architecture and shape, for start-up lines: `llama, 30 layers, 576 embd, 9 heads (3 kv),
/// vocab 49152` (plus the architecture's own facts, and a vision model's encoder).
pub fn model_summary(model: &dyn Model) -> String {
    let i = model.info();
    let mut s = format!(
        "{}, {} layers, {} embd, {} heads ({} kv), vocab {}",
        i.arch, i.n_layer, i.n_embd, i.n_head, i.n_head_kv, i.n_vocab
    );
    for extra in i
        .detail
        .into_iter()
        .chain(model.vision().map(|v| v.describe()))
    {
        s.push_str(", ");
        s.push_str(&extra);
    }
    s
}

/// The KV cache `n_slots` slots of `n_ctx` positions reserve, checked against the machine's
/// memory, and its part of the start-up line: `KV cache 90.0 MiB (4096 ctx)`.
pub fn kv_cache(model: &dyn Model, n_ctx: usize, n_slots: usize) -> anyhow::Result<String> {
    let bytes = lumen::model::kv_cache::size(model.info().kv_bytes_per_token, n_ctx, n_slots)?;
    let slots = if n_slots > 1 {
        format!(" × {n_slots} slots")
    } else {
        String::new()
    };
    Ok(format!(
        "KV cache {:.1} MiB ({n_ctx} ctx{slots})",
        bytes as f64 / (1u64 << 20) as f64
    ))
}

/// The memory cost of the load-time packed weight copies, for start-up lines.
pub fn packed_summary(bytes: usize) -> String {
    if bytes == 0 {
        "weights not repacked".to_string()
    } else {
        format!(
            "+{:.1} MiB repacked weights",
            bytes as f64 / (1 << 20) as f64
        )
    }
}

/// Parameters, tensor types, file size and how it is held, for start-up lines.
pub fn file_summary(file: &GgufFile) -> String {
    let params = file.n_params() as f64;
    let params = if params >= 1e9 {
        format!("{:.2}B", params / 1e9)
    } else {
        format!("{:.0}M", params / 1e6)
    };
    format!(
        "{params} params ({}) | {:.1} MiB {}",
        file.type_mix(),
        file.file_len() as f64 / (1 << 20) as f64,
        if file.is_mapped() { "mapped" } else { "read" }
    )
}

/// A rayon pool of `threads` (default: every core).
pub fn thread_pool(threads: Option<usize>) -> anyhow::Result<(rayon::ThreadPool, usize)> {
    let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(n > 0, "-t must be at least 1");
    Ok((rayon::ThreadPoolBuilder::new().num_threads(n).build()?, n))
}

/// The sampling flags, llama.cpp's names and defaults, shared by `run` and `chat`.
#[derive(clap::Args, Debug)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 = greedy.
    #[arg(long = "temp", env = "LUMEN_TEMP", default_value_t = 0.8)]
    pub temp: f32,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long = "top-k", env = "LUMEN_TOP_K", default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1.0 = off).
    #[arg(long = "top-p", env = "LUMEN_TOP_P", default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than min-p × the most likely one (0 = off).
    #[arg(long = "min-p", env = "LUMEN_MIN_P", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalise repeating recent tokens (1.0 = off).
    #[arg(
        long = "repeat-penalty",
        env = "LUMEN_REPEAT_PENALTY",
        default_value_t = 1.0
    )]
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    #[arg(
        long = "repeat-last-n",
        env = "LUMEN_REPEAT_LAST_N",
        default_value_t = 64
    )]
    pub repeat_last_n: usize,
    /// Random seed (-1 = random).
    #[arg(short = 's', long = "seed", env = "LUMEN_SEED", default_value_t = -1, allow_negative_numbers = true)]
    pub seed: i64,
}

impl SamplingArgs {
    pub fn params(&self) -> lumen::sampling::SamplingParams {
        lumen::sampling::SamplingParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: u64::try_from(self.seed).unwrap_or_else(|_| rand::random()),
        }
    }
}
