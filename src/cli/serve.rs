//! `lumen serve`: loads the model, starts the engine thread and serves the OpenAI-compatible API
//! (see `lumen::server`) until SIGTERM or Ctrl-C: the first lets admitted requests finish for
//! `--shutdown-grace` seconds, a second cancels them at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lumen::server::engine::Engine;
use lumen::server::{api, AllowedHosts, CorsOrigins, ServeLimits, ServerState, Shutdown};
use tokio::sync::mpsc;

use super::load::{kv_cache, load_model, thread_pool};

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
    /// Host names requests may carry in `Host` besides IP addresses and localhost (comma-
    /// separated; `*` = any). Guards a local server against DNS rebinding from web pages.
    #[arg(long = "allowed-hosts", env = "LUMEN_ALLOWED_HOSTS")]
    allowed_hosts: Option<String>,
    /// Web origins (e.g. `https://app.example`, comma-separated; `*` = any) whose pages may call
    /// the API from a browser: they get CORS headers and preflight answers. None by default.
    #[arg(long = "cors-origin", env = "LUMEN_CORS_ORIGIN")]
    cors_origin: Option<String>,
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
    /// Seconds a request body may take to arrive and a write to a client may stay blocked
    /// (a client that stops reading a stream); request heads and idle keep-alive connections
    /// get the smaller of this and 30 s.
    #[arg(long = "timeout", env = "LUMEN_TIMEOUT", default_value_t = 600.0)]
    timeout: f64,
    /// Connections open at once; more wait to be accepted.
    #[arg(
        long = "max-connections",
        env = "LUMEN_MAX_CONNECTIONS",
        default_value_t = 256
    )]
    max_connections: usize,
    /// Seconds admitted requests may go on after SIGTERM or Ctrl-C before they are cancelled.
    #[arg(
        long = "shutdown-grace",
        env = "LUMEN_SHUTDOWN_GRACE",
        default_value_t = 10.0
    )]
    shutdown_grace: f64,
}

impl ServeArgs {
    fn limits(&self) -> anyhow::Result<ServeLimits> {
        let seconds = |name: &str, v: f64| {
            anyhow::ensure!(
                v.is_finite() && v > 0.0 && v <= 86_400.0,
                "{name} must be between 0 and 86400 seconds, got {v}"
            );
            Ok(Duration::from_secs_f64(v))
        };
        anyhow::ensure!(
            self.max_connections >= 1,
            "--max-connections must be at least 1"
        );
        let io_timeout = seconds("--timeout", self.timeout)?;
        Ok(ServeLimits {
            header_timeout: io_timeout.min(ServeLimits::default().header_timeout),
            io_timeout,
            max_connections: self.max_connections,
            shutdown_grace: seconds("--shutdown-grace", self.shutdown_grace)?,
        })
    }
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.parallel >= 1, "--parallel must be at least 1");
    anyhow::ensure!(args.ctx_size >= 16, "-c must be at least 16");
    let limits = args.limits()?;
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
    let kv = kv_cache(&*loaded.model, args.ctx_size, args.parallel)?;
    let (n, c, q, tok) = (args.parallel, args.ctx_size, args.queue, tokenizer.clone());
    let on_death = || {
        eprintln!(
            "lumen serve: the engine stopped after an internal error; exiting with status 70 \
             so that a supervisor can restart the server"
        );
        std::process::exit(70);
    };
    let (engine, _worker) = Engine::start(loaded.model, tok, n, c, q, run_in, on_death)
        .context("cannot start the engine thread")?;
    let state = Arc::new(ServerState {
        engine,
        tokenizer,
        template,
        model_id,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        created: api::now(),
        limits,
        allowed_hosts: AllowedHosts::parse(args.allowed_hosts.as_deref().unwrap_or("")),
        cors: CorsOrigins::parse(args.cors_origin.as_deref().unwrap_or(""))?,
        metrics: Default::default(),
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Request handling (parsing, templates, tokenizing: CPU a flood of requests
        // multiplies) yields the cores to the engine's threads, which serve admitted requests.
        .on_thread_start(lower_thread_priority)
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
            "lumen serve: listening on http://{local} | model '{}' | {} slot(s) × {} tokens, {kv}, queue {}{}",
            state.model_id,
            args.parallel,
            args.ctx_size,
            args.queue,
            if state.api_key.is_some() { " | API key required" } else { "" },
        );
        let signals = forward_signals(state.clone(), limits.shutdown_grace)?;
        match lumen::server::serve(listener, state, signals).await.context("server failed")? {
            Shutdown::Drained => eprintln!("lumen serve: stopped"),
            Shutdown::Cancelled { in_flight } => {
                eprintln!("lumen serve: stopped, {in_flight} request(s) cancelled")
            }
        }
        Ok(())
    })
}

/// SIGTERM and Ctrl-C (SIGINT), each announced on stderr and passed on to the server.
fn forward_signals(state: Arc<ServerState>, grace: Duration) -> anyhow::Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        for nth in 1.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let in_flight = state.engine.in_flight();
            if nth == 1 {
                eprintln!(
                    "lumen serve: stopping: no new requests; {in_flight} in flight get up to {grace:?} to finish (signal again to cancel them now)"
                );
            } else {
                eprintln!("lumen serve: cancelling {in_flight} request(s)");
            }
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Lowers the calling thread's scheduling priority (nice 10; Linux sets it per thread): under
/// CPU contention the engine's threads, at the default priority, get ~90% of the cores.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; a failure changes nothing.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}
