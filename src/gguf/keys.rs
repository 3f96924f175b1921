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
/// Phi-3 LongRoPE: the training context the short factors are for, and the factor that
/// multiplies cos and sin.
pub const ROPE_SCALING_ORIG_CTX: &str = "rope.scaling.original_context_length";
pub const ROPE_SCALING_ATTN_FACTOR: &str = "rope.scaling.attn_factor";
/// Gemma 2/3, Mistral: positions a sliding-window layer sees.
pub const SLIDING_WINDOW: &str = "attention.sliding_window";
/// uint n: every n-th layer (the last of each n) is global, the rest slide (llama.cpp's
/// `set_swa_pattern`); absent = the architecture's own pattern.
pub const SLIDING_WINDOW_PATTERN: &str = "attention.sliding_window_pattern";
/// Gemma 3: RoPE base of the sliding-window layers.
pub const ROPE_FREQ_BASE_SWA: &str = "rope.freq_base_swa";
/// Gemma 2: `cap · tanh(x / cap)` on attention scores and on the final logits.
pub const ATTN_LOGIT_SOFTCAPPING: &str = "attn_logit_softcapping";
pub const FINAL_LOGIT_SOFTCAPPING: &str = "final_logit_softcapping";

// Llama 3.2 Vision (`mllama.*`, Ollama's keys). Text keys are the llama ones under `mllama.`.
/// i32 array: indices (in the merged layer list) of the cross-attention layers.
pub const CROSS_ATTENTION_LAYERS: &str = "attention.cross_attention_layers";
pub const VISION_BLOCK_COUNT: &str = "vision.block_count";
pub const VISION_GLOBAL_BLOCK_COUNT: &str = "vision.global.block_count";
/// i32 array: local layers whose *inputs* feed the intermediate features (Meta semantics).
pub const VISION_INTERMEDIATE_LAYERS: &str = "vision.intermediate_layers_indices";
pub const VISION_EMBEDDING_LENGTH: &str = "vision.embedding_length";
pub const VISION_FEED_FORWARD_LENGTH: &str = "vision.feed_forward_length";
pub const VISION_HEAD_COUNT: &str = "vision.attention.head_count";
pub const VISION_LAYER_NORM_EPS: &str = "vision.attention.layer_norm_epsilon";
pub const VISION_IMAGE_SIZE: &str = "vision.image_size";
pub const VISION_PATCH_SIZE: &str = "vision.patch_size";
pub const VISION_MAX_NUM_TILES: &str = "vision.max_num_tiles";
pub const VISION_NUM_CHANNELS: &str = "vision.num_channels";
/// f32 arrays of 3 (Lumen's addition from `preprocessor_config.json`; CLIP values when absent,
/// as in Ollama's files).
pub const VISION_IMAGE_MEAN: &str = "vision.image_mean";
pub const VISION_IMAGE_STD: &str = "vision.image_std";

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
