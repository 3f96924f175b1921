//! `lumen pull` / `lumen models` against a local HTTP server standing in for Hugging Face
//! (reached through `HF_ENDPOINT`), with a test-only registry (`--registry`) and cache
//! (`LUMEN_HOME`), so nothing here touches the network or the real cache.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    range: Option<String>,
}

#[derive(Default)]
struct ServerState {
    files: HashMap<String, Vec<u8>>,
    seen: Mutex<Vec<Seen>>,
    /// Send only half of the next body, then drop the connection (an interrupted download).
    cut_next: AtomicBool,
    /// Answer every request with the whole file, as servers without range support do.
    ignore_range: AtomicBool,
}

/// A tiny HTTP/1.1 server on 127.0.0.1: GET with optional `Range: bytes=N-`, one request per
/// connection. It lives until the test process ends.
struct Server {
    port: u16,
    state: Arc<ServerState>,
}

impl Server {
    fn start(files: &[(&str, &[u8])]) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ServerState {
            files: files
                .iter()
                .map(|(p, b)| (p.to_string(), b.to_vec()))
                .collect(),
            ..Default::default()
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve(stream, &shared);
            }
        });
        Server { port, state }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, state: &ServerState) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    state.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
    });
    let mut out = stream;
    let Some(body) = state.files.get(&path) else {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let len = body.len();
    let start = range
        .filter(|_| !state.ignore_range.load(Ordering::SeqCst))
        .and_then(|r| {
            r.strip_prefix("bytes=")?
                .strip_suffix('-')?
                .parse::<usize>()
                .ok()
        });
    let (status, from, extra) = match start {
        None => ("200 OK", 0, String::new()),
        Some(s) if s >= len => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return out.write_all(head.as_bytes());
        }
        Some(s) => (
            "206 Partial Content",
            s,
            format!("Content-Range: bytes {s}-{}/{len}\r\n", len - 1),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        len - from
    );
    out.write_all(head.as_bytes())?;
    let mut send = &body[from..];
    if state.cut_next.swap(false, Ordering::SeqCst) {
        send = &send[..send.len() / 2];
    }
    out.write_all(send)?;
    out.flush()
}

/// Deterministic bytes that do not repeat within the file.
fn content(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Setup {
    _dir: tempfile::TempDir,
    home: PathBuf,
    registry: PathBuf,
}

/// A registry entry: id, Hugging Face repo, file, revision, sha256, size.
type Entry<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, String, usize);

/// A cache dir and a registry file with `entries`.
fn setup(entries: &[Entry]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let mut toml = format!("default = \"{}\"\n", entries[0].0);
    for (id, repo, file, revision, sha, size) in entries {
        let revision = revision
            .map(|r| format!(", revision = \"{r}\""))
            .unwrap_or_default();
        toml.push_str(&format!(
            "\n[[model]]\nid = \"{id}\"\narch = \"llama\"\nquant = \"Q4_0\"\nfile = \"{file}\"\n\
             sha256 = \"{sha}\"\nsize = {size}\n\
             source = {{ kind = \"hf\", repo = \"{repo}\", file = \"{file}\"{revision} }}\n"
        ));
    }
    let registry = dir.path().join("models.toml");
    std::fs::write(&registry, toml).unwrap();
    Setup {
        _dir: dir,
        home,
        registry,
    }
}

fn lumen(setup: &Setup, endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lumen"))
        .args(args)
        .arg("--registry")
        .arg(&setup.registry)
        .env("LUMEN_HOME", &setup.home)
        .env("HF_ENDPOINT", endpoint)
        .env_remove("LUMEN_REGISTRY")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cached(setup: &Setup, id: &str, file: &str) -> PathBuf {
    setup.home.join("models").join(id).join(file)
}

fn partial(setup: &Setup, id: &str, file: &str) -> PathBuf {
    setup
        .home
        .join("models")
        .join(id)
        .join(format!("{file}.partial"))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const URL: &str = "/org/tiny-GGUF/resolve/main/tiny.gguf";

#[test]
fn fresh_download_lands_verified_in_the_cache() {
    let body = content(300_000, 1);
    let server = Server::start(&[(URL, &body)]);
    let s = setup(&[(
        "tiny",
        "org/tiny-GGUF",
        "tiny.gguf",
        None,
        sha256_hex(&body),
        body.len(),
    )]);
    let (ok, stdout, stderr) = lumen(&s, &server.endpoint(), &["pull", "tiny"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("verified"), "{stdout}");
    assert_eq!(read(&cached(&s, "tiny", "tiny.gguf")), body);
    assert!(!partial(&s, "tiny", "tiny.gguf").exists());
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, URL);
    assert_eq!(seen[0].range, None);

    // Cached and verified: a second pull asks the server nothing.
    let (ok, _, stderr) = lumen(&s, &server.endpoint(), &["pull", "tiny"]);
    assert!(ok, "{stderr}");
    assert_eq!(server.seen().len(), 1);

    let (ok, stdout, _) = lumen(&s, &server.endpoint(), &["models"]);
    assert!(ok);
    let line = stdout.lines().find(|l| l.starts_with("tiny")).unwrap();
    assert!(
        line.contains("cached") && !line.contains("not cached"),
        "{stdout}"
    );
    assert!(
        line.contains("Hugging Face org/tiny-GGUF/tiny.gguf@main"),
        "{stdout}"
    );
}

#[test]
fn partial_file_is_resumed_with_a_range_request() {
    let body = content(200_000, 2);
    let server = Server::start(&[(URL, &body)]);
    let s = setup(&[(
        "tiny",
        "org/tiny-GGUF",
        "tiny.gguf",
        None,
        sha256_hex(&body),
        body.len(),
    )]);
    let part = partial(&s, "tiny", "tiny.gguf");
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &body[..70_000]).unwrap();

    let (ok, stdout, _) = lumen(&s, &server.endpoint(), &["models"]);
    assert!(ok);
    assert!(stdout.contains("partial"), "{stdout}");

    let (ok, _, stderr) = lumen(&s, &server.endpoint(), &["pull", "tiny"]);
    assert!(ok, "{stderr}");
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].range.as_deref(), Some("bytes=70000-"));
    assert_eq!(read(&cached(&s, "tiny", "tiny.gguf")), body);
    assert!(!part.exists());
}

#[test]
fn interrupted_download_is_resumed_by_the_next_pull() {
    let body = content(250_000, 3);
    let server = Server::start(&[(URL, &body)]);
    server.state.cut_next.store(true, Ordering::SeqCst);
    let s = setup(&[(
        "tiny",
        "org/tiny-GGUF",
        "tiny.gguf",
        None,
        sha256_hex(&body),
        body.len(),
    )]);
    let (ok, _, stderr) = lumen(&s, &server.endpoint(), &["pull", "tiny"]);
    assert!(!ok, "a cut connection must fail the pull");
    assert!(stderr.contains(URL), "the error names the URL: {stderr}");
    let kept = std::fs::metadata(partial(&s, "tiny", "tiny.gguf"))
        .unwrap()
        .len();
    assert!(kept > 0 && kept < body.len() as u64, "partial holds {kept}");
    assert!(!cached(&s, "tiny", "tiny.gguf").exists());

    let (ok, _, stderr) = lumen(&s, &server.endpoint(), &["pull", "tiny"]);
    assert!(ok, "{stderr}");
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].range, Some(format!("bytes={kept}-")));
    assert_eq!(read(&cached(&s, "tiny", "tiny.gguf")), body);
}

#[test]
fn server_without_range_support_restarts_the_file() {
    let body = content(100_000, 4);
    let server = Server::start(&[(URL, &body)]);
    server.state.ignore_range.store(true, Ordering::SeqCst);
    let s = setup(&[(
        "tiny",
        "org/tiny-GGUF",
        "tiny.gguf",
        None,
        sha256_hex(&body),
        body.len(),
    )]);
    let part = partial(&s, "tiny", "tiny.gguf");
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    // Garbage in the partial file: appending the full body to it would fail the checksum.
    std::fs::write(&part, vec![0xAB; 5000]).unwrap();
    let (ok, _, stderr) = lumen(&s, &server.endpoint(), &["pull", "tiny"]);
    assert!(ok, "{stderr}");
    assert_eq!(server.seen()[0].range.as_deref(), Some("bytes=5000-"));
    assert_eq!(read(&cached(&s, "tiny", "tiny.gguf")), body);
}

#[test]
fn checksum_mismatch_is_an_error_and_leaves_no_file() {
    let body = content(50_000, 5);
    let server = Server::start(&[(URL, &body)]);
    let wrong = sha256_hex(b"something else");
    let s = setup(&[(
        "tiny",
        "org/tiny-GGUF",
        "tiny.gguf",
        None,
        wrong.clone(),
        body.len(),
    )]);
    let (ok, _, stderr) = lumen(&s, &server.endpoint(), &["pull", "tiny"]);
    assert!(!ok);
    assert!(stderr.contains("sha256 mismatch"), "{stderr}");
    assert!(
        stderr.contains(&wrong) && stderr.contains(&sha256_hex(&body)),
        "{stderr}"
    );
    assert!(!cached(&s, "tiny", "tiny.gguf").exists());
    assert!(!partial(&s, "tiny", "tiny.gguf").exists());
}

#[test]
fn hf_endpoint_and_revision_shape_the_url() {
    let body = content(10_000, 6);
    let url = "/someone/other-model/resolve/v1.2/sub/dir/weights.gguf";
    let server = Server::start(&[(url, &body)]);
    let s = setup(&[(
        "other",
        "someone/other-model",
        "sub/dir/weights.gguf",
        Some("v1.2"),
        sha256_hex(&body),
        body.len(),
    )]);
    // A trailing slash on the endpoint is tolerated, as huggingface_hub does.
    let endpoint = format!("{}/", server.endpoint());
    let (ok, _, stderr) = lumen(&s, &endpoint, &["pull", "other"]);
    assert!(ok, "{stderr}");
    assert_eq!(server.seen()[0].path, url);
    assert_eq!(read(&cached(&s, "other", "sub/dir/weights.gguf")), body);
}

#[test]
fn missing_file_on_the_server_names_the_url() {
    let server = Server::start(&[]);
    let s = setup(&[(
        "tiny",
        "org/tiny-GGUF",
        "tiny.gguf",
        None,
        sha256_hex(b""),
        0,
    )]);
    let (ok, _, stderr) = lumen(&s, &server.endpoint(), &["pull", "tiny"]);
    assert!(!ok);
    assert!(
        stderr.contains("HTTP 404") && stderr.contains(URL),
        "{stderr}"
    );
    assert!(!cached(&s, "tiny", "tiny.gguf").exists());
}

#[test]
fn unknown_model_lists_the_known_ones() {
    let s = setup(&[
        ("alpha", "org/a", "a.gguf", None, sha256_hex(b"a"), 1),
        ("beta", "org/b", "b.gguf", None, sha256_hex(b"b"), 1),
    ]);
    let (ok, _, stderr) = lumen(&s, "http://127.0.0.1:9", &["pull", "gamma"]);
    assert!(!ok);
    assert!(
        stderr.contains("gamma") && stderr.contains("alpha, beta"),
        "{stderr}"
    );

    let (ok, stdout, stderr) = lumen(&s, "http://127.0.0.1:9", &["models"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("alpha (default)"), "{stdout}");
    assert_eq!(stdout.matches("not cached").count(), 2, "{stdout}");
}

#[test]
fn unreadable_registry_file_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_lumen"))
        .args(["models", "--registry", "/nonexistent/models.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/models.toml"), "{stderr}");
}
