//! Text ⇄ token ids for the vocabularies GGUF files carry.
//!
//! The GGUF glue fills a [`VocabSpec`] from the `tokenizer.ggml.*` metadata; [`Tokenizer::from_spec`]
//! turns it into a tokenizer built on the `tokenizers` crate (its BPE model, pre-tokenizers,
//! normalizers and added-token matching), configured the way llama.cpp reads the same metadata:
//!
//! * `model = "gpt2"`: byte-level BPE. Token strings are in the GPT-2 byte↔unicode alphabet and
//!   `merges` ranks the merges. The pre-tokenizer depends on `pre`:
//!   - `"llama-bpe"` / `"llama3"` / `"llama-v3"`: the Llama 3 split regex (isolated) then
//!     byte-level mapping, with `ignore_merges` (a whole pre-token that is in the vocabulary is
//!     emitted as is). BOS is added by default.
//!   - `"qwen2"`: Qwen2's regex (Llama 3's with single digits) then byte-level mapping, merges
//!     applied to every pre-token. No BOS by default.
//!   - `"smollm"` (and `"starcoder"`, `"refact"`, `"codeshell"`, which llama.cpp treats alike):
//!     every digit is its own piece, then the GPT-2 regex. Matches HF's SmolLM2 tokenizer
//!     (`Digits(individual_digits)` + `ByteLevel(use_regex)`). No BOS by default.
//!   - `"gpt2"` / `"gpt-2"`: the GPT-2 regex only. No BOS by default.
//!   - `"default"` (or no `pre`): llama.cpp's fallback chain of four regexes. No BOS by default.
//! * `model = "llama"`: SentencePiece-style BPE. Merges are derived from the scores the way HF's
//!   SentencePiece converter does (pairs of vocabulary pieces whose concatenation is a piece,
//!   ranked by that piece's score), spaces become `▁`, a `▁` is prepended to every text segment
//!   when `add_space_prefix` (default true), and characters without a piece fall back to the
//!   `<0xNN>` byte tokens. BOS is added by default.
//!
//! Tokens of type control (3), user-defined (4) and unknown (2) are matched as whole tokens
//! wherever their text occurs in the input, before any pre-tokenization (llama.cpp's
//! `parse_special = true`, HF's added tokens).
//!
//! Decoding concatenates the raw bytes of every token ([`Tokenizer::token_bytes`]), special
//! tokens included (HF `decode(skip_special_tokens=False)`; nothing is skipped, not even BOS),
//! and no "clean-up of tokenization spaces" is done. For SentencePiece vocabularies with
//! `add_space_prefix`, one leading space of the result is removed, as HF's Llama decoder and
//! SentencePiece do. Invalid UTF-8 is replaced by U+FFFD.

use std::collections::{HashMap, HashSet};

use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

/// The image placeholder token of Llama 3.2 Vision: each one stands for one image.
pub const IMAGE_TOKEN: &str = "<|image|>";

/// `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Everything the tokenizer needs from the `tokenizer.ggml.*` metadata of a GGUF file.
#[derive(Debug, Clone, Default)]
pub struct VocabSpec {
    /// `tokenizer.ggml.model`: `"gpt2"` or `"llama"`.
    pub model: String,
    /// `tokenizer.ggml.pre` (only used by `"gpt2"` vocabularies).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, indexed by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (needed by `"llama"` vocabularies).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`; `None` means every token is normal.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges` as `"left right"` lines, highest priority first (`"gpt2"` only).
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`; `None` = the model type's default (true for `"llama"`
    /// and for the Llama 3 pre-tokenizer, false for the other `"gpt2"` pre-tokenizers).
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`; `None` = true for `"llama"`, false for `"gpt2"`.
    pub add_space_prefix: Option<bool>,
}

/// Why a vocabulary could not be turned into a tokenizer, or a text not encoded.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("unsupported tokenizer model {0:?}; supported: \"gpt2\" (byte-level BPE), \"llama\" (SentencePiece BPE)")]
    UnsupportedModel(String),
    #[error("unsupported pre-tokenizer {0:?}; supported: {SUPPORTED_PRE}")]
    UnsupportedPre(String),
    #[error("the vocabulary is empty")]
    EmptyVocab,
    #[error(
        "the vocabulary's pieces are too long to derive merges from (Σ bytes² = {work}, at most \
         {MAX_MERGE_WORK}; the longest is token {longest}, {longest_bytes} bytes)"
    )]
    MergeWorkTooLarge {
        work: u64,
        longest: u32,
        longest_bytes: usize,
    },
    #[error("token {id} is empty")]
    EmptyToken { id: u32 },
    #[error("token {text:?} appears twice in the vocabulary (ids {first} and {second})")]
    DuplicateToken {
        text: String,
        first: u32,
        second: u32,
    },
    #[error("{what} has {got} entries but the vocabulary has {expected} tokens")]
    LengthMismatch {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("merge {index} ({line:?}) is not two tokens separated by one space")]
    BadMerge { index: usize, line: String },
    #[error("merge {index} ({line:?}): {piece:?} is not in the vocabulary")]
    MergeNotInVocab {
        index: usize,
        line: String,
        piece: String,
    },
    #[error("a \"gpt2\" vocabulary needs merges, and this one has none")]
    MissingMerges,
    #[error("a \"llama\" vocabulary needs scores, and this one has none")]
    MissingScores,
    #[error("{what} token id {id} is out of range (the vocabulary has {n_vocab} tokens)")]
    IdOutOfRange {
        what: &'static str,
        id: u32,
        n_vocab: usize,
    },
    #[error("add_bos is set but the vocabulary has no BOS token id")]
    MissingBos,
    #[error("tokenizer backend: {0}")]
    Backend(String),
}

const SUPPORTED_PRE: &str = "\"llama-bpe\" (\"llama3\", \"llama-v3\"), \"qwen2\", \"smollm\" (\"starcoder\", \"refact\", \"codeshell\"), \"gpt2\" (\"gpt-2\"), \"default\"";

/// The Llama 3 split regex as it appears in Meta's `tokenizer.json`.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex (its `tokenizer.json`): Llama 3's with single digits (`\p{N}`, not
/// `\p{N}{1,3}`).
pub const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The GPT-2 split regex (the one `ByteLevel(use_regex = true)` applies).
const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Token texts llama.cpp treats as end of generation (besides the eos/eot/eom ids).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

const SPACE_MARK: char = '\u{2581}'; // ▁

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// GPT-2 style byte-level BPE.
    ByteLevel,
    /// SentencePiece-style BPE (`▁` for spaces, `<0xNN>` byte fallback).
    Spm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pre {
    Llama3,
    Qwen2,
    SmolLm,
    Gpt2,
    Default,
}

/// A tokenizer for one GGUF vocabulary. Cheap to share (`Send + Sync`).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    kind: Kind,
    tokens: Vec<String>,
    types: Vec<i32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_space_prefix: bool,
    eog: HashSet<u32>,
    /// GPT-2 byte-level alphabet: char → byte.
    byte_decoder: HashMap<char, u8>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Backend(e.to_string())
}

/// GPT-2's reversible byte → printable char table.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            b as char
        } else {
            let c = char::from_u32(256 + n).expect("valid char");
            n += 1;
            c
        };
    }
    table
}

fn check_id(what: &'static str, id: Option<u32>, n_vocab: usize) -> Result<(), TokenizerError> {
    match id {
        Some(id) if id as usize >= n_vocab => {
            Err(TokenizerError::IdOutOfRange { what, id, n_vocab })
        }
        _ => Ok(()),
    }
}

/// Splits a merge line `"left right"` at the first space after the first character
/// (as llama.cpp does).
fn split_merge(line: &str) -> Option<(&str, &str)> {
    let first = line.chars().next()?.len_utf8();
    let pos = line[first..].find(' ')? + first;
    let (l, r) = (&line[..pos], &line[pos + 1..]);
    if r.is_empty() || r.contains(' ') {
        return None;
    }
    Some((l, r))
}

/// Parses `<0xNN>` into its byte.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

impl Tokenizer {
    /// Builds the tokenizer. Fails with a named error on an unsupported model or pre-tokenizer,
    /// a malformed merge line, a special token id outside the vocabulary, or arrays whose length
    /// does not match the vocabulary.
    pub fn from_spec(spec: VocabSpec) -> Result<Self, TokenizerError> {
        let kind = match spec.model.as_str() {
            "gpt2" => Kind::ByteLevel,
            "llama" => Kind::Spm,
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let pre = match kind {
            Kind::Spm => None,
            Kind::ByteLevel => Some(match spec.pre.as_deref() {
                Some("llama-bpe" | "llama3" | "llama-v3") => Pre::Llama3,
                Some("qwen2") => Pre::Qwen2,
                Some("smollm" | "starcoder" | "refact" | "codeshell") => Pre::SmolLm,
                Some("gpt2" | "gpt-2") => Pre::Gpt2,
                Some("default") | None => Pre::Default,
                Some(other) => return Err(TokenizerError::UnsupportedPre(other.to_string())),
            }),
        };

        let n_vocab = spec.tokens.len();
        if n_vocab == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if n_vocab > u32::MAX as usize {
            return Err(TokenizerError::LengthMismatch {
                what: "tokens",
                got: n_vocab,
                expected: u32::MAX as usize,
            });
        }
        let had_types = spec.token_types.is_some();
        let mut types = match spec.token_types {
            Some(t) if t.len() != n_vocab => {
                return Err(TokenizerError::LengthMismatch {
                    what: "token_types",
                    got: t.len(),
                    expected: n_vocab,
                })
            }
            Some(t) => t,
            None => vec![token_type::NORMAL; n_vocab],
        };
        if let Some(s) = &spec.scores {
            if s.len() != n_vocab {
                return Err(TokenizerError::LengthMismatch {
                    what: "scores",
                    got: s.len(),
                    expected: n_vocab,
                });
            }
        }

        // Special ids: explicit values win; llama.cpp's SPM defaults otherwise.
        let (mut bos, mut eos, mut unk) = (spec.bos, spec.eos, spec.unk);
        if kind == Kind::Spm {
            let default = |v: Option<u32>, d: u32| v.or(((d as usize) < n_vocab).then_some(d));
            bos = default(bos, 1);
            eos = default(eos, 2);
            unk = default(unk, 0);
        }
        check_id("bos", bos, n_vocab)?;
        check_id("eos", eos, n_vocab)?;
        check_id("eot", spec.eot, n_vocab)?;
        check_id("eom", spec.eom, n_vocab)?;
        check_id("unknown", unk, n_vocab)?;

        let add_bos = spec
            .add_bos
            .unwrap_or(matches!(kind, Kind::Spm) || pre == Some(Pre::Llama3));
        if add_bos && bos.is_none() {
            return Err(TokenizerError::MissingBos);
        }
        let add_space_prefix = spec.add_space_prefix.unwrap_or(kind == Kind::Spm);

        // Token texts (llama.cpp renames empty tokens so that every text is unique).
        let mut tokens = spec.tokens;
        let mut vocab: Vocab = Vocab::with_capacity(n_vocab);
        for (id, text) in tokens.iter_mut().enumerate() {
            if text.is_empty() {
                *text = format!("[EMPTY_{id}]");
            }
            if let Some(first) = vocab.insert(text.clone(), id as u32) {
                return Err(TokenizerError::DuplicateToken {
                    text: text.clone(),
                    first,
                    second: id as u32,
                });
            }
        }
        if kind == Kind::Spm && !had_types {
            // Without types, recognise the byte tokens and treat the well-known ids as control.
            for (t, text) in types.iter_mut().zip(&tokens) {
                if parse_byte_token(text).is_some() {
                    *t = token_type::BYTE;
                }
            }
            for id in [bos, eos].into_iter().flatten() {
                types[id as usize] = token_type::CONTROL;
            }
            if let Some(u) = unk {
                types[u as usize] = token_type::UNKNOWN;
            }
        }

        let merges: Merges = match kind {
            Kind::ByteLevel => {
                if spec.merges.is_empty() {
                    return Err(TokenizerError::MissingMerges);
                }
                let mut merges = Vec::with_capacity(spec.merges.len());
                for (index, line) in spec.merges.iter().enumerate() {
                    let (l, r) = split_merge(line).ok_or_else(|| TokenizerError::BadMerge {
                        index,
                        line: line.clone(),
                    })?;
                    let joined = format!("{l}{r}");
                    for piece in [l, r, joined.as_str()] {
                        if !vocab.contains_key(piece) {
                            return Err(TokenizerError::MergeNotInVocab {
                                index,
                                line: line.clone(),
                                piece: piece.to_string(),
                            });
                        }
                    }
                    merges.push((l.to_string(), r.to_string()));
                }
                merges
            }
            Kind::Spm => {
                let scores = spec.scores.as_ref().ok_or(TokenizerError::MissingScores)?;
                spm_merges(&tokens, &types, scores, &vocab)?
            }
        };

        let mut builder = BPE::builder().vocab_and_merges(vocab, merges);
        match kind {
            Kind::ByteLevel => {
                builder = builder.ignore_merges(pre == Some(Pre::Llama3));
            }
            Kind::Spm => {
                builder = builder.byte_fallback(true).fuse_unk(true);
                if let Some(u) = unk {
                    builder = builder.unk_token(tokens[u as usize].clone());
                }
            }
        }
        let model = builder.build().map_err(backend)?;
        let mut inner = tokenizers::Tokenizer::new(model);

        match kind {
            Kind::ByteLevel => {
                let byte_level = ByteLevel::new(false, true, false);
                let regex_split = |re: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
                    Ok(Split::new(
                        SplitPattern::Regex(re.to_string()),
                        SplitDelimiterBehavior::Isolated,
                        false,
                    )
                    .map_err(backend)?
                    .into())
                };
                let steps: Vec<PreTokenizerWrapper> = match pre.expect("byte-level has a pre") {
                    Pre::Llama3 => vec![regex_split(LLAMA3_REGEX)?, byte_level.into()],
                    Pre::Qwen2 => vec![regex_split(QWEN2_REGEX)?, byte_level.into()],
                    Pre::SmolLm => vec![
                        Digits::new(true).into(),
                        ByteLevel::new(false, true, true).into(),
                    ],
                    Pre::Gpt2 => vec![ByteLevel::new(false, true, true).into()],
                    Pre::Default => vec![
                        regex_split(r"[\p{P}\$\+<=>\^~\|]+")?,
                        regex_split(GPT2_REGEX)?,
                        regex_split(r"\p{N}+")?,
                        regex_split(r"[0-9][0-9][0-9]")?,
                        byte_level.into(),
                    ],
                };
                inner.with_pre_tokenizer(Some(PreSequence::new(steps)));
            }
            Kind::Spm => {
                let replace = Replace::new(" ", SPACE_MARK.to_string()).map_err(backend)?;
                let normalizer = if add_space_prefix {
                    NormalizerSequence::new(vec![
                        Prepend::new(SPACE_MARK.to_string()).into(),
                        replace.into(),
                    ])
                } else {
                    NormalizerSequence::new(vec![replace.into()])
                };
                inner.with_normalizer(Some(normalizer)).map_err(backend)?;
            }
        }

        // Control, user-defined and unknown tokens are matched whole, on the raw text.
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| {
                matches!(
                    t,
                    token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN
                )
            })
            .map(|(text, &t)| {
                AddedToken::from(text.clone(), t != token_type::USER_DEFINED).normalized(false)
            })
            .collect();
        inner.add_special_tokens(added).map_err(backend)?;
        for (id, text) in tokens.iter().enumerate() {
            if matches!(
                types[id],
                token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN
            ) && inner.token_to_id(text) != Some(id as u32)
            {
                return Err(TokenizerError::Backend(format!(
                    "added token {text:?} did not keep id {id}"
                )));
            }
        }

        // End-of-generation set, as llama.cpp builds it.
        let mut eog: HashSet<u32> = [eos, spec.eot, spec.eom].into_iter().flatten().collect();
        for (id, text) in tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&text.as_str()) {
                eog.insert(id as u32);
            }
        }

        let table = bytes_to_unicode();
        let byte_decoder = (0..=255u8).map(|b| (table[b as usize], b)).collect();

        Ok(Self {
            inner,
            kind,
            tokens,
            types,
            bos,
            eos,
            add_bos,
            add_space_prefix,
            eog,
            byte_decoder,
        })
    }

    /// Encodes `text`; special-token texts in it (e.g. `<|eot_id|>`) become those tokens.
    /// With `add_bos`, the BOS id is prepended (an error if the vocabulary has none).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        if add_bos {
            ids.push(self.bos.ok_or(TokenizerError::MissingBos)?);
        }
        if text.is_empty() {
            return Ok(ids);
        }
        let enc = self.inner.encode_fast(text, false).map_err(backend)?;
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Decodes ids to text: the concatenated [`token_bytes`](Self::token_bytes) of every id
    /// (special tokens and BOS included, ids out of range skipped), lossily as UTF-8. For
    /// SentencePiece vocabularies with `add_space_prefix`, one leading space is removed.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.token_bytes(id));
        }
        let mut s = String::from_utf8_lossy(&bytes).into_owned();
        if self.kind == Kind::Spm && self.add_space_prefix && s.starts_with(' ') {
            s.remove(0);
        }
        s
    }

    /// The raw bytes one token stands for: byte-level text mapped back to bytes (gpt2), `▁` as a
    /// space and `<0xNN>` as that byte (llama); control and user-defined tokens as their text.
    /// Empty for ids out of range.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(text) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        let ty = self.types[id as usize];
        if matches!(ty, token_type::CONTROL | token_type::USER_DEFINED) {
            return text.as_bytes().to_vec();
        }
        match self.kind {
            Kind::ByteLevel => {
                let mut out = Vec::with_capacity(text.len());
                for c in text.chars() {
                    match self.byte_decoder.get(&c) {
                        Some(&b) => out.push(b),
                        None => {
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                }
                out
            }
            Kind::Spm => {
                if ty == token_type::BYTE {
                    if let Some(b) = parse_byte_token(text) {
                        return vec![b];
                    }
                }
                text.replace(SPACE_MARK, " ").into_bytes()
            }
        }
    }

    /// Number of tokens in the vocabulary (including special tokens).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the model expects a BOS at the start of a prompt (`add_bos_token`, else the
    /// vocabulary type's default).
    pub fn add_bos_default(&self) -> bool {
        self.add_bos
    }

    /// True for the eos, eot and eom ids and for tokens llama.cpp treats as end of generation by
    /// their text (`<|eot_id|>`, `<|eom_id|>`, `<|end_of_text|>`, `<|im_end|>`, `<|endoftext|>`,
    /// `<end_of_turn>`, `<|end|>`, ...).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// Every token that ends a generation (EOS, EOT, EOM and the like).
    pub fn end_of_generation_tokens(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }

    /// The token's text as stored in the vocabulary (byte-level alphabet for gpt2, `▁` for
    /// llama).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The token's `tokenizer.ggml.token_type` (1 when the vocabulary had none).
    pub fn token_type(&self, id: u32) -> Option<i32> {
        self.types.get(id as usize).copied()
    }

    /// The id of the token whose vocabulary text is exactly `text` (special tokens such as
    /// `<|eot_id|>`; searched from the end, where added tokens live).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokens
            .iter()
            .rposition(|t| t == text)
            .map(|i| i as u32)
    }

    /// `<|image|>` (Llama 3.2 Vision), if the vocabulary has it.
    pub fn image_token(&self) -> Option<u32> {
        self.token_id(IMAGE_TOKEN)
    }

    /// Whether the token is a control token (BOS, EOS, chat markers, ...).
    pub fn is_control(&self, id: u32) -> bool {
        self.token_type(id) == Some(token_type::CONTROL)
    }
}

/// Merges for a SentencePiece BPE vocabulary, derived from the scores like HF's
/// `SentencePieceExtractor`: every split of a piece into two vocabulary pieces is a merge, and
/// merges are ranked by the merged piece's score (higher first), then by piece id, then by the
/// ids of the two halves.
///
/// Trying every split hashes both halves, so a piece of `n` bytes costs about `n²`: the sum
/// over the pieces is checked against [`MAX_MERGE_WORK`] first (one multi-megabyte piece would
/// otherwise take hours).
fn spm_merges(
    tokens: &[String],
    types: &[i32],
    scores: &[f32],
    vocab: &Vocab,
) -> Result<Merges, TokenizerError> {
    let eligible = |id: usize| matches!(types[id], token_type::NORMAL | token_type::USER_DEFINED);
    let work = (0..tokens.len())
        .filter(|&id| eligible(id))
        .map(|id| (tokens[id].len() as u64).pow(2))
        .fold(0u64, u64::saturating_add);
    if work > MAX_MERGE_WORK {
        let longest = (0..tokens.len())
            .max_by_key(|&id| tokens[id].len())
            .unwrap_or(0);
        return Err(TokenizerError::MergeWorkTooLarge {
            work,
            longest: longest as u32,
            longest_bytes: tokens[longest].len(),
        });
    }
    let mut found: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if !eligible(id) {
            continue;
        }
        for (pos, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(pos);
            if let (Some(&il), Some(&ir)) = (vocab.get(l), vocab.get(r)) {
                found.push((scores[id], id as u32, il, ir));
            }
        }
    }
    found.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    Ok(found
        .into_iter()
        .map(|(_, _, l, r)| (tokens[l as usize].clone(), tokens[r as usize].clone()))
        .collect())
}

/// Bound on Σ (piece bytes)² over a SentencePiece vocabulary's pieces, the cost of deriving its
/// merges: 10× Gemma 3's 262,144 pieces (2.65e7), a few tenths of a second.
pub const MAX_MERGE_WORK: u64 = 1 << 28;

/// Turns a stream of token ids into text without ever cutting a UTF-8 character: bytes of an
/// incomplete character are held back until the tokens completing it arrive.
///
/// The concatenation of every [`push`](Self::push) and the final [`flush`](Self::flush) equals
/// the token bytes decoded as UTF-8 (for byte-level vocabularies: [`Tokenizer::decode`]; for
/// SentencePiece vocabularies `decode` additionally drops the one leading space).
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token; returns the text that is now complete (possibly empty). Byte sequences
    /// that can never become valid UTF-8 are emitted as U+FFFD right away.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.pending.extend(tok.token_bytes(id));
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("valid prefix"),
                    );
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Returns whatever is still held back (an incomplete character becomes U+FFFD) and
    /// resets the decoder.
    pub fn flush(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }

    /// Whether bytes of an incomplete character are being held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
