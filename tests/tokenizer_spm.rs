//! SentencePiece-style ("llama") vocabularies against SentencePiece itself, plus the named
//! errors of `Tokenizer::from_spec`.
//!
//! tests/fixtures/tokenizer_spm_tiny.json holds a tiny BPE model trained with sentencepiece 0.2
//! (byte fallback, identity normalization, dummy prefix: Llama 2's settings) and
//! SentencePiece's own ids for a few strings; tests/fixtures/tokenizer_spm_gen.py made it.

use lumen::tokenizer::{Tokenizer, TokenizerError, VocabSpec};
use serde_json::Value;

mod tokenizer_common;
use tokenizer_common::{ids_of, read_json, stream, strs_of};

fn fixture() -> Value {
    read_json(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tokenizer_spm_tiny.json"
    ))
}

fn spm_spec(f: &Value) -> VocabSpec {
    let u32s = |k: &str| f[k].as_u64().map(|v| v as u32);
    VocabSpec {
        model: "llama".into(),
        pre: None,
        tokens: strs_of(&f["pieces"])
            .into_iter()
            .map(String::from)
            .collect(),
        scores: Some(
            f["scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_f64().unwrap() as f32)
                .collect(),
        ),
        token_types: Some(
            f["types"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_i64().unwrap() as i32)
                .collect(),
        ),
        merges: vec![],
        bos: u32s("bos"),
        eos: u32s("eos"),
        eot: None,
        eom: None,
        unk: u32s("unk"),
        add_bos: None,
        add_space_prefix: None,
    }
}

#[test]
fn spm_bpe_matches_sentencepiece_ids() {
    let f = fixture();
    let tok = Tokenizer::from_spec(spm_spec(&f)).unwrap();
    assert!(tok.add_bos_default(), "SPM vocabularies add BOS by default");
    assert_eq!(tok.bos(), Some(1));
    assert_eq!(tok.eos(), Some(2));
    assert!(tok.is_end_of_generation(2));
    let mut failures = Vec::new();
    let mut saw_byte_fallback = false;
    for case in f["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids_of(&case["ids"]);
        let got = tok.encode(text, false).unwrap();
        if got != want {
            failures.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
        let mut with_bos = vec![1];
        with_bos.extend(&want);
        assert_eq!(tok.encode(text, true).unwrap(), with_bos);
        saw_byte_fallback |= want.iter().any(|&id| tok.token_type(id) == Some(6));
        assert_eq!(tok.decode(&want), case["decoded"].as_str().unwrap());
        assert_eq!(tok.decode(&want), text);

        // Streaming: raw bytes, so the dummy-prefix space is still there.
        assert_eq!(stream(&tok, &want), format!(" {text}"));
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        saw_byte_fallback,
        "the fixture should exercise <0xNN> byte fallback"
    );
}

#[test]
fn spm_token_bytes_and_special_tokens() {
    let f = fixture();
    let tok = Tokenizer::from_spec(spm_spec(&f)).unwrap();
    assert_eq!(tok.token_text(13), Some("<0x0A>"));
    assert_eq!(tok.token_bytes(13), b"\n");
    assert_eq!(tok.token_bytes(1), b"<s>");
    let the = (0..tok.vocab_size() as u32)
        .find(|&i| tok.token_text(i) == Some("\u{2581}the"))
        .unwrap();
    assert_eq!(tok.token_bytes(the), b" the");
    // Control tokens in the text are matched whole (parse_special); the text after one gets
    // its own space prefix, as in llama.cpp.
    let ids = tok.encode("<s>the</s>", false).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    assert_eq!(
        &ids[1..ids.len() - 1],
        &tok.encode("the", false).unwrap()[..]
    );
    assert_eq!(tok.decode(&ids), "<s> the</s>");
    // Without the space prefix the first word has no ▁.
    let mut spec = spm_spec(&f);
    spec.add_space_prefix = Some(false);
    let plain = Tokenizer::from_spec(spec).unwrap();
    let ids = plain.encode("the", false).unwrap();
    assert!(ids
        .iter()
        .all(|&i| !plain.token_text(i).unwrap().starts_with('\u{2581}')));
    assert_eq!(plain.decode(&ids), "the");
}

fn tiny_gpt2() -> VocabSpec {
    VocabSpec {
        model: "gpt2".into(),
        pre: Some("gpt2".into()),
        tokens: ["a", "b", "ab", "Ġ", "<|end|>"].map(String::from).to_vec(),
        token_types: Some(vec![1, 1, 1, 1, 3]),
        merges: vec!["a b".into()],
        eos: Some(4),
        ..Default::default()
    }
}

#[test]
fn tiny_gpt2_vocab_works() {
    let tok = Tokenizer::from_spec(tiny_gpt2()).unwrap();
    assert_eq!(tok.encode("ab a<|end|>", false).unwrap(), vec![2, 3, 0, 4]);
    assert!(!tok.add_bos_default());
    assert!(tok.is_end_of_generation(4));
    assert!(matches!(
        tok.encode("ab", true),
        Err(TokenizerError::MissingBos)
    ));
}

#[test]
fn named_errors() {
    let err = |spec: VocabSpec| Tokenizer::from_spec(spec).unwrap_err();

    let e = err(VocabSpec {
        model: "bert".into(),
        ..tiny_gpt2()
    });
    assert!(
        matches!(e, TokenizerError::UnsupportedModel(ref m) if m == "bert"),
        "{e}"
    );
    assert!(
        e.to_string().contains("gpt2") && e.to_string().contains("llama"),
        "{e}"
    );

    let e = err(VocabSpec {
        pre: Some("qwen2-ish".into()),
        ..tiny_gpt2()
    });
    assert!(matches!(e, TokenizerError::UnsupportedPre(_)), "{e}");
    assert!(
        e.to_string().contains("llama-bpe") && e.to_string().contains("smollm"),
        "{e}"
    );

    let e = err(VocabSpec {
        merges: vec!["a b".into(), "ab".into()],
        ..tiny_gpt2()
    });
    assert!(
        matches!(e, TokenizerError::BadMerge { index: 1, .. }),
        "{e}"
    );

    let e = err(VocabSpec {
        merges: vec!["a c".into()],
        ..tiny_gpt2()
    });
    assert!(
        matches!(e, TokenizerError::MergeNotInVocab { ref piece, .. } if piece == "c"),
        "{e}"
    );

    let e = err(VocabSpec {
        eos: Some(5),
        ..tiny_gpt2()
    });
    assert!(
        matches!(
            e,
            TokenizerError::IdOutOfRange {
                what: "eos",
                id: 5,
                n_vocab: 5
            }
        ),
        "{e}"
    );

    let e = err(VocabSpec {
        token_types: Some(vec![1, 1]),
        ..tiny_gpt2()
    });
    assert!(
        matches!(
            e,
            TokenizerError::LengthMismatch {
                what: "token_types",
                ..
            }
        ),
        "{e}"
    );

    let e = err(VocabSpec {
        add_bos: Some(true),
        ..tiny_gpt2()
    });
    assert!(matches!(e, TokenizerError::MissingBos), "{e}");

    let e = err(VocabSpec {
        tokens: ["a", "b", "ab", "a", "x"].map(String::from).to_vec(),
        ..tiny_gpt2()
    });
    assert!(
        matches!(
            e,
            TokenizerError::DuplicateToken {
                first: 0,
                second: 3,
                ..
            }
        ),
        "{e}"
    );

    let e = err(VocabSpec {
        model: "llama".into(),
        scores: None,
        ..tiny_gpt2()
    });
    assert!(matches!(e, TokenizerError::MissingScores), "{e}");
}

/// The references discriminate: ranking merges by the reversed scores gets some ids wrong.
#[test]
fn spm_scores_matter() {
    let f = fixture();
    let mut spec = spm_spec(&f);
    for s in spec.scores.as_mut().unwrap() {
        *s = -*s;
    }
    let tok = Tokenizer::from_spec(spec).unwrap();
    let wrong = f["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| tok.encode(c["text"].as_str().unwrap(), false).unwrap() != ids_of(&c["ids"]))
        .count();
    assert!(wrong > 0);
}

/// One multi-megabyte piece made merge derivation quadratic (every split hashes both halves:
/// hours for 4 MB). Now a named error, at once; the real vocabularies stay far below the bound.
#[test]
fn a_huge_piece_is_refused_quickly() {
    let f = fixture();
    let mut spec = spm_spec(&f);
    spec.tokens.push("ab".repeat(2 << 20));
    spec.scores.as_mut().unwrap().push(0.0);
    spec.token_types.as_mut().unwrap().push(1);
    let start = std::time::Instant::now();
    let Err(e) = Tokenizer::from_spec(spec) else {
        panic!("a 4 MiB piece was accepted")
    };
    assert!(start.elapsed().as_secs_f64() < 1.0, "{:?}", start.elapsed());
    assert!(
        matches!(e, TokenizerError::MergeWorkTooLarge { longest_bytes, .. } if longest_bytes == 4 << 20),
        "{e}"
    );
}
