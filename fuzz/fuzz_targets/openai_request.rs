//! Arbitrary bytes as the body of `POST /v1/chat/completions` and `POST /v1/completions`:
//! parsing returns a request or an OpenAI-style error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lumen::server::api::{decode_data_uri, parse_chat, parse_completion};

fuzz_target!(|data: &[u8]| {
    match parse_chat(data) {
        Ok(req) => {
            let _ = req.fields.max_tokens;
            assert!(req.fields.stop.len() <= 16);
        }
        // Every refusal must serialise to the error body the server sends.
        Err(e) => assert!(e.body().is_object()),
    }
    if let Err(e) = parse_completion(data) {
        assert!(e.body().is_object());
    }
    if let Ok(url) = std::str::from_utf8(data) {
        let _ = decode_data_uri(url);
    }
});
