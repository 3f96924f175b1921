//! SmolLM2-135M-Instruct ("gpt2" vocabulary, pre "smollm") read from the real GGUF, against ids
//! produced by HF transformers (`../shared/refs/smollm2/`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use lumen::tokenizer::{Tokenizer, VocabSpec};
use serde_json::Value;

mod tokenizer_common;
use tokenizer_common::{ids_of, read_json, stream, strs_of};

mod common;

fn roundtrip_json() -> PathBuf {
    common::refs_dir().join("smollm2/tokenizer_roundtrip.json")
}

fn index_json() -> PathBuf {
    common::refs_dir().join("smollm2/index.json")
}

/// The real GGUF through the project's resolver (fetched into `$LUMEN_HOME` on first use).
fn model_path() -> PathBuf {
    common::smollm2_path()
}

/// GGUF metadata via gguf-rs directly (independent of `lumen::gguf`).
fn gguf_metadata(path: &std::path::Path) -> BTreeMap<String, Value> {
    let mut container =
        gguf_rs::get_gguf_container_array_size(path.to_str().unwrap(), 1 << 20).expect("open GGUF");
    let model = container.decode().expect("decode GGUF");
    model.metadata().clone()
}

fn vocab_spec_from_gguf(md: &BTreeMap<String, Value>) -> VocabSpec {
    let arr = |k: &str| md.get(k).and_then(Value::as_array);
    let u32_of = |k: &str| {
        md.get(k)
            .and_then(Value::as_u64)
            .map(|v| u32::try_from(v).unwrap())
    };
    let bool_of = |k: &str| md.get(k).and_then(Value::as_bool);
    let str_of = |k: &str| md.get(k).and_then(Value::as_str).map(str::to_string);
    let strings = |k: &str| -> Vec<String> {
        arr(k)
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let tokens = strings("tokenizer.ggml.tokens");
    let token_types: Option<Vec<i32>> = arr("tokenizer.ggml.token_type").map(|a| {
        a.iter()
            .map(|v| i32::try_from(v.as_i64().unwrap()).unwrap())
            .collect()
    });
    let scores: Option<Vec<f32>> = arr("tokenizer.ggml.scores")
        .map(|a| a.iter().map(|v| v.as_f64().unwrap() as f32).collect());
    VocabSpec {
        model: str_of("tokenizer.ggml.model").expect("tokenizer.ggml.model"),
        pre: str_of("tokenizer.ggml.pre"),
        tokens,
        scores,
        token_types,
        merges: strings("tokenizer.ggml.merges"),
        bos: u32_of("tokenizer.ggml.bos_token_id"),
        eos: u32_of("tokenizer.ggml.eos_token_id"),
        eot: u32_of("tokenizer.ggml.eot_token_id"),
        eom: u32_of("tokenizer.ggml.eom_token_id"),
        unk: u32_of("tokenizer.ggml.unknown_token_id"),
        add_bos: bool_of("tokenizer.ggml.add_bos_token"),
        add_space_prefix: bool_of("tokenizer.ggml.add_space_prefix"),
    }
}

fn load() -> Tokenizer {
    let md = gguf_metadata(&model_path());
    let spec = vocab_spec_from_gguf(&md);
    assert_eq!(spec.model, "gpt2");
    assert_eq!(spec.pre.as_deref(), Some("smollm"));
    assert_eq!(spec.tokens.len(), 49152, "vocabulary truncated?");
    assert_eq!(spec.merges.len(), 48900, "merges truncated?");
    Tokenizer::from_spec(spec).unwrap()
}

#[test]
fn smollm2_roundtrip_strings_match_hf() {
    let tok = load();
    let refs = read_json(roundtrip_json());
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos(), Some(1));
    assert_eq!(tok.eos(), Some(2));
    assert!(
        !tok.add_bos_default(),
        "SmolLM2's GGUF says add_bos_token = false"
    );
    let strings = refs["strings"].as_array().unwrap();
    assert_eq!(strings.len(), 6);
    for s in strings {
        let text = s["text"].as_str().unwrap();
        let want = ids_of(&s["ids"]);
        assert_eq!(tok.encode(text, false).unwrap(), want, "{text:?}");
        // HF adds no BOS for this tokenizer either.
        assert_eq!(ids_of(&s["ids_add_special_tokens"]), want);
        let pieces: Vec<&str> = want.iter().map(|&i| tok.token_text(i).unwrap()).collect();
        assert_eq!(pieces, strs_of(&s["gguf_pieces"]), "{text:?}");
        assert_eq!(tok.decode(&want), text);
        assert_eq!(stream(&tok, &want), text);
    }
}

#[test]
fn smollm2_prompt_ids_match_hf_including_chat_template() {
    let tok = load();
    let index = read_json(index_json());
    let prompts = index["prompts"].as_array().unwrap();
    assert!(prompts.iter().any(|p| p["is_chat_template"] == true));
    for p in prompts {
        let prompt = p["prompt"].as_str().unwrap();
        let want = ids_of(&p["prompt_ids"]);
        assert_eq!(
            tok.encode(prompt, tok.add_bos_default()).unwrap(),
            want,
            "{prompt:?}"
        );
        assert_eq!(tok.decode(&want), prompt);
    }
    // The reference greedy continuation decodes to the reference text.
    let p0 = &prompts[0];
    assert_eq!(
        tok.decode(&ids_of(&p0["greedy_ids"])),
        p0["greedy_text"].as_str().unwrap()
    );
}

#[test]
fn smollm2_end_of_generation() {
    let tok = load();
    assert_eq!(tok.token_text(2), Some("<|im_end|>"));
    assert!(tok.is_end_of_generation(2));
    assert_eq!(tok.token_text(0), Some("<|endoftext|>"));
    assert!(
        tok.is_end_of_generation(0),
        "llama.cpp treats <|endoftext|> as EOG"
    );
    assert!(!tok.is_end_of_generation(1)); // <|im_start|>
    assert!(!tok.is_end_of_generation(198)); // "\n"
}
