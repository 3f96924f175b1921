//! `lumen serve` end to end over real sockets, with the real SmolLM2 model: the OpenAI wire
//! format (whole and streamed), greedy answers equal to `lumen run`'s, slot isolation, the API
//! key, every kind of bad request, the queue limit, hung-up clients, and a burst of requests.

mod common;
#[path = "common/http.rs"]
mod http;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use http::*;

use serde_json::{json, Value};

#[test]
fn chat_completion_whole_and_streamed_agree() {
    let server = Server::start(&["--api-key", KEY]);
    let body = chat_body("Write a poem about the sea.", 12);
    let r = post(server.addr, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "SmolLM2-135M-Instruct.Q4_1");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let content = choice["message"]["content"].as_str().unwrap().to_string();
    assert!(!content.is_empty());
    let usage = &v["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(p > 5);
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), p + c);
    match choice["finish_reason"].as_str().unwrap() {
        "length" => assert_eq!(c, 12),
        "stop" => assert!(c < 12),
        other => panic!("finish_reason {other}"),
    }

    // Streamed with usage: role first, the same greedy text, the finish reason on the last
    // content chunk, one usage chunk with no choices, then [DONE].
    let mut body_stream = body.clone();
    body_stream["stream"] = json!(true);
    body_stream["stream_options"] = json!({"include_usage": true});
    let r = post(server.addr, "/v1/chat/completions", &body_stream);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.headers.contains("content-type: text/event-stream"),
        "{}",
        r.headers
    );
    let events = r.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let (text, finish) = streamed_text(&r);
    assert_eq!(text, content);
    assert_eq!(finish, choice["finish_reason"].as_str().unwrap());
    let usage_chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter(|v| v.get("usage").is_some())
        .collect();
    assert_eq!(usage_chunks.len(), 1);
    assert_eq!(usage_chunks[0]["choices"], json!([]));
    // The same prompt again: the slot's cache already holds all of it but the last token.
    let streamed_usage = &usage_chunks[0]["usage"];
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(streamed_usage[k], usage[k], "{k}");
    }
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        streamed_usage["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(p - 1)
    );

    // Without stream_options no chunk carries usage.
    body_stream
        .as_object_mut()
        .unwrap()
        .remove("stream_options");
    let r = post(server.addr, "/v1/chat/completions", &body_stream);
    assert!(!r.body.contains("\"usage\""), "{}", r.body);
    assert_eq!(r.events().last().unwrap(), "[DONE]");
}

#[test]
fn greedy_completion_equals_lumen_run_and_stop_strings_cut() {
    let server = Server::start(&[]);
    let prompt = "Once upon a time";
    let model = common::smollm2_path();
    let out = Command::new(env!("CARGO_BIN_EXE_lumen"))
        .args(["run", "-m", model.to_str().unwrap(), "-p", prompt])
        .args(["--temp", "0", "-n", "20"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let expected = String::from_utf8(out.stdout).unwrap();
    let expected = expected.trim_end_matches('\n');

    let body = json!({"prompt": prompt, "max_tokens": 20, "temperature": 0});
    let r = post(server.addr, "/v1/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], expected);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 20);

    // Streamed: the same text.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post(server.addr, "/v1/completions", &streamed);
    assert_eq!(streamed_text(&r), (expected.to_string(), "length".into()));

    // A stop string from the middle of the answer: the text before it, finish "stop".
    let words: Vec<&str> = expected.split(' ').collect();
    let stop = words[words.len() / 2];
    let cut = &expected[..expected.find(stop).unwrap()];
    for stops in [json!(stop), json!(["zzzz-never", stop])] {
        let mut b = body.clone();
        b["stop"] = stops;
        let v = post(server.addr, "/v1/completions", &b).json();
        assert_eq!(v["choices"][0]["text"], cut, "stop {stop:?}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }
}

#[test]
fn parallel_slots_answer_as_a_single_slot_does() {
    let server = Server::start(&["--parallel", "3"]);
    let prompts = [
        "The capital of France is",
        "def fibonacci(n):",
        "My favourite recipe for pancakes",
        "In 1492, Columbus",
    ];
    let body = |p: &str| json!({"prompt": p, "max_tokens": 24, "temperature": 0});
    let alone: Vec<Value> = prompts
        .iter()
        .map(|p| {
            post(server.addr, "/v1/completions", &body(p)).json()["choices"][0]["text"].clone()
        })
        .collect();
    let addr = server.addr;
    let together: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| s.spawn(move || post(addr, "/v1/completions", &body(p))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().json()["choices"][0]["text"].clone())
            .collect()
    });
    assert_eq!(alone, together);
}

#[test]
fn models_health_and_the_api_key() {
    let server = Server::start(&["--api-key", KEY]);
    let a = server.addr;
    let health = request(a, "GET", "/health", None, "");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");

    let e = request(a, "GET", "/v1/models", None, "").error(401);
    assert_eq!(e["code"], "invalid_api_key");
    request(a, "GET", "/v1/models", Some("sk-lumen-tesT"), "").error(401);
    request(a, "GET", "/v1/models", Some("sk-lumen-test-longer"), "").error(401);
    let body = chat_body("hi", 2).to_string();
    request(a, "POST", "/v1/chat/completions", None, &body).error(401);
    request(a, "POST", "/v1/completions", Some("wrong"), "{}").error(401);

    let models = request(a, "GET", "/v1/models", Some(KEY), "");
    assert_eq!(models.status, 200);
    let v = models.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(v["data"][0]["object"], "model");
    assert!(v["data"][0]["owned_by"].is_string());
    let one = request(
        a,
        "GET",
        "/v1/models/SmolLM2-135M-Instruct.Q4_1",
        Some(KEY),
        "",
    );
    assert_eq!(one.json()["id"], "SmolLM2-135M-Instruct.Q4_1");
    request(a, "GET", "/v1/models/gpt-4o", Some(KEY), "").error(404);
    assert_eq!(
        request(a, "POST", "/v1/chat/completions", Some(KEY), &body).status,
        200
    );
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_goes_on() {
    let mut server = Server::start(&["-c", "128"]);
    let a = server.addr;
    let chat = |body: &str| request(a, "POST", "/v1/chat/completions", None, body);

    assert!(chat("{\"messages\": [").error(400)["message"]
        .as_str()
        .unwrap()
        .contains("JSON"));
    chat("[1, 2]").error(400);
    chat("").error(400);
    chat("{}").error(400);
    let wrong = |field: &str, value: Value| {
        let mut b = chat_body("hi", 4);
        b[field] = value;
        let e = chat(&b.to_string()).error(400);
        assert_eq!(e["param"], field, "{e}");
    };
    wrong("temperature", json!("hot"));
    wrong("temperature", json!(7.5));
    wrong("max_tokens", json!(-1));
    wrong("max_tokens", json!("ten"));
    wrong("messages", json!("hello"));
    wrong("messages", json!([{"role": "user", "content": 5}]));
    wrong("stream", json!("yes"));
    wrong("stop", json!(3));
    wrong("n", json!(2));
    wrong("seed", json!(1.5));

    // One model is served: a request naming another (a client's default) is answered by it.
    let mut b = chat_body("hi", 4);
    b["model"] = json!("gpt-4o-mini");
    let reply = chat(&b.to_string());
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["object"], "chat.completion", "{}", reply.body);

    // A prompt longer than the context: 400 with the counts.
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    let e = chat(&chat_body(&long, 4).to_string()).error(400);
    assert_eq!(e["code"], "context_length_exceeded");
    assert!(e["message"].as_str().unwrap().contains("128"), "{e}");
    let e = request(
        a,
        "POST",
        "/v1/completions",
        None,
        &json!({"prompt": long}).to_string(),
    )
    .error(400);
    assert_eq!(e["code"], "context_length_exceeded");
    // max_tokens beyond the context is capped by it: the answer stops with "length".
    let v = post(
        a,
        "/v1/completions",
        &json!({"prompt": "One, two, three,", "max_tokens": 100000, "temperature": 0}),
    )
    .json();
    let usage = &v["usage"];
    assert!(usage["total_tokens"].as_u64().unwrap() <= 128, "{v}");

    // Images: undecodable base64, a remote URL, and a real PNG for this text-only model.
    let image_msg = |url: &str| {
        json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}}]}]})
        .to_string()
    };
    let e = chat(&image_msg("data:image/png;base64,%%%not-base64%%%")).error(400);
    assert!(e["message"].as_str().unwrap().contains("base64"), "{e}");
    let e = chat(&image_msg("https://example.com/cat.png")).error(400);
    assert!(e["message"].as_str().unwrap().contains("remote"), "{e}");
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let e = chat(&image_msg(&format!("data:image/png;base64,{png}"))).error(400);
    assert!(e["message"].as_str().unwrap().contains("text-only"), "{e}");
    // The string form of image_url is parsed too.
    let bare = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": format!("data:image/png;base64,{png}")}]}]});
    assert!(chat(&bare.to_string()).error(400)["message"]
        .as_str()
        .unwrap()
        .contains("text-only"));

    request(a, "GET", "/v1/nothing-here", None, "").error(404);

    assert!(server.alive());
    let ok = chat(&chat_body("Say hello.", 4).to_string());
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[test]
fn a_100_mb_body_gets_413_and_the_server_goes_on() {
    let mut server = Server::start(&[]);
    let a = server.addr;
    // Announced length over the cap: refused before the body is read.
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let len = 100 << 20;
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b' '; 1 << 20];
    let _ = s.write_all(&chunk[..64 << 10]);
    let r = read_reply(&mut s);
    assert!(r.error(413)["message"].as_str().unwrap().contains("larger"));

    // No announced length (chunked): the server stops reading once the cap is passed. A writer
    // thread streams while this one waits for the answer (or the connection's end).
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut sent = 0usize;
        while sent < len {
            let ok = write!(w, "{:x}\r\n", chunk.len()).is_ok()
                && w.write_all(&chunk).is_ok()
                && w.write_all(b"\r\n").is_ok();
            if !ok {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let _ = s.shutdown(std::net::Shutdown::Both);
    let sent = writer.join().unwrap();
    assert!(sent < len, "the server read the whole 100 MB");
    let head = String::from_utf8_lossy(&raw);
    // Either the 413 arrives or the connection is reset under the writer's feet.
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 413"),
        "{head}"
    );

    assert!(server.alive());
    assert_eq!(request(a, "GET", "/health", None, "").status, 200);
}

#[test]
fn a_full_queue_gets_503_and_a_hung_up_client_frees_its_slot() {
    let mut server = Server::start(&["--parallel", "1", "--queue", "1"]);
    let a = server.addr;
    let long = json!({"prompt": "Count from one to one thousand: one, two,", "max_tokens": 300, "temperature": 0});
    let burst = Instant::now();
    let statuses: Vec<Reply> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| post(a, "/v1/completions", &long)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // At least two 300-token answers one after the other: 3000 tokens take five times longer.
    let two_answers = burst.elapsed();
    let ok = statuses.iter().filter(|r| r.status == 200).count();
    let busy: Vec<&Reply> = statuses.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok + busy.len(), 4, "only 200 or 503 expected");
    assert!(
        ok >= 2 && !busy.is_empty(),
        "{ok} served, {} refused",
        busy.len()
    );
    assert_eq!(busy[0].error(503)["code"], "server_busy");

    let health = request(a, "GET", "/health", None, "").json();
    assert_eq!(health["requests_in_flight"], 0, "{health}");
    // A client that hangs up mid-stream frees the only slot long before its 3000 tokens.
    let mut s = TcpStream::connect(a).unwrap();
    let body =
        json!({"prompt": "Once upon a time", "max_tokens": 3000, "stream": true, "temperature": 0})
            .to_string();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read until generation has visibly started (a text chunk), then hang up.
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("\"text\"") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let hung_up = Instant::now();
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 4}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        hung_up.elapsed() < two_answers,
        "the slot was freed after {:?} (two 300-token answers took {two_answers:?})",
        hung_up.elapsed()
    );
    assert!(server.alive());
}

/// A long prompt is read in chunks of `PREFILL_CHUNK` tokens between decoding rounds: a client
/// that is streaming keeps getting tokens while another client's ~3,000-token prompt is read,
/// instead of waiting for all of it (with whole-prompt prefill its longest gap was the whole
/// prefill).
#[test]
fn a_long_prompt_does_not_stall_a_streaming_slot() {
    let server = Server::start(&["--parallel", "2", "-c", "4096"]);
    warm_up(server.addr);
    let addr = server.addr;
    let streaming = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
        let body = json!({"prompt": "Once upon a time", "max_tokens": 600, "stream": true,
            "temperature": 0, "ignore_eos": true})
        .to_string();
        write!(
            s,
            "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        // When each token's event arrived.
        let mut arrivals = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                return arrivals;
            }
            let events = String::from_utf8_lossy(&buf[..n])
                .matches("data: {")
                .count();
            arrivals.extend(std::iter::repeat_n(Instant::now(), events));
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let prompt = "word ".repeat(3000);
    let start = Instant::now();
    let r = post(
        addr,
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 1}),
    );
    let prefill = start.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    let arrivals = streaming.join().unwrap();
    let during: Vec<Instant> = arrivals
        .iter()
        .copied()
        .filter(|&t| t >= start && t <= start + prefill)
        .collect();
    // From the prompt's arrival to the first token, between tokens, and to its end.
    let marks: Vec<Instant> = std::iter::once(start)
        .chain(during.iter().copied())
        .chain(std::iter::once(start + prefill))
        .collect();
    let longest = marks.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    eprintln!(
        "prefill {prefill:?}: {} tokens streamed meanwhile, longest gap {longest:?}",
        during.len()
    );
    assert!(
        during.len() >= 3 && longest * 5 < prefill * 2,
        "{} tokens streamed during the {prefill:?} prefill, longest gap {longest:?}",
        during.len()
    );
}

/// A request takes its slot or queue place before it is prepared (images decoded, template
/// rendered, prompt tokenized), so a flood of requests cannot make the server prepare more
/// than slots + queue of them at once. With both taken, a request whose prompt would not even
/// fit the context is refused 503 at once, untokenized (it used to be tokenized first and get
/// 400 `context_length_exceeded`).
#[test]
fn a_full_queue_refuses_before_preparing() {
    let server = Server::start(&["--parallel", "1", "--queue", "1", "-c", "256"]);
    let a = server.addr;
    let long = json!({"prompt": "Once upon a time", "max_tokens": 240, "temperature": 0,
        "ignore_eos": true});
    std::thread::scope(|s| {
        let busy: Vec<_> = (0..2)
            .map(|_| s.spawn(|| post(a, "/v1/completions", &long)))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while request(a, "GET", "/health", None, "").json()["requests_in_flight"] != 2 {
            assert!(
                Instant::now() < deadline,
                "the two requests never were in flight"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let huge = json!({"prompt": "word ".repeat(5000), "max_tokens": 1});
        let r = post(a, "/v1/completions", &huge);
        assert_eq!(r.error(503)["code"], "server_busy");
        for h in busy {
            assert_eq!(h.join().unwrap().status, 200);
        }
    });
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": "word ".repeat(5000), "max_tokens": 1}),
    );
    assert_eq!(r.error(400)["code"], "context_length_exceeded");
}

#[test]
fn a_burst_of_32_streamed_requests_completes_or_gets_503() {
    let mut server = Server::start(&["--parallel", "4", "--queue", "16", "-c", "512"]);
    let a = server.addr;
    // Warm up, then measure memory around the burst.
    warm_up(a);
    let rss_before = rss_kib(server.pid());
    let start = Instant::now();
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..32)
            .map(|i| {
                s.spawn(move || {
                    let body = json!({
                        "messages": [{"role": "user", "content": format!("Tell me fact number {i} about cats.")}],
                        "max_tokens": 16, "stream": true, "seed": i,
                    });
                    post(a, "/v1/chat/completions", &body)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    let mut served = 0;
    for r in &replies {
        match r.status {
            200 => {
                assert_eq!(r.events().last().unwrap(), "[DONE]");
                served += 1;
            }
            503 => {
                r.error(503);
            }
            other => panic!("status {other}: {}", r.body),
        }
    }
    assert!(served >= 20, "only {served} of 32 served");
    assert!(server.alive());
    let rss_after = rss_kib(server.pid());
    eprintln!("32 requests: {served} served in {elapsed:?}; RSS {rss_before} → {rss_after} KiB");
    // Four 512-token caches of this model are ~23 MB; allow generous slack for allocator noise.
    assert!(
        rss_after < rss_before + 200 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert_eq!(request(a, "GET", "/health", None, "").status, 200);
}

/// tiny-mllama converted to F32 by the sibling `lumen-convert` (built by `cargo build --workspace`).
fn tiny_mllama_gguf() -> std::path::PathBuf {
    let convert = std::path::Path::new(env!("CARGO_BIN_EXE_lumen"))
        .with_file_name(format!("lumen-convert{}", std::env::consts::EXE_SUFFIX));
    assert!(
        convert.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        convert.display()
    );
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("server-tiny-mllama-f32.gguf");
    let o = Command::new(convert)
        .arg(common::shared_dir().join("fixtures/tiny-mllama"))
        .args(["--outtype", "f32", "--force", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// A Vision model takes images as base64 data URIs (object and string forms) and the answer
/// depends on them; a corrupt image is a 400 and the server goes on.
#[test]
fn a_vision_model_answers_about_a_data_uri_image() {
    use base64::Engine as _;
    let server = Server::start_model(&tiny_mllama_gguf(), &[]);
    let png = std::fs::read(common::refs_dir().join("tiny-mllama/test.png")).unwrap();
    let uri = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    );
    let ask = |image: Option<Value>| {
        let mut content =
            vec![json!({"type": "text", "text": "If I had to write a haiku for this one"})];
        if let Some(part) = image {
            content.insert(0, part);
        }
        let body = json!({"messages": [{"role": "user", "content": content}],
                          "max_tokens": 8, "temperature": 0});
        post(server.addr, "/v1/chat/completions", &body)
    };
    let with_object = ask(Some(
        json!({"type": "image_url", "image_url": {"url": uri}}),
    ));
    let with_string = ask(Some(json!({"type": "image_url", "image_url": uri})));
    let without = ask(None);
    let text = |r: &Reply| {
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b, c) = (text(&with_object), text(&with_string), text(&without));
    assert!(!a.is_empty());
    assert_eq!(a, b, "the two image_url forms give the same answer");
    assert_ne!(a, c, "the image changes the answer");
    let corrupt = ask(Some(json!({"type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="}})));
    corrupt.error(400);
    assert_eq!(text(&ask(None)), c, "the server goes on after a bad image");
}

/// Prompt caching across requests: the second turn of a conversation starts from the prefix
/// its slot already holds (the long system prompt and the first turn), reported as OpenAI's
/// `cached_tokens`; llama.cpp's `cache_prompt: false` evaluates it all again.
#[test]
fn a_conversations_second_turn_reuses_the_cached_prefix_unless_told_not_to() {
    let server = Server::start(&["-c", "1024"]);
    let system = "You are a careful assistant who answers in one short sentence. ".repeat(20);
    let turn = |messages: Value, cache_prompt: bool| {
        let body = json!({"messages": messages, "max_tokens": 4, "temperature": 0,
                          "cache_prompt": cache_prompt});
        let v = post(server.addr, "/v1/chat/completions", &body).json();
        let usage = &v["usage"];
        let cached = usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        let answer = v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        (usage["prompt_tokens"].as_u64().unwrap(), cached, answer)
    };
    let first = json!([{"role": "system", "content": system},
                       {"role": "user", "content": "Name a colour."}]);
    let (p1, cached1, answer) = turn(first.clone(), true);
    assert_eq!(cached1, 0);
    let mut second = first.as_array().unwrap().clone();
    second.push(json!({"role": "assistant", "content": answer}));
    second.push(json!({"role": "user", "content": "Name another."}));
    let (p2, cached2, _) = turn(Value::Array(second.clone()), true);
    assert!(p2 > p1 && p1 > 200, "prompt tokens {p1}, {p2}");
    // The first turn's prompt (its generation prompt may be re-tokenized at the seam) is held.
    assert!(
        cached2 + 8 >= p1 && cached2 < p2,
        "cached {cached2} of {p2} (first turn {p1})"
    );
    let (_, cold, _) = turn(Value::Array(second), false);
    assert_eq!(cold, 0);
}

/// `GET /metrics`: Prometheus' text format (every sample named, typed and described, the
/// histogram cumulative), counters that add up to what the requests' `usage` said, and the API
/// key in front of it.
#[test]
fn metrics_count_the_requests_in_prometheus_text_format() {
    let server = Server::start(&["--api-key", KEY, "--parallel", "2"]);
    let a = server.addr;
    assert_eq!(request(a, "GET", "/metrics", None, "").status, 401);
    let (mut prompt, mut cached, mut generated) = (0, 0, 0);
    for (i, stream) in [(0, false), (1, true), (2, false)] {
        let mut body = chat_body(&format!("Say {i} words."), 5);
        body["stream"] = json!(stream);
        body["stream_options"] = json!({"include_usage": true});
        let body = body.to_string();
        let r = request(a, "POST", "/v1/chat/completions", Some(KEY), &body);
        assert_eq!(r.status, 200, "{}", r.body);
        let usage = if stream {
            let last = r.events().iter().rev().nth(1).unwrap().clone();
            serde_json::from_str::<Value>(&last).unwrap()["usage"].clone()
        } else {
            r.json()["usage"].clone()
        };
        prompt += usage["prompt_tokens"].as_u64().unwrap();
        cached += usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        generated += usage["completion_tokens"].as_u64().unwrap();
    }
    let r = request(a, "GET", "/metrics", Some(KEY), "");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let mut typed = std::collections::HashMap::new();
    let mut described = std::collections::HashSet::new();
    let mut samples = std::collections::HashMap::new();
    for line in r.body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.is_empty(), "{line}");
            described.insert(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            typed.insert(name.to_string(), kind.to_string());
        } else {
            let (name, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            let family = name.split('{').next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    family
                        .strip_suffix(s)
                        .filter(|b| typed.get(*b).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(family);
            assert!(typed.contains_key(base), "{name} has no TYPE line");
            samples.insert(name.to_string(), value);
        }
    }
    assert_eq!(
        described,
        typed.keys().cloned().collect(),
        "a family without HELP"
    );
    let get = |name: &str| samples[name];
    assert_eq!(get("lumen_requests_total"), 3.0);
    assert_eq!(get("lumen_requests_failed_total"), 0.0);
    assert_eq!(get("lumen_prompt_tokens_total"), prompt as f64);
    assert_eq!(get("lumen_prompt_tokens_cached_total"), cached as f64);
    assert_eq!(get("lumen_tokens_generated_total"), generated as f64);
    assert_eq!(get("lumen_slots"), 2.0);
    assert_eq!(get("lumen_requests_in_flight"), 0.0);
    assert!(get("lumen_generation_tokens_per_second") > 0.0);
    assert!(get("lumen_prompt_seconds_total") > 0.0);
    let buckets: Vec<f64> = r
        .body
        .lines()
        .filter(|l| l.starts_with("lumen_time_to_first_token_seconds_bucket"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(*buckets.last().unwrap(), 3.0);
    assert_eq!(get("lumen_time_to_first_token_seconds_count"), 3.0);
    assert_eq!(typed["lumen_time_to_first_token_seconds"], "histogram");
}
