//! Reading a Hugging Face model directory's JSON files: `config.json` (both the classic
//! `rope_theta`/`rope_scaling` and the newer `rope_parameters` spellings) and
//! `generation_config.json`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::ConvertError;

/// Caps on sizes read from `config.json`: far above any real model, low enough that a hostile
/// value cannot make us plan absurd allocations before a shape check fails.
pub(crate) const MAX_DIM: u64 = 1 << 20;
pub(crate) const MAX_LAYERS: u64 = 1 << 12;
pub(crate) const MAX_VOCAB: u64 = 1 << 24;

/// A JSON file read into a map, remembering its path for error messages.
#[derive(Clone, Debug)]
pub struct JsonFile {
    pub path: PathBuf,
    pub root: Map<String, Value>,
}

impl JsonFile {
    /// Reads `path`; a file that is not a JSON object is an error naming it.
    pub fn read(path: &Path) -> Result<Self, ConvertError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Reads `path` if it exists.
    pub fn read_optional(path: &Path) -> Result<Option<Self>, ConvertError> {
        if path.is_file() {
            Self::read(path).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConvertError> {
        let value: Value = serde_json::from_str(text).map_err(|source| ConvertError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        match value {
            Value::Object(root) => Ok(Self {
                path: path.to_path_buf(),
                root,
            }),
            _ => Err(ConvertError::BadKey {
                path: path.to_path_buf(),
                key: "(root)".into(),
                message: "expected a JSON object".into(),
            }),
        }
    }

    pub fn bad(&self, key: &str, message: impl Into<String>) -> ConvertError {
        ConvertError::BadKey {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.root.get(key).filter(|v| !v.is_null())
    }

    pub fn str_opt(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// A required positive integer no larger than `cap`.
    pub fn usize_capped(&self, key: &str, cap: u64) -> Result<usize, ConvertError> {
        match self.usize_opt(key, cap)? {
            Some(v) => Ok(v),
            None => Err(self.bad(key, "missing")),
        }
    }

    pub fn usize_opt(&self, key: &str, cap: u64) -> Result<Option<usize>, ConvertError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_u64() {
            Some(n) if n > 0 && n <= cap => Ok(Some(n as usize)),
            _ => Err(self.bad(key, format!("{v} is not an integer in 1..={cap}"))),
        }
    }

    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>, ConvertError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(key, format!("{v} is not a number"))),
        }
    }

    pub fn bool_opt(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }
}

/// llama3-style RoPE frequency scaling (`rope_type: "llama3"`), llama.cpp's defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Llama3Rope {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_context: f32,
}

/// Phi-3 LongRoPE (`rope_type: "longrope"`, older `"su"`, or `"yarn"` with factors): one
/// frequency divisor per rotated pair for long and for short contexts.
#[derive(Clone, Debug, PartialEq)]
pub struct LongRope {
    /// As written (lower case): `longrope`, `su` or `yarn`.
    pub rope_type: String,
    pub long_factor: Vec<f32>,
    pub short_factor: Vec<f32>,
}

/// How RoPE positions are scaled.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    Linear(f32),
    Llama3(Llama3Rope),
    LongRope(LongRope),
}

impl RopeScaling {
    /// The `rope_type` name, for error messages.
    pub fn name(&self) -> &str {
        match self {
            RopeScaling::None => "default",
            RopeScaling::Linear(_) => "linear",
            RopeScaling::Llama3(_) => "llama3",
            RopeScaling::LongRope(r) => &r.rope_type,
        }
    }
}

/// The hyper-parameters of a Llama-architecture `config.json`.
#[derive(Clone, Debug)]
pub struct HfConfig {
    pub path: PathBuf,
    pub architecture: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// `head_dim` when the config states it (then llama.cpp also writes key/value lengths).
    pub head_dim_explicit: Option<usize>,
    pub n_vocab: usize,
    pub n_ctx: Option<usize>,
    pub rms_eps: Option<f64>,
    /// The global (full-attention) RoPE base.
    pub rope_theta: Option<f64>,
    /// The sliding-window layers' RoPE base (`rope_parameters.sliding_attention.rope_theta`
    /// or `rope_local_base_freq`), Gemma 3.
    pub rope_theta_swa: Option<f64>,
    pub rope_scaling: RopeScaling,
    /// `original_max_position_embeddings` from the RoPE parameters or the top level.
    pub rope_original_context: Option<usize>,
    /// `partial_rotary_factor` from the RoPE parameters or the top level.
    pub partial_rotary_factor: Option<f64>,
    pub tie_word_embeddings: bool,
    /// The raw file, for the special-token ids llama.cpp also reads from it.
    pub json: JsonFile,
}

impl HfConfig {
    pub fn head_dim(&self) -> usize {
        self.head_dim_explicit.unwrap_or(self.n_embd / self.n_head)
    }

    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self, ConvertError> {
        Self::from_json(read_config_json(dir)?)
    }

    pub fn from_json(json: JsonFile) -> Result<Self, ConvertError> {
        let architecture = architecture(&json)?;
        let n_embd = json.usize_capped("hidden_size", MAX_DIM)?;
        let n_head = json.usize_capped("num_attention_heads", MAX_DIM)?;
        let n_head_kv = json
            .usize_opt("num_key_value_heads", MAX_DIM)?
            .unwrap_or(n_head);
        let rope = RopeParams::from_config(&json)?;
        let cfg = Self {
            path: json.path.clone(),
            architecture,
            n_layer: json.usize_capped("num_hidden_layers", MAX_LAYERS)?,
            n_embd,
            n_ff: json.usize_capped("intermediate_size", MAX_DIM * 8)?,
            n_head,
            n_head_kv,
            head_dim_explicit: json.usize_opt("head_dim", MAX_DIM)?,
            n_vocab: json.usize_capped("vocab_size", MAX_VOCAB)?,
            n_ctx: json.usize_opt("max_position_embeddings", u32::MAX as u64)?,
            rms_eps: json.f64_opt("rms_norm_eps")?,
            rope_theta: rope.theta,
            rope_theta_swa: rope.theta_swa,
            rope_scaling: rope.scaling,
            rope_original_context: rope.original_context,
            partial_rotary_factor: rope.partial_rotary_factor,
            tie_word_embeddings: json.bool_opt("tie_word_embeddings").unwrap_or(false),
            json,
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConvertError> {
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return Err(self.json.bad(
                "num_key_value_heads",
                format!(
                    "{} attention heads are not a multiple of {} KV heads",
                    self.n_head, self.n_head_kv
                ),
            ));
        }
        let hd = self.head_dim();
        // The Q/K permutation pairs row i with row i + head_dim/2, so head_dim must be even.
        if !hd.is_multiple_of(2)
            || (self.head_dim_explicit.is_none() && !self.n_embd.is_multiple_of(self.n_head))
        {
            return Err(self.json.bad(
                "head_dim",
                format!(
                    "head dimension {hd} (hidden {} / {} heads) must be a whole even number",
                    self.n_embd, self.n_head
                ),
            ));
        }
        Ok(())
    }
}

/// `dir/config.json` as JSON; a directory without one is not a Hugging Face model directory.
pub fn read_config_json(dir: &Path) -> Result<JsonFile, ConvertError> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(ConvertError::MissingConfig {
            dir: dir.to_path_buf(),
        });
    }
    JsonFile::read(&path)
}

/// `architectures[0]`, the Hugging Face class name (`LlamaForCausalLM`).
pub fn architecture(json: &JsonFile) -> Result<String, ConvertError> {
    json.get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            json.bad(
                "architectures",
                "missing (expected e.g. [\"LlamaForCausalLM\"])",
            )
        })
}

struct RopeParams {
    theta: Option<f64>,
    theta_swa: Option<f64>,
    scaling: RopeScaling,
    original_context: Option<usize>,
    partial_rotary_factor: Option<f64>,
}

/// Top-level names llama.cpp's `TextModel` accepts for the global and the local RoPE base.
const GLOBAL_THETA_KEYS: [&str; 5] = [
    "global_rope_theta",
    "rope_global_theta",
    "rope_theta_global",
    "rope_theta",
    "rotary_emb_base",
];
const LOCAL_THETA_KEYS: [&str; 5] = [
    "local_rope_theta",
    "rope_local_theta",
    "rope_theta_local",
    "swa_rope_theta",
    "rope_local_base_freq",
];

impl RopeParams {
    /// llama.cpp's reading (`TextModel.__init__` and `set_gguf_parameters`): `rope_parameters`,
    /// else `rope_scaling`; when it is split per layer type (`full_attention` /
    /// `sliding_attention`, Gemma 3) the global parameters are the `full_attention` entry,
    /// otherwise the object itself with the top-level theta, local theta, partial rotary factor
    /// and original context mirrored into it; `rope_type` or the older `type`.
    fn from_config(json: &JsonFile) -> Result<Self, ConvertError> {
        let (key, params) = match (json.get("rope_parameters"), json.get("rope_scaling")) {
            (Some(p), _) => ("rope_parameters", p),
            (None, Some(p)) => ("rope_scaling", p),
            (None, None) => ("rope_parameters", &Value::Null),
        };
        let empty = Map::new();
        let params = match params {
            Value::Object(m) => m,
            Value::Null => &empty,
            other => return Err(json.bad(key, format!("{other} is not an object"))),
        };
        let split =
            params.contains_key("full_attention") || params.contains_key("sliding_attention");
        let sub = |name: &str| -> Result<&Map<String, Value>, ConvertError> {
            match params.get(name).filter(|v| !v.is_null()) {
                None => Ok(&empty),
                Some(Value::Object(m)) => Ok(m),
                Some(other) => Err(json.bad(
                    &format!("{key}.{name}"),
                    format!("{other} is not an object"),
                )),
            }
        };
        let (global_key, global) = if params.contains_key("full_attention") {
            (format!("{key}.full_attention"), sub("full_attention")?)
        } else {
            (key.to_string(), params)
        };
        let num_in =
            |m: &Map<String, Value>, at: &str, name: &str| -> Result<Option<f64>, ConvertError> {
                match m.get(name).filter(|v| !v.is_null()) {
                    None => Ok(None),
                    Some(v) => v
                        .as_f64()
                        .map(Some)
                        .ok_or_else(|| json.bad(&format!("{at}.{name}"), "not a number")),
                }
            };
        let num = |name: &str| num_in(global, &global_key, name);
        let first_top = |names: &[&str]| -> Result<Option<f64>, ConvertError> {
            for n in names {
                if let Some(v) = json.f64_opt(n)? {
                    return Ok(Some(v));
                }
            }
            Ok(None)
        };
        // Mirrored top-level values count only when the parameters are not split per layer type.
        let mirrored = |inner: Option<f64>, names: &[&str]| -> Result<Option<f64>, ConvertError> {
            match inner {
                Some(v) => Ok(Some(v)),
                None if !split => first_top(names),
                None => Ok(None),
            }
        };
        let theta = mirrored(num("rope_theta")?, &GLOBAL_THETA_KEYS)?;
        let theta_swa = match num_in(
            sub("sliding_attention")?,
            &format!("{key}.sliding_attention"),
            "rope_theta",
        )? {
            Some(t) => Some(t),
            None if !split => first_top(&LOCAL_THETA_KEYS)?,
            None => None,
        };
        let partial_rotary_factor = mirrored(
            num("partial_rotary_factor")?,
            &["partial_rotary_factor", "rope_pct", "rope_percent"],
        )?;
        let original_context = mirrored(
            num("original_max_position_embeddings")?,
            &["original_max_position_embeddings"],
        )?;
        let original_context = match original_context {
            None => None,
            Some(v) if v >= 1.0 && v <= u32::MAX as f64 && v.fract() == 0.0 => Some(v as usize),
            Some(v) => {
                return Err(json.bad(
                    "original_max_position_embeddings",
                    format!("{v} is not a positive integer"),
                ))
            }
        };
        let rope_type = global
            .get("rope_type")
            .or_else(|| global.get("type"))
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        let factors = |name: &str| -> Result<Option<Vec<f32>>, ConvertError> {
            match global.get(name).filter(|v| !v.is_null()) {
                None => Ok(None),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|x| x.as_f64().map(|f| f as f32))
                    .collect::<Option<Vec<f32>>>()
                    .map(Some)
                    .ok_or_else(|| {
                        json.bad(&format!("{global_key}.{name}"), "not a list of numbers")
                    }),
                Some(_) => Err(json.bad(&format!("{global_key}.{name}"), "not a list of numbers")),
            }
        };
        let long = factors("long_factor")?.filter(|f| !f.is_empty());
        let scaling = match rope_type.as_deref() {
            None | Some("default") => RopeScaling::None,
            Some("linear") => match num("factor")? {
                Some(f) => RopeScaling::Linear(f as f32),
                None => RopeScaling::None,
            },
            Some("llama3") => RopeScaling::Llama3(Llama3Rope {
                factor: num("factor")?.unwrap_or(8.0) as f32,
                low_freq_factor: num("low_freq_factor")?.unwrap_or(1.0) as f32,
                high_freq_factor: num("high_freq_factor")?.unwrap_or(4.0) as f32,
                original_context: num("original_max_position_embeddings")?.unwrap_or(8192.0) as f32,
            }),
            Some(t @ ("longrope" | "su")) | Some(t @ "yarn") if t != "yarn" || long.is_some() => {
                let (Some(long_factor), Some(short_factor)) = (long, factors("short_factor")?) else {
                    return Err(json.bad(
                        &format!("{global_key}.long_factor"),
                        format!("RoPE type {t:?} needs long_factor and short_factor lists"),
                    ));
                };
                RopeScaling::LongRope(LongRope {
                    rope_type: t.to_string(),
                    long_factor,
                    short_factor,
                })
            }
            Some(other) => {
                return Err(json.bad(
                    &format!("{global_key}.rope_type"),
                    format!(
                        "RoPE type {other:?} is not supported (default, linear, llama3, and longrope for Phi-3 are)"
                    ),
                ))
            }
        };
        Ok(Self {
            theta,
            theta_swa,
            scaling,
            original_context,
            partial_rotary_factor,
        })
    }
}

/// Sampling defaults from `generation_config.json`, written as `general.sampling.*` like
/// llama.cpp's converter does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplingDefaults {
    pub top_k: Option<i32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub temp: Option<f32>,
    pub penalty_repeat: Option<f32>,
}

impl SamplingDefaults {
    /// Reads `dir/generation_config.json`; like llama.cpp, an unreadable file means no defaults.
    pub fn read(dir: &Path) -> Self {
        let Ok(Some(json)) = JsonFile::read_optional(&dir.join("generation_config.json")) else {
            return Self::default();
        };
        let f = |k: &str| json.get(k).and_then(Value::as_f64).map(|v| v as f32);
        Self {
            top_k: json
                .get("top_k")
                .and_then(Value::as_i64)
                .and_then(|v| i32::try_from(v).ok()),
            top_p: f("top_p"),
            min_p: f("min_p"),
            temp: f("temperature"),
            penalty_repeat: f("penalty_repeat").or_else(|| f("repetition_penalty")),
        }
    }
}
