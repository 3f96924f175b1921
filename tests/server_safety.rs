//! `lumen serve` against clients that misbehave, and its shutdown, with the real SmolLM2 model:
//! silent and slow clients are timed out, a client that stops reading a stream loses its slot,
//! SIGTERM lets running requests finish (and cancels them past the grace period), a model file
//! replaced by rename changes nothing while one truncated in place is a clear error, and 64
//! clients at once — stalled, garbage-sending and well-behaved — leave the server up, its memory
//! and file descriptors bounded, and the well-behaved ones answered.

mod common;
#[path = "common/http.rs"]
mod http;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::*;
use serde_json::{json, Value};

/// Writes `body` as a POST to `path` on an open connection (kept alive).
fn send_post(s: &mut TcpStream, path: &str, body: &Value) {
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
}

/// A connection whose receive buffer is as small as the kernel allows, so that a client that
/// stops reading blocks the server's writes after a few kilobytes, not a few megabytes.
fn connect_with_tiny_receive_buffer(addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("the server listens on IPv4 loopback")
    };
    // SAFETY: plain socket calls on a descriptor this function owns until it is handed to
    // `TcpStream`, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 2048;
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sin as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// Reads until `needle` appears in what was read; returns everything read.
fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "connection closed before {needle:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Waits for the server to close `s` (EOF or reset); returns how long that took.
fn time_until_closed(s: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("not closed after {:?}: {e}", start.elapsed()),
        }
    }
}

fn in_flight(addr: SocketAddr) -> u64 {
    request(addr, "GET", "/health", None, "").json()["requests_in_flight"]
        .as_u64()
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn signal(server: &Server, sig: libc::c_int) {
    // SAFETY: sends a signal to our own child process.
    assert_eq!(unsafe { libc::kill(server.pid() as libc::pid_t, sig) }, 0);
}

/// Waits up to `limit` for the server process to exit; its exit code.
fn wait_exit(server: &mut Server, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the server did not exit within {limit:?}");
}

fn long_stream(max_tokens: usize) -> Value {
    json!({"prompt": "Once upon a time", "max_tokens": max_tokens, "stream": true,
           "temperature": 0, "ignore_eos": true})
}

#[test]
fn silent_slow_and_trickling_clients_are_timed_out() {
    let server = Server::start(&["--timeout", "1"]);
    let a = server.addr;
    // Connected, sends nothing.
    let mut silent = TcpStream::connect(a).unwrap();
    // Half a request head, then nothing.
    let mut half_head = TcpStream::connect(a).unwrap();
    write!(
        half_head,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n"
    )
    .unwrap();
    // A whole head announcing 100 bytes of body, then 10 of them.
    let mut trickle = TcpStream::connect(a).unwrap();
    write!(
        trickle,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"prompt\":"
    )
    .unwrap();
    // A kept-alive connection that got its answer and went quiet.
    let mut idle = TcpStream::connect(a).unwrap();
    send_post(
        &mut idle,
        "/v1/completions",
        &json!({"prompt": "Hi", "max_tokens": 2}),
    );
    read_until(&mut idle, "\"finish_reason\"");

    // Meanwhile a well-behaved client is served.
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 4}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    for (name, s) in [
        ("silent", &mut silent),
        ("half head", &mut half_head),
        ("idle", &mut idle),
    ] {
        let t = time_until_closed(s, Duration::from_secs(5));
        eprintln!("{name}: closed after {t:?}");
    }
    let reply = read_reply(&mut trickle);
    let e = reply.error(408);
    assert_eq!(e["code"], "request_timeout", "{e}");
    assert_eq!(in_flight(a), 0);
}

#[test]
fn a_client_that_stops_reading_its_stream_loses_its_slot() {
    let mut server = Server::start(&["--timeout", "1", "--parallel", "1", "-c", "4096"]);
    let a = server.addr;
    // Reference: how fast this machine generates, to know how long the whole answer would take.
    let start = Instant::now();
    let r = post(a, "/v1/completions", &long_stream(200));
    assert_eq!(r.status, 200);
    let per_token = start.elapsed() / 200;

    let mut staller = connect_with_tiny_receive_buffer(a);
    send_post(&mut staller, "/v1/completions", &long_stream(4000));
    read_until(&mut staller, "\"text\"");
    let stalled = Instant::now();
    // Stops reading, keeps the connection open. The only slot must come free long before the
    // 4000 tokens are done: once the socket buffers are full, the blocked write times out.
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 4}),
    );
    let freed = stalled.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    let whole_answer = per_token * 4000;
    eprintln!("slot freed {freed:?} after the client stopped reading (the whole answer: ~{whole_answer:?})");
    assert!(
        freed < whole_answer / 2,
        "freed after {freed:?}, answer ~{whole_answer:?}"
    );
    assert_eq!(in_flight(a), 0);
    assert!(server.alive());
    drop(staller);
}

#[test]
fn sigterm_lets_a_running_stream_finish_then_the_server_exits() {
    let mut server = Server::start(&["--shutdown-grace", "60"]);
    let a = server.addr;
    let mut idle = TcpStream::connect(a).unwrap();
    let mut s = TcpStream::connect(a).unwrap();
    send_post(&mut s, "/v1/completions", &long_stream(150));
    read_until(&mut s, "\"text\"");
    signal(&server, libc::SIGTERM);
    // Soon no new connection is accepted...
    let start = Instant::now();
    while TcpStream::connect(a).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still accepting after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...the running answer goes to its end...
    let rest = read_until(&mut s, "[DONE]");
    assert!(rest.contains("\"finish_reason\":\"length\""), "{rest}");
    // ...the idle connection is closed, and the process exits cleanly.
    time_until_closed(&mut idle, Duration::from_secs(5));
    assert_eq!(wait_exit(&mut server, Duration::from_secs(10)), Some(0));
}

#[test]
fn past_the_grace_period_running_requests_are_cancelled() {
    let mut server = Server::start(&["--shutdown-grace", "1", "--parallel", "2", "-c", "4096"]);
    let a = server.addr;
    let mut streamed = TcpStream::connect(a).unwrap();
    send_post(&mut streamed, "/v1/completions", &long_stream(4000));
    read_until(&mut streamed, "\"text\"");
    let whole = std::thread::spawn(move || {
        let mut body = long_stream(4000);
        body["stream"] = json!(false);
        post(a, "/v1/completions", &body)
    });
    while in_flight(a) < 2 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Instant::now();
    signal(&server, libc::SIGTERM);
    let rest = read_until(&mut streamed, "[DONE]");
    assert!(rest.contains("\"server_shutting_down\""), "{rest}");
    let reply = whole.join().unwrap();
    assert_eq!(reply.error(503)["code"], "server_shutting_down");
    assert_eq!(wait_exit(&mut server, Duration::from_secs(10)), Some(0));
    let took = signalled.elapsed();
    eprintln!("cancelled and exited {took:?} after SIGTERM (grace 1 s)");
    assert!(took < Duration::from_secs(6), "{took:?}");
}

/// Peak and last RSS of `pid` (KiB), sampled every 50 ms until `stop`.
fn watch_rss(pid: u32, stop: &AtomicBool, peak: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends one kind of garbage; returns the status line it got back, if any.
fn send_garbage(a: SocketAddr, kind: usize) -> Option<u16> {
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let junk: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let head = |len: usize| {
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n")
    };
    let _ = match kind % 6 {
        0 => s.write_all(&junk),
        1 => s.write_all(format!("{}{}", head(20), "{\"messages\": [{\"ro").as_bytes()),
        2 => s.write_all([head(junk.len()).as_bytes(), &junk].concat().as_slice()),
        3 => s.write_all(head(1 << 40).as_bytes()),
        4 => s.write_all(b"GET /\x00\x01\x02 HTTP/1.1\r\n\r\n"),
        _ => {
            let body = json!({"messages": "not a list", "max_tokens": -3}).to_string();
            s.write_all(format!("{}{body}", head(body.len())).as_bytes())
        }
    };
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
}

/// What one round of 64 clients saw.
struct Storm {
    good: Vec<Duration>,
    garbage: Vec<Option<u16>>,
    served_in: Duration,
    settled_in: Duration,
}

/// One round: 64 clients at once, 8 of each behaviour below; returns once all have finished
/// and the server has closed the connections the stalled ones still hold.
fn storm(a: SocketAddr, pid: u32, fds_before: usize) -> Storm {
    let good = Mutex::new(Vec::new());
    let garbage = Mutex::new(Vec::new());
    let held = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..64usize {
            let (good, garbage, held) = (&good, &garbage, &held);
            scope.spawn(move || match i % 8 {
                // 32 well-behaved clients, 3 requests each, streamed and whole.
                0..=3 => {
                    for round in 0..3 {
                        let t = Instant::now();
                        let content = format!("Client {i}, question {round}: name a colour.");
                        let mut body = json!({"messages": [{"role": "user", "content": content}],
                                              "max_tokens": 8, "seed": i});
                        body["stream"] = json!(round % 2 == 0);
                        let r = post(a, "/v1/chat/completions", &body);
                        assert_eq!(r.status, 200, "client {i}: {}", r.body);
                        good.lock().unwrap().push(t.elapsed());
                    }
                }
                // 8 that start a long stream and stop reading, connection kept open.
                4 => {
                    let mut s = connect_with_tiny_receive_buffer(a);
                    send_post(&mut s, "/v1/completions", &long_stream(900));
                    held.lock().unwrap().push(s);
                }
                // 8 that send half a request head and wait.
                5 => {
                    let mut s = TcpStream::connect(a).unwrap();
                    write!(s, "POST /v1/completions HTTP/1.1\r\nContent-Le").unwrap();
                    held.lock().unwrap().push(s);
                }
                // 8 that send garbage, 6 kinds each.
                6 => {
                    for kind in 0..6 {
                        let status = send_garbage(a, kind + i);
                        garbage.lock().unwrap().push(status);
                    }
                }
                // 8 that hang up mid-stream, 3 times each.
                _ => {
                    for _ in 0..3 {
                        let mut s = TcpStream::connect(a).unwrap();
                        send_post(&mut s, "/v1/completions", &long_stream(500));
                        read_until(&mut s, "\"text\"");
                    }
                }
            });
        }
    });
    let served_in = start.elapsed();
    // The stalled and half-open connections are still held by their clients: the server must
    // close them itself (2 s timeouts) and free the stalled streams' slots.
    let settle = Instant::now();
    while (in_flight(a) > 0 || open_fds(pid) > fds_before + 2)
        && settle.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let settled_in = settle.elapsed();
    assert_eq!(in_flight(a), 0, "a stalled stream still holds a slot");
    let fds = open_fds(pid);
    assert!(fds <= fds_before + 2, "fds {fds_before} → {fds}");
    drop(held);
    Storm {
        good: good.into_inner().unwrap(),
        garbage: garbage.into_inner().unwrap(),
        served_in,
        settled_in,
    }
}

#[test]
fn sixty_four_clients_stalled_garbage_and_good_leave_the_server_well() {
    let mut server = Server::start(&[
        "--parallel",
        "4",
        "--queue",
        "64",
        "-c",
        "1024",
        "--timeout",
        "2",
    ]);
    let a = server.addr;
    let pid = server.pid();
    warm_up(a);
    let rss_before = rss_kib(pid);
    let fds_before = open_fds(pid);
    let stop = AtomicBool::new(false);
    let peak = AtomicU64::new(rss_before);
    let mut rss_after = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(|| watch_rss(pid, &stop, &peak));
        for round in 1..=2 {
            let st = storm(a, pid, fds_before);
            let t = Instant::now();
            let r = post(
                a,
                "/v1/completions",
                &json!({"prompt": "Hello", "max_tokens": 4}),
            );
            assert_eq!(r.status, 200, "{}", r.body);
            let after = t.elapsed();
            let worst = st.good.iter().max().unwrap();
            let mean = st.good.iter().sum::<Duration>() / st.good.len() as u32;
            let answered = st.garbage.iter().filter(|s| s.is_some()).count();
            rss_after.push(rss_kib(pid));
            eprintln!(
                "round {round}, 64 clients: {} good requests answered in {:?} (mean {mean:?}, worst {worst:?}); \
                 {answered}/{} garbage connections got an HTTP error, the rest were closed; \
                 stalled and half-open connections closed and slots freed {:?} after the clients finished; \
                 RSS {rss_before} KiB before, {} after; fds {fds_before} before and after; \
                 a request afterwards took {after:?}",
                st.good.len(),
                st.served_in,
                st.garbage.len(),
                st.settled_in,
                rss_after.last().unwrap(),
            );
            assert_eq!(st.good.len(), 96);
            assert!(
                st.garbage.iter().flatten().all(|s| (400..500).contains(s)),
                "{:?}",
                st.garbage
            );
        }
        stop.store(true, Ordering::Relaxed);
    });
    let peak = peak.load(Ordering::Relaxed);
    eprintln!("peak RSS {peak} KiB");
    // The first round grows the four KV caches and the allocator's pools; a second round of
    // the same load must not grow memory again.
    assert!(
        peak < rss_before + 300 * 1024,
        "peak RSS {peak} KiB from {rss_before}"
    );
    assert!(
        rss_after[1] < rss_after[0] + 32 * 1024,
        "RSS grew from {} to {} KiB in the second round",
        rss_after[0],
        rss_after[1]
    );
    assert!(server.alive());
}

/// A private copy of the test model, which the mmap tests may replace or truncate.
fn model_copy(dir: &std::path::Path) -> std::path::PathBuf {
    let copy = dir.join("model.gguf");
    std::fs::copy(common::smollm2_path(), &copy).unwrap();
    copy
}

fn greedy(a: SocketAddr) -> String {
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["choices"][0]["text"].as_str().unwrap().to_string()
}

#[test]
fn a_model_file_replaced_by_rename_while_served_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_copy(dir.path());
    let mut server = Server::start_model(&model, &[]);
    let before = greedy(server.addr);
    // What `lumen pull` does when it updates a model: write a new file, rename it over.
    let new = dir.path().join(".model.gguf.new");
    std::fs::write(&new, vec![0x5Au8; 4 << 20]).unwrap();
    std::fs::rename(&new, &model).unwrap();
    // The mapping still holds the old file, whose data lives until it is unmapped.
    let after = greedy(server.addr);
    assert_eq!(before, after);
    assert!(server.alive());
}

#[test]
fn a_model_file_truncated_while_served_is_a_clear_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_copy(dir.path());
    let mut server = Server::start_model(&model, &[]);
    greedy(server.addr);
    // Rewriting in place (what `cp new.gguf model.gguf` does) first truncates the file.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(0)
        .unwrap();
    let mut s = TcpStream::connect(server.addr).unwrap();
    send_post(
        &mut s,
        "/v1/completions",
        &json!({"prompt": "Hello there", "max_tokens": 4}),
    );
    let code = wait_exit(&mut server, Duration::from_secs(30));
    let stderr = server.stderr.lock().unwrap().join("\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("was truncated or rewritten while in use") && stderr.contains("model.gguf"),
        "{stderr}"
    );
}
