//! Arbitrary template source with a fixed conversation: parsing and rendering return a prompt
//! or an error, never panic, and stay within the template's fuel and output caps (a render
//! that would run forever is stopped by the fuel; libFuzzer's `-timeout` catches one that isn't).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lumen::chat::{ChatMessage, ChatTemplate, Content, ContentPart, RenderOptions};

/// `chat::MAX_RENDERED_BYTES`: longer renders must be refused, not returned.
const MAX_RENDERED_BYTES: usize = 16 << 20;

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::text("system", "You are terse."),
        ChatMessage {
            role: "user".into(),
            content: Content::Parts(vec![
                ContentPart::Image,
                ContentPart::Text {
                    text: "What is in this image? {{ not a template }}".into(),
                },
            ]),
        },
        ChatMessage::text("assistant", "A cat. <|eot_id|>"),
        ChatMessage::text("user", "ünïcödé 🐈 and \"quotes\""),
    ]
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the render options; the rest is the template.
    let Some((&flags, source)) = data.split_first() else {
        return;
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let Ok(template) = ChatTemplate::new("fuzz", source, "<s>", "</s>") else {
        return;
    };
    let opts = RenderOptions {
        add_generation_prompt: flags & 1 != 0,
        date_string: (flags & 2 != 0).then(|| "26 Jul 2024".to_string()),
    };
    if let Ok(prompt) = template.render(&conversation(), &opts) {
        assert!(prompt.len() <= MAX_RENDERED_BYTES);
    }
});
