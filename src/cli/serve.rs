//! `lumen serve`: loads the model, starts the engine thread and serves the OpenAI-compatible API
//! (see `lumen::server`) until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use lumen::server::engine::Engine;
use lumen::server::{api, ServerState};

use super::load::{load_model, thread_pool, AnyModel};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// GGUF model file.
    #[arg(short = 'm', long = "model", env = "LUMEN_MODEL")]
    model: PathBuf,
    /// Address to listen on (0.0.0.0 exposes the server to the network).
    #[arg(long = "host", env = "LUMEN_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 = any free port; the chosen one is printed).
    #[arg(long = "port", env = "LUMEN_PORT", default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/* (/health stays open).
    #[arg(long = "api-key", env = "LUMEN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests served at the same time, each with its own KV cache of -c tokens.
    #[arg(long = "parallel", env = "LUMEN_PARALLEL", default_value_t = 1)]
    parallel: usize,
    /// Requests that may wait for a slot; more get 503.
    #[arg(long = "queue", env = "LUMEN_QUEUE", default_value_t = 16)]
    queue: usize,
    /// Context size in tokens, per slot (prompt + answer).
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
    /// Jinja chat template to use instead of the model's.
    #[arg(long = "chat-template-file", env = "LUMEN_CHAT_TEMPLATE_FILE")]
    chat_template_file: Option<PathBuf>,
    /// Model id for /v1/models and the requests' `model` field (default: the file stem).
    #[arg(short = 'a', long = "alias", env = "LUMEN_ALIAS")]
    alias: Option<String>,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.parallel >= 1, "--parallel must be at least 1");
    anyhow::ensure!(args.ctx_size >= 16, "-c must be at least 16");
    let (pool, threads) = thread_pool(args.threads)?;
    let loaded = load_model(&args.model, true)?;
    let template = match loaded.chat_template(args.chat_template_file.as_deref()) {
        Ok(t) => Some(t),
        Err(e) if args.chat_template_file.is_none() => {
            eprintln!("warning: {e:#}; /v1/chat/completions will answer 400");
            None
        }
        Err(e) => return Err(e),
    };
    eprintln!("{}", loaded.summary(threads));
    let model_id = args.alias.clone().unwrap_or_else(|| {
        let stem = args.model.file_stem().unwrap_or_default();
        stem.to_string_lossy().into_owned()
    });
    let tokenizer = Arc::new(loaded.tokenizer);
    let run_in = move |work: Box<dyn FnOnce() + Send>| pool.install(work);
    let (n, c, q, tok) = (args.parallel, args.ctx_size, args.queue, tokenizer.clone());
    let (engine, _worker) = match loaded.model {
        AnyModel::Text(m) => Engine::start(m, tok, n, c, q, run_in),
        AnyModel::Vision(m) => Engine::start(m, tok, n, c, q, run_in),
    }
    .context("cannot start the engine thread")?;
    let state = Arc::new(ServerState {
        engine,
        tokenizer,
        template,
        model_id,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        created: api::now(),
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local: SocketAddr = listener.local_addr()?;
        if !local.ip().is_loopback() && state.api_key.is_none() {
            eprintln!("warning: listening on {local} without --api-key: anyone who can reach it can use the model");
        }
        eprintln!(
            "lumen serve: listening on http://{local} | model '{}' | {} slot(s) × {} tokens, queue {}{}",
            state.model_id,
            args.parallel,
            args.ctx_size,
            args.queue,
            if state.api_key.is_some() { " | API key required" } else { "" },
        );
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        tokio::select! {
            r = lumen::server::serve(listener, state, std::future::pending()) => r.context("server failed"),
            _ = shutdown => {
                eprintln!("lumen serve: stopping");
                Ok(())
            }
        }
    })
}
