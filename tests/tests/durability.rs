//! Durability under `kill -9` (the output gate, persistence, alarms): a
//! real server process (`party-server`, SQLite storage in a temporary directory) is
//! killed with SIGKILL and restarted on the same file. Every write a client saw
//! acknowledged (an HTTP answer, a broadcast) must be there after the restart, and
//! alarms stored before the kill must fire after it.

#![cfg(unix)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use partykit_tests::{ServerProcess, TempDir, WAIT, WsMessage, http, within};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

// ---------------------------------------------------------------------------------------
// Helpers

/// Starts `party-server <example> <database>`.
async fn start(example: &str, database: &Path) -> ServerProcess {
    ServerProcess::start(env!("CARGO_BIN_EXE_party-server"), example, database).await
}

/// What the tests ask of a running server.
trait Requests {
    async fn get(&self, path: &str) -> String;
    async fn post(&self, path: &str, body: &str) -> String;
    async fn connect(&self, path: &str) -> Socket;
}

impl Requests for ServerProcess {
    async fn get(&self, path: &str) -> String {
        let response = http(self.addr(), "GET", path, &[], b"").await;
        assert_eq!(
            response.status,
            200,
            "GET {path}: {} {}",
            response.status,
            response.text()
        );
        response.text()
    }

    async fn post(&self, path: &str, body: &str) -> String {
        let response = http(self.addr(), "POST", path, &[], body.as_bytes()).await;
        assert_eq!(
            response.status,
            200,
            "POST {path}: {} {}",
            response.status,
            response.text()
        );
        response.text()
    }

    async fn connect(&self, path: &str) -> Socket {
        Socket::connect(self.addr(), path)
            .await
            .unwrap_or_else(|error| panic!("WebSocket to {path} refused: {error}"))
    }
}

/// A WebSocket client that reports a vanished server instead of failing the test.
struct Socket {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    async fn connect(addr: SocketAddr, path: &str) -> Result<Self, String> {
        let url = format!("ws://{addr}{path}");
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await {
            Ok(Ok((inner, _response))) => Ok(Self { inner }),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no handshake within {WAIT:?}")),
        }
    }

    async fn send(&mut self, text: &str) -> bool {
        matches!(
            tokio::time::timeout(WAIT, self.inner.send(WsMessage::text(text))).await,
            Ok(Ok(()))
        )
    }

    /// The next text message; `None` if the socket ended, failed or stayed silent.
    async fn next_text(&mut self) -> Option<String> {
        loop {
            match tokio::time::timeout(WAIT, self.inner.next()).await {
                Ok(Some(Ok(WsMessage::Text(text)))) => return Some(text.as_str().to_owned()),
                Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => {}
                _ => return None,
            }
        }
    }

    /// The next text message; fails the test if there is none.
    async fn recv_text(&mut self) -> String {
        self.next_text()
            .await
            .expect("expected a message from the server")
    }
}

/// A `POST` that never fails the test: `Ok((status, body))` only for a whole response,
/// `Err` if the server vanished before answering completely.
async fn try_post(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|error| error.to_string())?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|error| error.to_string())?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|error| error.to_string())?;
        let text = String::from_utf8(raw).map_err(|error| error.to_string())?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("incomplete response {text:?}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let length: usize = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())
            .ok_or_else(|| format!("no content-length in {head:?}"))?;
        if body.len() != length {
            return Err(format!("body cut short: {body:?}"));
        }
        Ok((status, body.to_owned()))
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no response within {WAIT:?}")))
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------
// The counter example

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_keeps_every_acknowledged_increment_across_kill_9() {
    let dir = TempDir::new("counter");
    let room = "/parties/main/kill-9";
    let server = start("counter", &dir.database()).await;

    // Over HTTP: each answer is the new count, sent once it is on disk.
    for expected in 1..=20u64 {
        assert_eq!(server.post(room, "").await, expected.to_string());
    }
    // Over a socket: each broadcast count is the acknowledgement.
    let mut socket = server.connect(room).await;
    assert_eq!(socket.recv_text().await, "20", "the count on connecting");
    for expected in 21..=30u64 {
        assert!(socket.send("increment").await, "sending increment failed");
        assert_eq!(socket.recv_text().await, expected.to_string());
    }
    // Both at once: the socket hears of the HTTP increment too.
    assert_eq!(server.post(room, "").await, "31");
    assert_eq!(socket.recv_text().await, "31");

    server.kill().await;
    drop(socket);
    let server = start("counter", &dir.database()).await;
    assert_eq!(
        server.get(room).await,
        "31",
        "every acknowledged increment survived kill -9"
    );
    assert_eq!(
        server.get("/parties/main/untouched").await,
        "0",
        "other rooms are untouched"
    );
    let mut socket = server.connect(room).await;
    assert_eq!(socket.recv_text().await, "31");

    // It goes on counting, and survives a second kill just the same.
    assert_eq!(server.post(room, "").await, "32");
    assert!(socket.send("increment").await);
    assert_eq!(
        socket.recv_text().await,
        "32",
        "the HTTP increment's broadcast"
    );
    assert_eq!(socket.recv_text().await, "33", "the socket's own increment");
    server.kill().await;
    let server = start("counter", &dir.database()).await;
    assert_eq!(server.get(room).await, "33");
    server.kill().await;
}

/// What the clients of one room saw acknowledged, and how many increments they sent.
#[derive(Default)]
struct Tally {
    acknowledged: Mutex<Vec<u64>>,
    sent: AtomicU64,
    /// Complete answers other than 200 (there must be none).
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn acknowledged(&self) -> Vec<u64> {
        self.acknowledged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn ack(&self, body: &str) {
        let count = body
            .parse()
            .unwrap_or_else(|_| panic!("the counter answered {body:?}"));
        self.acknowledged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(count);
    }

    fn error(&self, error: String) {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(error);
    }
}

/// POSTs increments one after the other until the server is gone.
async fn increment_over_http(addr: SocketAddr, path: String, tally: Arc<Tally>) {
    loop {
        tally.sent.fetch_add(1, Ordering::SeqCst);
        match try_post(addr, &path).await {
            Ok((200, body)) => tally.ack(&body),
            Ok((status, body)) => {
                tally.error(format!("POST {path}: {status} {body}"));
                return;
            }
            // The server was killed.
            Err(_) => return,
        }
    }
}

/// Sends `increment` and waits for the next broadcast, over and over, until the server
/// is gone.
async fn increment_over_socket(addr: SocketAddr, path: String, tally: Arc<Tally>) {
    let mut socket = match Socket::connect(addr, &path).await {
        Ok(socket) => socket,
        Err(error) => {
            tally.error(format!("WebSocket to {path}: {error}"));
            return;
        }
    };
    // The count on connecting is durable too.
    let Some(first) = socket.next_text().await else {
        return;
    };
    tally.ack(&first);
    loop {
        tally.sent.fetch_add(1, Ordering::SeqCst);
        if !socket.send("increment").await {
            return;
        }
        match socket.next_text().await {
            Some(count) => tally.ack(&count),
            None => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_in_many_rooms_survive_kill_9_mid_stream() {
    let dir = TempDir::new("counter-concurrent");
    let server = start("counter", &dir.database()).await;
    let addr = server.addr();

    // Rooms with one client each (at most one increment in flight), and a room shared
    // by two HTTP clients and a socket.
    let mut rooms: Vec<(String, usize)> = Vec::new();
    let mut tallies: HashMap<String, Arc<Tally>> = HashMap::new();
    let mut clients = Vec::new();
    for i in 0..4 {
        let path = format!("/parties/main/http-{i}");
        let tally = Arc::new(Tally::default());
        clients.push(tokio::spawn(increment_over_http(
            addr,
            path.clone(),
            Arc::clone(&tally),
        )));
        tallies.insert(path.clone(), tally);
        rooms.push((path, 1));
    }
    for i in 0..2 {
        let path = format!("/parties/main/socket-{i}");
        let tally = Arc::new(Tally::default());
        clients.push(tokio::spawn(increment_over_socket(
            addr,
            path.clone(),
            Arc::clone(&tally),
        )));
        tallies.insert(path.clone(), tally);
        rooms.push((path, 1));
    }
    let shared = "/parties/main/shared".to_owned();
    let shared_tally = Arc::new(Tally::default());
    for _ in 0..2 {
        clients.push(tokio::spawn(increment_over_http(
            addr,
            shared.clone(),
            Arc::clone(&shared_tally),
        )));
    }
    clients.push(tokio::spawn(increment_over_socket(
        addr,
        shared.clone(),
        Arc::clone(&shared_tally),
    )));
    tallies.insert(shared.clone(), shared_tally);
    rooms.push((shared.clone(), 3));

    // Kill it while every client is busy incrementing.
    within("every room to acknowledge 10 increments", async {
        while !tallies
            .values()
            .all(|tally| tally.acknowledged().len() >= 10)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    server.kill().await;
    for client in clients {
        within("a client to notice the server is gone", client)
            .await
            .expect("a client task panicked");
    }

    let server = start("counter", &dir.database()).await;
    for (path, clients) in &rooms {
        let tally = &tallies[path];
        let errors = tally
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert!(errors.is_empty(), "{path}: {errors:?}");
        let count: u64 = server.get(path).await.parse().expect("a count");
        let acknowledged = tally.acknowledged();
        let highest = acknowledged.iter().copied().max().unwrap_or(0);
        assert!(
            acknowledged.iter().all(|ack| *ack <= count),
            "{path}: a client saw {highest} acknowledged, but only {count} survived kill -9"
        );
        let sent = tally.sent.load(Ordering::SeqCst);
        assert!(
            count <= sent,
            "{path}: {count} increments stored, but only {sent} were sent"
        );
        if *clients == 1 {
            // One client, one increment at a time: acknowledged 1, 2, 3, … (or from the
            // count on connecting), and at most the one in flight at the kill on top.
            let start = acknowledged[0];
            let expected: Vec<u64> = (start..start + acknowledged.len() as u64).collect();
            assert_eq!(acknowledged, expected, "{path}: acknowledgements in order");
            assert!(
                count <= highest + 1,
                "{path}: {count} stored, {highest} acknowledged, one at most in flight"
            );
        }
    }
    server.kill().await;
}

// ---------------------------------------------------------------------------------------
// The reminders example: alarms across a restart

/// The messages of `GET`'s pending reminders, in due order.
fn messages(pending: &Value) -> Vec<String> {
    pending
        .as_array()
        .unwrap_or_else(|| panic!("expected a list of reminders, got {pending}"))
        .iter()
        .map(|reminder| reminder["message"].as_str().expect("a message").to_owned())
        .collect()
}

async fn pending(server: &ServerProcess, room: &str) -> Value {
    let text = server.get(room).await;
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_stored_before_kill_9_fire_after_the_restart() {
    let dir = TempDir::new("reminders");
    let room = "/parties/main/wake-up";
    let server = start("reminders", &dir.database()).await;
    server.post(&format!("{room}?in=1000"), "first").await;
    server.post(&format!("{room}?in=5000"), "second").await;
    let before = pending(&server, room).await;
    assert_eq!(messages(&before), ["first", "second"]);
    let first_due = before[0]["due"].as_u64().expect("a due time");
    server.kill().await;
    // A reminder leaves the list only when on_alarm delivers it; so if the server died
    // before it was due, only the restarted server can have delivered it.
    let killed_at = now_ms();
    assert!(
        killed_at < first_due,
        "the server was killed {} ms after the first reminder came due; this test needs it \
         killed before",
        killed_at - first_due
    );

    // Restart once the first reminder came due while the server was down.
    tokio::time::sleep(Duration::from_millis(first_due - killed_at + 100)).await;
    let server = start("reminders", &dir.database()).await;

    // The stored alarm fires at startup, in a cold room: the first reminder goes, and
    // on_alarm arms the room's alarm for the second.
    let after = within(
        "the first reminder to be delivered after the restart",
        async {
            loop {
                let pending = pending(&server, room).await;
                if !messages(&pending).contains(&"first".to_owned()) {
                    return pending;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    assert_eq!(
        messages(&after),
        ["second"],
        "the second reminder is still pending (it comes due about 4 s after the restart)"
    );

    // A socket that joins now receives the second reminder from the alarm set after the
    // restart.
    let mut socket = server.connect(room).await;
    assert_eq!(
        messages(&pending(&server, room).await),
        ["second"],
        "the second reminder fired before the socket joined; this test needs it later"
    );
    assert_eq!(socket.recv_text().await, "second");
    within("the second reminder to leave the list", async {
        while !messages(&pending(&server, room).await).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.kill().await;
}
