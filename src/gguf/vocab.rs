//! The `tokenizer.ggml.*` metadata of a GGUF file, gathered for [`crate::tokenizer`].

use super::{keys, GgufError, Metadata};
use crate::tokenizer::VocabSpec;

impl VocabSpec {
    pub fn from_gguf(md: &Metadata) -> Result<Self, GgufError> {
        let id = |key: &str| md.opt(key, |m, k| m.get_u32(k));
        let model = md.get_str(keys::TOKENIZER_MODEL)?.to_string();
        Ok(Self {
            merges: md
                .opt(keys::TOKENIZER_MERGES, |m, k| m.get_str_array(k))?
                .unwrap_or_default(),
            pre: md.opt(keys::TOKENIZER_PRE, |m, k| m.get_str(k).map(str::to_string))?,
            tokens: md.get_str_array(keys::TOKENIZER_TOKENS)?,
            scores: md.opt(keys::TOKENIZER_SCORES, |m, k| m.get_f32_array(k))?,
            token_types: md.opt(keys::TOKENIZER_TOKEN_TYPE, |m, k| m.get_i32_array(k))?,
            bos: id(keys::TOKENIZER_BOS_ID)?,
            eos: id(keys::TOKENIZER_EOS_ID)?,
            eot: id(keys::TOKENIZER_EOT_ID)?,
            eom: id(keys::TOKENIZER_EOM_ID)?,
            unk: id(keys::TOKENIZER_UNK_ID)?,
            add_bos: md.opt(keys::TOKENIZER_ADD_BOS, |m, k| m.get_bool(k))?,
            add_space_prefix: md.opt(keys::TOKENIZER_ADD_SPACE_PREFIX, |m, k| m.get_bool(k))?,
            model,
        })
    }
}
