//! `lumen run`: one-shot generation, streamed to stdout, timings to stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use lumen::generate::{generate, Decoder, Flow, GenerateParams};
use lumen::gguf::{GgufFile, OpenOptions};
use lumen::model::mllama::{self, image_proc, Mllama};
use lumen::model::Llama;
use lumen::registry::{self, FetchEvent, Registry};
use lumen::tokenizer::{Tokenizer, VocabSpec, IMAGE_TOKEN};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// GGUF model file; without it, the default model of models.toml (fetched on first use).
    #[arg(short = 'm', long = "model", env = "LUMEN_MODEL")]
    model: Option<PathBuf>,
    /// Prompt text.
    #[arg(short = 'p', long = "prompt", env = "LUMEN_PROMPT")]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(
        short = 'f',
        long = "file",
        env = "LUMEN_PROMPT_FILE",
        conflicts_with = "prompt"
    )]
    file: Option<PathBuf>,
    /// Tokens to generate (-1 = until end of generation or a full context).
    #[arg(short = 'n', long = "n-predict", env = "LUMEN_N_PREDICT", default_value_t = -1, allow_negative_numbers = true)]
    n_predict: i64,
    /// Context size in tokens (0 = the model's training context).
    #[arg(
        short = 'c',
        long = "ctx-size",
        env = "LUMEN_CTX_SIZE",
        default_value_t = 4096
    )]
    ctx_size: usize,
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads", env = "LUMEN_THREADS")]
    threads: Option<usize>,
    #[command(flatten)]
    sampling: super::load::SamplingArgs,
    /// Read the model into memory instead of mapping it.
    #[arg(long = "no-mmap", env = "LUMEN_NO_MMAP")]
    no_mmap: bool,
    /// Print the prompt's tokens before generating.
    #[arg(long = "verbose-prompt", env = "LUMEN_VERBOSE_PROMPT")]
    verbose_prompt: bool,
    /// An image for a vision model (repeatable); bound to the prompt's `<|image|>` tokens in
    /// order, one prepended per image when the prompt has none.
    #[arg(long = "image", env = "LUMEN_IMAGE")]
    images: Vec<PathBuf>,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let prompt = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read prompt file {}", f.display()))?,
        (None, None) => bail!("no prompt: pass -p TEXT or -f FILE"),
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        bail!("-t must be at least 1");
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;

    let load_start = Instant::now();
    let path = match &args.model {
        Some(p) => p.clone(),
        None => fetch_default_model()?,
    };
    let file = Arc::new(GgufFile::open_with(
        &path,
        OpenOptions {
            mmap: !args.no_mmap,
        },
    )?);
    if mllama::is_mllama(&file) {
        return run_mllama(&args, &prompt, &path, file, load_start, &pool, threads);
    }
    if let Some(image) = args.images.first() {
        bail!(
            "--image {}: {} is a text-only model ({}); images need a vision model (mllama)",
            image.display(),
            path.display(),
            file.architecture()?
        );
    }
    let model = Llama::load(file.clone())?;
    let tokenizer = load_tokenizer(&file, &path)?;
    let load_time = load_start.elapsed();
    let cfg = &model.config;
    eprintln!(
        "lumen: {} | llama, {} layers, {} embd, {} heads ({} kv), vocab {} | {} | {} | kernels {} | {} threads",
        path.display(),
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_head,
        cfg.n_head_kv,
        cfg.n_vocab,
        file_summary(&file),
        packed_summary(model.packed_bytes()),
        model.kernels().isa.name(),
        threads
    );
    warn_forced_kernels(model.kernels());

    let ids = tokenizer.encode(&prompt, tokenizer.add_bos_default())?;
    let n_ctx = context_size(&args, cfg.n_ctx_train);
    let mut cache = model.new_cache(n_ctx);
    stream(
        &args, &model, &tokenizer, &mut cache, &ids, &pool, load_time,
    )
}

/// `lumen run` on a Llama 3.2 Vision file: images encoded and attached, then the prompt as the
/// reference processor tokenizes it.
fn run_mllama(
    args: &RunArgs,
    prompt: &str,
    path: &Path,
    file: Arc<GgufFile>,
    load_start: Instant,
    pool: &rayon::ThreadPool,
    threads: usize,
) -> anyhow::Result<()> {
    let model = Mllama::load(file.clone())?;
    let tokenizer = load_tokenizer(&file, path)?;
    let load_time = load_start.elapsed();

    let bos = tokenizer
        .bos()
        .map(|id| String::from_utf8_lossy(&tokenizer.token_bytes(id)).into_owned())
        .with_context(|| format!("{}: the vocabulary has no BOS token", path.display()))?;
    let text = mllama::processor_prompt(prompt, args.images.len(), &bos);
    let ids = tokenizer.encode(&text, tokenizer.add_bos_default())?;
    let image_token = model.text.config.image_token();
    if tokenizer.image_token() != Some(image_token) {
        bail!(
            "{}: the vocabulary's {IMAGE_TOKEN} is {:?}, the model's image row is {image_token}",
            path.display(),
            tokenizer.image_token()
        );
    }
    let n_image_tokens = ids.iter().filter(|&&t| t == image_token).count();
    if n_image_tokens != args.images.len() {
        bail!(
            "the prompt has {n_image_tokens} {IMAGE_TOKEN} token(s) but {} image(s) were given with --image",
            args.images.len()
        );
    }

    let cfg = &model.text.config.llama;
    let n_ctx = context_size(args, cfg.n_ctx_train);
    let mut cache = model.new_cache(n_ctx);
    let vision_start = Instant::now();
    let mut n_tiles = Vec::new();
    for image_path in &args.images {
        let rgb = image_proc::load_image(image_path)?;
        let image = image_proc::preprocess(&rgb, &model.preprocess);
        n_tiles.push(image.num_tiles);
        pool.install(|| model.attach_processed(&mut cache, &image, &mut |_| {}))
            .with_context(|| format!("cannot encode image {}", image_path.display()))?;
    }
    let vision_time = vision_start.elapsed();
    eprintln!(
        "lumen: {} | mllama, {} layers ({} cross), {} embd, {} heads ({} kv), vocab {} | vision {} + {} layers, {} px tiles | {} | {} | kernels {} | {} threads | {}",
        path.display(),
        cfg.n_layer,
        model.text.config.cross_layers.len(),
        cfg.n_embd,
        cfg.n_head,
        cfg.n_head_kv,
        cfg.n_vocab,
        model.vision.config.n_layer,
        model.vision.config.n_global_layer,
        model.vision.config.image_size,
        file_summary(&file),
        packed_summary(model.text.packed_bytes()),
        model.text.kernels().isa.name(),
        threads,
        vision_summary(&n_tiles, vision_time)
    );
    warn_forced_kernels(model.text.kernels());
    stream(
        args,
        &model.text,
        &tokenizer,
        &mut cache,
        &ids,
        pool,
        load_time,
    )
}

/// What the vision encoder did, for the start-up line.
fn vision_summary(n_tiles: &[usize], time: Duration) -> String {
    if n_tiles.is_empty() {
        return "vision encoder: no image".to_string();
    }
    format!(
        "vision encoder {} image(s), tiles {n_tiles:?}, {:.0} ms",
        n_tiles.len(),
        time.as_secs_f64() * 1e3
    )
}

fn load_tokenizer(file: &GgufFile, path: &Path) -> anyhow::Result<Tokenizer> {
    Tokenizer::from_spec(VocabSpec::from_gguf(file.metadata())?)
        .with_context(|| format!("{}: cannot build the tokenizer", path.display()))
}

/// Parameters, tensor types, file size and how it is held, for the start-up line.
fn file_summary(file: &GgufFile) -> String {
    super::load::file_summary(file)
}

fn warn_forced_kernels(kernels: &lumen::kernels::KernelSet) {
    if let Some(problem) = lumen::kernels::kernel_set::forced_kernels_problem() {
        eprintln!("lumen: warning: {problem}; using {}", kernels.isa.name());
    }
}

/// `-c`, where 0 means the model's training context.
fn context_size(args: &RunArgs, n_ctx_train: usize) -> usize {
    if args.ctx_size == 0 {
        n_ctx_train
    } else {
        args.ctx_size
    }
}

/// Generates after `ids`, streaming the text to stdout and the timings to stderr.
fn stream<M>(
    args: &RunArgs,
    model: &M,
    tokenizer: &Tokenizer,
    cache: &mut M::Cache,
    ids: &[u32],
    pool: &rayon::ThreadPool,
    load_time: Duration,
) -> anyhow::Result<()>
where
    M: Decoder + Sync,
    M::Cache: Send,
{
    if args.verbose_prompt {
        eprintln!("prompt: {} tokens: {:?}", ids.len(), ids);
    }
    let params = GenerateParams {
        n_predict: usize::try_from(args.n_predict).ok(),
        sampling: args.sampling.params(),
    };
    let mut stdout = std::io::stdout();
    let mut write_failed = None;
    let stats = pool.install(|| {
        generate(
            model,
            tokenizer,
            cache,
            ids,
            &params,
            &mut |text| match stdout
                .write_all(text.as_bytes())
                .and_then(|_| stdout.flush())
            {
                Ok(()) => Flow::Continue,
                Err(e) => {
                    write_failed = Some(e);
                    Flow::Stop
                }
            },
        )
    })?;
    writeln!(stdout).ok();
    if let Some(e) = write_failed {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("cannot write to stdout");
        }
    }
    eprintln!(
        "timings: load {:.0} ms | prompt {} tokens, {:.2} tokens/s | generation {} tokens, {:.2} tokens/s | stop: {:?}",
        load_time.as_secs_f64() * 1e3,
        stats.n_prompt,
        stats.prompt_tokens_per_second(),
        stats.n_generated,
        stats.generation_tokens_per_second(),
        stats.stop
    );
    Ok(())
}

/// The default model of models.toml (`$LUMEN_REGISTRY`, else the built-in one), fetched into
/// the cache on first use.
fn fetch_default_model() -> anyhow::Result<PathBuf> {
    let registry = Registry::load(None)?;
    let entry = registry.get(&registry.default)?;
    let cache = registry::cache_dir();
    let mut last_percent = u64::MAX;
    let path = entry.ensure(&cache, &mut |event| match event {
        FetchEvent::Downloading { id, source } => eprintln!(
            "lumen: fetching {id} from {source} into {}",
            cache.display()
        ),
        FetchEvent::Extracting { bytes, total, .. } => {
            let percent = bytes * 100 / total.max(1);
            if percent / 25 != last_percent / 25 {
                eprintln!("lumen: extracting {percent}%");
                last_percent = percent;
            }
        }
        FetchEvent::Verified { id, path } => {
            eprintln!("lumen: {id} verified (sha256) at {}", path.display())
        }
    })?;
    Ok(path)
}

/// The memory cost of the load-time packed weight copies, for the start-up line.
fn packed_summary(bytes: usize) -> String {
    if bytes == 0 {
        "weights not repacked".to_string()
    } else {
        format!(
            "+{:.1} MiB repacked weights",
            bytes as f64 / (1 << 20) as f64
        )
    }
}
