//! Helpers shared by the tests/tokenizer_*.rs suites.
#![allow(dead_code)]

use lumen::tokenizer::{StreamDecoder, Tokenizer};
use serde_json::Value;

pub fn read_json(path: impl AsRef<std::path::Path>) -> Value {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// A JSON array of ids.
pub fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("id")).unwrap())
        .collect()
}

/// A JSON array of strings.
pub fn strs_of(v: &Value) -> Vec<&str> {
    v.as_array()
        .expect("array of strings")
        .iter()
        .map(|x| x.as_str().expect("string"))
        .collect()
}

/// Streams `ids` through a [`StreamDecoder`], asserting that no chunk carries U+FFFD and that
/// nothing is held back at the end; returns the concatenated text.
pub fn stream(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut dec = StreamDecoder::new();
    let mut out = String::new();
    for &id in ids {
        let chunk = dec.push(tok, id);
        assert!(
            !chunk.contains('\u{FFFD}'),
            "U+FFFD mid-stream at id {id}: {chunk:?}"
        );
        out.push_str(&chunk);
    }
    assert!(!dec.has_pending(), "bytes held back at the end of {ids:?}");
    out.push_str(&dec.flush());
    out
}
