//! Every GGUF metadata key Lumen reads or writes, in one place.
//!
//! Architecture-scoped keys are written `{arch}.…` in GGUF; [`arch_key`] builds them so
//! the suffixes below are the only spelling in the code base.

pub const GENERAL_ARCHITECTURE: &str = "general.architecture";
pub const GENERAL_NAME: &str = "general.name";
pub const GENERAL_ALIGNMENT: &str = "general.alignment";
pub const GENERAL_FILE_TYPE: &str = "general.file_type";
pub const GENERAL_TYPE: &str = "general.type";
pub const GENERAL_QUANTIZATION_VERSION: &str = "general.quantization_version";
pub const GENERAL_BASENAME: &str = "general.basename";
pub const GENERAL_SIZE_LABEL: &str = "general.size_label";
// Split-file bookkeeping (`gguf-split`); a merged or quantized output drops them.
pub const SPLIT_NO: &str = "split.no";
pub const SPLIT_COUNT: &str = "split.count";
pub const SPLIT_TENSORS_COUNT: &str = "split.tensors.count";
// Sampling defaults from `generation_config.json` (llama.cpp's `general.sampling.*`).
pub const GENERAL_SAMPLING_TOP_K: &str = "general.sampling.top_k";
pub const GENERAL_SAMPLING_TOP_P: &str = "general.sampling.top_p";
pub const GENERAL_SAMPLING_MIN_P: &str = "general.sampling.min_p";
pub const GENERAL_SAMPLING_TEMP: &str = "general.sampling.temp";
pub const GENERAL_SAMPLING_PENALTY_REPEAT: &str = "general.sampling.penalty_repeat";

// Suffixes of `{arch}.*` keys.
pub const CONTEXT_LENGTH: &str = "context_length";
pub const EMBEDDING_LENGTH: &str = "embedding_length";
pub const BLOCK_COUNT: &str = "block_count";
pub const FEED_FORWARD_LENGTH: &str = "feed_forward_length";
pub const VOCAB_SIZE: &str = "vocab_size";
pub const HEAD_COUNT: &str = "attention.head_count";
pub const HEAD_COUNT_KV: &str = "attention.head_count_kv";
pub const EXPERT_COUNT: &str = "expert_count";
pub const KEY_LENGTH: &str = "attention.key_length";
pub const VALUE_LENGTH: &str = "attention.value_length";
pub const RMS_EPS: &str = "attention.layer_norm_rms_epsilon";
pub const ROPE_DIMENSION_COUNT: &str = "rope.dimension_count";
pub const ROPE_FREQ_BASE: &str = "rope.freq_base";
pub const ROPE_SCALING_TYPE: &str = "rope.scaling.type";
pub const ROPE_SCALING_FACTOR: &str = "rope.scaling.factor";

pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
pub const TOKENIZER_SCORES: &str = "tokenizer.ggml.scores";
pub const TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const TOKENIZER_MERGES: &str = "tokenizer.ggml.merges";
pub const TOKENIZER_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
pub const TOKENIZER_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
pub const TOKENIZER_EOT_ID: &str = "tokenizer.ggml.eot_token_id";
pub const TOKENIZER_EOM_ID: &str = "tokenizer.ggml.eom_token_id";
pub const TOKENIZER_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
pub const TOKENIZER_PAD_ID: &str = "tokenizer.ggml.padding_token_id";
pub const TOKENIZER_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
pub const TOKENIZER_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
pub const TOKENIZER_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
pub const TOKENIZER_CHAT_TEMPLATE: &str = "tokenizer.chat_template";
/// Spelled "seperator" in llama.cpp (`LLM_KV_TOKENIZER_SEP_ID`); the misspelling is the key.
pub const TOKENIZER_SEP_ID: &str = "tokenizer.ggml.seperator_token_id";
pub const TOKENIZER_MASK_ID: &str = "tokenizer.ggml.mask_token_id";
pub const TOKENIZER_ADD_SEP: &str = "tokenizer.ggml.add_sep_token";

/// `{arch}.{suffix}`, e.g. `llama.block_count`.
pub fn arch_key(arch: &str, suffix: &str) -> String {
    format!("{arch}.{suffix}")
}
