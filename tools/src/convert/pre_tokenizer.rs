//! The BPE pre-tokenizer's name (`tokenizer.ggml.pre`), identified as llama.cpp does: by hashing
//! the ids the model's own tokenizer gives a probe text ([`KNOWN_PRE`]). A vocabulary whose hash
//! is not in the table but whose `tokenizer.json` pre-tokenizer is exactly Qwen2's (its split
//! regex, isolated, then byte-level mapping without a regex) is `qwen2`: that is the pipeline
//! llama.cpp's `qwen2` pre-tokenizer implements, whatever the architecture, and it is how a
//! freshly trained or re-trained Qwen vocabulary (the test fixtures', for one) is recognised.
//! Deciding by the architecture instead would mislabel Qwen2-architecture models with other
//! pre-tokenizers (DeepSeek-R1-Distill-Qwen's, for one).

use std::path::Path;

use lumen::tokenizer::QWEN2_REGEX;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::hf::JsonFile;
use super::ConvertError;

/// llama.cpp's pre-tokenizer probe text (`get_vocab_base_pre`'s `chktxt`): the SHA-256 of
/// `str(tokenizer.encode(chktxt))` identifies the pre-tokenizer.
const CHKTXT: &str = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u{200d}🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

/// The probe hashes from llama.cpp's table for the pre-tokenizers Lumen's runtime implements.
const KNOWN_PRE: &[(&str, &str)] = &[
    // meta-llama/Meta-Llama-3-8B (also Llama 3.1 / 3.2)
    (
        "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5",
        "llama-bpe",
    ),
    // HuggingFaceTB/SmolLM-135M (also SmolLM2)
    (
        "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249",
        "smollm",
    ),
    // openai-community/gpt2
    (
        "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454",
        "gpt-2",
    ),
    // bigcode/starcoder2-3b
    (
        "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34",
        "starcoder",
    ),
    // smallcloudai/Refact-1_6-base
    (
        "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff",
        "refact",
    ),
    // WisdomShell/CodeShell-7B
    (
        "7b3e7548e4308f52a76e8229e4e6cc831195d0d1df43aed21ac6c93da05fec5f",
        "codeshell",
    ),
    // Qwen/Qwen1.5-7B (also Qwen2, Qwen2.5, Qwen3)
    (
        "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea",
        "qwen2",
    ),
    // Qwen/Qwen3-Embedding-0.6B
    (
        "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c",
        "qwen2",
    ),
];

/// Encodes llama.cpp's probe text with the model's own tokenizer and looks the hash up; an
/// unknown hash with Qwen2's exact pre-tokenizer is `qwen2` (see the module doc).
pub(super) fn name(tok_path: &Path, tok: &JsonFile) -> Result<String, ConvertError> {
    match probe_pre_tokenizer(tok_path) {
        Err(ConvertError::UnknownPreTokenizer { .. }) if is_qwen2_pre_tokenizer(tok) => {
            Ok("qwen2".into())
        }
        other => other,
    }
}

/// `pre_tokenizer` = `Sequence[Split(Regex(Qwen2's), Isolated, not inverted),
/// ByteLevel(use_regex = false)]`, as Qwen2/2.5/3's `tokenizer.json` has it.
fn is_qwen2_pre_tokenizer(tok: &JsonFile) -> bool {
    let Some(pre) = tok.get("pre_tokenizer") else {
        return false;
    };
    let ty = |v: &Value| v.get("type").and_then(Value::as_str).map(str::to_string);
    if ty(pre).as_deref() != Some("Sequence") {
        return false;
    }
    let Some([split, byte_level]) = pre
        .get("pretokenizers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    else {
        return false;
    };
    let split_ok = ty(split).as_deref() == Some("Split")
        && split
            .get("pattern")
            .and_then(|p| p.get("Regex"))
            .and_then(Value::as_str)
            == Some(QWEN2_REGEX)
        && split.get("behavior").and_then(Value::as_str) == Some("Isolated")
        && split.get("invert").and_then(Value::as_bool) == Some(false);
    let byte_level_ok = ty(byte_level).as_deref() == Some("ByteLevel")
        && byte_level.get("use_regex").and_then(Value::as_bool) == Some(false);
    split_ok && byte_level_ok
}

/// Encodes llama.cpp's probe text with the model's own tokenizer and looks the hash up.
fn probe_pre_tokenizer(tok_path: &Path) -> Result<String, ConvertError> {
    let err = |message: String| ConvertError::Tokenizer {
        path: tok_path.to_path_buf(),
        message,
    };
    let tk = tokenizers::Tokenizer::from_file(tok_path)
        .map_err(|e| err(format!("the tokenizers crate cannot load it: {e}")))?;
    let enc = tk
        .encode(CHKTXT, true)
        .map_err(|e| err(format!("cannot encode the pre-tokenizer probe text: {e}")))?;
    let hash = probe_hash(enc.get_ids());
    KNOWN_PRE
        .iter()
        .find(|(h, _)| *h == hash)
        .map(|(_, name)| name.to_string())
        .ok_or_else(|| ConvertError::UnknownPreTokenizer {
            path: tok_path.to_path_buf(),
            hash,
            known: KNOWN_PRE
                .iter()
                .map(|(_, n)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// SHA-256 of Python's `str(list_of_ids)`, e.g. `"[128000, 198]"`.
fn probe_hash(ids: &[u32]) -> String {
    let text = format!(
        "[{}]",
        ids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_hash_formats_ids_like_python_str_of_a_list() {
        // Python: hashlib.sha256(str([1, 2]).encode()).hexdigest()
        assert_eq!(
            probe_hash(&[1, 2]),
            "3a316d6d3226f84c1e46e4447fa8d5fd800bff4a1bc6498152523cd4a602b69b"
        );
    }
}
