//! Testing your parties in-process: a real server on a loopback port, WebSocket and HTTP
//! clients, a clock that fires alarms on demand, and a view of what rooms stored.
//!
//! Enable the `testing` feature in `[dev-dependencies]`:
//!
//! ```toml
//! [dev-dependencies]
//! partykit-runtime = { version = "0.1", features = ["testing"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! ```
//! use partykit_runtime::testing::TestServer;
//! use partykit_runtime::{party, Connection, Message, Room, Server};
//!
//! #[party]
//! struct Echo {
//!     room: Room,
//! }
//!
//! #[party]
//! impl Echo {
//!     fn new(room: Room) -> Self {
//!         Echo { room }
//!     }
//!
//!     async fn on_message(&mut self, message: Message, sender: &Connection) {
//!         let _ = sender.send(message);
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In a `#[tokio::test]`:
//! let server = TestServer::start(Server::new().party::<Echo>()).await;
//! let mut socket = server.socket("main", "room-1").await;
//! socket.send("hi").await;
//! assert_eq!(socket.recv_text().await, "hi");
//! server.shutdown().await;
//! # }
//! ```
//!
//! [`TestServer::start`] serves the [`Server`] you would run, on `127.0.0.1` and a port
//! of its own, with storage in memory (unless the server was given storage) and no
//! `.env` file (unless one was chosen with [`Server::env_file`]), so tests run in
//! parallel and leave nothing behind.
//!
//! # Waiting
//!
//! Every call that waits (a socket's handshake, a message, a close, a response, an
//! advance of the clock) gives up after a timeout, [`DEFAULT_TIMEOUT`] unless set with
//! [`TestServer::set_timeout`] or [`TestSocket::set_timeout`], and panics with a message
//! that says what it waited for. These are test helpers: like `assert!`, they fail the
//! test rather than return errors, except the `try_` calls, whose refusal is the point.
//!
//! # Time
//!
//! A test server's clock is the wall clock plus what [`TestServer::advance`] added to
//! it. Advancing moves **alarms** only: every alarm due within the advance fires, in
//! order, and `advance` returns once their handlers have finished. Everything else runs
//! on real time and does not move: socket and HTTP timeouts, the test kit's own waits,
//! idle rooms ([`Limits::room_idle_timeout`](crate::Limits::room_idle_timeout)),
//! hibernation and cron schedules. An alarm that is due already (set to now, or in the
//! past) fires at once, as on any server, without an advance. Set alarms from [`Room::now`](crate::Room::now), the
//! server's clock; an alarm set from `SystemTime::now()` fires on an advance as well,
//! but an `on_alarm` that reschedules itself from `SystemTime::now()` would fall behind
//! the test clock and fire without end (an advance stops after 10,000 alarms and says
//! so).
//!
//! See the [testing guide](crate::guide::testing) for a whole party's test.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_util::sync::CancellationToken;

use crate::clock::ManualClock;
use crate::storage::{Backend, ListOptions, RoomKey};
use crate::{Message, Server, ServerError};

/// How long a wait lasts unless set otherwise: long enough for a loaded CI machine,
/// short enough that a hung test fails soon.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many messages a [`TestSocket`] keeps that the test has not read yet; beyond
/// that, the socket stops reading, as a slow client does.
const SOCKET_BUFFER: usize = 1024;

/// What `encodeURIComponent` leaves as it is: PartySocket's encoding of the party, the
/// room and query values.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

async fn within<T>(
    timeout: Duration,
    what: impl fmt::Display,
    future: impl Future<Output = T>,
) -> T {
    match tokio::time::timeout(timeout, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

fn encode(component: &str) -> String {
    utf8_percent_encode(component, COMPONENT).to_string()
}

// ---------------------------------------------------------------------------------------
// Server

/// A [`Server`] running in-process on `127.0.0.1:<ephemeral port>`; see the
/// [module docs](self).
///
/// Dropping it shuts the server down in the background; [`shutdown`](Self::shutdown)
/// waits for that. Either way open sockets are closed with 1001 and answered at once,
/// so shutdown takes milliseconds, not [`Limits::shutdown_grace`](crate::Limits::shutdown_grace).
pub struct TestServer {
    addr: SocketAddr,
    clock: Arc<ManualClock>,
    backend: Arc<dyn Backend>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    /// Cancelled when the server shuts down: sockets keep reading (and so answer the
    /// server's close) even if the test stopped reading them.
    closing: CancellationToken,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl TestServer {
    /// Starts `server` on an ephemeral loopback port; it accepts connections when this
    /// returns. Panics if the server cannot start (two parties with one name, a bad
    /// cron expression, …), with the reason, or if it was given
    /// [`Server::cluster`].
    pub async fn start(server: Server) -> Self {
        match Self::try_start(server).await {
            Ok(server) => server,
            Err(error) => panic!("the test server did not start: {error}"),
        }
    }

    /// Starts `server` like [`start`](Self::start), returning why it could not start
    /// instead of panicking.
    pub async fn try_start(server: Server) -> Result<Self, ServerError> {
        let clock = ManualClock::new();
        let (started, ready) = oneshot::channel();
        let (server, backend) = server.for_testing(Arc::clone(&clock), started).await?;
        let listener = crate::server::bind(&"127.0.0.1:0", "the test's address").await?;
        let addr = listener.local_addr().map_err(ServerError::Serve)?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let mut task = tokio::spawn(server.serve(listener, async move {
            let _ = stop.await;
        }));
        let timeout = DEFAULT_TIMEOUT;
        let ended = within(timeout, "the test server to start", async {
            tokio::select! {
                ready = ready => match ready {
                    Ok(()) => None,
                    // Dropped unsent: the server failed to build, and `serve` says why.
                    Err(_) => Some((&mut task).await),
                },
                // Only a server that failed to start ends before it was told to stop.
                ended = &mut task => Some(ended),
            }
        })
        .await;
        match ended {
            None => {}
            Some(Ok(Err(error))) => return Err(error),
            Some(Ok(Ok(()))) => {
                return Err(ServerError::Serve(std::io::Error::other(
                    "the server stopped as it started",
                )));
            }
            Some(Err(error)) => std::panic::resume_unwind(error.into_panic()),
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // No idle connections: a pooled one would keep the server's shutdown waiting.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(Self {
            addr,
            clock,
            backend,
            shutdown: Some(shutdown),
            task: Some(task),
            closing: CancellationToken::new(),
            client,
            timeout,
        })
    }

    /// The address the server listens on (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The longest any wait of this server lasts, and of the sockets and responses it
    /// hands out from now on; [`DEFAULT_TIMEOUT`] unless set.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The server's clock now: the wall clock plus everything [`advance`](Self::advance)
    /// added. What [`Room::now`](crate::Room::now) returns in the server's rooms.
    pub fn now(&self) -> SystemTime {
        crate::clock::Clock::Manual(Arc::clone(&self.clock)).now()
    }

    /// Moves the server's clock on by `by` and fires every alarm due by then, in the
    /// order of their times, each after the previous one's handler finished and what it
    /// wrote is durable (so an alarm that `on_alarm` sets within the advance fires in it
    /// too); returns how many alarms fired, once their handlers have finished. While a
    /// handler runs, [`Room::now`](crate::Room::now) is its alarm's time.
    ///
    /// It sees the alarms whose write is durable: after a message that sets an alarm,
    /// wait for the room's reply (or any output that followed the write) before
    /// advancing. Only alarms move; see [Time](self#time). Panics if an alarm could not
    /// run (its room was refused), if more than 10,000 alarms fell due, or on timeout.
    pub async fn advance(&self, by: Duration) -> usize {
        let advanced = within(
            self.timeout,
            format_args!("the alarms due within {by:?} to run"),
            self.clock.advance(by),
        )
        .await;
        advanced.unwrap_or_else(|error| panic!("advancing the clock by {by:?}: {error}"))
    }

    /// What the room `room` of party `party` has persisted (its durable storage, not
    /// what a handler has written and not yet committed), read-only. `room` is encoded
    /// like [`socket`](Self::socket)'s.
    pub fn storage(&self, party: &str, room: &str) -> StorageView {
        StorageView {
            backend: Arc::clone(&self.backend),
            room: RoomKey::new(party, encode(room)),
            timeout: self.timeout,
        }
    }

    /// Stops the server and waits until it has: sockets close with 1001 (and are
    /// answered at once), rooms run `on_close` and commit, storage closes. Panics if
    /// serving failed or on timeout.
    pub async fn shutdown(self) {
        if let Err(error) = self.try_shutdown().await {
            panic!("the test server failed: {error}");
        }
    }

    /// Stops the server like [`shutdown`](Self::shutdown), returning what serving
    /// returned (an accept loop's failure) instead of panicking.
    pub async fn try_shutdown(mut self) -> Result<(), ServerError> {
        self.trigger_shutdown();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match within(self.timeout, "the test server to shut down", task).await {
            Ok(result) => result,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }

    fn trigger_shutdown(&mut self) {
        self.closing.cancel();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    // Sockets

    /// Opens a socket to room `room` of party `party` as PartySocket does
    /// (`/parties/<party>/<room>?_pk=<random id>`); panics if the server refuses it.
    pub async fn socket(&self, party: &str, room: &str) -> TestSocket {
        self.socket_with(party, room, SocketOptions::new()).await
    }

    /// Opens a socket to room `room` of party `party` with `options` (its id, query,
    /// headers); panics if the server refuses it.
    pub async fn socket_with(&self, party: &str, room: &str, options: SocketOptions) -> TestSocket {
        let path = party_path(party, room);
        refused_panics(
            &path,
            self.try_socket_at(&path, options.with_default_id()).await,
        )
    }

    /// Opens a socket like [`socket_with`](Self::socket_with), returning the server's
    /// refusal (an `on_before_connect` that said no, an unknown party) instead of
    /// panicking.
    pub async fn try_socket_with(
        &self,
        party: &str,
        room: &str,
        options: SocketOptions,
    ) -> Result<TestSocket, Refused> {
        let path = party_path(party, room);
        self.try_socket_at(&path, options.with_default_id()).await
    }

    /// Opens a socket to any path of the server (`/party/<room>`, a path the main
    /// party's `on_socket` answers), with `options`; the path is sent as given, and a
    /// `_pk` only if `options` has an [`id`](SocketOptions::id). Panics if refused.
    pub async fn socket_at(&self, path: &str, options: SocketOptions) -> TestSocket {
        refused_panics(path, self.try_socket_at(path, options).await)
    }

    /// Opens a socket like [`socket_at`](Self::socket_at), returning the server's
    /// refusal instead of panicking.
    pub async fn try_socket_at(
        &self,
        path: &str,
        options: SocketOptions,
    ) -> Result<TestSocket, Refused> {
        let url = format!("ws://{}{}", self.addr, options.apply_query(path));
        connect(&url, &options, self.timeout, self.closing.clone()).await
    }

    // HTTP

    /// Sends `request` (its body anything that converts into [`Bytes`]: `String`,
    /// `Vec<u8>`, `&'static str`, `Bytes`) to the server and returns its response. A URI
    /// without a host (`/parties/main/room`) is sent to this server; the `Host` header
    /// is set. Panics on timeout or if the connection fails.
    ///
    /// ```
    /// # use partykit_runtime::{party, Request, Server};
    /// # use partykit_runtime::testing::TestServer;
    /// # #[party] #[derive(Default)] struct Main;
    /// # #[party] impl Main {
    /// #     async fn on_request(&mut self, req: Request) -> String {
    /// #         req.header("x-name").unwrap_or("nobody").to_owned()
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let server = TestServer::start(Server::new().party::<Main>()).await;
    /// let request = http::Request::put("/parties/main/room")
    ///     .header("x-name", "alice")
    ///     .body("")
    ///     .unwrap();
    /// let response = server.fetch(request).await;
    /// assert_eq!(response.status(), 200);
    /// assert_eq!(response.text().await, "alice");
    /// # }
    /// ```
    pub async fn fetch<B: Into<Bytes>>(&self, request: http::Request<B>) -> TestResponse {
        let (mut parts, body) = request.into_parts();
        if parts.uri.authority().is_none() {
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", |path| path.as_str())
                .to_owned();
            parts.uri = format!("http://{}{path}", self.addr)
                .parse()
                .unwrap_or_else(|error| panic!("invalid request path {path:?}: {error}"));
        }
        let what = format!("the response to {} {}", parts.method, parts.uri.path());
        let request = http::Request::from_parts(parts, Full::new(body.into()));
        let response = within(self.timeout, &what, self.client.request(request))
            .await
            .unwrap_or_else(|error| panic!("{what}: the request failed: {error}"));
        TestResponse {
            response,
            what,
            timeout: self.timeout,
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> TestResponse {
        self.fetch(request(http::Method::GET, path, Bytes::new()))
            .await
    }

    /// `POST path` with `body`.
    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> TestResponse {
        self.fetch(request(http::Method::POST, path, body.into()))
            .await
    }
}

fn request(method: http::Method, path: &str, body: Bytes) -> http::Request<Bytes> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .body(body)
        .unwrap_or_else(|error| panic!("invalid request path {path:?}: {error}"))
}

fn party_path(party: &str, room: &str) -> String {
    format!("/parties/{}/{}", encode(party), encode(room))
}

fn refused_panics(path: &str, socket: Result<TestSocket, Refused>) -> TestSocket {
    socket.unwrap_or_else(|refused| panic!("the socket to {path} was refused: {refused}"))
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// Storage

/// A read-only view of one room's persisted storage, from
/// [`TestServer::storage`]. Every call reads what is durable now.
pub struct StorageView {
    backend: Arc<dyn Backend>,
    room: RoomKey,
    timeout: Duration,
}

impl StorageView {
    async fn snapshot(&self) -> crate::storage::RoomSnapshot {
        within(
            self.timeout,
            format_args!("the storage of room {}", self.room),
            self.backend.load(&self.room),
        )
        .await
        .unwrap_or_else(|error| panic!("cannot read the storage of room {}: {error}", self.room))
    }

    /// The value stored under `key`, decoded from JSON; `None` if there is none.
    /// Panics if it does not decode as `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let bytes = self.get_bytes(key).await?;
        Some(crate::storage::decode(key, &bytes).unwrap_or_else(|error| panic!("{error}")))
    }

    /// The raw bytes stored under `key`.
    pub async fn get_bytes(&self, key: &str) -> Option<Bytes> {
        self.snapshot()
            .await
            .entries
            .into_iter()
            .find_map(|(own, value)| (own == key).then_some(value))
    }

    /// The entries `options` select, decoded from JSON, in the order asked for, as
    /// [`Storage::list`](crate::Storage::list) returns them. Panics if one does not
    /// decode as `T`.
    pub async fn list<T: DeserializeOwned>(&self, options: ListOptions) -> Vec<(String, T)> {
        let entries: std::collections::BTreeMap<String, Bytes> =
            self.snapshot().await.entries.into_iter().collect();
        let selected = options
            .select(&entries)
            .unwrap_or_else(|error| panic!("{error}"));
        selected
            .into_iter()
            .map(|(key, value)| {
                let value =
                    crate::storage::decode(key, value).unwrap_or_else(|error| panic!("{error}"));
                (key.clone(), value)
            })
            .collect()
    }

    /// Every key stored, in order.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .snapshot()
            .await
            .entries
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        keys.sort_unstable();
        keys
    }

    /// The room's pending alarm, if one is stored.
    pub async fn alarm(&self) -> Option<SystemTime> {
        self.snapshot().await.alarm.map(crate::storage::from_millis)
    }
}

impl fmt::Debug for StorageView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageView")
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// HTTP responses

/// A response from [`TestServer::fetch`], [`get`](TestServer::get) or
/// [`post`](TestServer::post); its body is read by [`text`](Self::text),
/// [`json`](Self::json) or [`bytes`](Self::bytes).
pub struct TestResponse {
    response: http::Response<hyper::body::Incoming>,
    what: String,
    timeout: Duration,
}

impl TestResponse {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        self.response.headers()
    }

    /// A header's value as text, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.headers().get(name)?.to_str().ok()
    }

    /// The body. Panics on timeout or if the body fails.
    pub async fn bytes(self) -> Bytes {
        let what = format!("the body of {}", self.what);
        within(self.timeout, &what, self.response.into_body().collect())
            .await
            .unwrap_or_else(|error| panic!("{what}: {error}"))
            .to_bytes()
    }

    /// The body as text (invalid UTF-8 replaced).
    pub async fn text(self) -> String {
        String::from_utf8_lossy(&self.bytes().await).into_owned()
    }

    /// The body decoded from JSON; panics, with the body, if it does not decode as `T`.
    pub async fn json<T: DeserializeOwned>(self) -> T {
        let status = self.status();
        let what = self.what.clone();
        let body = self.bytes().await;
        serde_json::from_slice(&body).unwrap_or_else(|error| {
            panic!(
                "{what} (HTTP {status}) is not the JSON expected ({error}): {:?}",
                String::from_utf8_lossy(&body)
            )
        })
    }
}

impl fmt::Debug for TestResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestResponse")
            .field("status", &self.status())
            .field("headers", self.headers())
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// Sockets

/// How [`TestServer::socket_with`] connects: the connection id PartySocket sends as
/// `_pk` (a random UUID unless set), query parameters and request headers.
#[derive(Clone, Debug, Default)]
pub struct SocketOptions {
    id: Option<String>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl SocketOptions {
    /// No options: a random id, no query, no extra headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The connection's id (`_pk`), which becomes [`Connection::id`](crate::Connection::id).
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Adds the query parameter `name=value` (both encoded as PartySocket encodes them).
    #[must_use]
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    /// Adds a request header to the upgrade request.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn with_default_id(mut self) -> Self {
        if self.id.is_none() {
            self.id = Some(random_id());
        }
        self
    }

    fn apply_query(&self, path: &str) -> String {
        let mut url = path.to_owned();
        let id = self.id.as_ref().map(|id| ("_pk", id.as_str()));
        let pairs = id.into_iter().chain(
            self.query
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        for (name, value) in pairs {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&encode(name));
            url.push('=');
            url.push_str(&encode(value));
        }
        url
    }
}

/// A UUID v4, as `crypto.randomUUID()` makes PartySocket's ids.
fn random_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The server answered a socket's upgrade request with HTTP instead of accepting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The response's status.
    pub status: StatusCode,
    /// The response's body, as text.
    pub body: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {:?}", self.status, self.body)
    }
}

impl std::error::Error for Refused {}

/// What a socket's reader hands to the test.
#[derive(Debug)]
enum Incoming {
    Message(Message),
    /// The socket ended: the close frame's code and reason, 1005 for a close frame
    /// without a code, 1006 (with the error) for a socket that ended without one, as a
    /// browser's `CloseEvent` reports them.
    Closed(u16, String),
}

/// A WebSocket client speaking to a [`TestServer`] (or any server: [`connect`](Self::connect)).
///
/// The socket is read all the time in the background, as a browser reads it: the
/// server's pings and close frames are answered even while the test does something
/// else, and up to 1,024 unread messages wait for [`recv`](Self::recv). Dropping it
/// drops the connection without a close frame (the room sees an abnormal close).
pub struct TestSocket {
    id: Option<String>,
    path: String,
    sink: SplitSink<WebSocketStream<TcpStream>, WsMessage>,
    incoming: mpsc::Receiver<Incoming>,
    /// Set once the socket has ended: every later wait returns it at once.
    ended: Option<(u16, String)>,
    reader: JoinHandle<()>,
    timeout: Duration,
}

impl TestSocket {
    /// Opens a socket to `url` (`ws://host:port/path?query`) with `options`'s headers
    /// (its id and query are not added: the URL is sent as given). For servers a
    /// [`TestServer`] does not run. Panics if refused.
    pub async fn connect(url: &str, options: SocketOptions) -> TestSocket {
        Self::try_connect(url, options)
            .await
            .unwrap_or_else(|refused| panic!("the socket to {url} was refused: {refused}"))
    }

    /// Opens a socket like [`connect`](Self::connect), returning the server's refusal
    /// instead of panicking.
    pub async fn try_connect(url: &str, options: SocketOptions) -> Result<TestSocket, Refused> {
        connect(url, &options, DEFAULT_TIMEOUT, CancellationToken::new()).await
    }

    /// The connection id sent as `_pk`, if one was.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The longest any wait of this socket lasts; [`DEFAULT_TIMEOUT`] unless set.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a text (`&str`, `String`) or binary (`Vec<u8>`, `&[u8]`, `Bytes`) message.
    pub async fn send(&mut self, message: impl Into<Message>) {
        let frame = match message.into() {
            Message::Text(text) => WsMessage::Text(text.as_str().into()),
            Message::Binary(bytes) => WsMessage::Binary(bytes),
        };
        self.send_frame(frame).await;
    }

    /// Sends `value` as a JSON text message.
    pub async fn send_json<T: Serialize + ?Sized>(&mut self, value: &T) {
        let text = serde_json::to_string(value)
            .unwrap_or_else(|error| panic!("cannot encode a message as JSON: {error}"));
        self.send(text).await;
    }

    /// Sends a frame, returning the error instead of panicking.
    async fn try_send_frame(&mut self, frame: WsMessage) -> Result<(), tungstenite::Error> {
        let what = format!("sending a frame on {}", self.path);
        within(self.timeout, what, self.sink.send(frame)).await
    }

    async fn send_frame(&mut self, frame: WsMessage) {
        let path = self.path.clone();
        if let Err(error) = self.try_send_frame(frame).await {
            panic!("sending on {path} failed: {error}");
        }
    }

    async fn next(&mut self, what: &str) -> Incoming {
        if let Some((code, reason)) = &self.ended {
            return Incoming::Closed(*code, reason.clone());
        }
        let what = format!("{what} on {}", self.path);
        match within(self.timeout, what, self.incoming.recv()).await {
            Some(Incoming::Closed(code, reason)) => {
                self.ended = Some((code, reason.clone()));
                Incoming::Closed(code, reason)
            }
            Some(message) => message,
            // The reader ends only after handing over the end.
            None => Incoming::Closed(1006, "the socket's reader stopped".to_owned()),
        }
    }

    /// The next message. Panics if the socket closes first, or on timeout.
    pub async fn recv(&mut self) -> Message {
        match self.next("a message").await {
            Incoming::Message(message) => message,
            Incoming::Closed(code, reason) => panic!(
                "expected a message on {}, the socket closed: {code} {reason:?}",
                self.path
            ),
        }
    }

    /// The next message, which must be text.
    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            Message::Text(text) => text.as_str().to_owned(),
            Message::Binary(bytes) => panic!(
                "expected a text message on {}, got {} binary bytes: {bytes:?}",
                self.path,
                bytes.len()
            ),
        }
    }

    /// The next message, a text message decoded from JSON; panics, with the text, if it
    /// does not decode as `T`.
    pub async fn recv_json<T: DeserializeOwned>(&mut self) -> T {
        let text = self.recv_text().await;
        serde_json::from_str(&text).unwrap_or_else(|error| {
            panic!(
                "a message on {} is not the JSON expected ({error}): {text}",
                self.path
            )
        })
    }

    /// Waits `duration` and panics if a message arrives or the socket closes meanwhile.
    /// (A fixed wait: keep it short, and prefer waiting for what should happen.)
    pub async fn expect_silence(&mut self, duration: Duration) {
        if let Some((code, reason)) = &self.ended {
            panic!(
                "expected silence on {}, the socket had closed: {code} {reason:?}",
                self.path
            );
        }
        if let Ok(next) = tokio::time::timeout(duration, self.incoming.recv()).await {
            match next {
                Some(Incoming::Message(message)) => panic!(
                    "expected silence on {} for {duration:?}, got {message:?}",
                    self.path
                ),
                Some(Incoming::Closed(code, reason)) => panic!(
                    "expected silence on {} for {duration:?}, the socket closed: {code} {reason:?}",
                    self.path
                ),
                None => panic!(
                    "expected silence on {}, the socket's reader stopped",
                    self.path
                ),
            }
        }
    }

    /// Waits for the socket to close (the closing handshake done and the connection
    /// ended, when a browser's `close` event fires) and returns the close frame's code
    /// and reason as a browser's `CloseEvent` has them: 1005 for a close frame without
    /// a code, 1006 for a connection that ended without a close frame. Panics if a
    /// message arrives first, or on timeout.
    pub async fn closed(&mut self) -> (u16, String) {
        match self.next("the socket to close").await {
            Incoming::Closed(code, reason) => (code, reason),
            Incoming::Message(message) => panic!(
                "expected {} to close, got a message: {message:?}",
                self.path
            ),
        }
    }

    /// Closes the socket with `code` and `reason` and waits until it has closed,
    /// returning the server's answering close frame's code and reason (or the server's
    /// own, if it closed first); messages that arrive meanwhile are dropped. Panics on
    /// timeout.
    pub async fn close(&mut self, code: u16, reason: &str) -> (u16, String) {
        if self.ended.is_none() {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            // A server that closed first has its frame in the queue: read it below.
            let _ = self.try_send_frame(WsMessage::Close(Some(frame))).await;
        }
        loop {
            if let Incoming::Closed(code, reason) = self.next("the server's close frame").await {
                return (code, reason);
            }
        }
    }
}

impl Drop for TestSocket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl fmt::Debug for TestSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestSocket")
            .field("path", &self.path)
            .field("id", &self.id)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

async fn connect(
    url: &str,
    options: &SocketOptions,
    timeout: Duration,
    closing: CancellationToken,
) -> Result<TestSocket, Refused> {
    let mut request = url
        .into_client_request()
        .unwrap_or_else(|error| panic!("invalid socket URL {url}: {error}"));
    for (name, value) in &options.headers {
        let name: HeaderName = name
            .parse()
            .unwrap_or_else(|error| panic!("invalid header name {name:?}: {error}"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|error| panic!("invalid value for header {name}: {error}"));
        request.headers_mut().append(name, value);
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    let authority = request
        .uri()
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .unwrap_or_else(|| panic!("the socket URL {url} has no host"));
    let handshake = async {
        let stream = TcpStream::connect(authority.as_str())
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {authority}: {error}"));
        let _ = stream.set_nodelay(true);
        tokio_tungstenite::client_async(request, stream).await
    };
    let what = format!("the socket handshake to {path}");
    let stream = match within(timeout, &what, handshake).await {
        Ok((stream, _response)) => stream,
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|body| String::from_utf8_lossy(body).into_owned())
                .unwrap_or_default();
            return Err(Refused {
                status: response.status(),
                body,
            });
        }
        Err(error) => panic!("{what} failed: {error}"),
    };
    let (sink, stream) = stream.split();
    let (deliver, incoming) = mpsc::channel(SOCKET_BUFFER);
    let reader = tokio::spawn(read(stream, deliver, closing));
    let id = url::query_value(&path, "_pk");
    Ok(TestSocket {
        id,
        path,
        sink,
        incoming,
        ended: None,
        reader,
        timeout,
    })
}

/// Reads the socket until it ends, handing messages and the end to the test. Reading
/// answers the server's close frame (and pings) as it arrives.
async fn read(
    mut stream: SplitStream<WebSocketStream<TcpStream>>,
    deliver: mpsc::Sender<Incoming>,
    closing: CancellationToken,
) {
    // The close frame's code and reason, handed over when the connection has ended (as
    // a browser's `close` event fires after the closing handshake).
    let mut closed: Option<(u16, String)> = None;
    loop {
        let incoming = match stream.next().await {
            Some(Ok(WsMessage::Text(text))) => {
                Incoming::Message(Message::Text(text.as_str().into()))
            }
            Some(Ok(WsMessage::Binary(bytes))) => Incoming::Message(Message::Binary(bytes)),
            Some(Ok(WsMessage::Close(frame))) => {
                // Reading on sends the reply and sees the connection end.
                closed.get_or_insert_with(|| {
                    frame.map_or((1005, String::new()), |frame| {
                        (u16::from(frame.code), frame.reason.as_str().to_owned())
                    })
                });
                continue;
            }
            Some(Ok(_)) => continue,
            end => {
                let (code, reason) = closed.unwrap_or_else(|| match end {
                    Some(Err(error)) => (1006, error.to_string()),
                    _ => (1006, "the connection ended".to_owned()),
                });
                let _ = deliver.send(Incoming::Closed(code, reason)).await;
                return;
            }
        };
        tokio::select! {
            biased;
            sent = deliver.send(incoming) => {
                if sent.is_err() {
                    // The test dropped the socket.
                    return;
                }
            }
            // The server is shutting down and the test stopped reading: keep reading,
            // so that the server's close is answered, and drop what the test would not
            // read anyway.
            () = closing.cancelled() => {}
        }
    }
}

mod url {
    use percent_encoding::percent_decode_str;

    /// The (decoded) value of the first `name` in `path`'s query.
    pub(super) fn query_value(path: &str, name: &str) -> Option<String> {
        let (_, query) = path.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| percent_decode_str(value).decode_utf8_lossy().into_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{Connection, ConnectionContext, Error, Request, Room, party};

    /// Counts its alarms; `every:<secs>` sets a recurring alarm, `once:<secs>` a single
    /// one, and each alarm is announced to the room.
    #[party]
    struct Ticker {
        room: Room,
    }

    #[party]
    impl Ticker {
        fn new(room: Room) -> Self {
            Ticker { room }
        }

        async fn on_connect(&mut self, conn: &Connection, _ctx: &ConnectionContext) {
            let _ = conn.send(format!("hello {}", conn.id()));
        }

        async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<(), Error> {
            let text = message.as_text().unwrap_or_default().to_owned();
            let (kind, secs) = text.split_once(':').unwrap_or((&text, "0"));
            let secs: u64 = secs.parse().map_err(Error::new)?;
            let storage = self.room.storage();
            storage.put("kind", kind).await?;
            storage
                .set_alarm(self.room.now() + Duration::from_secs(secs))
                .await?;
            let _ = sender.send("scheduled");
            Ok(())
        }

        async fn on_alarm(&mut self) -> Result<(), Error> {
            let storage = self.room.storage();
            let count: u64 = storage.get("count").await?.unwrap_or(0) + 1;
            storage.put("count", &count).await?;
            if storage.get::<String>("kind").await?.as_deref() == Some("every") {
                storage
                    .set_alarm(self.room.now() + Duration::from_secs(10))
                    .await?;
            }
            self.room.broadcast(format!("alarm {count}"), &[]);
            Ok(())
        }

        async fn on_request(&mut self, request: Request) -> String {
            format!("{} {}", request.method(), self.room.id())
        }
    }

    fn server() -> Server {
        Server::new().party::<Ticker>()
    }

    #[tokio::test]
    async fn advance_fires_due_alarms_in_order_and_no_others() {
        let server = TestServer::start(server()).await;
        let mut socket = server.socket("main", "a").await;
        assert!(socket.recv_text().await.starts_with("hello "));
        socket.send("once:60").await;
        assert_eq!(socket.recv_text().await, "scheduled");

        // Not due within 59 s.
        assert_eq!(server.advance(Duration::from_secs(59)).await, 0);
        assert_eq!(server.storage("main", "a").get::<u64>("count").await, None);
        assert!(server.storage("main", "a").alarm().await.is_some());
        // Due within the next second.
        assert_eq!(server.advance(Duration::from_secs(1)).await, 1);
        assert_eq!(socket.recv_text().await, "alarm 1");
        assert_eq!(
            server.storage("main", "a").get::<u64>("count").await,
            Some(1)
        );
        assert_eq!(server.storage("main", "a").alarm().await, None);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn an_alarm_set_by_on_alarm_within_the_advance_fires_in_it() {
        let server = TestServer::start(server()).await;
        let mut socket = server
            .socket_with("main", "r", SocketOptions::new().id("me"))
            .await;
        assert_eq!(socket.id(), Some("me"));
        assert_eq!(socket.recv_text().await, "hello me");
        socket.send("every:10").await;
        assert_eq!(socket.recv_text().await, "scheduled");
        let before = server.now();
        // Alarms at 10, 20, …, 60 s: six, each after the previous handler finished.
        assert_eq!(server.advance(Duration::from_secs(65)).await, 6);
        for count in 1..=6 {
            assert_eq!(socket.recv_text().await, format!("alarm {count}"));
        }
        let elapsed = server
            .now()
            .duration_since(before)
            .expect("the clock moved on");
        assert!(elapsed >= Duration::from_secs(65), "{elapsed:?}");
        let next = server
            .storage("main", "r")
            .alarm()
            .await
            .expect("the next alarm");
        assert!(next > server.now(), "the 70 s alarm is still to come");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn alarms_of_several_rooms_fire_in_the_order_of_their_times() {
        let server = TestServer::start(server()).await;
        let mut sockets = Vec::new();
        for (room, secs) in [("late", 30), ("early", 10), ("middle", 20)] {
            let mut socket = server.socket("main", room).await;
            socket.recv_text().await;
            socket.send(format!("once:{secs}")).await;
            assert_eq!(socket.recv_text().await, "scheduled");
            sockets.push((room, socket));
        }
        assert_eq!(server.advance(Duration::from_secs(15)).await, 1);
        assert_eq!(
            server.storage("main", "early").get::<u64>("count").await,
            Some(1)
        );
        assert_eq!(
            server.storage("main", "middle").get::<u64>("count").await,
            None
        );
        assert_eq!(server.advance(Duration::from_secs(15)).await, 2);
        for (room, socket) in &mut sockets {
            assert_eq!(socket.recv_text().await, "alarm 1", "room {room}");
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn http_and_refusals() {
        let server = TestServer::start(server()).await;
        let response = server.get("/parties/main/x").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await, "GET x");
        let response = server.post("/parties/main/y", "body").await;
        assert_eq!(response.text().await, "POST y");
        let response = server.get("/parties/nope/x").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let refused = server
            .try_socket_with("nope", "x", SocketOptions::new())
            .await
            .expect_err("an unknown party");
        assert_eq!(refused.status, StatusCode::NOT_FOUND);
        assert_eq!(refused.body, "Party nope not found");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn sockets_close_both_ways() {
        let server = TestServer::start(server()).await;
        let mut socket = server.socket("main", "c").await;
        socket.recv_text().await;
        socket.expect_silence(Duration::from_millis(20)).await;
        assert_eq!(socket.close(4000, "bye").await, (4000, "bye".to_owned()));
        // Waits after the end return the end again.
        assert_eq!(socket.closed().await, (4000, "bye".to_owned()));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_with_unread_open_sockets_is_not_held_by_the_grace_period() {
        let limits = crate::Limits {
            shutdown_grace: Duration::from_secs(30),
            ..crate::Limits::default()
        };
        let server = TestServer::start(server().limits(limits)).await;
        let mut sockets = Vec::new();
        for room in ["a", "b", "c"] {
            let mut socket = server.socket("main", room).await;
            socket.recv_text().await;
            sockets.push(socket);
        }
        let started = Instant::now();
        server.shutdown().await;
        // A hang guard, far below the grace period: the sockets answered the close.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        for socket in &mut sockets {
            assert_eq!(socket.closed().await.0, 1001);
        }
    }

    /// Greets with what it saw of the upgrade; its alarm always fails.
    #[party(name = "seer")]
    struct Seer {
        room: Room,
    }

    #[party]
    impl Seer {
        fn new(room: Room) -> Self {
            Seer { room }
        }

        async fn on_connect(&mut self, conn: &Connection, ctx: &ConnectionContext) {
            let header = ctx.request().header("x-test").unwrap_or("none").to_owned();
            let _ = conn.send(format!("{} {} {header}", conn.id(), conn.uri()));
        }

        async fn on_message(
            &mut self,
            _message: Message,
            sender: &Connection,
        ) -> Result<(), Error> {
            let storage = self.room.storage();
            storage
                .set_alarm(self.room.now() + Duration::from_secs(10))
                .await?;
            let _ = sender.send("scheduled");
            Ok(())
        }

        async fn on_alarm(&mut self) -> Result<(), Error> {
            let runs: u32 = self.room.storage().get("runs").await?.unwrap_or(0) + 1;
            self.room
                .storage()
                .allow_unconfirmed()
                .put("runs", &runs)
                .await?;
            Err(Error::msg("failing on purpose"))
        }
    }

    #[tokio::test]
    async fn socket_options_reach_the_room_as_partysocket_sends_them() {
        let server = TestServer::start(Server::new().party::<Seer>()).await;
        let options = SocketOptions::new()
            .id("me")
            .query("a b", "c&d")
            .header("x-test", "yes");
        let mut socket = server.socket_with("seer", "room 1", options).await;
        let greeting = socket.recv_text().await;
        assert_eq!(
            greeting,
            format!(
                "me {}/parties/seer/room%201?_pk=me&a%20b=c%26d yes",
                server.url()
            ),
            "the id, the encoded path and query, the header"
        );
        let mut random = server.socket("seer", "r").await;
        let id = random.id().expect("an id").to_owned();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        assert_eq!(
            random.recv_text().await,
            format!("{id} {}/parties/seer/r?_pk={id} none", server.url())
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_failing_alarms_retries_follow_the_test_clock() {
        let limits = crate::Limits {
            alarm_retry_base: Duration::from_secs(60),
            alarm_max_retries: 2,
            ..crate::Limits::default()
        };
        let server = TestServer::start(Server::new().party::<Seer>().limits(limits)).await;
        let mut socket = server.socket("seer", "r").await;
        socket.recv_text().await;
        socket.send("go").await;
        assert_eq!(socket.recv_text().await, "scheduled");
        // The first run at 10 s, then retries 60 s and 120 s after the runs before;
        // then the alarm is dropped.
        assert_eq!(server.advance(Duration::from_secs(59)).await, 1);
        assert_eq!(server.advance(Duration::from_secs(11)).await, 1);
        assert_eq!(server.advance(Duration::from_secs(3600)).await, 1);
        assert_eq!(
            server.storage("seer", "r").get::<u32>("runs").await,
            Some(3)
        );
        assert_eq!(server.storage("seer", "r").alarm().await, None);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_dropped_server_closes_its_sockets() {
        let server = TestServer::start(server()).await;
        let mut socket = server.socket("main", "d").await;
        socket.recv_text().await;
        drop(server);
        assert_eq!(socket.closed().await.0, 1001);
    }

    #[tokio::test]
    async fn a_server_that_cannot_start_says_why() {
        let error = TestServer::try_start(server().party::<Ticker>())
            .await
            .expect_err("two parties named main");
        assert!(
            matches!(error, ServerError::DuplicateParty("main")),
            "{error}"
        );
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for a message on /parties/main/quiet")]
    async fn a_wait_that_times_out_says_what_it_waited_for() {
        let mut server = TestServer::start(server()).await;
        server.set_timeout(Duration::from_millis(50));
        let mut socket = server.socket("main", "quiet").await;
        socket.recv_text().await;
        socket.recv().await;
    }
}
