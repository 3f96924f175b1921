//! Chat templates rendered by `lumen::chat` must equal transformers' rendering (the jinja2
//! environment of `apply_chat_template`), recorded by `tools/scripts/chat_template_refs.py` in
//! `tests/fixtures/chat_templates.json`, and the Llama 3.2 reference in `../shared/refs/llama32_chat/`.

mod common;

use lumen::chat::{ChatMessage, ChatTemplate, Content, ContentPart, RenderOptions};
use serde_json::Value;

fn message(v: &Value) -> ChatMessage {
    let content = match &v["content"] {
        Value::String(s) => Content::Text(s.clone()),
        Value::Array(parts) => Content::Parts(
            parts
                .iter()
                .map(|p| match p["type"].as_str().unwrap() {
                    "image" => ContentPart::Image,
                    "text" => ContentPart::Text {
                        text: p["text"].as_str().unwrap().to_string(),
                    },
                    other => panic!("unknown part type {other}"),
                })
                .collect(),
        ),
        other => panic!("bad content {other}"),
    };
    ChatMessage {
        role: v["role"].as_str().unwrap().to_string(),
        content,
    }
}

#[test]
fn renderings_equal_transformers() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates.json");
    let refs: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = refs["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let source = refs["templates"][name].as_str().unwrap();
        let tmpl = ChatTemplate::new(
            name,
            source,
            case["bos_token"].as_str().unwrap(),
            case["eos_token"].as_str().unwrap(),
        )
        .unwrap();
        let messages: Vec<ChatMessage> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(message)
            .collect();
        let opts = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            date_string: case["date_string"].as_str().map(str::to_string),
            ..Default::default()
        };
        let ours = tmpl.render(&messages, &opts).unwrap();
        assert_eq!(
            ours,
            case["rendered"].as_str().unwrap(),
            "{name} / {} / generation prompt {}",
            case["conversation"],
            opts.add_generation_prompt
        );
    }
}

#[test]
fn llama32_reference_conversation_renders_identically() {
    let dir = common::refs_dir().join("llama32_chat");
    let source = std::fs::read_to_string(dir.join("llama32_instruct_chat_template.jinja")).unwrap();
    let expected = std::fs::read_to_string(dir.join("rendered_system_user_genprompt.txt")).unwrap();
    let tmpl = ChatTemplate::new("llama32", &source, "<|begin_of_text|>", "<|eot_id|>").unwrap();
    let messages = [
        ChatMessage::text("system", "You are a helpful assistant."),
        ChatMessage::text("user", "What is the capital of France?"),
    ];
    let opts = RenderOptions {
        add_generation_prompt: true,
        date_string: Some("26 Jul 2024".into()),
        ..Default::default()
    };
    assert_eq!(tmpl.render(&messages, &opts).unwrap(), expected);
}

#[test]
fn without_a_date_the_llama32_template_uses_today() {
    let dir = common::refs_dir().join("llama32_chat");
    let source = std::fs::read_to_string(dir.join("llama32_instruct_chat_template.jinja")).unwrap();
    let tmpl = ChatTemplate::new("llama32", &source, "<|begin_of_text|>", "<|eot_id|>").unwrap();
    let out = tmpl
        .render(
            &[ChatMessage::text("user", "hi")],
            &RenderOptions::default(),
        )
        .unwrap();
    let today = chrono::Local::now().format("%d %b %Y").to_string();
    assert!(out.contains(&format!("Today Date: {today}")), "{out}");
}
