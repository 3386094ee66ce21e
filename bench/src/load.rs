//! The load generator: WebSocket clients (tokio-tungstenite) that send timestamped
//! messages at a fixed or the highest sustainable rate and time their delivery, bulk
//! connection setup, and a small HTTP/1.1 keep-alive client.
//!
//! Everything runs on one current-thread runtime in the bench process. Times are
//! nanoseconds since a [`Clock`]'s epoch; a message carries the time it was sent, and
//! whoever receives it computes its latency.
//!
//! A run has a warm-up, then a measured window: messages *sent* inside the window count,
//! and the server's and the load generator's CPU time are read at the window's edges.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_util::sync::CancellationToken;

use crate::measure;
use crate::servers::ServerProcess;

/// One client's WebSocket.
pub type Socket = WebSocketStream<TcpStream>;
type Sink = SplitSink<Socket, Message>;
type Stream = SplitStream<Socket>;

/// How many handshakes are in flight at once while connecting many clients.
const CONNECT_CONCURRENCY: usize = 64;
/// How long, after the last message was sent, deliveries may still arrive.
const TAIL: Duration = Duration::from_millis(300);
/// How long connection counts may take to reach the number of connected clients.
const COUNT_PATIENCE: Duration = Duration::from_secs(5);
/// The text payload's length in bytes (timestamp included): a short chat message.
const TEXT_LEN: usize = 64;
/// The binary payload's length in bytes (timestamp included).
const BINARY_LEN: usize = 1024;

/// Nanoseconds since a shared epoch, within the load generator process.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn instant(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// What a message carries besides its send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Payload {
    /// A 64-byte text frame: the send time in hex, then filler.
    Text,
    /// A 1 KiB binary frame: the send time (little-endian u64), then zeros.
    Binary1K,
}

impl Payload {
    pub fn message(self, sent_ns: u64) -> Message {
        match self {
            Self::Text => {
                let mut text = format!("{sent_ns:016x} ");
                text.extend(std::iter::repeat_n('x', TEXT_LEN - text.len()));
                Message::text(text)
            }
            Self::Binary1K => {
                let mut bytes = vec![0u8; BINARY_LEN];
                bytes[..8].copy_from_slice(&sent_ns.to_le_bytes());
                Message::binary(bytes)
            }
        }
    }
}

/// The send time a message carries, if it is one of ours.
pub fn sent_ns(message: &Message) -> Option<u64> {
    match message {
        Message::Text(text) => u64::from_str_radix(text.as_str().get(..16)?, 16).ok(),
        Message::Binary(bytes) => Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)),
        _ => None,
    }
}

/// Opens a WebSocket to room `room` of the `main` party.
pub async fn connect(addr: SocketAddr, room: &str) -> Result<Socket, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|error| format!("connect {addr}: {error}"))?;
    stream
        .set_nodelay(true)
        .map_err(|error| format!("TCP_NODELAY: {error}"))?;
    let url = format!("ws://{addr}/parties/main/{room}");
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (socket, _response) =
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
            .await
            .map_err(|error| format!("WebSocket handshake with {url}: {error}"))?;
    Ok(socket)
}

/// Connects `per_room` clients to each of `rooms` rooms (`r0`, `r1`, …), room by room,
/// several handshakes at a time. The sockets come back in that order.
pub async fn connect_all(
    addr: SocketAddr,
    rooms: usize,
    per_room: usize,
) -> Result<Vec<Socket>, String> {
    futures_util::stream::iter(0..rooms * per_room)
        .map(|index| async move { connect(addr, &room_name(index / per_room)).await })
        .buffered(CONNECT_CONCURRENCY)
        .try_collect()
        .await
}

pub fn room_name(index: usize) -> String {
    format!("r{index}")
}

/// The warm-up and the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub window: Duration,
}

/// How fast messages go in.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rate {
    /// This many messages per second in total, spread evenly over every client of every
    /// room.
    Fixed { per_second: f64 },
    /// As fast as deliveries come back: each room has at most `in_flight_per_room`
    /// messages that its first client (which only listens) has not received yet.
    Max { in_flight_per_room: usize },
}

/// Clients in rooms exchanging messages.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Traffic {
    pub rooms: usize,
    pub clients_per_room: usize,
    pub rate: Rate,
    pub payload: Payload,
}

/// What one traffic run measured.
#[derive(Debug, Clone, Default)]
pub struct TrafficOutcome {
    pub window: Duration,
    /// Messages sent inside the window.
    pub sent: u64,
    /// Deliveries of those messages.
    pub delivered: u64,
    /// Their latencies, sorted (fixed rates only).
    pub latencies_ns: Vec<u64>,
    pub server_cpu: Duration,
    pub loadgen_cpu: Duration,
}

/// CPU times read at one instant.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    server: Duration,
    loadgen: Duration,
}

impl CpuSample {
    fn read(server: &ServerProcess) -> Result<Self, String> {
        Ok(Self {
            server: server.cpu_time()?,
            loadgen: measure::own_cpu_time()?,
        })
    }
}

/// The measured window, in clock nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    end: u64,
}

impl Window {
    fn contains(self, ns: u64) -> bool {
        (self.start..self.end).contains(&ns)
    }

    fn duration(self) -> Duration {
        Duration::from_nanos(self.end - self.start)
    }
}

/// Runs `traffic` against `server`: connects, warms up, measures for the window.
pub async fn run_traffic(
    server: &ServerProcess,
    traffic: Traffic,
    timing: Timing,
) -> Result<TrafficOutcome, String> {
    let clock = Clock::new();
    let sockets = connect_all(server.addr(), traffic.rooms, traffic.clients_per_room).await?;
    let begin = clock.now_ns();
    let start = begin + timing.warmup.as_nanos() as u64;
    let window = Window {
        start,
        end: start + timing.window.as_nanos() as u64,
    };
    let stop = CancellationToken::new();
    let per_room = traffic.clients_per_room;
    let max_in_flight = match traffic.rate {
        Rate::Fixed { .. } => None,
        Rate::Max { in_flight_per_room } => Some(in_flight_per_room),
    };

    let mut sinks = Vec::with_capacity(sockets.len());
    let mut readers: Vec<JoinHandle<Result<Received, String>>> = Vec::new();
    let mut room_credits = Vec::new();
    for (index, socket) in sockets.into_iter().enumerate() {
        let (sink, stream) = socket.split();
        sinks.push(sink);
        // In a max-rate run each room's first client only listens, and each message it
        // receives lets its room send another.
        let credits = match max_in_flight {
            Some(in_flight) if index % per_room == 0 => {
                let credits = Arc::new(Semaphore::new(in_flight));
                room_credits.push(Arc::clone(&credits));
                Some(credits)
            }
            _ => None,
        };
        let reader = Reader {
            clock,
            window,
            record_latency: max_in_flight.is_none(),
            credits,
            stop: stop.clone(),
        };
        readers.push(tokio::spawn(reader.run(stream)));
    }

    let senders: Vec<JoinHandle<Result<u64, String>>> = match traffic.rate {
        Rate::Fixed { per_second } => {
            let pacer = Pacer {
                clock,
                begin,
                window,
                per_second,
                rooms: traffic.rooms,
                per_room,
                payload: traffic.payload,
            };
            vec![tokio::spawn(pacer.run(sinks))]
        }
        Rate::Max { .. } => {
            let mut senders = Vec::new();
            let mut sinks = sinks.into_iter();
            for credits in room_credits {
                let mut room: Vec<Sink> = sinks.by_ref().take(per_room).collect();
                // The listener's sink stays open but sends nothing.
                let listener = room.remove(0);
                let driver = Driver {
                    clock,
                    window,
                    credits,
                    payload: traffic.payload,
                    listener,
                };
                senders.push(tokio::spawn(driver.run(room)));
            }
            senders
        }
    };

    tokio::time::sleep_until(clock.instant(window.start).into()).await;
    let before = CpuSample::read(server)?;
    tokio::time::sleep_until(clock.instant(window.end).into()).await;
    let after = CpuSample::read(server)?;
    let mut outcome = TrafficOutcome {
        window: window.duration(),
        server_cpu: after.server.saturating_sub(before.server),
        loadgen_cpu: after.loadgen.saturating_sub(before.loadgen),
        ..TrafficOutcome::default()
    };
    let mut failure = None;
    for sender in senders {
        match sender
            .await
            .map_err(|error| error.to_string())
            .and_then(|r| r)
        {
            Ok(sent) => outcome.sent += sent,
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    tokio::time::sleep(TAIL).await;
    stop.cancel();
    for reader in readers {
        match reader
            .await
            .map_err(|error| error.to_string())
            .and_then(|r| r)
        {
            Ok(received) => {
                outcome.delivered += received.delivered;
                outcome.latencies_ns.extend(received.latencies_ns);
            }
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    outcome.latencies_ns.sort_unstable();
    Ok(outcome)
}

/// What one client received.
#[derive(Debug, Default)]
struct Received {
    delivered: u64,
    latencies_ns: Vec<u64>,
}

/// One client's receiving half.
struct Reader {
    clock: Clock,
    window: Window,
    record_latency: bool,
    credits: Option<Arc<Semaphore>>,
    stop: CancellationToken,
}

impl Reader {
    async fn run(self, mut stream: Stream) -> Result<Received, String> {
        let mut received = Received::default();
        loop {
            let message = tokio::select! {
                biased;
                () = self.stop.cancelled() => return Ok(received),
                message = stream.next() => message,
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Err(format!("a client's socket failed: {error}")),
                None => return Err("the server closed a client's socket".to_owned()),
            };
            if let Message::Close(frame) = &message {
                return Err(format!("the server closed a client's socket: {frame:?}"));
            }
            let Some(sent) = sent_ns(&message) else {
                continue;
            };
            if let Some(credits) = &self.credits {
                credits.add_permits(1);
            }
            if self.window.contains(sent) {
                received.delivered += 1;
                if self.record_latency {
                    received
                        .latencies_ns
                        .push(self.clock.now_ns().saturating_sub(sent));
                }
            }
        }
    }
}

/// Sends at a fixed total rate, rotating over rooms and, within a room, over clients.
struct Pacer {
    clock: Clock,
    begin: u64,
    window: Window,
    per_second: f64,
    rooms: usize,
    per_room: usize,
    payload: Payload,
}

impl Pacer {
    /// Returns how many messages it sent inside the window.
    async fn run(self, mut sinks: Vec<Sink>) -> Result<u64, String> {
        let period_ns = 1e9 / self.per_second;
        let mut sent_in_window = 0;
        for k in 0u64.. {
            let due = self.begin + (k as f64 * period_ns) as u64;
            if due >= self.window.end {
                break;
            }
            if due > self.clock.now_ns() {
                tokio::time::sleep_until(self.clock.instant(due).into()).await;
            }
            // Message k goes from room k mod R, from its clients in turn.
            let room = k as usize % self.rooms;
            let client = (k as usize / self.rooms) % self.per_room;
            let now = self.clock.now_ns();
            sinks[room * self.per_room + client]
                .send(self.payload.message(now))
                .await
                .map_err(|error| format!("sending failed: {error}"))?;
            if self.window.contains(now) {
                sent_in_window += 1;
            }
        }
        Ok(sent_in_window)
    }
}

/// Sends one room's messages as fast as its credits allow, from its clients in turn.
struct Driver {
    clock: Clock,
    window: Window,
    credits: Arc<Semaphore>,
    payload: Payload,
    /// The room's listening client's sink, kept open until the run ends.
    listener: Sink,
}

impl Driver {
    /// Returns how many messages it sent inside the window.
    async fn run(self, mut senders: Vec<Sink>) -> Result<u64, String> {
        let deadline = tokio::time::sleep_until(self.clock.instant(self.window.end).into());
        tokio::pin!(deadline);
        let mut sent_in_window = 0;
        for turn in 0.. {
            tokio::select! {
                biased;
                () = &mut deadline => break,
                permit = self.credits.acquire() => {
                    permit.map_err(|error| error.to_string())?.forget();
                }
            }
            let now = self.clock.now_ns();
            let count = senders.len();
            senders[turn % count]
                .send(self.payload.message(now))
                .await
                .map_err(|error| format!("sending failed: {error}"))?;
            if self.window.contains(now) {
                sent_in_window += 1;
            }
        }
        drop(self.listener);
        Ok(sent_in_window)
    }
}

/// What connecting many clients measured.
#[derive(Debug, Clone)]
pub struct SetupOutcome {
    pub clients: usize,
    pub elapsed: Duration,
    pub server_cpu: Duration,
    pub loadgen_cpu: Duration,
    /// The server's resident memory before the first connection.
    pub baseline_rss: u64,
    /// Its resident memory with every client connected and idle.
    pub idle_rss: u64,
    /// The connections the server reports over HTTP, summed over the rooms.
    pub connections_seen: usize,
}

/// Connects `rooms × per_room` clients as fast as the server accepts them, then lets
/// them sit idle for `settle` and reads the server's memory.
pub async fn run_setup(
    server: &ServerProcess,
    rooms: usize,
    per_room: usize,
    settle: Duration,
) -> Result<SetupOutcome, String> {
    let baseline_rss = server.rss_bytes()?;
    let before = CpuSample::read(server)?;
    let started = Instant::now();
    let sockets = connect_all(server.addr(), rooms, per_room).await?;
    let elapsed = started.elapsed();
    let after = CpuSample::read(server)?;
    tokio::time::sleep(settle).await;
    let idle_rss = server.rss_bytes()?;
    // A server may register the last sockets a little after their handshakes: ask again
    // for a while before reporting a shortfall.
    let mut http = HttpClient::connect(server.addr()).await?;
    let deadline = Instant::now() + COUNT_PATIENCE;
    let connections_seen = loop {
        let mut seen = 0;
        for room in 0..rooms {
            seen += http.room_connections(&room_name(room)).await?;
        }
        if seen == rooms * per_room || Instant::now() >= deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(sockets);
    Ok(SetupOutcome {
        clients: rooms * per_room,
        elapsed,
        server_cpu: after.server.saturating_sub(before.server),
        loadgen_cpu: after.loadgen.saturating_sub(before.loadgen),
        baseline_rss,
        idle_rss,
        connections_seen,
    })
}

/// What one HTTP run measured.
#[derive(Debug, Clone)]
pub struct HttpOutcome {
    pub window: Duration,
    /// Requests answered inside the window.
    pub requests: u64,
    pub server_cpu: Duration,
    pub loadgen_cpu: Duration,
}

/// `connections` keep-alive clients each send `GET /parties/main/<room>` one after the
/// other (rooms assigned in turn) through the warm-up and the window.
pub async fn run_http(
    server: &ServerProcess,
    connections: usize,
    rooms: usize,
    timing: Timing,
) -> Result<HttpOutcome, String> {
    let clock = Clock::new();
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(HttpClient::connect(server.addr()).await?);
    }
    let start = clock.now_ns() + timing.warmup.as_nanos() as u64;
    let window = Window {
        start,
        end: start + timing.window.as_nanos() as u64,
    };
    let tasks: Vec<JoinHandle<Result<u64, String>>> = clients
        .into_iter()
        .enumerate()
        .map(|(index, mut client)| {
            let path = format!("/parties/main/{}", room_name(index % rooms));
            tokio::spawn(async move {
                let mut answered = 0;
                loop {
                    let sent = clock.now_ns();
                    if sent >= window.end {
                        return Ok(answered);
                    }
                    let (status, _body) = client.get(&path).await?;
                    if status != 200 {
                        return Err(format!("GET {path} answered {status}"));
                    }
                    if window.contains(sent) {
                        answered += 1;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep_until(clock.instant(window.start).into()).await;
    let before = CpuSample::read(server)?;
    tokio::time::sleep_until(clock.instant(window.end).into()).await;
    let after = CpuSample::read(server)?;
    let mut requests = 0;
    for task in tasks {
        requests += task.await.map_err(|error| error.to_string())??;
    }
    Ok(HttpOutcome {
        window: window.duration(),
        requests,
        server_cpu: after.server.saturating_sub(before.server),
        loadgen_cpu: after.loadgen.saturating_sub(before.loadgen),
    })
}

/// A minimal HTTP/1.1 keep-alive client for `GET`s answered with a `Content-Length`.
#[derive(Debug)]
pub struct HttpClient {
    stream: TcpStream,
    addr: SocketAddr,
    buffer: Vec<u8>,
}

impl HttpClient {
    pub async fn connect(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|error| format!("connect {addr}: {error}"))?;
        stream
            .set_nodelay(true)
            .map_err(|error| format!("TCP_NODELAY: {error}"))?;
        Ok(Self {
            stream,
            addr,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// Sends `GET path` and reads the answer: its status and body.
    pub async fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        let io = |error: std::io::Error| format!("HTTP to {}: {error}", self.addr);
        self.stream
            .write_all(request.as_bytes())
            .await
            .map_err(io)?;
        let head_len = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_len])
            .map_err(|_| "the response head is not UTF-8".to_owned())?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|status| status.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let body_len = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
        while self.buffer.len() < head_len + body_len {
            self.fill().await?;
        }
        let body = self.buffer[head_len..head_len + body_len].to_vec();
        self.buffer.drain(..head_len + body_len);
        Ok((status, body))
    }

    /// The connection count that `GET` on `room` reports.
    pub async fn room_connections(&mut self, room: &str) -> Result<usize, String> {
        let (status, body) = self.get(&format!("/parties/main/{room}")).await?;
        let info: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|error| format!("GET {room} answered {status} and not JSON: {error}"))?;
        if info["room"] != room {
            return Err(format!("GET {room} answered for another room: {info}"));
        }
        info["connections"]
            .as_u64()
            .map(|count| count as usize)
            .ok_or_else(|| format!("GET {room} answered no connection count: {info}"))
    }

    async fn fill(&mut self) -> Result<(), String> {
        let read = self
            .stream
            .read_buf(&mut self.buffer)
            .await
            .map_err(|error| format!("HTTP from {}: {error}", self.addr))?;
        if read == 0 {
            return Err(format!("{} closed the HTTP connection", self.addr));
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Reads frames until the text `wanted` (pings and such are skipped); an error says what
/// came instead, or that nothing came within `deadline`.
pub async fn expect_text<S>(stream: &mut S, wanted: &str, deadline: Duration) -> Result<(), String>
where
    S: futures_util::Stream<Item = Result<WsMessage, WsError>> + Unpin,
{
    loop {
        let frame = tokio::time::timeout(deadline, stream.next())
            .await
            .map_err(|_| format!("no {wanted:?} within {deadline:?}"))?;
        match frame {
            Some(Ok(WsMessage::Text(text))) if text.as_str() == wanted => return Ok(()),
            Some(Ok(WsMessage::Text(text))) => {
                return Err(format!("expected {wanted:?}, got {:?}", text.as_str()));
            }
            Some(Ok(WsMessage::Close(close))) => {
                return Err(format!("closed while waiting for {wanted:?}: {close:?}"));
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(format!("while waiting for {wanted:?}: {error}")),
            None => return Err(format!("the socket ended before {wanted:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_send_time() {
        for payload in [Payload::Text, Payload::Binary1K] {
            let message = payload.message(0x0123_4567_89ab_cdef);
            assert_eq!(sent_ns(&message), Some(0x0123_4567_89ab_cdef));
        }
        assert_eq!(Payload::Text.message(1).len(), TEXT_LEN);
        assert_eq!(Payload::Binary1K.message(1).len(), BINARY_LEN);
        assert_eq!(sent_ns(&Message::text("hello")), None);
    }
}
