//! The server's own accept loop: HTTP/1 (with upgrades, for WebSockets) and HTTP/2 on
//! hyper, with the limits that keep hostile or slow peers from holding the server.
//!
//! - Each connection is in one of three phases: reading a request head (bounded by
//!   [`Limits::header_read_timeout`], from the moment the connection is accepted or the
//!   next request's first byte arrives), idle between requests (bounded by
//!   [`Limits::keep_alive_timeout`]), or busy with requests (not bounded here: the body
//!   read timeout and the handlers bound that). A connection whose phase outlives its
//!   bound is dropped. An upgraded connection (a WebSocket) leaves these phases for good.
//! - A request head is at most [`Limits::max_request_head`] bytes; a larger one answers
//!   431, so a peer holding an unfinished head pins at most that much.
//! - At most [`Limits::max_connections`] client connections (WebSockets included) are
//!   open at once; one more is answered a short `503` and closed.
//! - Running out of file descriptors (or memory for sockets) does not end the loop: it
//!   logs once, pauses briefly, and accepts again once descriptors free up.
//! - Every connection task (and every HTTP/2 stream task) is spawned on the server's
//!   task tracker; when `stopping` is cancelled, connections are told to close after
//!   their in-flight requests (hyper's graceful shutdown) and are dropped if that takes
//!   longer than [`Limits::shutdown_grace`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower_service::Service;

use crate::Limits;
use crate::metrics::{Metrics, Refusal};
use crate::tasks::Tasks;

/// The smallest read buffer hyper accepts, so the smallest head limit.
const MIN_READ_BUFFER: usize = 8 * 1024;
/// The most descriptors kept free beyond the connection cap: the refusals' and the
/// process's own.
const FD_RESERVE: usize = 2 * MAX_REFUSALS;
/// How long the loop pauses after an accept failed for want of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How many refusals (the `503` of a full server) may be in flight at once; beyond that
/// a connection over the cap is closed without an answer, so that refusing cannot itself
/// pile up descriptors.
const MAX_REFUSALS: usize = 64;
/// How long a refusal waits for the peer to read the `503` and close.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
const REFUSAL_BODY: &str = "Too many open connections: the server is at its limit, retry later\n";

/// Accepts connections on `listener` and serves `router` on each, under `limits`, until
/// the server stops; then closes the listener and returns, while the connections drain
/// in `tasks` (each within [`Limits::shutdown_grace`]).
///
/// Fails only if the listener itself is unusable (not listening); running out of
/// descriptors is waited out.
pub(super) async fn accept(
    listener: TcpListener,
    router: axum::Router,
    limits: &Limits,
    metrics: &Metrics,
    tasks: &Tasks,
) -> io::Result<()> {
    let stopping = tasks.stopping().clone();
    let http = Arc::new(builder(limits, tasks));
    let connections = Arc::new(Semaphore::new(connection_cap(limits.max_connections)));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let timeouts = Timeouts {
        head: limits.header_read_timeout,
        idle: limits.keep_alive_timeout,
    };
    let grace = limits.shutdown_grace;
    // Failures in a row, so that running out of descriptors is logged once, not once
    // per retry.
    let mut failures: u64 = 0;
    loop {
        let accepted = tokio::select! {
            () = stopping.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                if failures > 0 {
                    tracing::info!(failures, "accepting connections again");
                    failures = 0;
                }
                stream
            }
            // The peer gave up before we accepted: nothing to do.
            Err(error) if is_connection_error(&error) => {
                tracing::debug!(%error, "a connection failed before it was accepted");
                continue;
            }
            Err(error) if error.kind() == io::ErrorKind::InvalidInput => return Err(error),
            // EMFILE, ENFILE, ENOBUFS, ENOMEM: the pending connection stays in the
            // backlog; retry once something has been freed.
            Err(error) => {
                if failures == 0 {
                    tracing::error!(
                        %error,
                        "cannot accept connections; retrying every {ACCEPT_BACKOFF:?} until resources free up"
                    );
                }
                failures += 1;
                tokio::select! {
                    () = stopping.cancelled() => return Ok(()),
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            metrics.refused(Refusal::ConnectionCap);
            refuse(stream, &refusals, tasks);
            continue;
        };
        // Real-time traffic: a frame must not wait for Nagle's algorithm to batch it.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            stream,
            activity: Arc::clone(&activity),
            _permit: permit,
        });
        let service = Dispatch {
            router: router.clone(),
            activity: Arc::clone(&activity),
        };
        let (http, stopping) = (Arc::clone(&http), stopping.clone());
        tasks.spawn_connection(async move {
            let connection = http.serve_connection_with_upgrades(io, service);
            let mut connection = std::pin::pin!(connection);
            let expired = activity.expired(timeouts);
            let mut expired = std::pin::pin!(expired);
            tokio::select! {
                result = connection.as_mut() => return log_end(result),
                () = expired.as_mut() => return,
                () = stopping.cancelled() => {}
            }
            // In-flight requests finish; the connection is told to close (HTTP/1:
            // `connection: close`; HTTP/2: GOAWAY).
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection => log_end(result),
                () = expired => {}
                () = tokio::time::sleep(grace) => {
                    tracing::debug!("a connection did not finish within the shutdown grace: dropped");
                }
            }
        });
    }
}

/// The connection cap in force: [`Limits::max_connections`], lowered if need be so that
/// the process keeps some descriptors beyond it (for its files, its listener and the
/// refusals), so that a full server refuses with 503 instead of going silent.
fn connection_cap(max_connections: usize) -> usize {
    let cap = max_connections.min(Semaphore::MAX_PERMITS);
    let Some(limit) = open_files_limit() else {
        return cap;
    };
    let fitted = cap_within(cap, limit);
    if fitted < cap {
        tracing::info!(
            max_connections,
            open_files_limit = limit,
            "the connection cap is lowered to {fitted} to stay below the file descriptor limit"
        );
    }
    fitted
}

/// `cap`, or less so that `limit` descriptors leave an eighth of them spare (16 to
/// [`FD_RESERVE`]) for the process's own files and the refusals.
fn cap_within(cap: usize, limit: usize) -> usize {
    let spare = (limit / 8).clamp(16, FD_RESERVE);
    cap.min(limit.saturating_sub(spare).max(1))
}

/// The process's soft limit on open files, where the system tells it (Linux's
/// `/proc/self/limits`); `None` elsewhere or when unlimited.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The connection builder: HTTP/1 with upgrades and HTTP/2 (with the extended CONNECT
/// of WebSockets over HTTP/2), head sizes bounded, HTTP/2 streams spawned on `tasks`.
fn builder(limits: &Limits, tasks: &Tasks) -> auto::Builder<TrackedExecutor> {
    let mut builder = auto::Builder::new(TrackedExecutor(tasks.clone()));
    // The phases below bound header reads and idle time; hyper's own header timeout
    // would start at the end of the previous response and so cap idle time too.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // hyper's auto builder sets the head limit through the read buffer's bound,
        // which is at least 8 KiB.
        .max_buf_size(limits.max_request_head.max(MIN_READ_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(limits.max_request_head).unwrap_or(u32::MAX));
    builder
}

fn log_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Answers a connection over the cap with a short `503` and closes it, in a task of its
/// own (at most [`MAX_REFUSALS`] at once, each bounded by [`REFUSAL_LINGER`]).
fn refuse(mut stream: TcpStream, refusals: &Arc<Semaphore>, tasks: &Tasks) {
    let Ok(permit) = Arc::clone(refusals).try_acquire_owned() else {
        tracing::debug!("too many refusals in flight: a connection was closed unanswered");
        return;
    };
    tracing::debug!("the connection limit is reached: refusing a connection");
    tasks.spawn_connection(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            let response = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
                 content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{REFUSAL_BODY}",
                REFUSAL_BODY.len()
            );
            stream.write_all(response.as_bytes()).await?;
            stream.shutdown().await?;
            // Read what the peer sent until it closes: closing with unread data would
            // reset the connection, and the peer could lose the answer.
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
    });
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Spawns hyper's background futures (HTTP/2 streams) on the server's tracker, so that
/// they are owned like the connections.
#[derive(Clone, Debug)]
struct TrackedExecutor(Tasks);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn_connection(future);
    }
}

// ---------------------------------------------------------------------------------------
// Phases

#[derive(Clone, Copy, Debug)]
struct Timeouts {
    head: Duration,
    idle: Duration,
}

/// What a connection is doing, for its timeouts.
#[derive(Debug)]
struct Activity {
    phase: Mutex<Phase>,
    /// What a read must record, so that reads in other phases (an upgraded socket's,
    /// above all) cost one atomic load: [`QUIET`], [`IDLE`] or [`BUSY`].
    on_read: AtomicU8,
    /// Woken on every change of phase, so that the deadline is recomputed.
    changed: Notify,
}

/// A read records nothing.
const QUIET: u8 = 0;
/// A read starts the next request's head.
const IDLE: u8 = 1;
/// A read means the next request is pipelined behind the ones in flight.
const BUSY: u8 = 2;

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Reading a request head since this instant.
    Head(Instant),
    /// Waiting for the next request since this instant.
    Idle(Instant),
    /// Serving this many requests (several with HTTP/2); `read` if bytes arrived
    /// meanwhile (the next request's head, pipelined).
    Busy { requests: usize, read: bool },
    /// Upgraded (a WebSocket): no HTTP timeouts any more.
    Upgraded,
}

impl Activity {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Head(Instant::now())),
            on_read: AtomicU8::new(QUIET),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived from the peer.
    fn on_read(&self) {
        if self.on_read.load(Ordering::Relaxed) == QUIET {
            return;
        }
        let mut phase = self.lock();
        match &mut *phase {
            Phase::Idle(_) => {
                *phase = Phase::Head(Instant::now());
                self.on_read.store(QUIET, Ordering::Relaxed);
                drop(phase);
                self.changed.notify_one();
            }
            Phase::Busy { read, .. } => {
                *read = true;
                self.on_read.store(QUIET, Ordering::Relaxed);
            }
            Phase::Head(_) | Phase::Upgraded => {}
        }
    }

    /// A request's head was read and the request is being served.
    fn request_started(&self) {
        let mut phase = self.lock();
        *phase = match *phase {
            Phase::Busy { requests, read } => Phase::Busy {
                requests: requests + 1,
                read,
            },
            Phase::Upgraded => Phase::Upgraded,
            Phase::Head(_) | Phase::Idle(_) => {
                self.on_read.store(BUSY, Ordering::Relaxed);
                Phase::Busy {
                    requests: 1,
                    read: false,
                }
            }
        };
        drop(phase);
        self.changed.notify_one();
    }

    /// A request is done: its response was written (or abandoned).
    fn request_ended(&self) {
        let mut phase = self.lock();
        if let Phase::Busy { requests, read } = *phase {
            *phase = match requests {
                0 | 1 if read => Phase::Head(Instant::now()),
                0 | 1 => {
                    self.on_read.store(IDLE, Ordering::Relaxed);
                    Phase::Idle(Instant::now())
                }
                more => Phase::Busy {
                    requests: more - 1,
                    read,
                },
            };
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// The connection was upgraded: from now on it belongs to the protocol it switched to.
    fn upgraded(&self) {
        *self.lock() = Phase::Upgraded;
        self.on_read.store(QUIET, Ordering::Relaxed);
        self.changed.notify_one();
    }

    fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        match *self.lock() {
            Phase::Head(since) => Some(since + timeouts.head),
            Phase::Idle(since) => Some(since + timeouts.idle),
            Phase::Busy { .. } | Phase::Upgraded => None,
        }
    }

    /// Completes once the connection has stayed in its current phase past its timeout.
    async fn expired(&self, timeouts: Timeouts) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before the deadline is read, so no change is missed.
            changed.as_mut().enable();
            match self.deadline(timeouts) {
                Some(deadline) => tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {
                        if self.deadline(timeouts).is_some_and(|now| now <= Instant::now()) {
                            tracing::debug!("a connection timed out reading a request head or idling: closed");
                            return;
                        }
                    }
                    () = changed => {}
                },
                None => changed.await,
            }
        }
    }
}

/// Marks a request as in flight until dropped, with the response body it is moved into.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

// ---------------------------------------------------------------------------------------
// The service and the socket

/// The per-connection service: the router, with the connection's phases kept.
#[derive(Clone, Debug)]
struct Dispatch {
    router: axum::Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<http::Request<Incoming>> for Dispatch {
    type Response = http::Response<axum::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        self.activity.request_started();
        let in_flight = InFlight(Arc::clone(&self.activity));
        let mut router = self.router.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| {
                Service::<http::Request<Incoming>>::poll_ready(&mut router, cx)
            })
            .await?;
            let response = router.call(request).await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                in_flight.0.upgraded();
            }
            Ok(response.map(|body| {
                axum::body::Body::new(Guarded {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that keeps its request in flight until it is written or dropped.
#[derive(Debug)]
struct Guarded {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An accepted socket: holds its place under the connection cap for as long as it is
/// open (an upgraded socket too), and reports reads to its connection's phases.
#[derive(Debug)]
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_to_spare() {
        assert_eq!(cap_within(10_000, 20_000), 10_000);
        assert_eq!(cap_within(10_000, 1024), 1024 - 128);
        assert_eq!(cap_within(10_000, 4096), 4096 - FD_RESERVE);
        assert_eq!(cap_within(10_000, 256), 224);
        assert_eq!(cap_within(10_000, 64), 48);
        assert_eq!(cap_within(10, 64), 10);
        assert_eq!(cap_within(10, 8), 1);
    }

    #[test]
    fn the_open_files_limit_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(open_files_limit().is_some_and(|limit| limit > 0));
        }
    }
}
