//! `lumen serve`: an OpenAI-compatible HTTP server (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/models`, `/health`, `/metrics`) over the [`engine`], which runs the model on its own
//! thread.
//!
//! Every bad request gets an OpenAI error object (`{"error": {message, type, param, code}}`)
//! with a proper status, and the server goes on: 400 for malformed or ill-typed fields, prompts
//! that do not fit the context or images for a text-only model, 401 for a wrong API key, 404 for
//! looking up another model's id (requests may name any model), 413 for a body over
//! [`MAX_BODY_BYTES`], 408 for a body that does not arrive in time, 503 when every slot and
//! queue place is taken or the server is shutting down.
//! Connections, timeouts and shutdown are in [`listen`].

pub mod api;
pub mod engine;
pub mod listen;
pub mod metrics;

pub use listen::{serve, ServeLimits, Shutdown};

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::chat::{ChatTemplate, RenderOptions};
use crate::sampling::SamplingParams;
use crate::tokenizer::Tokenizer;
use api::{ApiError, GenerationFields};
use engine::{Engine, Event, FinishReason, Job, Place, SubmitError};
use metrics::{Metrics, Observed};

/// Largest request body: room for a few base64 images, far from memory trouble.
pub const MAX_BODY_BYTES: usize = 10 << 20;

/// What the handlers share.
pub struct ServerState {
    pub engine: Engine,
    pub tokenizer: Arc<Tokenizer>,
    /// The model's chat template; without one `/v1/chat/completions` answers 400.
    pub template: Option<ChatTemplate>,
    /// The id `/v1/models` lists (the file stem unless `--alias`). A request's `model` may name
    /// anything: one model is served, and clients that send their own default name (e.g.
    /// `gpt-4o-mini`) work unchanged, as with llama-server.
    pub model_id: String,
    /// When set, `/v1/*` and `/metrics` require `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Load time, as `created` in `/v1/models`.
    pub created: u64,
    pub limits: ServeLimits,
    /// Host names (besides IP literals and localhost) that requests may name in `Host`.
    pub allowed_hosts: AllowedHosts,
    /// Web origins whose pages may read the answers (`--cors-origin`).
    pub cors: CorsOrigins,
    /// What `GET /metrics` reports.
    pub metrics: Arc<Metrics>,
}

/// Which web origins get CORS headers. None by default: a page on another origin can still
/// *send* simple requests (the JSON content type and Host checks refuse those), but the browser
/// lets it read nothing. llama-server answers `Access-Control-Allow-Origin: *` to every page;
/// here a user names the origins (`--cors-origin https://app.example`), or `*` to get that.
#[derive(Clone, Debug, Default)]
pub enum CorsOrigins {
    #[default]
    None,
    Listed(Vec<HeaderValue>),
    Any,
}

impl CorsOrigins {
    /// From `--cors-origin`: comma-separated `scheme://host[:port]` origins, `*` for any.
    pub fn parse(list: &str) -> anyhow::Result<Self> {
        let mut origins = Vec::new();
        for o in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            if o == "*" {
                return Ok(CorsOrigins::Any);
            }
            let origin = o.trim_end_matches('/');
            let shaped = origin.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty() && !rest.is_empty() && !rest.contains('/')
            });
            let value = HeaderValue::from_str(origin).ok().filter(|_| shaped);
            let Some(value) = value else {
                anyhow::bail!("--cors-origin {o:?} is not an origin like https://app.example");
            };
            origins.push(value);
        }
        Ok(if origins.is_empty() {
            CorsOrigins::None
        } else {
            CorsOrigins::Listed(origins)
        })
    }

    /// The layer answering preflights and adding the headers (`None`: no CORS at all).
    fn layer(&self) -> Option<CorsLayer> {
        let allow = match self {
            CorsOrigins::None => return None,
            CorsOrigins::Listed(list) => AllowOrigin::list(list.clone()),
            CorsOrigins::Any => AllowOrigin::any(),
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
                .max_age(Duration::from_secs(600)),
        )
    }
}

/// Which `Host` headers the server answers. A web page can reach a loopback server, and through
/// DNS rebinding read its answers, only under a host *name* it controls (the class of Ollama's
/// CVE-2024-28224): IP literals, `localhost` and `*.localhost` are always allowed, other names
/// only when listed (`--allowed-hosts`, e.g. the name a reverse proxy forwards), or all of them
/// with `*`.
#[derive(Clone, Debug, Default)]
pub enum AllowedHosts {
    #[default]
    Local,
    Names(Vec<String>),
    Any,
}

impl AllowedHosts {
    /// From `--allowed-hosts`: comma-separated names, `*` for any.
    pub fn parse(list: &str) -> Self {
        let names: Vec<String> = list
            .split(',')
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect();
        if names.iter().any(|n| n == "*") {
            AllowedHosts::Any
        } else if names.is_empty() {
            AllowedHosts::Local
        } else {
            AllowedHosts::Names(names)
        }
    }

    /// Whether a request's `Host` header value (host, optional port) is answered.
    pub fn allows(&self, host_header: &str) -> bool {
        let host = strip_port(host_header.trim()).to_ascii_lowercase();
        if host.is_empty() {
            return false;
        }
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok();
        ip || host == "localhost"
            || host.ends_with(".localhost")
            || match self {
                AllowedHosts::Local => false,
                AllowedHosts::Names(names) => names.contains(&host),
                AllowedHosts::Any => true,
            }
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`; a bare IPv6 literal is kept.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 1]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The application: every route, the API-key check and the body-size cap.
pub fn router(state: Arc<ServerState>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/metrics", get(metrics));
    let app = Router::new()
        .merge(api)
        .route("/health", get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            read_body_in_time,
        ))
        // Outermost: decided on the request head, before any of the body is read.
        .layer(middleware::from_fn(refuse_announced_large_bodies))
        .layer(middleware::from_fn_with_state(state.clone(), check_head));
    // Outside the head checks: a browser's preflight carries no API key.
    let app = match state.cors.layer() {
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.with_state(state)
}

/// Checks that need only the request head, so that a refused client never holds a connection
/// while its body trickles in: the `Host` allow-list ([`AllowedHosts`]), the API key on the
/// API routes, and `Content-Type: application/json` on POST bodies (a web page can send
/// `text/plain` to any origin without a CORS preflight; JSON needs one).
async fn check_head(State(st): State<Arc<ServerState>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    if !st.allowed_hosts.allows(host) {
        return ApiError::invalid(
            format!(
                "host '{host}' is not allowed; start lumen serve with --allowed-hosts to answer it"
            ),
            None,
        )
        .with_code("host_not_allowed")
        .status(StatusCode::FORBIDDEN)
        .into_response();
    }
    let path = req.uri().path();
    let is_api = path.starts_with("/v1/") || path == "/completions" || path == "/chat/completions";
    if is_api || path == "/metrics" {
        if let Some(refused) = check_key(&st, &req) {
            return refused;
        }
    }
    if req.method() == axum::http::Method::POST && is_api {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return ApiError::invalid(
                "the request body must be JSON: send 'Content-Type: application/json'",
                None,
            )
            .with_code("unsupported_media_type")
            .status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .into_response();
        }
    }
    next.run(req).await
}

/// Reads the whole body before routing, within [`ServeLimits::io_timeout`] and
/// [`MAX_BODY_BYTES`]: a client that announces a body and trickles it (or never sends it) gets
/// 408 instead of holding the connection.
async fn read_body_in_time(
    State(st): State<Arc<ServerState>>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let limit = st.limits.io_timeout;
    let read = tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY_BYTES));
    match read.await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) if is_length_limit(&e) => too_large().into_response(),
        Ok(Err(e)) => {
            ApiError::invalid(format!("cannot read the request body: {e}"), None).into_response()
        }
        Err(_) => ApiError::invalid(
            format!("the request body did not arrive within {limit:?}"),
            None,
        )
        .with_code("request_timeout")
        .status(StatusCode::REQUEST_TIMEOUT)
        .into_response(),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Answers 413 at once when `Content-Length` is over the cap, before any of the body is read
/// (the body limit alone would first read [`MAX_BODY_BYTES`] of it).
async fn refuse_announced_large_bodies(req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large().into_response();
    }
    next.run(req).await
}

/// 503 for a request refused or cut short because the server is stopping.
fn shutting_down() -> ApiError {
    ApiError::server("the server is shutting down; retry on another instance or after it restarts")
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .with_code("server_shutting_down")
}

fn too_large() -> ApiError {
    ApiError::invalid(
        format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        None,
    )
    .status(StatusCode::PAYLOAD_TOO_LARGE)
}

/// The 401 answer when an API key is set and `req` does not carry it.
fn check_key(st: &ServerState, req: &Request) -> Option<Response> {
    let key = st.api_key.as_ref()?;
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.trim().as_bytes(), key.as_bytes()) {
        return None;
    }
    Some(
        ApiError::invalid(
            "invalid or missing API key: send 'Authorization: Bearer <key>'",
            None,
        )
        .with_code("invalid_api_key")
        .status(StatusCode::UNAUTHORIZED)
        .into_response(),
    )
}

/// Compares without an early exit, so the time taken does not tell how much of a guessed key
/// was right (only whether its length was).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health(State(st): State<Arc<ServerState>>) -> Response {
    if !st.engine.is_alive() {
        let body = json!({"status": "error", "error": "the engine has stopped"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({
        "status": "ok",
        "slots": st.engine.n_slots,
        "requests_in_flight": st.engine.in_flight(),
    }))
    .into_response()
}

async fn metrics(State(st): State<Arc<ServerState>>) -> Response {
    let body = st.metrics.render(&st.engine);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::invalid("no such endpoint", None)
        .with_code("not_found")
        .status(StatusCode::NOT_FOUND)
}

fn model_object(st: &ServerState) -> Value {
    json!({"id": st.model_id, "object": "model", "created": st.created, "owned_by": "lumen"})
}

async fn list_models(State(st): State<Arc<ServerState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_object(&st)]}))
}

async fn get_model(State(st): State<Arc<ServerState>>, Path(id): Path<String>) -> Response {
    // A lookup: only the served id is there. Requests, unlike lookups, may name any model.
    if id == st.model_id {
        return Json(model_object(&st)).into_response();
    }
    ApiError::invalid(
        format!(
            "the model '{id}' does not exist; this server serves '{}'",
            st.model_id
        ),
        Some("model"),
    )
    .with_code("model_not_found")
    .status(StatusCode::NOT_FOUND)
    .into_response()
}

fn body_error(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    let message = format!("cannot read the request body: {}", rejection.body_text());
    ApiError::invalid(message, None).status(status)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completion,
}

async fn chat_completions(
    State(st): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result: Result<_, ApiError> = async {
        let body = body.map_err(body_error)?;
        let req = api::parse_chat(&body)?;
        if !req.images.is_empty() && !st.engine.accepts_images {
            return Err(ApiError::invalid(
                format!("the model '{}' is text-only and does not accept images", st.model_id),
                Some("messages"),
            ));
        }
        let place = reserve(&st)?;
        let st2 = st.clone();
        let (prompt, images) = blocking(move || {
            check_images(&req.images)?;
            let template = st2.template.as_ref().ok_or_else(|| {
                ApiError::invalid(
                    "the model has no chat template; use /v1/completions or start the server with --chat-template-file",
                    None,
                )
            })?;
            let opts = RenderOptions {
                add_generation_prompt: true,
                date_string: None,
                ..Default::default()
            };
            let text = template
                .render(&req.messages, &opts)
                .map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))?;
            Ok((tokenize(&st2.tokenizer, &text, false)?, req.images))
        })
        .await?;
        Ok((req.fields, prompt, images, place))
    }
    .await;
    match result {
        Ok((fields, prompt, images, place)) => {
            run(st, Endpoint::Chat, fields, prompt, images, place).await
        }
        Err(e) => e.into_response(),
    }
}

async fn completions(
    State(st): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result: Result<_, ApiError> = async {
        let body = body.map_err(body_error)?;
        let req = api::parse_completion(&body)?;
        let place = reserve(&st)?;
        let st2 = st.clone();
        let prompt = blocking(move || {
            let add_bos = st2.tokenizer.add_bos_default();
            tokenize(&st2.tokenizer, &req.prompt, add_bos)
        })
        .await?;
        Ok((req.fields, prompt, place))
    }
    .await;
    match result {
        Ok((fields, prompt, place)) => {
            run(st, Endpoint::Completion, fields, prompt, Vec::new(), place).await
        }
        Err(e) => e.into_response(),
    }
}

/// A slot or queue place for a request, taken before its preparation (image decoding,
/// template, tokenizer: CPU and memory a flood of requests would otherwise multiply), or the
/// answer that there is none.
fn reserve(st: &ServerState) -> Result<Place, ApiError> {
    st.engine.reserve().map_err(submit_error)
}

fn submit_error(e: SubmitError) -> ApiError {
    let err = ApiError::server(e.to_string());
    match e {
        SubmitError::Busy(_) => err
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .with_code("server_busy"),
        SubmitError::ShuttingDown => shutting_down(),
        SubmitError::Stopped => err,
    }
}

/// Runs CPU-heavy request preparation (template, tokenizer) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::server(format!("request preparation failed: {e}")))?
}

/// Decodes every image once here, so that a corrupt or oversized one is the client's 400, not
/// an engine error after queueing.
fn check_images(images: &[Vec<u8>]) -> Result<(), ApiError> {
    for (i, bytes) in images.iter().enumerate() {
        let name = format!("image {}", i + 1);
        crate::model::mllama::image_proc::load_image_bytes(bytes, &name)
            .map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))?;
    }
    Ok(())
}

fn tokenize(tok: &Tokenizer, text: &str, add_bos: bool) -> Result<Vec<u32>, ApiError> {
    tok.encode(text, add_bos)
        .map_err(|e| ApiError::invalid(format!("cannot tokenize the prompt: {e}"), None))
}

/// Checks the prompt against the context, queues the job and answers, streamed or not.
async fn run(
    st: Arc<ServerState>,
    endpoint: Endpoint,
    fields: GenerationFields,
    prompt: Vec<u32>,
    images: Vec<Vec<u8>>,
    place: Place,
) -> Response {
    let n_ctx = st.engine.n_ctx;
    let param = if endpoint == Endpoint::Chat {
        "messages"
    } else {
        "prompt"
    };
    if prompt.is_empty() {
        return ApiError::invalid("the prompt is empty", Some(param)).into_response();
    }
    if prompt.len() >= n_ctx {
        return ApiError::invalid(
            format!(
                "the prompt has {} tokens but the context holds {n_ctx} (including at least one generated token); shorten it or restart the server with a larger -c",
                prompt.len()
            ),
            Some(param),
        )
        .with_code("context_length_exceeded")
        .into_response();
    }
    if let Some(image_token) = st.tokenizer.image_token() {
        let n = prompt.iter().filter(|&&t| t == image_token).count();
        if n != images.len() {
            return ApiError::invalid(
                format!(
                    "the prompt has {n} <|image|> token(s) but the request carries {} image(s)",
                    images.len()
                ),
                Some(param),
            )
            .into_response();
        }
    }
    // The answer may fill the rest of the context, no more.
    let room = n_ctx - prompt.len();
    let max_tokens = fields.max_tokens.unwrap_or(room).min(room);
    let defaults = SamplingParams::default();
    let sampling = SamplingParams {
        temperature: fields.temperature.unwrap_or(defaults.temperature),
        top_p: fields.top_p.unwrap_or(defaults.top_p),
        top_k: fields.top_k.unwrap_or(defaults.top_k),
        min_p: fields.min_p.unwrap_or(defaults.min_p),
        repeat_penalty: fields.repeat_penalty.unwrap_or(defaults.repeat_penalty),
        seed: fields.seed.unwrap_or_else(rand::random),
        ..defaults
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let n_prompt = prompt.len();
    let job = Job {
        prompt,
        images,
        max_tokens,
        sampling,
        stop: fields.stop.clone(),
        ignore_eos: fields.ignore_eos,
        cache_prompt: fields.cache_prompt,
        events: tx,
    };
    if let Err(e) = st.engine.submit(job, place) {
        return submit_error(e).into_response();
    }
    let rx = Observed::new(rx, st.metrics.clone(), Instant::now());
    let shape = ChunkShape {
        endpoint,
        id: api::new_id(if endpoint == Endpoint::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        }),
        created: api::now(),
        model: st.model_id.clone(),
    };
    if fields.stream {
        stream_response(shape, rx, fields.include_usage)
    } else {
        whole_response(shape, rx, n_prompt).await
    }
}

/// The parts every response object and chunk of one request share.
struct ChunkShape {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
}

impl ChunkShape {
    fn object(&self, streamed: bool) -> &'static str {
        match (self.endpoint, streamed) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    fn envelope(&self, streamed: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(streamed),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "lumen",
            "choices": choices,
        })
    }

    /// A streamed chunk: `delta` (chat) or `text` (completion), with its finish reason.
    fn chunk(&self, delta: Value, text: &str, finish: Option<FinishReason>) -> Value {
        let finish = finish.map(FinishReason::as_str);
        let choice = match self.endpoint {
            Endpoint::Chat => {
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Endpoint::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
        };
        self.envelope(true, json!([choice]))
    }
}

/// Collects the whole answer, then sends one response object.
async fn whole_response(shape: ChunkShape, mut rx: Observed, n_prompt: usize) -> Response {
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done {
                finish,
                prompt_tokens,
                cached_tokens,
                completion_tokens,
            }) => {
                let reason = finish.as_str();
                let choice = match shape.endpoint {
                    Endpoint::Chat => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": null,
                        "finish_reason": reason,
                    }),
                    Endpoint::Completion => json!({
                        "index": 0, "text": text, "logprobs": null, "finish_reason": reason,
                    }),
                };
                let mut body = shape.envelope(false, json!([choice]));
                body["usage"] = api::usage(prompt_tokens, cached_tokens, completion_tokens);
                return Json(body).into_response();
            }
            Some(Event::Error(e)) => return ApiError::server(e).into_response(),
            Some(Event::Cancelled) => return shutting_down().into_response(),
            None => {
                return ApiError::server(format!(
                    "the engine stopped while answering (prompt of {n_prompt} tokens)"
                ))
                .into_response()
            }
        }
    }
}

/// Server-sent events: a first chunk with the role, one chunk per text piece, a last chunk with
/// the finish reason, the usage chunk (`choices: []`) if asked for, then `data: [DONE]`.
fn stream_response(shape: ChunkShape, rx: Observed, include_usage: bool) -> Response {
    let mut out = VecDeque::new();
    if shape.endpoint == Endpoint::Chat {
        out.push_back(data(&shape.chunk(
            json!({"role": "assistant", "content": ""}),
            "",
            None,
        )));
    }
    let state = SseState {
        shape,
        rx,
        include_usage,
        out,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.out.pop_front() {
                return Some((Ok::<_, Infallible>(ev), s));
            }
            if s.done {
                return None;
            }
            let next = s.rx.recv().await;
            s.on_event(next);
        }
    });
    Sse::new(stream).into_response()
}

struct SseState {
    shape: ChunkShape,
    rx: Observed,
    include_usage: bool,
    out: VecDeque<SseEvent>,
    done: bool,
}

impl SseState {
    fn on_event(&mut self, event: Option<Event>) {
        match event {
            Some(Event::Text(t)) => {
                let chunk = self.shape.chunk(json!({"content": t}), &t, None);
                self.out.push_back(data(&chunk));
            }
            Some(Event::Done {
                finish,
                prompt_tokens,
                cached_tokens,
                completion_tokens,
            }) => {
                let last = self.shape.chunk(json!({}), "", Some(finish));
                self.out.push_back(data(&last));
                if self.include_usage {
                    let mut usage = self.shape.envelope(true, json!([]));
                    usage["usage"] = api::usage(prompt_tokens, cached_tokens, completion_tokens);
                    self.out.push_back(data(&usage));
                }
                self.end();
            }
            Some(Event::Error(e)) => {
                self.out.push_back(data(&ApiError::server(e).body()));
                self.end();
            }
            Some(Event::Cancelled) => {
                self.out.push_back(data(&shutting_down().body()));
                self.end();
            }
            None => {
                let e = ApiError::server("the engine stopped while answering");
                self.out.push_back(data(&e.body()));
                self.end();
            }
        }
    }

    fn end(&mut self) {
        self.out.push_back(SseEvent::default().data("[DONE]"));
        self.done = true;
    }
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_and_localhost_are_always_allowed_names_only_when_listed() {
        let local = AllowedHosts::Local;
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8080",
            "::1",
            "10.0.0.5",
            "app.localhost:80",
        ] {
            assert!(local.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
        ] {
            assert!(!local.allows(bad), "{bad}");
        }
        let names = AllowedHosts::parse("proxy.lan, Other.Example");
        assert!(names.allows("proxy.lan:443") && names.allows("other.example"));
        assert!(!names.allows("evil.example"));
        assert!(AllowedHosts::parse("*").allows("anything.example"));
    }
}
