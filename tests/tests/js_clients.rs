//! The real npm clients against real servers, under Node: `partysocket` and
//! `y-partykit` (with `yjs`), as pinned in `tests/js/package-lock.json`.
//!
//! `tests/js` is installed with `npm ci` the first time these tests run (and again when
//! a pinned package is missing from `node_modules` or at another version;
//! `partykit_tests::node`). Without Node on the machine every test says `SKIPPED` on
//! stderr and returns, except on CI (`CI` set), where that fails; with Node, a script that
//! fails or hangs fails its test. CI installs Node (`.ci/run`).
//!
//! Each script gets the server's `host:port` as its first argument, prints `ok: …` for
//! every check, and exits 0 when all passed. Scripts that need the server restarted
//! coordinate through lines: they print `ready-for-restart`, the test restarts the
//! server and writes `restarted` to their stdin.

#![cfg(unix)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::HeaderValue;
use partykit_examples::chat::Chat;
use partykit_examples::yjs::Document;
use partykit_runtime::storage::ListOptions;
use partykit_runtime::yjs::yrs::{GetString, Transact};
use partykit_runtime::yjs::{Persistence, YDoc, YjsOptions};
use partykit_runtime::{
    Connection, ConnectionContext, Error, Json, Message, Request, Result, Room, Server,
    ServerError, party,
};
use partykit_tests::node::{NodeScript, STEP_TIMEOUT, node_ready};
use partykit_tests::{ServerProcess, TempDir, http};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Serves `server` on an ephemeral port and runs `node <script> <host:port> <args…>` to
/// success.
async fn run_script(server: Server, script: &str, args: &[&str]) {
    let served = Served::start(server, "127.0.0.1:0".parse().unwrap()).await;
    let host = served.addr.to_string();
    let mut all_args = vec![host.as_str()];
    all_args.extend_from_slice(args);
    NodeScript::start(script, &all_args).finish().await;
    served.stop().await;
}

// ---------------------------------------------------------------------------------------
// Servers

/// A server serving in this test's runtime.
struct Served {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Served {
    /// Binds `addr` (retrying while a previous server's socket still holds it) and
    /// serves `server` on it.
    async fn start(server: Server, addr: SocketAddr) -> Self {
        let listener = bounded("binding the server's address", async {
            loop {
                match TcpListener::bind(addr).await {
                    Ok(listener) => break listener,
                    Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(error) => panic!("cannot bind {addr}: {error}"),
                }
            }
        })
        .await;
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    /// Shuts the server down (sockets close with 1001) and waits until it has stopped.
    async fn stop(self) {
        let _ = self.stop.send(());
        bounded("the server to stop", self.task)
            .await
            .expect("the server task panicked")
            .expect("the server failed");
    }
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {STEP_TIMEOUT:?} waiting for {what}"),
    }
}

/// Starts `party-server <example> <database>`.
async fn start_process(example: &str, database: &Path) -> ServerProcess {
    ServerProcess::start(env!("CARGO_BIN_EXE_party-server"), example, database).await
}

// ---------------------------------------------------------------------------------------
// The party the partysocket scenarios talk to

/// `/parties/echo/<room>`: sockets need `?token=let-me-in` (checked in
/// `on_before_connect`, which passes the query it saw to `on_connect` in a header); every
/// socket is greeted with what the server saw; text is echoed with an `echo:` prefix and
/// binary reversed; HTTP answers what the request looked like.
#[party(name = "echo")]
struct Echo {
    room: Room,
}

#[party]
impl Echo {
    fn new(room: Room) -> Self {
        Echo { room }
    }

    fn on_before_connect(mut request: Request) -> Result<Request> {
        if request.query("token").as_deref() != Some("let-me-in") {
            return Err(Error::msg("a token is required"));
        }
        let query = request.uri().query().unwrap_or_default().to_owned();
        let seen = HeaderValue::from_str(&query)?;
        request.headers_mut().insert("x-query-seen", seen);
        Ok(request)
    }

    fn on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext) -> Result<()> {
        let hello = json!({
            "id": connection.id(),
            "query": ctx.request().header("x-query-seen"),
            "path": ctx.request().path(),
            "connections": self.room.connection_count(),
        });
        connection.send(hello.to_string())?;
        Ok(())
    }

    fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        match message {
            Message::Binary(bytes) => {
                sender.send(bytes.iter().rev().copied().collect::<Vec<u8>>())?
            }
            Message::Text(text) => sender.send(format!("echo:{}", text.as_str()))?,
        }
        Ok(())
    }

    fn on_request(&mut self, request: Request) -> Result<Json<Value>> {
        Ok(Json(json!({
            "method": request.method().as_str(),
            "path": request.path(),
            "query": request.uri().query(),
            "body": request.text()?,
            "contentType": request.header("content-type"),
        })))
    }
}

/// `/parties/layout/<room>`: a Yjs room (snapshot persistence) whose storage can be read
/// and written over HTTP (`GET`/`PUT …/storage`, values in hex), so that y-partykit's own
/// storage code can read what it wrote and write what it reads.
#[party(name = "layout")]
struct Layout {
    room: Room,
    doc: YDoc,
}

#[party]
impl Layout {
    fn new(room: Room) -> Self {
        let options = YjsOptions::new().persist(Persistence::Snapshot);
        Layout {
            doc: YDoc::new(&room, options),
            room,
        }
    }

    async fn on_connect(&mut self, conn: &Connection) -> Result<()> {
        self.doc.on_connect(conn).await
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        self.doc.on_message(message, sender).await
    }

    async fn on_close(&mut self, conn: &Connection) -> Result<()> {
        self.doc.on_close(conn).await
    }

    async fn on_request(&mut self, request: Request) -> Result<String> {
        let storage = self.room.storage();
        if !request.path().ends_with("/storage") {
            self.doc.load().await?;
            let doc = self.doc.doc();
            return Ok(doc
                .get_or_insert_text("content")
                .get_string(&doc.transact()));
        }
        if request.method() == http::Method::PUT {
            let entries: serde_json::Map<String, Value> = request.json()?;
            for (key, value) in entries {
                let hex = value.as_str().ok_or_else(|| Error::msg("values are hex"))?;
                storage.put_bytes(&key, from_hex(hex)?).await?;
            }
            return Ok("stored".to_owned());
        }
        let entries = storage.list_bytes(ListOptions::new()).await?;
        let dump: serde_json::Map<String, Value> = entries
            .into_iter()
            .map(|(key, value)| (key, Value::String(to_hex(&value))))
            .collect();
        Ok(Value::Object(dump).to_string())
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn from_hex(hex: &str) -> Result<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| Error::msg("bad hex"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// partysocket

#[tokio::test]
async fn partysocket_chat_current_and_legacy_urls_and_fetch() {
    if !node_ready() {
        return;
    }
    run_script(
        Server::new().in_memory().party::<Chat>(),
        "chat.mjs",
        &["js-room"],
    )
    .await;
}

#[tokio::test]
async fn partysocket_binary_frames_query_fetch_post_and_sub_path() {
    if !node_ready() {
        return;
    }
    run_script(
        Server::new().in_memory().party::<Echo>(),
        "partysocket.mjs",
        &["js-echo"],
    )
    .await;
}

#[tokio::test]
async fn partysocket_reconnects_with_the_same_pk_after_a_server_restart() {
    if !node_ready() {
        return;
    }
    let server = || Server::new().in_memory().party::<Echo>();
    let first = Served::start(server(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = first.addr;
    let host = addr.to_string();
    let mut script = NodeScript::start("partysocket-restart.mjs", &[&host, "js-restart"]);

    script.expect_line("ready-for-restart").await;
    first.stop().await;
    // The same address again, as a restarted server would have.
    let second = Served::start(server(), addr).await;
    script.say("restarted").await;

    script.finish().await;
    second.stop().await;
}

// ---------------------------------------------------------------------------------------
// y-partykit

#[tokio::test]
async fn y_partykit_providers_converge_share_awareness_and_sync_over_a_megabyte() {
    if !node_ready() {
        return;
    }
    // The yjs example: snapshot persistence into (here, in-memory) room storage.
    run_script(
        Server::new().in_memory().party::<Document>(),
        "yjs.mjs",
        &["js-yjs"],
    )
    .await;
}

#[tokio::test]
async fn y_partykit_storage_code_reads_and_writes_the_same_storage_layout() {
    if !node_ready() {
        return;
    }
    run_script(
        Server::new().in_memory().party::<Layout>(),
        "yjs-storage.mjs",
        &[],
    )
    .await;
}

#[tokio::test]
async fn y_partykit_document_survives_server_restarts() {
    if !node_ready() {
        return;
    }
    let dir = TempDir::new("yjs");
    let database = dir.database();
    let room = "js-persisted";
    let session = |server: &ServerProcess, expected: &str, append: &str| {
        let host = server.addr().to_string();
        let args = [
            host,
            room.to_owned(),
            expected.to_owned(),
            append.to_owned(),
        ];
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            NodeScript::start("yjs-persist.mjs", &args).finish().await;
        }
    };

    // Written, then the server is killed: what a second provider saw is on disk.
    let server = start_process("yjs", &database).await;
    session(&server, "", "one;").await;
    server.kill().await;

    // A new server process on the same file: a new provider gets the text.
    let server = start_process("yjs", &database).await;
    let text = http(
        server.addr(),
        "GET",
        &format!("/parties/main/{room}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        text.text(),
        "one;",
        "the server loaded the document after a kill"
    );
    session(&server, "one;", "two;").await;
    // This time a graceful shutdown (the snapshot was compacted when the last provider
    // left).
    server.terminate().await;

    let server = start_process("yjs", &database).await;
    session(&server, "one;two;", "").await;
    server.kill().await;
}
