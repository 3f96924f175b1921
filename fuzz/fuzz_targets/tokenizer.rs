//! Arbitrary text through the SmolLM2 vocabulary (byte-level BPE): encoding never panics, every
//! id is in the vocabulary, decoding gives the text back exactly when every byte of it has a
//! token, and streaming decode of arbitrary ids agrees with whole decode.
//!
//! SmolLM2's vocabulary lacks a few byte tokens (e.g. 0x1D): those bytes are dropped on
//! encoding, as llama.cpp does too (checked with llama-cpp-python), so they are exempt.
//!
//! The model comes through the project's resolver (models.toml, `$LUMEN_HOME`), fetched on
//! first use as `lumen run` does.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lumen::gguf::GgufFile;
use lumen::tokenizer::{StreamDecoder, Tokenizer, VocabSpec};

fn smollm2() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let registry = lumen::registry::Registry::builtin();
        let entry = registry.get("smollm2-135m-instruct").expect("registered");
        let path = entry
            .ensure(&lumen::registry::cache_dir(), &mut |_| {})
            .unwrap_or_else(|e| panic!("cannot fetch the tokenizer target's model: {e}"));
        let file = GgufFile::open(&path)
            .unwrap_or_else(|e| panic!("the tokenizer target needs {}: {e}", path.display()));
        Tokenizer::from_spec(VocabSpec::from_gguf(file.metadata()).expect("SmolLM2 vocabulary"))
            .expect("SmolLM2 tokenizer")
    })
}

fuzz_target!(|data: &[u8]| {
    let tok = smollm2();
    let text = String::from_utf8_lossy(data);
    round_trip(tok, &text);
    stream_matches_whole(tok, data);
});

/// Byte-level BPE has no normaliser: special tokens decode as their text, everything else as
/// its bytes, so decode(encode(s)) == s for every string whose bytes all have tokens.
fn round_trip(tok: &Tokenizer, text: &str) {
    let ids = tok.encode(text, false).expect("encoding valid UTF-8");
    assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
    if text.bytes().all(|b| byte_tokens(tok)[b as usize]) {
        assert_eq!(tok.decode(&ids), text);
    }
    let with_bos = tok.encode(text, true);
    if let (Ok(with_bos), Some(bos)) = (with_bos, tok.bos()) {
        assert_eq!(with_bos[0], bos);
        assert_eq!(&with_bos[1..], &ids[..]);
    }
}

/// Arbitrary ids (two bytes each, so some fall outside the vocabulary and must be skipped).
fn stream_matches_whole(tok: &Tokenizer, data: &[u8]) {
    let ids: Vec<u32> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
        .collect();
    let mut stream = StreamDecoder::new();
    let mut streamed: String = ids.iter().map(|&id| stream.push(tok, id)).collect();
    streamed.push_str(&stream.flush());
    assert_eq!(streamed, tok.decode(&ids));
}

/// For each byte, whether the vocabulary has its single-byte token, spelled with GPT-2's
/// byte-to-char map: printable Latin-1 bytes stand for themselves, the other 68 bytes for
/// U+0100 onwards in byte order.
fn byte_tokens(tok: &Tokenizer) -> &'static [bool; 256] {
    static TABLE: OnceLock<[bool; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut table = [false; 256];
        let mut rank = 0;
        for b in 0..=255u8 {
            let c = if printable(b) {
                char::from(b)
            } else {
                rank += 1;
                char::from_u32(256 + rank - 1).expect("U+0100..U+0143")
            };
            table[b as usize] = tok.token_id(c.encode_utf8(&mut [0; 4])).is_some();
        }
        table
    })
}
