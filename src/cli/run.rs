//! `lumen run`: one-shot generation, streamed to stdout, timings to stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use lumen::generate::{generate, Flow, GenerateParams};
use lumen::model::{Cache, Model};
use lumen::registry::{self, FetchEvent, Registry};
use lumen::tokenizer::{Tokenizer, IMAGE_TOKEN};

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
        Some(p) => resolve_model(p)?,
        None => fetch_default_model()?,
    };
    let loaded = super::load::load_model(&path, !args.no_mmap)?;
    let (model, tokenizer) = (&*loaded.model, &loaded.tokenizer);
    let vision = model.vision();
    if let (Some(image), None) = (args.images.first(), vision) {
        bail!(
            "--image {}: {} is a text-only model ({}); images need a vision model (mllama)",
            image.display(),
            path.display(),
            model.info().arch
        );
    }
    let ids = match vision {
        None => tokenizer.encode(&prompt, tokenizer.add_bos_default())?,
        Some(vision) => {
            // A raw prompt is tokenized the way the model's processor prepares it.
            let bos = tokenizer
                .bos()
                .map(|id| String::from_utf8_lossy(&tokenizer.token_bytes(id)).into_owned())
                .with_context(|| format!("{}: the vocabulary has no BOS token", path.display()))?;
            let text = vision.processor_prompt(&prompt, args.images.len(), &bos);
            let ids = tokenizer.encode(&text, tokenizer.add_bos_default())?;
            let image_token = vision.image_token();
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
            ids
        }
    };
    let load_time = load_start.elapsed();

    let n_ctx = context_size(&args, model.info().n_ctx_train);
    let kv = super::load::kv_cache(model, n_ctx, 1)?;
    let mut cache = model.new_cache(n_ctx);
    let mut line = format!("{} | {kv}", loaded.summary(threads));
    if let Some(vision) = vision {
        let vision_start = Instant::now();
        let mut n_tiles = Vec::new();
        for image_path in &args.images {
            let bytes = std::fs::read(image_path)
                .with_context(|| format!("cannot read image {}", image_path.display()))?;
            let name = image_path.display().to_string();
            let tiles = pool
                .install(|| vision.attach_image(&mut cache, &bytes, &name))
                .with_context(|| format!("cannot encode image {}", image_path.display()))?;
            n_tiles.push(tiles);
        }
        line = format!(
            "{line} | {}",
            vision_summary(&n_tiles, vision_start.elapsed())
        );
    }
    eprintln!("{line}");
    warn_forced_kernels(model.kernels());
    stream(&args, model, tokenizer, &mut cache, &ids, &pool, load_time)
}

/// `-m`: a file, else a model id of models.toml (fetched into the cache on first use, as
/// `lumen pull` does), the way `ollama run NAME` works.
fn resolve_model(arg: &Path) -> anyhow::Result<PathBuf> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    let registry = Registry::load(None)?;
    match arg.to_str().map(|name| registry.get(name)) {
        Some(Ok(entry)) => fetch(entry),
        Some(Err(e)) => bail!("{}: no such file, and {e}", arg.display()),
        None => bail!("{}: no such file", arg.display()),
    }
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
fn stream(
    args: &RunArgs,
    model: &dyn Model,
    tokenizer: &Tokenizer,
    cache: &mut Cache,
    ids: &[u32],
    pool: &rayon::ThreadPool,
    load_time: Duration,
) -> anyhow::Result<()> {
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
    fetch(registry.get(&registry.default)?)
}

/// A registered model from the cache, fetched and verified first if it is not there yet.
fn fetch(entry: &lumen::registry::ModelEntry) -> anyhow::Result<PathBuf> {
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
