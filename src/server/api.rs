//! OpenAI wire format: request parsing with errors that name the offending field, error
//! objects, and the response and chunk objects.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::chat::{ChatMessage, Content, ContentPart};

/// An error answered as `{"error": {message, type, param, code}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn server(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// Sampling and length fields shared by both endpoints.
#[derive(Clone, Debug, Default)]
pub struct GenerationFields {
    pub model: Option<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// llama.cpp's extension: never end on an end-of-generation token.
    pub ignore_eos: bool,
    /// llama.cpp's extension (default true): reuse the prompt prefix a slot's cache holds.
    pub cache_prompt: bool,
}

pub struct ChatRequest {
    pub fields: GenerationFields,
    pub messages: Vec<ChatMessage>,
    /// Decoded image bytes, in the order their parts appear in the messages.
    pub images: Vec<Vec<u8>>,
}

pub struct CompletionRequest {
    pub fields: GenerationFields,
    pub prompt: String,
}

/// Parses the body as a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}"), None))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::invalid("the body must be a JSON object", None)),
    }
}

/// The field `name` as `T`; absent or null is `None`, any other type an error naming it.
fn field<T: DeserializeOwned>(obj: &Map<String, Value>, name: &str) -> Result<Option<T>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v)
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("'{name}': {e}"), Some(name))),
    }
}

fn in_range(name: &str, v: Option<f32>, lo: f32, hi: f32) -> Result<Option<f32>, ApiError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) => Err(ApiError::invalid(
            format!("'{name}' must be between {lo} and {hi}, got {x}"),
            Some(name),
        )),
        _ => Ok(v),
    }
}

/// Most images one request (the whole conversation: the API is stateless) may carry. Each one
/// is a full encoder run (4 tiles, ~50 s on 2 AVX-512 cores at 11B) and its cross-attention
/// states stay in the slot's cache; Ollama takes one per message for this model, Meta's
/// processor one per sample. Counted before any image is decoded.
pub const MAX_IMAGES: usize = 4;

/// Most stop strings a request may give (OpenAI allows 4; llama-server more).
const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in bytes: the matcher holds back and rescans up to the longest one after
/// every token, so a megabyte-long stop string would cost every token of every slot. Real stop
/// sequences are a few tokens.
pub const MAX_STOP_BYTES: usize = 256;

fn generation_fields(obj: &Map<String, Value>) -> Result<GenerationFields, ApiError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stop {
        One(String),
        Many(Vec<String>),
    }
    #[derive(Deserialize)]
    struct StreamOptions {
        #[serde(default)]
        include_usage: bool,
    }
    if let Some(n) = field::<u64>(obj, "n")? {
        if n != 1 {
            return Err(ApiError::invalid("only n = 1 is supported", Some("n")));
        }
    }
    let stop = match field::<Stop>(obj, "stop")? {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            format!("at most {MAX_STOP_STRINGS} stop strings are allowed"),
            Some("stop"),
        ));
    }
    if let Some(long) = stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::invalid(
            format!(
                "a stop string of {} bytes is longer than the {MAX_STOP_BYTES} allowed",
                long.len()
            ),
            Some("stop"),
        ));
    }
    let max_tokens = match field::<usize>(obj, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => field::<usize>(obj, "max_tokens")?,
    };
    if max_tokens == Some(0) {
        return Err(ApiError::invalid(
            "'max_tokens' must be at least 1",
            Some("max_tokens"),
        ));
    }
    Ok(GenerationFields {
        model: field(obj, "model")?,
        stream: field(obj, "stream")?.unwrap_or(false),
        include_usage: field::<StreamOptions>(obj, "stream_options")?
            .is_some_and(|o| o.include_usage),
        max_tokens,
        temperature: in_range("temperature", field(obj, "temperature")?, 0.0, 2.0)?,
        top_p: in_range("top_p", field(obj, "top_p")?, 0.0, 1.0)?,
        top_k: field(obj, "top_k")?,
        min_p: in_range("min_p", field(obj, "min_p")?, 0.0, 1.0)?,
        repeat_penalty: field(obj, "repeat_penalty")?,
        seed: field::<i64>(obj, "seed")?.map(|s| s as u64),
        stop,
        ignore_eos: field(obj, "ignore_eos")?.unwrap_or(false),
        cache_prompt: field(obj, "cache_prompt")?.unwrap_or(true),
    })
}

/// `POST /v1/chat/completions`.
pub fn parse_chat(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let obj = parse_object(body)?;
    let fields = generation_fields(&obj)?;
    let raw: Vec<WireMessage> = field(&obj, "messages")?
        .ok_or_else(|| ApiError::invalid("'messages' is required", Some("messages")))?;
    if raw.is_empty() {
        return Err(ApiError::invalid("'messages' is empty", Some("messages")));
    }
    let mut images = Vec::new();
    let mut messages = Vec::with_capacity(raw.len());
    for m in raw {
        messages.push(m.into_message(&mut images)?);
    }
    Ok(ChatRequest {
        fields,
        messages,
        images,
    })
}

/// `POST /v1/completions`.
pub fn parse_completion(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    let obj = parse_object(body)?;
    let fields = generation_fields(&obj)?;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Prompt {
        One(String),
        Many(Vec<String>),
    }
    let prompt = match field::<Prompt>(&obj, "prompt")? {
        Some(Prompt::One(s)) => s,
        Some(Prompt::Many(mut v)) if v.len() == 1 => v.remove(0),
        Some(Prompt::Many(_)) => {
            return Err(ApiError::invalid(
                "only one prompt per request is supported",
                Some("prompt"),
            ))
        }
        None => return Err(ApiError::invalid("'prompt' is required", Some("prompt"))),
    };
    Ok(CompletionRequest { fields, prompt })
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<WireContent>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Parts(Vec<WirePart>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WirePart {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

/// `{"url": "...", "detail": ...}` or, as Ollama also accepts, the bare URL string.
#[derive(Deserialize)]
#[serde(untagged)]
enum ImageUrl {
    Url(String),
    Object { url: String },
}

impl WireMessage {
    fn into_message(self, images: &mut Vec<Vec<u8>>) -> Result<ChatMessage, ApiError> {
        let content = match self.content {
            None => Content::Text(String::new()),
            Some(WireContent::Text(t)) => Content::Text(t),
            Some(WireContent::Parts(parts)) => {
                let mut out = Vec::with_capacity(parts.len());
                for part in parts {
                    out.push(match part {
                        WirePart::Text { text } => ContentPart::Text { text },
                        WirePart::ImageUrl { image_url } => {
                            let url = match image_url {
                                ImageUrl::Url(u) | ImageUrl::Object { url: u } => u,
                            };
                            if images.len() == MAX_IMAGES {
                                return Err(ApiError::invalid(
                                    format!("at most {MAX_IMAGES} images per request are allowed"),
                                    Some("messages"),
                                ));
                            }
                            images.push(decode_data_uri(&url)?);
                            ContentPart::Image
                        }
                    });
                }
                Content::Parts(out)
            }
        };
        Ok(ChatMessage {
            role: self.role,
            content,
        })
    }
}

/// The bytes of a `data:image/...;base64,...` URI. Remote URLs are refused: the server fetches
/// nothing on a client's behalf.
pub fn decode_data_uri(url: &str) -> Result<Vec<u8>, ApiError> {
    let param = Some("messages");
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(ApiError::invalid(
            "only base64 data URIs (data:image/...;base64,...) are accepted for images, not remote URLs",
            param,
        ));
    };
    let Some((meta, data)) = rest.split_once(',') else {
        return Err(ApiError::invalid(
            "the image data URI has no ',' before its data",
            param,
        ));
    };
    if !meta.ends_with(";base64") {
        return Err(ApiError::invalid(
            "the image data URI must be base64 (';base64,')",
            param,
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| {
            ApiError::invalid(
                format!("the image data URI is not valid base64: {e}"),
                param,
            )
        })?;
    image::guess_format(&bytes).map_err(|_| {
        ApiError::invalid(
            "the image data URI does not hold a PNG, JPEG, WebP or GIF image",
            param,
        )
    })?;
    Ok(bytes)
}

/// Seconds since the Unix epoch, for `created`.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh id such as `chatcmpl-3f9a...`.
pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

pub fn usage(prompt: usize, cached: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_types_name_the_field() {
        let e = parse_chat(br#"{"messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#)
            .err()
            .unwrap();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = parse_chat(br#"{"messages":"hi"}"#).err().unwrap();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = parse_completion(br#"{"prompt":"x","max_tokens":-3}"#)
            .err()
            .unwrap();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn images_are_capped_per_request() {
        // Spread over two messages: the cap is on the conversation, not one message.
        let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
        let part = format!(r#"{{"type":"image_url","image_url":"data:image/png;base64,{png}"}}"#);
        let body = |n: usize| {
            let first = vec![part.as_str(); n / 2].join(",");
            let second = vec![part.as_str(); n - n / 2].join(",");
            format!(
                r#"{{"messages":[{{"role":"user","content":[{first}]}},
                {{"role":"user","content":[{second}]}}]}}"#
            )
        };
        assert_eq!(
            parse_chat(body(MAX_IMAGES).as_bytes())
                .unwrap()
                .images
                .len(),
            MAX_IMAGES
        );
        let Err(e) = parse_chat(body(MAX_IMAGES + 1).as_bytes()) else {
            panic!("{} images were accepted", MAX_IMAGES + 1)
        };
        assert_eq!(e.param.as_deref(), Some("messages"));
        assert!(e.message.contains("at most 4 images"), "{}", e.message);
    }

    #[test]
    fn both_image_url_shapes_and_string_or_list_stop() {
        // A 1×1 PNG.
        let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":[{{"type":"text","text":"what?"}},
            {{"type":"image_url","image_url":{{"url":"data:image/png;base64,{png}"}}}},
            {{"type":"image_url","image_url":"data:image/png;base64,{png}"}}]}}],"stop":"x"}}"#
        );
        let r = parse_chat(body.as_bytes()).unwrap();
        assert_eq!(r.images.len(), 2);
        assert_eq!(r.fields.stop, vec!["x"]);
        let Content::Parts(parts) = &r.messages[0].content else {
            panic!("parts expected")
        };
        assert_eq!(parts[1], ContentPart::Image);
        let r = parse_completion(br#"{"prompt":"p","stop":["a","b"]}"#).unwrap();
        assert_eq!(r.fields.stop, vec!["a", "b"]);
    }

    #[test]
    fn a_long_stop_string_is_refused() {
        let long = "x".repeat(MAX_STOP_BYTES + 1);
        let body = format!(r#"{{"prompt":"p","stop":["ok","{long}"]}}"#);
        let Err(e) = parse_completion(body.as_bytes()) else {
            panic!("a {}-byte stop string was accepted", MAX_STOP_BYTES + 1)
        };
        assert_eq!(e.param.as_deref(), Some("stop"));
        let fits = "x".repeat(MAX_STOP_BYTES);
        let body = format!(r#"{{"prompt":"p","stop":"{fits}"}}"#);
        assert!(parse_completion(body.as_bytes()).is_ok());
    }

    #[test]
    fn bad_images_are_refused() {
        assert!(decode_data_uri("https://example.com/cat.png").is_err());
        assert!(decode_data_uri("data:image/png;base64,@@@").is_err());
        assert!(decode_data_uri("data:image/png;base64,aGVsbG8=").is_err()); // "hello"
    }
}
