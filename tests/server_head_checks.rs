//! Checks `lumen serve` makes on a request's head, before reading any body: the `Host`
//! allow-list (DNS rebinding), `Content-Type: application/json` on POST bodies (a web page's
//! `no-cors` text body), and the API key (an unauthenticated client cannot hold a connection
//! while its body trickles in). Each of these was answered 200, or not at all, before.

mod common;
#[path = "common/http.rs"]
mod http;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use http::*;

fn raw(addr: std::net::SocketAddr, head: &str, body: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{head}Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    read_reply(&mut s)
}

const BODY: &str = r#"{"prompt": "Hi", "max_tokens": 2}"#;

#[test]
fn a_host_name_outside_the_allow_list_is_refused() {
    let server = Server::start(&[]);
    let ok = |host: &str| {
        let head = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        );
        raw(server.addr, &head, BODY)
    };
    for host in [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
    ] {
        let r = ok(host);
        assert_eq!(r.status, 403, "{host}: {}", r.body);
        assert_eq!(r.error(403)["code"], "host_not_allowed");
    }
    for host in ["localhost", &server.addr.to_string(), "[::1]:1234"] {
        assert_eq!(ok(host).status, 200, "{host}");
    }
    // /health too: a rebinding page must not learn even that a server is there.
    let r = raw(
        server.addr,
        "GET /health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n",
        "",
    );
    assert_eq!(r.status, 403);
}

#[test]
fn allowed_hosts_lists_names_a_proxy_forwards() {
    let server = Server::start(&["--allowed-hosts", "llm.lan"]);
    let head = "POST /v1/completions HTTP/1.1\r\nHost: llm.lan:8080\r\nConnection: close\r\nContent-Type: application/json\r\n";
    assert_eq!(raw(server.addr, head, BODY).status, 200);
    let head = head.replace("llm.lan", "evil.example");
    assert_eq!(raw(server.addr, &head, BODY).status, 403);
}

#[test]
fn post_bodies_must_be_declared_json() {
    let server = Server::start(&[]);
    for ct in [
        "Content-Type: text/plain\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "",
    ] {
        let head = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{ct}"
        );
        let r = raw(server.addr, &head, BODY);
        assert_eq!(r.status, 415, "{ct:?}: {}", r.body);
        assert_eq!(r.error(415)["code"], "unsupported_media_type");
    }
    let head = "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\n";
    assert_eq!(raw(server.addr, head, BODY).status, 200);
}

#[test]
fn the_api_key_is_checked_before_the_body_is_read() {
    let server = Server::start(&["--api-key", KEY]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // A 1 MB body is announced and never sent: the answer must not wait for it.
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
    )
    .unwrap();
    let start = Instant::now();
    let r = read_reply(&mut s);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

/// CORS: no headers unless `--cors-origin` names the page's origin; then a browser's preflight
/// (no API key, no JSON body) is answered and the real request carries the origin back.
#[test]
fn cors_headers_only_for_named_origins() {
    let preflight = |addr, origin: &str| {
        let head = format!(
            "OPTIONS /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: content-type, authorization\r\n"
        );
        raw(addr, &head, "")
    };
    let post = |addr, origin: &str| {
        let head = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Origin: {origin}\r\nContent-Type: application/json\r\nAuthorization: Bearer k\r\n"
        );
        raw(addr, &head, BODY)
    };
    let allow = |r: &Reply| r.header("access-control-allow-origin").map(str::to_string);

    let closed = Server::start(&["--api-key", "k"]);
    assert_eq!(allow(&preflight(closed.addr, "http://app.example")), None);
    let r = post(closed.addr, "http://app.example");
    assert_eq!((r.status, allow(&r)), (200, None));

    let open = Server::start(&["--api-key", "k", "--cors-origin", "http://app.example"]);
    let r = preflight(open.addr, "http://app.example");
    assert!(r.status < 300, "preflight: {} {}", r.status, r.body);
    assert_eq!(allow(&r).as_deref(), Some("http://app.example"));
    // (The test client lowercases the head.)
    let methods = r.header("access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("post"), "{methods}");
    let r = post(open.addr, "http://app.example");
    assert_eq!(
        (r.status, allow(&r).as_deref()),
        (200, Some("http://app.example"))
    );
    // Another origin learns nothing.
    assert_eq!(allow(&preflight(open.addr, "http://evil.example")), None);
    assert_eq!(allow(&post(open.addr, "http://evil.example")), None);
}
