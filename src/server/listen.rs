//! The connection layer under the router: accepts TCP connections (at most
//! [`ServeLimits::max_connections`] open at once), serves each with HTTP/1 under timeouts, and
//! shuts down in two stages.
//!
//! Timeouts, so that no client can hold a connection (or, through it, a slot) forever:
//! - a request head must arrive within [`ServeLimits::header_timeout`]; the same limit closes
//!   idle keep-alive connections (hyper's header-read timer also runs between requests);
//! - a request body must arrive within [`ServeLimits::io_timeout`] (the body-reading middleware
//!   in the parent module);
//! - a write to the client may stay blocked at most [`ServeLimits::io_timeout`]: a reader that
//!   stops reading a stream fills the socket buffers, the blocked write then fails, the
//!   connection is dropped, and the engine frees the slot as for a client that hung up.
//!
//! Shutdown: the first signal stops accepting, refuses new requests with 503 and lets admitted
//! ones finish for up to [`ServeLimits::shutdown_grace`]; then (or at a second signal) whatever
//! is left is cancelled (streams end with an error event and `[DONE]`, whole answers get 503).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, Sleep};

use super::{router, ServerState};

/// How long the server waits for clients, and for itself at shutdown.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// Longest a client may take to send a request head, and longest an idle keep-alive
    /// connection stays open.
    pub header_timeout: Duration,
    /// Longest a request body may take to arrive, and longest a write to the client may stay
    /// blocked.
    pub io_timeout: Duration,
    /// Connections open at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// After the first shutdown signal, how long admitted requests may go on.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    /// llama.cpp server's 600 s read/write timeout; hyper's 30 s header timeout.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(600),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Every connection finished its request and closed within the grace period.
    Drained,
    /// Requests were still running at the end of the grace period (or at a second signal)
    /// and were cancelled.
    Cancelled { in_flight: usize },
}

/// Serves `state` on `listener` until the first message on `signals`, then shuts down as the
/// module documentation describes. A second message cuts the grace period short.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    mut signals: mpsc::Receiver<()>,
) -> io::Result<Shutdown> {
    let limits = state.limits;
    let app = router(state.clone());
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing) = watch::channel(false);
    loop {
        let permit = tokio::select! {
            p = open.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            Some(()) = signals.recv() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    wait_after_accept_error(e).await?;
                    continue;
                }
            },
            Some(()) = signals.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        limit_send_buffer(&stream);
        let conn = serve_connection(stream, app.clone(), limits, closing.clone(), permit);
        tokio::spawn(conn);
    }
    drop(listener);
    state.engine.stop_admitting();
    let _ = closing_tx.send(true);

    let all_closed = open
        .clone()
        .acquire_many_owned(limits.max_connections as u32);
    tokio::pin!(all_closed);
    tokio::select! {
        _ = &mut all_closed => return Ok(Shutdown::Drained),
        _ = sleep(limits.shutdown_grace) => {}
        Some(()) = signals.recv() => {}
    }
    let in_flight = state.engine.in_flight();
    state.engine.cancel_all();
    // Give the cancelled requests a moment to send their last event; stalled clients are not
    // waited for.
    let _ = tokio::time::timeout(Duration::from_secs(2), all_closed).await;
    Ok(Shutdown::Cancelled { in_flight })
}

/// Running out of file descriptors (or a connection reset before accept) is not fatal: wait a
/// little and accept again. Any other error ends the server.
async fn wait_after_accept_error(e: io::Error) -> io::Result<()> {
    let transient = matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    if !transient {
        return Err(e);
    }
    sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// Kernel send buffer per connection. Linux grows it up to `tcp_wmem` (4 MiB) on its own, which
/// on loopback swallows ~20,000 streamed tokens: a client that stops reading would never block
/// a write, so its slot would be held to the end of the answer. Streamed tokens need a few
/// hundred bytes each and a whole answer a few hundred kilobytes at most, so a fixed buffer
/// costs nothing in speed and lets [`StallGuard`] see a stalled reader after ~128 KiB (the
/// kernel doubles the value).
const SEND_BUFFER_BYTES: libc::c_int = 64 << 10;

fn limit_send_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a descriptor `stream` owns, with a pointer to a live c_int. A
    // failure only leaves the kernel's default in place.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&SEND_BUFFER_BYTES as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// One connection, until the client closes it, a timeout fires, or shutdown finishes its
/// current request. Holds `permit` (one of the open-connection places) throughout.
async fn serve_connection(
    stream: TcpStream,
    app: axum::Router,
    limits: ServeLimits,
    mut closing: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let io = TokioIo::new(StallGuard::new(stream, limits.io_timeout));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let conn = http.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let shutting_down = async move {
        // The guard `wait_for` returns must not live across an await (it is not `Send`).
        let _ = closing.wait_for(|c| *c).await.map(|_| ());
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutting_down => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
    drop(permit);
}

/// A stream whose writes fail with `TimedOut` once one has been blocked (the peer not reading)
/// for longer than `limit`. Reads pass through: hyper times out request heads itself.
pub struct StallGuard<S> {
    inner: S,
    limit: Duration,
    /// Running while a write is blocked; cleared by any write that makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StallGuard<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Turns a pending write into an error once it has been pending for `limit`.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client has not read anything for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn a_write_blocked_past_the_limit_fails() {
        runtime().block_on(async {
            let (near, _far) = tokio::io::duplex(64);
            let mut guarded = StallGuard::new(near, Duration::from_secs(5));
            let start = tokio::time::Instant::now();
            let err = guarded.write_all(&[7u8; 1000]).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            let waited = start.elapsed();
            assert!(
                waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
                "{waited:?}"
            );
        });
    }

    #[test]
    fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        runtime().block_on(async {
            let (near, mut far) = tokio::io::duplex(64);
            let mut guarded = StallGuard::new(near, Duration::from_secs(5));
            let reader = tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 64];
                loop {
                    // Reads every 4 s: slower than the writer, never stalled for 5 s.
                    sleep(Duration::from_secs(4)).await;
                    let n = far.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return got;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
            });
            let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
            guarded.write_all(&data).await.unwrap();
            guarded.shutdown().await.unwrap();
            drop(guarded);
            assert_eq!(reader.await.unwrap(), data);
        });
    }
}
