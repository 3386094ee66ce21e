//! Shared helpers for the integration tests: a real server on an ephemeral port, a
//! WebSocket client, a raw HTTP/1.1 client, and a probe that records what parties did.
//!
//! The server and the WebSocket client are the test kit's (`partykit_runtime::testing`),
//! which users test their parties with; [`RawWs`] and [`http`] are for tests of the
//! wire itself. Every wait is bounded by [`WAIT`] and fails with a message that says what
//! was awaited.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use partykit_runtime::{Env, Server, ServerError, testing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

pub use tokio_tungstenite::tungstenite;
pub use tokio_tungstenite::tungstenite::Message as WsMessage;

pub mod cluster;
pub mod node;
pub mod openapi;
pub mod postgres;
mod process;
pub use postgres::{DATABASE_URL_VAR, TestDatabase, TestPostgres};
pub use process::{ServerProcess, TempDir};

/// The longest any helper waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// Runs `future`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: impl std::fmt::Display, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------------------
// Server

/// A [`Server`] serving on `127.0.0.1:<ephemeral>` inside the test's runtime, through
/// [`partykit_runtime::testing::TestServer`] (storage in memory unless the server was
/// given some, no `.env` lookup, the test clock), or through [`Server::serve`] as it is
/// ([`start_plain`](Self::start_plain)). Dropping it shuts the server
/// down.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    serving: Serving,
}

#[derive(Debug)]
enum Serving {
    Kit(Box<testing::TestServer>),
    Node {
        shutdown: oneshot::Sender<()>,
        task: JoinHandle<Result<(), ServerError>>,
    },
    Stopping(JoinHandle<Result<(), ServerError>>),
    Stopped,
}

impl TestServer {
    /// Starts `server` on an ephemeral port; the server accepts connections as soon as
    /// this returns. Fails the test if the server cannot start.
    pub async fn start(server: Server) -> Self {
        let kit = testing::TestServer::start(server).await;
        Self {
            addr: kit.addr(),
            serving: Serving::Kit(Box::new(kit)),
        }
    }

    /// Serves `server` on an ephemeral port with [`Server::serve`] as it is, without the
    /// test kit: for cluster nodes (the kit does not run [`Server::cluster`]) and tests
    /// of what a server does by default (its `.env` lookup). The listener is bound when
    /// this returns, and answers once the server is built.
    pub async fn start_plain(server: Server) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("no local address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = stop.await;
        }));
        Self {
            addr,
            serving: Serving::Node { shutdown, task },
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The test kit's server: its clock ([`advance`](testing::TestServer::advance)),
    /// storage view and clients. Fails the test for a
    /// [`start_plain`](Self::start_plain) server or one shut down.
    pub fn kit(&self) -> &testing::TestServer {
        match &self.serving {
            Serving::Kit(kit) => kit,
            _ => panic!("not a running test kit server (started with start_plain, or shut down)"),
        }
    }

    /// Begins the shutdown, without waiting for the server to stop.
    pub fn trigger_shutdown(&mut self) {
        self.serving = match std::mem::replace(&mut self.serving, Serving::Stopped) {
            Serving::Kit(kit) => Serving::Stopping(tokio::spawn(kit.try_shutdown())),
            Serving::Node { shutdown, task } => {
                let _ = shutdown.send(());
                Serving::Stopping(task)
            }
            other => other,
        };
    }

    /// Waits (bounded) for `serve` to return, shutting the server down first if
    /// [`trigger_shutdown`](Self::trigger_shutdown) did not.
    pub async fn stopped(mut self) -> Result<(), ServerError> {
        self.trigger_shutdown();
        match std::mem::replace(&mut self.serving, Serving::Stopped) {
            Serving::Stopping(task) => within("the server to stop", task)
                .await
                .expect("the server's shutdown panicked"),
            _ => Ok(()),
        }
    }

    // Clients bound to this server.

    /// `GET path`, through the test kit's HTTP client (a raw request for a
    /// [`start_plain`](Self::start_plain) server).
    pub async fn get(&self, path: &str) -> HttpResponse {
        if !matches!(self.serving, Serving::Kit(_)) {
            return http(self.addr, "GET", path, &[], b"").await;
        }
        let response = self.kit().get(path).await;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response.bytes().await.to_vec();
        HttpResponse {
            status,
            headers,
            body,
        }
    }

    /// Any HTTP request, written by hand on a fresh connection (see [`http`]), for
    /// requests whose bytes on the wire are the point.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        http(self.addr, method, path, headers, body).await
    }

    /// A WebSocket upgrade request written by hand (`Connection: Upgrade, close`), for
    /// upgrades the server is expected to refuse: returns the refusal. A `101` answer
    /// returns status 101 with no body.
    pub async fn refused_upgrade(&self, path: &str) -> HttpResponse {
        let headers = [
            ("Connection", "Upgrade, close"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        http(self.addr, "GET", path, &headers, b"").await
    }

    /// Opens a WebSocket to `path` (sent as given); fails the test if the server
    /// refuses it.
    pub async fn connect(&self, path: &str) -> Ws {
        match self.try_connect(path).await {
            Ok(ws) => ws,
            Err(error) => panic!("WebSocket to {path} refused: {}", describe_ws_error(&error)),
        }
    }

    /// Opens a WebSocket to `path`.
    pub async fn try_connect(&self, path: &str) -> Result<Ws, tungstenite::Error> {
        self.try_connect_with(path, &[]).await
    }

    /// Opens a WebSocket to `path` with extra request headers; a refusal is returned as
    /// tungstenite's `Error::Http` with the response's status and body.
    pub async fn try_connect_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Ws, tungstenite::Error> {
        let options = headers
            .iter()
            .fold(testing::SocketOptions::new(), |options, (name, value)| {
                options.header(*name, *value)
            });
        let socket = match &self.serving {
            Serving::Kit(kit) => kit.try_socket_at(path, options).await,
            _ => {
                testing::TestSocket::try_connect(&format!("ws://{}{path}", self.addr), options)
                    .await
            }
        };
        match socket {
            Ok(socket) => Ok(Ws { socket }),
            Err(refused) => {
                let mut response =
                    tungstenite::http::Response::new(Some(refused.body.into_bytes()));
                *response.status_mut() = refused.status;
                Err(tungstenite::Error::Http(Box::new(response)))
            }
        }
    }

    /// Opens a raw WebSocket (see [`RawWs`]) to `path` with extra request headers and,
    /// optionally, a small TCP receive buffer (for clients that stop reading).
    pub async fn raw_connect_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> Result<RawWs, tungstenite::Error> {
        try_connect_to(self.addr, path, headers, recv_buffer).await
    }

    /// Opens a raw WebSocket to `path`; fails the test if the server refuses it.
    pub async fn raw_connect(&self, path: &str) -> RawWs {
        match self.raw_connect_with(path, &[], None).await {
            Ok(ws) => ws,
            Err(error) => panic!("WebSocket to {path} refused: {}", describe_ws_error(&error)),
        }
    }
}

/// Opens a raw WebSocket to `path` on the server at `addr`, with extra request headers
/// and, optionally, a small TCP receive buffer (for clients that stop reading). The
/// handshake is bounded by [`WAIT`].
pub async fn try_connect_to(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    recv_buffer: Option<u32>,
) -> Result<RawWs, tungstenite::Error> {
    let url = format!("ws://{addr}{path}");
    let mut request = url.as_str().into_client_request()?;
    for (name, value) in headers {
        let name: tungstenite::http::HeaderName = name.parse().expect("header name");
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(value).expect("header value"));
    }
    within(format!("the WebSocket handshake to {path}"), async move {
        let socket = TcpSocket::new_v4().map_err(tungstenite::Error::Io)?;
        if let Some(size) = recv_buffer {
            socket
                .set_recv_buffer_size(size)
                .map_err(tungstenite::Error::Io)?;
        }
        let stream = socket.connect(addr).await.map_err(tungstenite::Error::Io)?;
        stream.set_nodelay(true).map_err(tungstenite::Error::Io)?;
        let (ws, _response) = tokio_tungstenite::client_async(request, stream).await?;
        Ok(RawWs { inner: ws })
    })
    .await
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Serving::Node { .. } = self.serving {
            self.trigger_shutdown();
        }
    }
}

fn describe_ws_error(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Http(response) => format!(
            "HTTP {} {:?}",
            response.status(),
            response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// WebSocket clients

/// How a WebSocket ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// A close frame with this code and reason.
    Closed(u16, String),
    /// A close frame without a code.
    ClosedWithoutCode,
    /// The stream ended or failed without a close frame.
    Dropped(String),
}

/// A test WebSocket client on the test kit's [`testing::TestSocket`]: read in the
/// background (the server's close and pings are answered at once), every wait bounded
/// by [`WAIT`].
#[derive(Debug)]
pub struct Ws {
    socket: testing::TestSocket,
}

impl Ws {
    /// The test kit's socket.
    pub fn socket(&mut self) -> &mut testing::TestSocket {
        &mut self.socket
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.socket.send(text.into()).await;
    }

    /// Sends a binary message.
    pub async fn send_binary(&mut self, bytes: impl Into<Vec<u8>>) {
        self.socket.send(bytes.into()).await;
    }

    /// The next text or binary message; fails on close, error or timeout.
    pub async fn recv(&mut self) -> WsMessage {
        match self.socket.recv().await {
            partykit_runtime::Message::Text(text) => WsMessage::text(text.as_str()),
            partykit_runtime::Message::Binary(bytes) => WsMessage::Binary(bytes),
        }
    }

    /// The next message, which must be text.
    pub async fn recv_text(&mut self) -> String {
        self.socket.recv_text().await
    }

    /// The next message, parsed as JSON text.
    pub async fn recv_json(&mut self) -> serde_json::Value {
        self.socket.recv_json().await
    }

    /// Sends `request` and returns the next text message.
    pub async fn ask(&mut self, request: &str) -> String {
        self.send_text(request).await;
        self.recv_text().await
    }

    /// Waits until the socket has closed (the closing handshake done and the
    /// connection ended); fails if a message arrives first.
    pub async fn ended(&mut self) -> Ended {
        ended(self.socket.closed().await)
    }

    /// Waits until the socket has closed and returns the close frame's code and reason;
    /// fails if a message arrives first or the socket ends without a close frame.
    pub async fn closed(&mut self) -> (u16, String) {
        match self.ended().await {
            Ended::Closed(code, reason) => (code, reason),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// Closes the socket from the client side (1000, `done`) and waits until it has
    /// closed. Returns the server's reply as the client saw it.
    pub async fn close(&mut self) -> Ended {
        self.close_with(1000, "done").await
    }

    /// Closes the socket with `code` and `reason` and waits until it has closed.
    pub async fn close_with(&mut self, code: u16, reason: &str) -> Ended {
        ended(self.socket.close(code, reason).await)
    }

    /// Fails if a message arrives, or the socket closes, within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        self.socket.expect_silence(wait).await;
    }
}

/// A browser's close code as [`Ended`]: 1005 is a close frame without a code, 1006 a
/// connection that ended without one.
fn ended((code, reason): (u16, String)) -> Ended {
    match code {
        1005 => Ended::ClosedWithoutCode,
        1006 => Ended::Dropped(reason),
        code => Ended::Closed(code, reason),
    }
}

/// A WebSocket client on the raw stream, read only when the test reads: for tests where
/// the frames on the wire are the point (clients that stop reading, cluster nodes).
/// Every receive is bounded by [`WAIT`].
#[derive(Debug)]
pub struct RawWs {
    inner: WebSocketStream<TcpStream>,
}

impl RawWs {
    /// Sends a text message.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        within(
            format!("sending {text:?}"),
            self.inner.send(WsMessage::text(text.clone())),
        )
        .await
        .unwrap_or_else(|error| panic!("sending {text:?} failed: {error}"));
    }

    /// Sends a binary message.
    pub async fn send_binary(&mut self, bytes: impl Into<Vec<u8>>) {
        let bytes = bytes.into();
        within(
            "sending a binary message",
            self.inner.send(WsMessage::binary(bytes)),
        )
        .await
        .unwrap_or_else(|error| panic!("sending a binary message failed: {error}"));
    }

    /// Sends any frame, returning the error instead of failing.
    pub async fn try_send(&mut self, message: WsMessage) -> Result<(), tungstenite::Error> {
        within("sending a frame", self.inner.send(message)).await
    }

    /// The next text or binary message; fails on close, error or timeout.
    pub async fn recv(&mut self) -> WsMessage {
        loop {
            let next = within("a WebSocket message", self.inner.next()).await;
            match next {
                Some(Ok(message @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => return message,
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                Some(Ok(WsMessage::Close(frame))) => {
                    panic!("expected a message, the server closed the socket: {frame:?}")
                }
                Some(Err(error)) => panic!("expected a message, the socket failed: {error}"),
                None => panic!("expected a message, the socket ended"),
            }
        }
    }

    /// The next message, which must be text.
    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            WsMessage::Text(text) => text.as_str().to_owned(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next message, parsed as JSON text.
    pub async fn recv_json(&mut self) -> serde_json::Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
    }

    /// Sends `request` and returns the next text message.
    pub async fn ask(&mut self, request: &str) -> String {
        self.send_text(request).await;
        self.recv_text().await
    }

    /// Reads until the socket ends; fails if a text or binary message arrives first.
    /// After a close frame, keeps reading (which sends the client's close reply, as a
    /// browser does) until the server ends the connection.
    pub async fn ended(&mut self) -> Ended {
        loop {
            let next = within("the socket to close", self.inner.next()).await;
            let ended = match next {
                Some(Ok(WsMessage::Close(Some(frame)))) => {
                    Ended::Closed(frame.code.into(), frame.reason.as_str().to_owned())
                }
                Some(Ok(WsMessage::Close(None))) => Ended::ClosedWithoutCode,
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
                Some(Ok(message)) => panic!("expected the socket to close, got {message:?}"),
                Some(Err(error)) => return Ended::Dropped(error.to_string()),
                None => return Ended::Dropped("end of stream".to_owned()),
            };
            within(
                "the server to end the connection after the close frames",
                async { while let Some(Ok(_)) = self.inner.next().await {} },
            )
            .await;
            return ended;
        }
    }

    /// Reads until a close frame arrives and returns its code and reason; fails if a
    /// message arrives first or the socket ends without a close frame.
    pub async fn closed(&mut self) -> (u16, String) {
        match self.ended().await {
            Ended::Closed(code, reason) => (code, reason),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// Closes the socket from the client side (1000, `done`) and reads until it ends.
    /// Returns the server's reply as the client saw it.
    pub async fn close(&mut self) -> Ended {
        let frame = tungstenite::protocol::CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "done".into(),
        };
        within("sending a close frame", self.inner.close(Some(frame)))
            .await
            .unwrap_or_else(|error| panic!("closing failed: {error}"));
        self.ended().await
    }

    /// The next event without failing: `Ok(Some(message))`, `Ok(None)` at the end of the
    /// stream, `Err` on failure; `None` if nothing arrives within `wait`.
    pub async fn next_within(
        &mut self,
        wait: Duration,
    ) -> Option<Option<Result<WsMessage, tungstenite::Error>>> {
        tokio::time::timeout(wait, self.inner.next()).await.ok()
    }
}

// ---------------------------------------------------------------------------------------
// HTTP client

/// An HTTP response read by [`http`].
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (chunked encoding already removed).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "HTTP {} body is not JSON ({error}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(own, _)| *own == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Sends one HTTP/1.1 request on a fresh connection (`Connection: close` unless
/// `headers` set `Connection`; `Content-Length` unless they set `Transfer-Encoding`, in
/// which case `body` must be encoded already) and reads the response. Fails the test on timeout or on a
/// malformed response.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let what = format!("the response to {method} {path}");
    within(&what, async {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {addr}: {error}"));
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("connection"))
        {
            head.push_str("Connection: close\r\n");
        }
        let chunked = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("transfer-encoding"));
        if !body.is_empty() && !chunked {
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
        for (name, value) in headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream
            .write_all(&request)
            .await
            .unwrap_or_else(|error| panic!("cannot send {method} {path}: {error}"));
        read_response(&mut stream, &what, method.eq_ignore_ascii_case("HEAD")).await
    })
    .await
}

/// Reads one HTTP/1.1 response from `stream` (a request written by hand); fails the test
/// on timeout or on a malformed response.
pub async fn read_response_on(stream: &mut TcpStream, what: &str) -> HttpResponse {
    within(what, read_response(stream, what, false)).await
}

/// Whether the peer ended `stream` (EOF or reset) within [`WAIT`], reading and dropping
/// anything it sends first.
pub async fn ends_within_wait(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await
    .is_ok()
}

async fn read_response(stream: &mut TcpStream, what: &str, head_only: bool) -> HttpResponse {
    let mut buffer = Vec::new();
    // The head.
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        if read_more(stream, &mut buffer).await == 0 {
            panic!(
                "{what}: the connection ended inside the head: {:?}",
                String::from_utf8_lossy(&buffer)
            );
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut rest = buffer.split_off(head_end + 4);
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 101 || status == 204 || status == 304 {
        return response;
    }
    if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .unwrap_or_else(|_| panic!("{what}: bad content-length {length:?}"));
        while rest.len() < length {
            if read_more(stream, &mut rest).await == 0 {
                panic!(
                    "{what}: the body ended after {} of {length} bytes",
                    rest.len()
                );
            }
        }
        rest.truncate(length);
        response.body = rest;
    } else if response
        .header("transfer-encoding")
        .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"))
    {
        response.body = read_chunked(stream, rest, what).await;
    } else {
        while read_more(stream, &mut rest).await > 0 {}
        response.body = rest;
    }
    response
}

async fn read_chunked(stream: &mut TcpStream, mut buffer: Vec<u8>, what: &str) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(end) = find(&buffer, b"\r\n") {
                break end;
            }
            if read_more(stream, &mut buffer).await == 0 {
                panic!("{what}: the chunked body ended early");
            }
        };
        let size_line = String::from_utf8_lossy(&buffer[..line_end]).into_owned();
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .unwrap_or_else(|_| panic!("{what}: bad chunk size {size_line:?}"));
        buffer.drain(..line_end + 2);
        if size == 0 {
            return body;
        }
        while buffer.len() < size + 2 {
            if read_more(stream, &mut buffer).await == 0 {
                panic!("{what}: a chunk ended early");
            }
        }
        body.extend_from_slice(&buffer[..size]);
        buffer.drain(..size + 2);
    }
}

/// Reads what is available; 0 at the end of the stream. A reset after the response was
/// sent counts as the end.
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            n
        }
        Err(_) => 0,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

// ---------------------------------------------------------------------------------------
// Probe: what the parties did

/// The project variable that names a test's [`Probe`].
pub const PROBE_VAR: &str = "probe";

static EVENTS: LazyLock<Mutex<HashMap<String, Vec<String>>>> = LazyLock::new(Default::default);

fn events() -> std::sync::MutexGuard<'static, HashMap<String, Vec<String>>> {
    EVENTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A log of what the parties of one test's server did. Parties call [`record`] with
/// their room's (or lobby's) [`Env`]; the test reads the log. Tests run in parallel,
/// so each server gets its own probe through a project variable.
#[derive(Debug)]
pub struct Probe {
    key: String,
}

impl Probe {
    /// A fresh, empty log.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let key = format!("probe-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        events().insert(key.clone(), Vec::new());
        Self { key }
    }

    /// A server (storage in memory) whose parties record into this probe.
    pub fn server(&self) -> Server {
        Server::new().in_memory().var(PROBE_VAR, self.key.clone())
    }

    /// Everything recorded so far, in order.
    pub fn events(&self) -> Vec<String> {
        events().get(&self.key).cloned().unwrap_or_default()
    }

    /// How many times `event` was recorded.
    pub fn count(&self, event: &str) -> usize {
        self.events().iter().filter(|own| *own == event).count()
    }

    /// Waits (up to [`WAIT`]) until `done` holds for the log; returns the log.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        self.wait_until_for(what, WAIT, done).await
    }

    /// Waits (up to `wait`) until `done` holds for the log; returns the log.
    pub async fn wait_until_for(
        &self,
        what: &str,
        wait: Duration,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out after {wait:?} waiting for {what}; recorded: {events:#?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits (bounded) until `event` has been recorded `times` times.
    pub async fn wait_for(&self, event: &str, times: usize) -> Vec<String> {
        self.wait_until(&format!("{event:?} recorded {times} time(s)"), |events| {
            events.iter().filter(|own| *own == event).count() >= times
        })
        .await
    }
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        events().remove(&self.key);
    }
}

/// Records `event` into the probe named by `env` (a no-op without one).
pub fn record(env: &Env, event: impl Into<String>) {
    if let Some(key) = env.get_str(PROBE_VAR)
        && let Some(log) = events().get_mut(key)
    {
        log.push(event.into());
    }
}

/// How many times `event` was recorded into the probe named by `env` (0 without one).
pub fn recorded(env: &Env, event: &str) -> usize {
    env.get_str(PROBE_VAR)
        .and_then(|key| {
            events()
                .get(key)
                .map(|log| log.iter().filter(|own| *own == event).count())
        })
        .unwrap_or(0)
}

/// Whether `id` looks like a UUID v4 as `crypto.randomUUID()` makes them: 36 characters,
/// lower-case hex and dashes, version 4, RFC 4122 variant.
pub fn is_uuid_v4(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, byte)| match i {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => matches!(byte, b'0'..=b'9' | b'a'..=b'f'),
        })
        && bytes[14] == b'4'
        && matches!(bytes[19], b'8' | b'9' | b'a' | b'b')
}

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=partykit_runtime=debug`).
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

// ---------------------------------------------------------------------------------------
// Error ids and the log

/// The id in an internal error's body or close reason, `Internal error (error id <id>)`
/// (or `Unauthorised (error id <id>)` from a hook), if it is one.
pub fn error_id(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once("(error id ")?;
    let id = rest.strip_suffix(')')?;
    (id.len() == 16 && id.bytes().all(|byte| byte.is_ascii_hexdigit())).then_some(id)
}

/// What the server logged, for tests that check a log line: the first call installs a
/// global subscriber (level `warn` and above) that keeps every line in memory, so a test
/// binary that uses it must not call [`init_tracing`].
#[derive(Clone, Copy, Debug)]
pub struct Logs(());

static LOG: LazyLock<Mutex<Vec<u8>>> = LazyLock::new(Mutex::default);

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Starts keeping log lines (once per process).
    pub fn capture() -> Self {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            let _ = tracing_subscriber::fmt()
                .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
                .with_ansi(false)
                .with_writer(|| LogWriter)
                .try_init();
        });
        Logs(())
    }

    /// Waits (bounded by [`WAIT`]) until a line containing `needle` is logged, for a
    /// line logged after what the test can observe (a panic drops its socket before the
    /// panic is caught and logged).
    pub async fn wait_for(&self, needle: &str) -> Vec<String> {
        within(format!("a log line with {needle:?}"), async {
            loop {
                let lines = self.lines_with(needle);
                if !lines.is_empty() {
                    return lines;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }

    /// The lines logged so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let log = LOG.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&log)
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// An external program a test runs: `$<variable>` if set (and a file), else `name` on
/// `PATH`. Without it, `None` and a line saying the test is skipped, except on CI (`CI`
/// set), where the test fails with `install` (how `.ci/run` installs it).
pub fn external_tool(variable: &str, name: &str, install: &str) -> Option<std::path::PathBuf> {
    let found = match std::env::var_os(variable) {
        Some(path) => Some(std::path::PathBuf::from(path)).filter(|path| path.is_file()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        }),
    };
    if found.is_none() {
        let why = format!("{name} not found at ${variable} or on PATH ({install})");
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
    }
    found
}
