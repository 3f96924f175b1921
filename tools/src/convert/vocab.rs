//! The `tokenizer.ggml.*` metadata, the way llama.cpp's converter derives it: byte-level BPE
//! ("gpt2") vocabularies from `tokenizer.json` (`get_vocab_base`, `get_vocab_base_pre`),
//! SentencePiece ("llama") vocabularies from `tokenizer.model` (`_create_vocab_sentencepiece`,
//! and Phi-3's own variant of it), and for both the special tokens and flags of gguf-py's
//! `SpecialVocab` (`tokenizer_config.json`, `tokenizer.json`'s post-processor, `config.json`).
//!
//! The BPE pre-tokenizer's name comes from [`super::pre_tokenizer`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lumen::gguf::keys;
use lumen::gguf::writer::MetaValue;
use lumen::tokenizer::token_type;
use serde_json::Value;

use super::hf::{HfConfig, JsonFile};
use super::ConvertError;

/// gguf-py's special-token types, in its order; `cls` has no GGUF key but stands in for a
/// missing `bos`.
const SPECIAL_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// The two tokenizer models the converter writes.
#[derive(Clone, Debug, PartialEq)]
pub enum VocabModel {
    /// `tokenizer.ggml.model = "gpt2"`: byte-level BPE with its merges.
    Bpe { merges: Vec<String> },
    /// `tokenizer.ggml.model = "llama"`: SentencePiece, with a score per token.
    Spm { scores: Vec<f32> },
}

/// Where `tokenizer.ggml.add_space_prefix` goes: the llama converter writes
/// `tokenizer_config.json`'s `add_prefix_space` before the vocabulary, the Gemma converters
/// write `false` after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpacePrefix {
    None,
    Before(bool),
    After(bool),
}

/// Which of llama.cpp's SentencePiece readers to follow: the common one, or Phi-3's (which also
/// takes `tokenizer.json`'s added tokens, marks added tokens control only when `special`, keeps
/// their `▁`, and does not skip ids beyond the vocabulary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpmFlavor {
    Common,
    Phi3,
}

/// Everything the vocabulary contributes to the GGUF metadata.
#[derive(Debug)]
pub struct Vocab {
    pub model: VocabModel,
    pub pre: String,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    /// Special token ids in the order gguf-py sets them.
    pub special_ids: Vec<(&'static str, u32)>,
    /// `add_{bos,eos,sep}_token` flags in the order gguf-py sets them.
    pub add_flags: Vec<(&'static str, bool)>,
    pub chat_template: Option<String>,
    pub space_prefix: SpacePrefix,
}

impl Vocab {
    /// The vocabulary with exactly `config.json`'s `vocab_size` tokens (padded with
    /// `[PAD{i}]`; a token beyond it is an error), as llama.cpp's converter reads it.
    pub fn read(dir: &Path, cfg: &HfConfig) -> Result<Self, ConvertError> {
        Self::read_sized(dir, cfg, None)
    }

    /// Like [`Vocab::read`], but the token list runs to the highest id `tokenizer.json` uses
    /// when that is beyond `vocab_size` (a token at or beyond `max_len` is an error). Llama 3.2
    /// Vision needs this: its `<|image|>` token (128256) is an input-only token outside the
    /// 128256 logits, with its own row in the (larger) embedding matrix.
    pub fn read_extended(dir: &Path, cfg: &HfConfig, max_len: usize) -> Result<Self, ConvertError> {
        Self::read_sized(dir, cfg, Some(max_len))
    }

    /// `extend_to`: see [`Vocab::read_extended`].
    fn read_sized(
        dir: &Path,
        cfg: &HfConfig,
        extend_to: Option<usize>,
    ) -> Result<Self, ConvertError> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            let hint = if dir.join("tokenizer.model").is_file() {
                "this architecture's vocabulary is read from a Hugging Face fast tokenizer, not from tokenizer.model"
            } else {
                "the converter needs a Hugging Face fast tokenizer (or, for SentencePiece models, tokenizer.model)"
            };
            return Err(ConvertError::Tokenizer {
                path: tok_path,
                message: format!("missing: {hint}"),
            });
        }
        let tok = JsonFile::read(&tok_path)?;
        let tok_config = JsonFile::read_optional(&dir.join("tokenizer_config.json"))?;
        let added = added_tokens(&tok)?;
        let n_vocab = match extend_to {
            None => cfg.n_vocab,
            Some(max_len) => cfg
                .n_vocab
                .max(highest_id(&tok, &added).map_or(0, |i| i + 1))
                .min(max_len),
        };
        let (tokens, token_types) = token_list(&tok, &added, n_vocab)?;
        let mut specials = SpecialVocab::default();
        if let Some(tc) = &tok_config {
            specials.read_token_names(tc);
        }
        specials.read_post_processor(&tok);
        if let Some(tc) = &tok_config {
            specials.read_tokenizer_config(tc, &added, n_vocab);
        }
        specials.read_config(&cfg.json, n_vocab);
        Ok(Self {
            model: VocabModel::Bpe {
                merges: merges(&tok)?,
            },
            pre: super::pre_tokenizer::name(&tok_path, &tok)?,
            tokens,
            token_types,
            special_ids: specials.ids(),
            add_flags: specials.add_flags(),
            chat_template: chat_template(dir, tok_config.as_ref()),
            space_prefix: match tok_config
                .as_ref()
                .and_then(|c| c.bool_opt("add_prefix_space"))
            {
                Some(b) => SpacePrefix::Before(b),
                None => SpacePrefix::None,
            },
        })
    }

    /// A SentencePiece vocabulary from `dir/tokenizer.model`, padded to `config.json`'s
    /// `vocab_size` with `[PAD{i}]` (unused, score -10000) and overlaid with the added tokens of
    /// `added_tokens.json` and `tokenizer_config.json` (and, for Phi-3, `tokenizer.json`), the
    /// way llama.cpp's `_create_vocab_sentencepiece` builds it: piece types unknown, control,
    /// unused and byte are kept, every other piece (user-defined ones included) is normal;
    /// added tokens score -1000. Special ids and flags as for BPE vocabularies.
    pub fn read_spm(dir: &Path, cfg: &HfConfig, flavor: SpmFlavor) -> Result<Self, ConvertError> {
        let model_path = dir.join("tokenizer.model");
        let bytes = std::fs::read(&model_path).map_err(|source| ConvertError::Io {
            path: model_path.clone(),
            source,
        })?;
        let pieces =
            super::spm::read_pieces(&model_path, &bytes).map_err(|e| ConvertError::Tokenizer {
                path: model_path.clone(),
                message: e.to_string(),
            })?;
        let n_vocab = cfg.n_vocab;
        let mut tokens: Vec<String> = (0..n_vocab).map(|i| format!("[PAD{i}]")).collect();
        let mut scores = vec![-10000.0f32; n_vocab];
        let mut types = vec![token_type::UNUSED; n_vocab];
        if flavor == SpmFlavor::Phi3 && pieces.len() > n_vocab {
            return Err(ConvertError::Tokenizer {
                path: model_path,
                message: format!(
                    "{} pieces, more than config.json's vocab_size {n_vocab}",
                    pieces.len()
                ),
            });
        }
        // The common reader ignores pieces beyond vocab_size (with a warning).
        for (id, p) in pieces.into_iter().enumerate().take(n_vocab) {
            use super::spm::PieceType as P;
            types[id] = match p.ty {
                P::Unknown => token_type::UNKNOWN,
                P::Control => token_type::CONTROL,
                P::Unused => token_type::UNUSED,
                P::Byte => token_type::BYTE,
                P::Normal | P::UserDefined => token_type::NORMAL,
            };
            tokens[id] = p.text;
            scores[id] = p.score;
        }
        let mut overlay = SpmOverlay {
            tokens: &mut tokens,
            scores: &mut scores,
            types: &mut types,
            flavor,
        };
        overlay.added_tokens_json(dir)?;
        let tok_config = JsonFile::read_optional(&dir.join("tokenizer_config.json"))?;
        if let Some(tc) = &tok_config {
            overlay.added_tokens_decoder(tc)?;
        }
        let tok_path = dir.join("tokenizer.json");
        let tok = JsonFile::read_optional(&tok_path)?;
        let added = match &tok {
            Some(t) => added_tokens(t)?,
            None => Vec::new(),
        };
        if flavor == SpmFlavor::Phi3 {
            if let Some(t) = &tok {
                overlay.tokenizer_json_added(t, &added)?;
            }
        }
        let mut specials = SpecialVocab::default();
        if let Some(t) = &tok {
            if let Some(tc) = &tok_config {
                specials.read_token_names(tc);
            }
            specials.read_post_processor(t);
        }
        if let Some(tc) = &tok_config {
            specials.read_tokenizer_config(tc, &added, n_vocab);
        }
        specials.read_config(&cfg.json, n_vocab);
        Ok(Self {
            model: VocabModel::Spm { scores },
            pre: "default".into(),
            tokens,
            token_types: types,
            special_ids: specials.ids(),
            add_flags: specials.add_flags(),
            chat_template: tok_config
                .as_ref()
                .and_then(|tc| chat_template(dir, Some(tc))),
            space_prefix: SpacePrefix::None,
        })
    }

    /// The `tokenizer.*` keys in the order llama.cpp's converter writes them.
    pub fn metadata(&self) -> Vec<(String, MetaValue)> {
        let mut md: Vec<(String, MetaValue)> = Vec::new();
        let mut put = |k: &str, v: MetaValue| md.push((k.to_string(), v));
        if let SpacePrefix::Before(b) = self.space_prefix {
            put(keys::TOKENIZER_ADD_SPACE_PREFIX, MetaValue::Bool(b));
        }
        let model = match self.model {
            VocabModel::Bpe { .. } => "gpt2",
            VocabModel::Spm { .. } => "llama",
        };
        put(keys::TOKENIZER_MODEL, MetaValue::Str(model.into()));
        put(keys::TOKENIZER_PRE, MetaValue::Str(self.pre.clone()));
        put(keys::TOKENIZER_TOKENS, str_array(&self.tokens));
        if let VocabModel::Spm { scores } = &self.model {
            put(
                keys::TOKENIZER_SCORES,
                MetaValue::Array(scores.iter().map(|&s| MetaValue::F32(s)).collect()),
            );
        }
        put(
            keys::TOKENIZER_TOKEN_TYPE,
            MetaValue::Array(
                self.token_types
                    .iter()
                    .map(|&t| MetaValue::I32(t))
                    .collect(),
            ),
        );
        if let VocabModel::Bpe { merges } = &self.model {
            put(keys::TOKENIZER_MERGES, str_array(merges));
        }
        for &(key, id) in &self.special_ids {
            put(key, MetaValue::U32(id));
        }
        for &(key, on) in &self.add_flags {
            put(key, MetaValue::Bool(on));
        }
        if let Some(t) = &self.chat_template {
            put(keys::TOKENIZER_CHAT_TEMPLATE, MetaValue::Str(t.clone()));
        }
        if let SpacePrefix::After(b) = self.space_prefix {
            put(keys::TOKENIZER_ADD_SPACE_PREFIX, MetaValue::Bool(b));
        }
        md
    }
}

/// The added-token overlays of llama.cpp's SentencePiece readers.
struct SpmOverlay<'a> {
    tokens: &'a mut Vec<String>,
    scores: &'a mut Vec<f32>,
    types: &'a mut Vec<i32>,
    flavor: SpmFlavor,
}

impl SpmOverlay<'_> {
    /// The slot of id `id`: ids beyond the vocabulary are skipped by the common reader (with a
    /// warning) and are an error for Phi-3's (where llama.cpp fails with an IndexError).
    fn slot(&self, id: u64, path: &Path, what: &str) -> Result<Option<usize>, ConvertError> {
        match usize::try_from(id).ok().filter(|&i| i < self.tokens.len()) {
            Some(i) => Ok(Some(i)),
            None if self.flavor == SpmFlavor::Common => Ok(None),
            None => Err(ConvertError::Tokenizer {
                path: path.to_path_buf(),
                message: format!(
                    "{what} has id {id}, beyond config.json's vocab_size {}",
                    self.tokens.len()
                ),
            }),
        }
    }

    fn set(&mut self, i: usize, text: String, ty: i32) {
        self.tokens[i] = text;
        self.scores[i] = -1000.0;
        self.types[i] = ty;
    }

    /// `added_tokens.json`: `{"text": id}`, user-defined.
    fn added_tokens_json(&mut self, dir: &Path) -> Result<(), ConvertError> {
        let Some(file) = JsonFile::read_optional(&dir.join("added_tokens.json"))? else {
            return Ok(());
        };
        for (text, id) in &file.root {
            let id = id.as_u64().ok_or_else(|| {
                tok_err(&file, format!("token {text:?}: id {id} is not an integer"))
            })?;
            if let Some(i) = self.slot(id, &file.path, &format!("token {text:?}"))? {
                self.set(i, text.clone(), token_type::USER_DEFINED);
            }
        }
        Ok(())
    }

    /// `tokenizer_config.json`'s `added_tokens_decoder`: `{"id": {"content", "special"}}`.
    fn added_tokens_decoder(&mut self, tc: &JsonFile) -> Result<(), ConvertError> {
        let Some(Value::Object(decoder)) = tc.get("added_tokens_decoder") else {
            return Ok(());
        };
        for (id_text, data) in decoder {
            let id: u64 = id_text.trim().parse().map_err(|_| {
                tok_err(
                    tc,
                    format!("added_tokens_decoder key {id_text:?} is not a token id"),
                )
            })?;
            let content = data.get("content").and_then(Value::as_str).ok_or_else(|| {
                tok_err(
                    tc,
                    format!("added_tokens_decoder[{id_text}] has no content"),
                )
            })?;
            let special = data
                .get("special")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let Some(i) = self.slot(id, &tc.path, &format!("added token {content:?}"))? else {
                continue;
            };
            let (text, ty) = self.added_type(content, special);
            self.set(i, text, ty);
        }
        Ok(())
    }

    /// Phi-3 only: `tokenizer.json`'s `added_tokens`.
    fn tokenizer_json_added(
        &mut self,
        tok: &JsonFile,
        added: &[AddedToken],
    ) -> Result<(), ConvertError> {
        for a in added {
            let Some(i) = self.slot(
                a.id as u64,
                &tok.path,
                &format!("added token {:?}", a.content),
            )?
            else {
                continue;
            };
            let (text, ty) = self.added_type(&a.content, a.special);
            self.set(i, text, ty);
        }
        Ok(())
    }

    /// Control when special (or, for the common reader, when it looks special), else
    /// user-defined with `▁` pre-normalised to a space (common reader only).
    fn added_type(&self, content: &str, special: bool) -> (String, i32) {
        match self.flavor {
            SpmFlavor::Common if special || looks_special(content) => {
                (content.to_string(), token_type::CONTROL)
            }
            SpmFlavor::Common => (content.replace('\u{2581}', " "), token_type::USER_DEFINED),
            SpmFlavor::Phi3 if special => (content.to_string(), token_type::CONTROL),
            SpmFlavor::Phi3 => (content.to_string(), token_type::USER_DEFINED),
        }
    }
}

fn str_array(items: &[String]) -> MetaValue {
    MetaValue::Array(items.iter().map(|s| MetaValue::Str(s.clone())).collect())
}

fn tok_err(json: &JsonFile, message: impl Into<String>) -> ConvertError {
    ConvertError::Tokenizer {
        path: json.path.clone(),
        message: message.into(),
    }
}

/// One entry of `tokenizer.json`'s `added_tokens`.
struct AddedToken {
    id: u32,
    content: String,
    special: bool,
}

fn added_tokens(tok: &JsonFile) -> Result<Vec<AddedToken>, ConvertError> {
    let Some(list) = tok.get("added_tokens").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|t| {
            let id = t.get("id").and_then(Value::as_u64);
            let content = t.get("content").and_then(Value::as_str);
            match (id.and_then(|i| u32::try_from(i).ok()), content) {
                (Some(id), Some(content)) => Ok(AddedToken {
                    id,
                    content: content.to_string(),
                    special: t.get("special").and_then(Value::as_bool).unwrap_or(false),
                }),
                _ => Err(tok_err(
                    tok,
                    format!("added_tokens entry {t} lacks an id or content"),
                )),
            }
        })
        .collect()
}

/// The highest token id in `model.vocab` and `added_tokens` (ids that are not integers are
/// reported by [`token_list`]).
fn highest_id(tok: &JsonFile, added: &[AddedToken]) -> Option<usize> {
    let vocab_ids = tok
        .get("model")
        .and_then(|m| m.get("vocab"))
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|v| v.values().filter_map(Value::as_u64));
    vocab_ids
        .chain(added.iter().map(|a| a.id as u64))
        .max()
        .and_then(|i| usize::try_from(i).ok())
}

/// Tokens by id with llama.cpp's types: added tokens are control tokens when special (or when
/// they look like `<|…|>`), else user-defined; ids with no token become `[PAD{i}]`, unused.
fn token_list(
    tok: &JsonFile,
    added: &[AddedToken],
    n_vocab: usize,
) -> Result<(Vec<String>, Vec<i32>), ConvertError> {
    let model = tok
        .get("model")
        .ok_or_else(|| tok_err(tok, "no 'model' section"))?;
    let model_type = model.get("type").and_then(Value::as_str).unwrap_or("");
    if model_type != "BPE" {
        return Err(tok_err(
            tok,
            format!("model type {model_type:?} is not supported (byte-level BPE is)"),
        ));
    }
    let Some(Value::Object(vocab)) = model.get("vocab") else {
        return Err(tok_err(tok, "model.vocab is missing or not an object"));
    };
    let mut by_id: Vec<Option<String>> = vec![None; n_vocab];
    let mut place = |text: &str, id: u64| -> Result<(), ConvertError> {
        let slot = usize::try_from(id).ok().and_then(|i| by_id.get_mut(i));
        match slot {
            Some(slot) => {
                *slot = Some(text.to_string());
                Ok(())
            }
            None => Err(tok_err(
                tok,
                format!("token {text:?} has id {id}, beyond config.json's vocab_size {n_vocab}"),
            )),
        }
    };
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| tok_err(tok, format!("token {text:?}: id {id} is not an integer")))?;
        place(text, id)?;
    }
    for a in added {
        place(&a.content, a.id as u64)?;
    }
    let added_by_text: HashMap<&str, &AddedToken> =
        added.iter().map(|a| (a.content.as_str(), a)).collect();
    let mut tokens = Vec::with_capacity(n_vocab);
    let mut types = Vec::with_capacity(n_vocab);
    for (i, t) in by_id.into_iter().enumerate() {
        let (text, ty) = match t {
            None => (format!("[PAD{i}]"), token_type::UNUSED),
            Some(text) => match added_by_text.get(text.as_str()) {
                Some(a) if a.special || looks_special(&text) => (text, token_type::CONTROL),
                // llama.cpp pre-normalizes user-defined SentencePiece spaces.
                Some(_) => (text.replace('\u{2581}', " "), token_type::USER_DEFINED),
                None => (text, token_type::NORMAL),
            },
        };
        tokens.push(text);
        types.push(ty);
    }
    Ok((tokens, types))
}

/// llama.cpp's `does_token_look_special`.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// `model.merges` as `"left right"` lines; the pair form (transformers ≥ 4.45) has any space
/// inside a part written as U+0120, as gguf-py does.
fn merges(tok: &JsonFile) -> Result<Vec<String>, ConvertError> {
    let Some(list) = tok
        .get("model")
        .and_then(|m| m.get("merges"))
        .and_then(Value::as_array)
    else {
        return Err(tok_err(
            tok,
            "model.merges is missing (a BPE vocabulary needs it)",
        ));
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => {
                    Ok(format!("{} {}", space_to_g(a), space_to_g(b)))
                }
                _ => Err(tok_err(
                    tok,
                    format!("merge {i} ({m}) is not a pair of strings"),
                )),
            },
            _ => Err(tok_err(
                tok,
                format!("merge {i} ({m}) has an unknown format"),
            )),
        })
        .collect()
}

fn space_to_g(s: &str) -> String {
    s.replace(' ', "\u{0120}")
}

/// `tokenizer_config.json`'s `chat_template` (a string, or the `default` entry of a list),
/// else `chat_template.jinja`, else `chat_template.json`.
fn chat_template(dir: &Path, tok_config: Option<&JsonFile>) -> Option<String> {
    let from_value = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|e| e.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    };
    if let Some(t) = tok_config
        .and_then(|c| c.get("chat_template"))
        .and_then(from_value)
    {
        return Some(t);
    }
    if let Ok(t) = std::fs::read_to_string(dir.join("chat_template.jinja")) {
        return Some(t);
    }
    JsonFile::read_optional(&dir.join("chat_template.json"))
        .ok()
        .flatten()
        .and_then(|j| j.get("chat_template").and_then(from_value))
}

/// gguf-py's `SpecialVocab`: special token ids and add-token flags, first setting wins.
#[derive(Default)]
struct SpecialVocab {
    ids: Vec<(String, u32)>,
    add: Vec<(String, bool)>,
    /// `{typ}_token` strings, possibly filled in from the post-processor's template.
    names: HashMap<String, String>,
}

impl SpecialVocab {
    fn set_id(&mut self, typ: &str, id: Option<u64>, n_vocab: usize) {
        let Some(id) = id.filter(|&i| (i as usize) < n_vocab) else {
            return;
        };
        if !self.ids.iter().any(|(t, _)| t == typ) {
            self.ids.push((typ.to_string(), id as u32));
        }
    }

    /// `overwrite` = Python's `d[k] = v`; otherwise `d.setdefault(k, v)`.
    fn set_add(&mut self, typ: &str, on: bool, overwrite: bool) {
        match self.add.iter_mut().find(|(t, _)| t == typ) {
            Some(entry) if overwrite => entry.1 = on,
            Some(_) => {}
            None => self.add.push((typ.to_string(), on)),
        }
    }

    fn name(&self, typ: &str) -> Option<&str> {
        self.names.get(typ).map(String::as_str)
    }

    /// `tokenizer_config.json`'s `{typ}_token` strings (the post-processor may fill in more).
    fn read_token_names(&mut self, tc: &JsonFile) {
        for typ in SPECIAL_TYPES {
            if let Some(name) = token_name(tc.get(&format!("{typ}_token"))) {
                self.names.insert(typ.to_string(), name);
            }
        }
    }

    /// The `tokenizer.json` post-processor: ByteLevel means no BOS/EOS; a TemplateProcessing
    /// whose single-sequence template starts with the BOS (or CLS) token adds it, one that ends
    /// with EOS adds that, and a separator between A and B in the pair template adds SEP.
    fn read_post_processor(&mut self, tok: &JsonFile) {
        let Some(pp) = tok.get("post_processor") else {
            return;
        };
        let processors = match pp.get("processors").and_then(Value::as_array) {
            Some(list) => list.iter().collect::<Vec<_>>(),
            None => vec![pp],
        };
        for p in processors {
            match p.get("type").and_then(Value::as_str) {
                Some("ByteLevel") => {
                    self.set_add("bos", false, false);
                    self.set_add("eos", false, false);
                }
                Some("RobertaProcessing") => {
                    for typ in ["bos", "eos", "sep"] {
                        self.set_add(typ, true, true);
                    }
                }
                Some("TemplateProcessing") => self.read_template(p),
                _ => {}
            }
        }
    }

    fn read_template(&mut self, p: &Value) {
        let special_id = |e: &Value| {
            e.get("SpecialToken")
                .and_then(|s| s.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let single = p.get("single").and_then(Value::as_array);
        let Some(single) = single.filter(|s| s.len() > 1) else {
            return;
        };
        let first = single.first().and_then(special_id);
        if let Some(first) = &first {
            if self.name("bos").is_none() && self.name("cls") != Some(first) {
                self.names.insert("bos".into(), first.clone());
            }
            let is_bos = self.name("bos") == Some(first) || self.name("cls") == Some(first);
            self.set_add("bos", is_bos, true);
        }
        let last = single.last().and_then(special_id);
        if let Some(last) = &last {
            if self.name("eos").is_none() {
                self.names.insert("eos".into(), last.clone());
            }
            let is_eos = self.name("eos") == Some(last);
            self.set_add("eos", is_eos, true);
        }
        let pair = p.get("pair").and_then(Value::as_array);
        if let Some(pair) = pair {
            self.read_pair_template(pair, first.as_deref(), last.as_deref());
        }
    }

    /// `A [sep] [eos] B`: SEP is added when a separator token sits between the sequences.
    fn read_pair_template(&mut self, pair: &[Value], first: Option<&str>, last: Option<&str>) {
        let special_id = |e: &Value| {
            e.get("SpecialToken")
                .and_then(|s| s.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let seq_id = |e: &Value| {
            e.get("Sequence")
                .and_then(|s| s.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let start =
            usize::from(first.is_some() && pair.first().and_then(special_id).as_deref() == first);
        let stop = if last.is_some() && pair.last().and_then(special_id).as_deref() == last {
            pair.len().saturating_sub(1)
        } else {
            pair.len()
        };
        let Some(inner) = pair.get(start..stop).filter(|s| !s.is_empty()) else {
            return;
        };
        let (a, b) = (
            inner.first().and_then(seq_id),
            inner.last().and_then(seq_id),
        );
        if a.as_deref() != Some("A") || b.as_deref() != Some("B") || inner.len() < 3 {
            return;
        }
        let middle = &inner[1..inner.len() - 1];
        let seps = [self.name("sep"), self.name("eos")];
        let is_sep = |e: &Value| special_id(e).is_some_and(|id| seps.contains(&Some(id.as_str())));
        let add_sep = match middle {
            [one] => is_sep(one) && last.is_none(),
            [one, two, ..] => (is_sep(one) && last.is_none()) || is_sep(two),
            [] => false,
        };
        self.set_add("sep", add_sep, true);
    }

    /// `add_{typ}_token` flags (where the post-processor did not decide) and `{typ}_token`
    /// strings resolved to ids through `added_tokens`.
    fn read_tokenizer_config(&mut self, tc: &JsonFile, added: &[AddedToken], n_vocab: usize) {
        for typ in SPECIAL_TYPES {
            if let Some(on) = tc.bool_opt(&format!("add_{typ}_token")) {
                self.set_add(typ, on, false);
            }
            let Some(name) = self.name(typ).map(str::to_string) else {
                continue;
            };
            let id = added
                .iter()
                .find(|a| a.content == name)
                .map(|a| a.id as u64);
            self.set_id(typ, id, n_vocab);
        }
    }

    /// `config.json`'s integer `{typ}_token_id`s (lists, as Llama 3's eos, are ignored).
    fn read_config(&mut self, cfg: &JsonFile, n_vocab: usize) {
        for typ in SPECIAL_TYPES {
            let id = cfg.get(&format!("{typ}_token_id")).and_then(Value::as_u64);
            self.set_id(typ, id, n_vocab);
        }
    }

    fn ids(&self) -> Vec<(&'static str, u32)> {
        self.ids
            .iter()
            .filter_map(|(typ, id)| id_key(typ).map(|k| (k, *id)))
            .collect()
    }

    fn add_flags(&self) -> Vec<(&'static str, bool)> {
        self.add
            .iter()
            .filter_map(|(typ, on)| add_key(typ).map(|k| (k, *on)))
            .collect()
    }
}

/// A `{typ}_token` entry: a string or `{"content": …}`.
fn token_name(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// GGUF keys gguf-py has a writer method for (`cls` has none and is skipped, as there).
fn id_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => keys::TOKENIZER_BOS_ID,
        "eos" => keys::TOKENIZER_EOS_ID,
        "unk" => keys::TOKENIZER_UNK_ID,
        "sep" => keys::TOKENIZER_SEP_ID,
        "pad" => keys::TOKENIZER_PAD_ID,
        "mask" => keys::TOKENIZER_MASK_ID,
        _ => return None,
    })
}

fn add_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => keys::TOKENIZER_ADD_BOS,
        "eos" => keys::TOKENIZER_ADD_EOS,
        "sep" => keys::TOKENIZER_ADD_SEP,
        _ => return None,
    })
}

/// Files the vocabulary is read from (so the output may never replace one of them).
pub fn input_files(dir: &Path) -> Vec<PathBuf> {
    [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "chat_template.json",
        "tokenizer.model",
        "added_tokens.json",
    ]
    .iter()
    .map(|n| dir.join(n))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_special_matches_llama_cpp() {
        assert!(looks_special("<|eot_id|>"));
        assert!(looks_special("<unused12>"));
        assert!(!looks_special("hello"));
    }
}
