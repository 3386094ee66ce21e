//! The inspection API (`/__partykit/…`), over TCP: it is off without an admin token,
//! every endpoint but the health check, the dashboard page and the OpenAPI document
//! needs the token, and each endpoint shows what test clients really did (rooms and
//! their connections, traffic counters, storage, alarms) or does what it says (close a
//! connection, evict a room, delete an alarm).
//!
//! Every response these tests get is checked against the OpenAPI document the server
//! serves (`tests/src/openapi.rs`): its status, content type, required headers and body
//! schema. Schemathesis then fuzzes the API from that document; it is found at
//! `$SCHEMATHESIS` or on `PATH` (`.ci/run` installs it), and without it that test is
//! skipped with a message, unless `CI=true`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use partykit_runtime::testing::{SocketOptions, TestSocket};
use partykit_runtime::{
    Connection, ConnectionContext, Limits, Message, Result, Room, Server, party,
};
use partykit_tests::openapi::OpenApi;
use partykit_tests::{HttpResponse, Probe, TempDir, TestServer, WAIT, http, init_tracing, record};
use serde_json::{Value, json};

/// The admin token of the servers these tests start.
const TOKEN: &str = "inspect-test-token-0123456789";

/// The document as the repository has it, for a server that does not serve it (no
/// token) and to check that the served one is this file.
const DOCUMENT: &str = include_str!("../../partykit-runtime/src/inspect/openapi.json");

/// The body of every `/__partykit/*` answer (health aside) of a server without a token.
const OFF: &str = "the inspection API is off: set PARTYKIT_ADMIN_TOKEN";

/// The close reason of an evicted room's sockets.
const EVICTED: &str = "The room was evicted by an operator; reconnect";

// ---------------------------------------------------------------------------------------
// The test parties

/// `?tags=a,b` becomes the connection's tags and `?name=` its state (`{"name": …}`);
/// every connection is greeted with `hello`. Messages:
/// - `put <key> <json>`: stores the JSON value; answers `stored <key>` once durable.
/// - `put-text <key> <text>`: stores the text's bytes as they are (not JSON).
/// - `alarm <ms>`: sets the alarm `ms` from now; answers `alarm <its time in ms>`.
/// - `shout <text>`: broadcasts the text to every connection.
/// - `whoami`: answers `{"id", "uri", "tags", "room"}` as the room sees them.
/// - anything else is echoed as `echo <text>`.
#[party] // name = "main"
struct Chat {
    room: Room,
}

#[party]
impl Chat {
    fn new(room: Room) -> Self {
        record(room.env(), format!("new {}", room.id()));
        Chat { room }
    }

    fn connection_tags(
        &mut self,
        _connection: &Connection,
        ctx: &ConnectionContext,
    ) -> Vec<String> {
        ctx.request()
            .query("tags")
            .map(|tags| tags.split(',').map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext) -> Result<()> {
        if let Some(name) = ctx.request().query("name") {
            connection.set_state(&json!({ "name": name }))?;
        }
        connection.send("hello")?;
        Ok(())
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        let text = message.as_text().unwrap_or_default().to_owned();
        let storage = self.room.storage();
        if let Some(rest) = text.strip_prefix("put ") {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, "null"));
            storage
                .put(key, &serde_json::from_str::<Value>(value)?)
                .await?;
            sender.send(format!("stored {key}"))?;
        } else if let Some(rest) = text.strip_prefix("put-text ") {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            storage.put_bytes(key, value.as_bytes().to_vec()).await?;
            sender.send(format!("stored {key}"))?;
        } else if let Some(ms) = text.strip_prefix("alarm ") {
            let time = self.room.now() + Duration::from_millis(ms.parse()?);
            storage.set_alarm(time).await?;
            sender.send(format!("alarm {}", millis(time)))?;
        } else if let Some(shout) = text.strip_prefix("shout ") {
            self.room.broadcast(shout, &[]);
        } else if text == "whoami" {
            sender.send_json(&json!({
                "id": sender.id(),
                "uri": sender.uri(),
                "tags": sender.tags(),
                "room": self.room.id(),
            }))?;
        } else {
            sender.send(format!("echo {text}"))?;
        }
        Ok(())
    }

    fn on_close(&mut self, connection: &Connection) {
        record(self.room.env(), format!("close {}", connection.id()));
    }

    fn on_alarm(&mut self) {
        record(self.room.env(), format!("alarm {}", self.room.id()));
    }
}

/// A second party, for filters, sorting and per-party figures.
#[party(name = "other")]
struct Other {
    room: Room,
}

#[party]
impl Other {
    fn new(room: Room) -> Self {
        Other { room }
    }

    fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        let _ = &self.room;
        sender.send(message)?;
        Ok(())
    }
}

/// A hibernating party: its rooms drop their value after [`HIBERNATE_AFTER`] without
/// an event, while their sockets stay open.
#[party(name = "sleepy", hibernate)]
struct Sleepy {
    room: Room,
}

#[party]
impl Sleepy {
    fn new(room: Room) -> Self {
        Sleepy { room }
    }

    fn on_connect(&mut self, connection: &Connection) -> Result<()> {
        let _ = &self.room;
        connection.send("hello")?;
        Ok(())
    }
}

const HIBERNATE_AFTER: Duration = Duration::from_millis(50);

fn millis(time: SystemTime) -> u64 {
    let since = time.duration_since(UNIX_EPOCH).expect("a time after 1970");
    u64::try_from(since.as_millis()).expect("a time in range")
}

fn now_ms() -> u64 {
    millis(SystemTime::now())
}

// ---------------------------------------------------------------------------------------
// A server with the API on, and a client that checks every answer against the document

/// A test server with the admin token [`TOKEN`], and the document it serves.
struct Inspector {
    server: TestServer,
    api: OpenApi,
}

impl Inspector {
    /// Starts a server (parties `main` and `other`, recording into `probe`) with the
    /// API on, and reads its OpenAPI document, which must be the repository's file.
    async fn start(probe: &Probe) -> Self {
        Self::start_with(probe.server().admin_token(TOKEN)).await
    }

    async fn start_with(server: Server) -> Self {
        init_tracing();
        let server = TestServer::start(server.no_env_file().party::<Chat>().party::<Other>()).await;
        let served = http(server.addr(), "GET", "/__partykit/openapi.json", &[], b"").await;
        assert_eq!(served.status, 200, "{}", served.text());
        assert_eq!(
            served.text(),
            DOCUMENT,
            "the served document is not partykit-runtime/src/inspect/openapi.json"
        );
        let api = OpenApi::new(served.json());
        // The document checks its own answer.
        api.check("GET", "/__partykit/openapi.json", &served)
            .unwrap_or_else(|error| panic!("{error}"));
        Self { server, api }
    }

    fn kit(&self) -> &partykit_runtime::testing::TestServer {
        self.server.kit()
    }

    /// A socket to `party`/`room` with `options`; waits for its greeting.
    async fn join(&self, party: &str, room: &str, options: SocketOptions) -> TestSocket {
        let mut socket = self.kit().socket_with(party, room, options).await;
        assert_eq!(socket.recv_text().await, "hello");
        socket
    }

    /// `method path` with `authorization` as the `Authorization` header (none if
    /// `None`) and `body` as a JSON body; the response must conform to the document.
    async fn call(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<&str>,
    ) -> HttpResponse {
        let mut headers = Vec::new();
        if let Some(value) = authorization {
            headers.push(("Authorization", value));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let response = self
            .server
            .http(method, path, &headers, body.unwrap_or_default().as_bytes())
            .await;
        if let Err(error) = self.api.check(method, path, &response) {
            panic!("{error}");
        }
        response
    }

    /// `method path` with the token.
    async fn send(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        self.call(method, path, Some(&bearer(TOKEN)), body).await
    }

    /// `GET path` with the token; its status must be 200. Returns the JSON body.
    async fn get(&self, path: &str) -> Value {
        let response = self.send("GET", path, None).await;
        assert_eq!(response.status, 200, "GET {path}: {}", response.text());
        response.json()
    }

    /// `GET path` with the token; its status must be `status`, with an error body.
    async fn get_error(&self, path: &str, status: u16) -> String {
        let response = self.send("GET", path, None).await;
        error_of(&response, status, &format!("GET {path}"))
    }

    /// `POST path` with the token and `body`.
    async fn post(&self, path: &str, body: Option<&str>) -> HttpResponse {
        self.send("POST", path, body).await
    }

    /// The live rooms of `party` whose ids start with `prefix`, as listed.
    async fn rooms(&self, party: &str, prefix: &str) -> Vec<Value> {
        let list = self
            .get(&format!("/__partykit/rooms?party={party}&prefix={prefix}"))
            .await;
        list["rooms"].as_array().expect("rooms").clone()
    }

    /// Waits (bounded by [`WAIT`]) until `party`/`room` is no longer live.
    async fn wait_until_gone(&self, party: &str, room: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let detail = self.get(&format!("/__partykit/rooms/{party}/{room}")).await;
            if detail["live"] == false {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{party}/{room} is still live after {WAIT:?}: {detail:#}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The message of `response`, which must be an `{"error": …}` with `status`.
fn error_of(response: &HttpResponse, status: u16, what: &str) -> String {
    assert_eq!(response.status, status, "{what}: {}", response.text());
    let body = response.json();
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not an error body: {body}"));
    assert!(!message.is_empty(), "{what}: an empty error message");
    message.to_owned()
}

/// Every endpoint that needs the token, in an order in which each can succeed on the
/// room [`populate`] makes (the actions last, eviction at the very end).
const PROTECTED: &[(&str, &str)] = &[
    ("GET", "/__partykit/stats"),
    ("GET", "/__partykit/rooms"),
    ("GET", "/__partykit/rooms/main/lobby"),
    ("GET", "/__partykit/rooms/main/lobby/value?key=greeting"),
    ("DELETE", "/__partykit/rooms/main/lobby/alarm"),
    ("POST", "/__partykit/rooms/main/lobby/connections/ann/close"),
    ("POST", "/__partykit/rooms/main/lobby/evict"),
];

/// Opens `main/lobby` with the connection `ann`, a stored key `greeting` and an alarm;
/// returns the socket.
async fn populate(inspector: &Inspector) -> TestSocket {
    let mut ann = inspector
        .join("main", "lobby", SocketOptions::new().id("ann"))
        .await;
    assert_eq!(
        ask(&mut ann, r#"put greeting "hi""#).await,
        "stored greeting"
    );
    assert!(ask(&mut ann, "alarm 60000").await.starts_with("alarm "));
    ann
}

/// Sends `text` on `socket` and returns the next text message.
async fn ask(socket: &mut TestSocket, text: &str) -> String {
    socket.send(text).await;
    socket.recv_text().await
}

// ---------------------------------------------------------------------------------------
// Off, auth, the document

#[tokio::test]
async fn without_an_admin_token_every_path_but_health_is_404() {
    init_tracing();
    let server = TestServer::start(
        Server::new()
            .in_memory()
            .no_env_file()
            .party::<Chat>()
            .party::<Other>(),
    )
    .await;
    let api = OpenApi::new(serde_json::from_str(DOCUMENT).expect("the document is JSON"));
    let mut paths: Vec<(&str, &str)> =
        vec![("GET", "/__partykit/"), ("GET", "/__partykit/openapi.json")];
    paths.extend_from_slice(PROTECTED);
    for (method, path) in paths {
        for authorization in [None, Some(bearer(TOKEN))] {
            let headers: Vec<(&str, &str)> = authorization
                .iter()
                .map(|value| ("Authorization", value.as_str()))
                .collect();
            let response = server.http(method, path, &headers, b"").await;
            api.check(method, path, &response)
                .unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(response.status, 404, "{method} {path}: {}", response.text());
            assert_eq!(response.json(), json!({ "error": OFF }), "{method} {path}");
        }
    }
    // Paths the API does not have are off too.
    let response = server.http("GET", "/__partykit/nothing", &[], b"").await;
    assert_eq!(response.status, 404);
    assert_eq!(response.json(), json!({ "error": OFF }));
    // The health check answers all the same.
    let health = server.http("GET", "/__partykit/health", &[], b"").await;
    api.check("GET", "/__partykit/health", &health)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));
}

#[tokio::test]
async fn every_endpoint_but_health_the_page_and_the_document_needs_the_token() {
    let probe = Probe::new();
    let inspector = Inspector::start(&probe).await;
    let mut ann = populate(&inspector).await;
    let wrong = [
        bearer("wrong"),
        bearer(&format!("{TOKEN}x")),
        bearer(&TOKEN[..TOKEN.len() - 1]),
        bearer(""),
        TOKEN.to_owned(),
        format!("Basic {}", BASE64.encode(format!("admin:{TOKEN}"))),
    ];
    for (method, path) in PROTECTED {
        let what = format!("{method} {path}");
        let refusals = std::iter::once(None).chain(wrong.iter().map(|value| Some(value.as_str())));
        for authorization in refusals {
            let response = inspector.call(method, path, authorization, None).await;
            error_of(&response, 401, &format!("{what} with {authorization:?}"));
            assert_eq!(
                response.header("www-authenticate"),
                Some(r#"Bearer realm="partykit""#),
                "{what}"
            );
        }
        let response = inspector.send(method, path, None).await;
        assert_eq!(response.status, 200, "{what}: {}", response.text());
    }
    // The refused requests did nothing; the accepted ones did: the alarm is gone, ann
    // was closed (once) and the room evicted.
    assert_eq!(ann.closed().await, (1000, String::new()));
    probe.wait_for("close ann", 1).await;
    assert_eq!(probe.count("close ann"), 1);
    assert_eq!(inspector.kit().storage("main", "lobby").alarm().await, None);

    // No token needed, and a wrong one does not matter.
    for authorization in [None, Some(bearer("wrong"))] {
        let health = inspector
            .call("GET", "/__partykit/health", authorization.as_deref(), None)
            .await;
        assert_eq!((health.status, health.text().as_str()), (200, "ok"));
        let page = inspector
            .call("GET", "/__partykit/", authorization.as_deref(), None)
            .await;
        assert_eq!(page.status, 200);
        assert!(
            page.text()
                .to_ascii_lowercase()
                .starts_with("<!doctype html"),
            "{}",
            page.text()
        );
        let document = inspector
            .call(
                "GET",
                "/__partykit/openapi.json",
                authorization.as_deref(),
                None,
            )
            .await;
        assert_eq!(document.text(), DOCUMENT);
    }
}

#[tokio::test]
async fn unknown_paths_answer_404_and_wrong_methods_405_with_json_errors() {
    let probe = Probe::new();
    let inspector = Inspector::start(&probe).await;
    for path in [
        "/__partykit/nothing",
        "/__partykit/rooms/main",
        "/__partykit/rooms/main/lobby/connections",
        "/__partykit/rooms/main/lobby/value/more",
    ] {
        let response = inspector
            .server
            .http("GET", path, &[("Authorization", &bearer(TOKEN))], b"")
            .await;
        error_of(&response, 404, &format!("GET {path}"));
    }
    for (method, path, allowed) in [
        ("POST", "/__partykit/stats", "GET"),
        ("DELETE", "/__partykit/rooms", "GET"),
        ("PUT", "/__partykit/rooms/main/lobby", "GET"),
        ("GET", "/__partykit/rooms/main/lobby/evict", "POST"),
        (
            "GET",
            "/__partykit/rooms/main/lobby/connections/ann/close",
            "POST",
        ),
        ("POST", "/__partykit/rooms/main/lobby/alarm", "DELETE"),
    ] {
        let response = inspector
            .server
            .http(method, path, &[("Authorization", &bearer(TOKEN))], b"")
            .await;
        let what = format!("{method} {path}");
        error_of(&response, 405, &what);
        // RFC 9110 §15.5.6: a 405 lists the methods the resource has.
        let allow = response.header("allow").unwrap_or_default();
        assert!(allow.contains(allowed), "{what}: allow {allow:?}");
    }
}

#[tokio::test]
async fn the_document_is_strict_enough_to_catch_a_wrong_body() {
    let api = OpenApi::new(serde_json::from_str(DOCUMENT).expect("the document is JSON"));
    let document = api.document();
    assert_eq!(document["openapi"], "3.0.3");
    assert_eq!(
        document["components"]["securitySchemes"]["admin"],
        json!({
            "type": "http",
            "scheme": "bearer",
            "description": document["components"]["securitySchemes"]["admin"]["description"],
        })
    );
    assert_eq!(document["security"], json!([{ "admin": [] }]));
    // Only these three are open.
    let mut open = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            if operation.get("security") == Some(&json!([])) {
                open.push(format!("{method} {path}"));
            }
        }
    }
    open.sort();
    assert_eq!(
        open,
        [
            "get /__partykit/",
            "get /__partykit/health",
            "get /__partykit/openapi.json",
        ]
    );

    let schema = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let summary = json!({
        "party": "main", "id": "a", "connections": 1, "hibernating": false,
        "storage": { "keys": 1, "bytes": 3 }, "alarm": null, "node": null,
    });
    api.validate(&schema("RoomSummary"), &summary)
        .expect("a right summary");
    let mut null_storage = summary.clone();
    null_storage["storage"] = Value::Null;
    api.validate(&schema("RoomSummary"), &null_storage)
        .expect("storage may be null");
    let wrong_summaries = [
        ("an extra field", json!({ "extra": 1 })),
        ("a negative count", json!({ "connections": -1 })),
        ("a string alarm", json!({ "alarm": "soon" })),
        ("a null id", json!({ "id": null })),
        (
            "an extra storage field",
            json!({ "storage": { "keys": 1, "bytes": 3, "x": 0 } }),
        ),
        ("a fractional count", json!({ "connections": 1.5 })),
    ];
    for (what, change) in wrong_summaries {
        let mut wrong = summary.clone();
        for (key, value) in change.as_object().expect("an object") {
            wrong[key] = value.clone();
        }
        assert!(
            api.validate(&schema("RoomSummary"), &wrong).is_err(),
            "a summary with {what} passed"
        );
    }
    let mut missing = summary.clone();
    missing.as_object_mut().expect("an object").remove("node");
    assert!(api.validate(&schema("RoomSummary"), &missing).is_err());
    assert!(
        api.validate(&schema("Error"), &json!({ "error": "x", "status": 400 }))
            .is_err()
    );
    assert!(
        api.validate(
            &schema("StoredValue"),
            &json!({
                "key": "k", "bytes": 1, "json": 1, "base64": "not base64!"
            })
        )
        .is_err()
    );
    assert!(
        api.validate(&schema("CloseRequest"), &json!({ "code": 2000 }))
            .is_err()
    );
    api.validate(
        &schema("CloseRequest"),
        &json!({ "code": 4000, "reason": "bye" }),
    )
    .expect("a right close request");
    // A wrong status or content type is caught too.
    let teapot = HttpResponse {
        status: 418,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"error":"x"}"#.to_vec(),
    };
    assert!(api.check("GET", "/__partykit/stats", &teapot).is_err());
    let html = HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "text/html".into())],
        body: b"<html></html>".to_vec(),
    };
    assert!(api.check("GET", "/__partykit/stats", &html).is_err());
    let unauthorized_without_challenge = HttpResponse {
        status: 401,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"error":"x"}"#.to_vec(),
    };
    assert!(
        api.check("GET", "/__partykit/stats", &unauthorized_without_challenge)
            .is_err()
    );
}

// ---------------------------------------------------------------------------------------
// Stats and rooms

/// The figures of `party` in a stats answer.
fn party_stats<'a>(stats: &'a Value, party: &str) -> &'a Value {
    stats["parties"]
        .as_array()
        .expect("parties")
        .iter()
        .find(|figures| figures["party"] == party)
        .unwrap_or_else(|| panic!("no figures for {party}: {stats:#}"))
}

#[tokio::test]
async fn stats_count_each_party_s_rooms_connections_and_traffic() {
    let probe = Probe::new();
    let inspector = Inspector::start(&probe).await;
    let zero = |party: &str| {
        json!({
            "party": party, "rooms": 0, "hibernating": 0, "connections": 0,
            "connections_opened": 0, "messages_in": 0, "messages_out": 0,
            "bytes_in": 0, "bytes_out": 0,
        })
    };
    let before = now_ms();
    let stats = inspector.get("/__partykit/stats").await;
    assert!((before..=now_ms()).contains(&stats["time"].as_u64().expect("time")));
    assert_eq!(stats["parties"].as_array().expect("parties").len(), 2);
    assert_eq!(party_stats(&stats, "main"), &zero("main"));
    assert_eq!(party_stats(&stats, "other"), &zero("other"));

    // Three sockets in one room and one in another; each is greeted ("hello", 5 bytes).
    let mut a = inspector.join("main", "one", SocketOptions::new()).await;
    let mut b = inspector.join("main", "one", SocketOptions::new()).await;
    let mut c = inspector.join("main", "one", SocketOptions::new()).await;
    let mut d = inspector.join("main", "two", SocketOptions::new()).await;
    // One message in (8 bytes), three deliveries out (2 bytes each).
    a.send("shout hi").await;
    for socket in [&mut a, &mut b, &mut c] {
        assert_eq!(socket.recv_text().await, "hi");
    }
    // One in (4 bytes), one out (9 bytes).
    assert_eq!(ask(&mut d, "ping").await, "echo ping");

    let stats = inspector.get("/__partykit/stats").await;
    assert_eq!(
        party_stats(&stats, "main"),
        &json!({
            "party": "main", "rooms": 2, "hibernating": 0, "connections": 4,
            "connections_opened": 4, "messages_in": 2, "messages_out": 4 + 3 + 1,
            "bytes_in": 8 + 4, "bytes_out": 4 * 5 + 3 * 2 + 9,
        })
    );
    assert_eq!(party_stats(&stats, "other"), &zero("other"));

    // A closed connection leaves `connections`, not the counters.
    let c_id = c.id().expect("an id").to_owned();
    c.close(1000, "bye").await;
    probe.wait_for(&format!("close {c_id}"), 1).await;
    let stats = inspector.get("/__partykit/stats").await;
    let main = party_stats(&stats, "main");
    assert_eq!(main["connections"], 3);
    assert_eq!(main["connections_opened"], 4);
    assert_eq!(main["messages_in"], 2);
}

#[tokio::test]
async fn rooms_are_listed_in_pages_sorted_by_party_then_id() {
    let probe = Probe::new();
    let inspector = Inspector::start(&probe).await;
    let mut sockets = Vec::new();
    // Opened out of order; `b` gets two sockets.
    for (party, room) in [
        ("main", "team-2"),
        ("other", "a"),
        ("main", "b"),
        ("main", "a"),
        ("main", "team-1"),
        ("main", "c"),
        ("main", "b"),
    ] {
        let socket = if party == "main" {
            inspector.join(party, room, SocketOptions::new()).await
        } else {
            inspector
                .kit()
                .socket_with(party, room, SocketOptions::new())
                .await
        };
        sockets.push(socket);
    }
    // `main/a` stores two keys and sets an alarm.
    let a = &mut sockets[3];
    assert_eq!(ask(a, "put x [1,2,3]").await, "stored x");
    assert_eq!(ask(a, r#"put y "yes""#).await, "stored y");
    let alarm: u64 = ask(a, "alarm 60000").await["alarm ".len()..]
        .parse()
        .expect("the alarm's time");

    let all = [
        ("main", "a"),
        ("main", "b"),
        ("main", "c"),
        ("main", "team-1"),
        ("main", "team-2"),
        ("other", "a"),
    ];
    let ids = |rooms: &[Value]| -> Vec<(String, String)> {
        rooms
            .iter()
            .map(|room| {
                (
                    room["party"].as_str().expect("party").to_owned(),
                    room["id"].as_str().expect("id").to_owned(),
                )
            })
            .collect()
    };
    let expected = |rooms: &[(&str, &str)]| -> Vec<(String, String)> {
        rooms
            .iter()
            .map(|(party, id)| ((*party).to_owned(), (*id).to_owned()))
            .collect()
    };

    let list = inspector.get("/__partykit/rooms").await;
    assert_eq!(list["next_cursor"], Value::Null);
    let rooms = list["rooms"].as_array().expect("rooms");
    assert_eq!(ids(rooms), expected(&all));
    assert_eq!(
        rooms[0],
        json!({
            "party": "main", "id": "a", "connections": 1, "hibernating": false,
            // Keys and values.
            "storage": { "keys": 2, "bytes": "x[1,2,3]".len() + r#"y"yes""#.len() },
            "alarm": alarm, "node": null,
        })
    );
    assert_eq!(
        rooms[1],
        json!({
            "party": "main", "id": "b", "connections": 2, "hibernating": false,
            "storage": { "keys": 0, "bytes": 0 }, "alarm": null, "node": null,
        })
    );

    // Pages of two, then of four, follow each other without a gap or a repeat.
    for limit in [2, 4] {
        let mut listed = Vec::new();
        let mut path = format!("/__partykit/rooms?limit={limit}");
        loop {
            let page = inspector.get(&path).await;
            let rooms = page["rooms"].as_array().expect("rooms");
            assert!(!rooms.is_empty() && rooms.len() <= limit, "{page:#}");
            listed.extend(ids(rooms));
            match page["next_cursor"].as_str() {
                Some(cursor) => {
                    path = format!("/__partykit/rooms?limit={limit}&cursor={}", encode(cursor));
                }
                None => break,
            }
        }
        assert_eq!(listed, expected(&all), "pages of {limit}");
    }

    // Filters.
    let inspector = &inspector;
    let filtered = |query: &'static str| async move {
        let list = inspector.get(&format!("/__partykit/rooms?{query}")).await;
        ids(list["rooms"].as_array().expect("rooms"))
    };
    assert_eq!(filtered("party=other").await, expected(&[("other", "a")]));
    assert_eq!(
        filtered("party=main&prefix=team-").await,
        expected(&[("main", "team-1"), ("main", "team-2")])
    );
    assert_eq!(
        filtered("prefix=a").await,
        expected(&[("main", "a"), ("other", "a")])
    );
    assert_eq!(filtered("prefix=zzz").await, expected(&[]));
    assert_eq!(filtered("limit=1000").await, expected(&all));

    // Wrong parameters.
    inspector
        .get_error("/__partykit/rooms?party=nope", 404)
        .await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "cursor=%00not-a-cursor",
    ] {
        inspector
            .get_error(&format!("/__partykit/rooms?{query}"), 400)
            .await;
    }
}

#[tokio::test]
async fn a_hibernating_room_shows_as_hibernating_with_its_sockets() {
    let probe = Probe::new();
    let limits = Limits {
        hibernate_after: HIBERNATE_AFTER,
        ..Limits::default()
    };
    let inspector = Inspector::start_with(
        probe
            .server()
            .admin_token(TOKEN)
            .party::<Sleepy>()
            .limits(limits),
    )
    .await;
    let _ann = inspector
        .join("sleepy", "nap", SocketOptions::new().id("ann"))
        .await;
    // Nothing but time makes a room hibernate: wait (bounded) until it shows.
    let deadline = tokio::time::Instant::now() + WAIT;
    let detail = loop {
        let detail = inspector.get("/__partykit/rooms/sleepy/nap").await;
        if detail["hibernating"] == true {
            break detail;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not hibernating after {WAIT:?}: {detail:#}"
        );
        tokio::time::sleep(HIBERNATE_AFTER).await;
    };
    assert_eq!(detail["live"], true);
    assert_eq!(detail["connections"][0]["id"], "ann");
    let rooms = inspector.rooms("sleepy", "").await;
    assert_eq!(
        (
            rooms.len(),
            &rooms[0]["hibernating"],
            &rooms[0]["connections"]
        ),
        (1, &json!(true), &json!(1))
    );
    let stats = inspector.get("/__partykit/stats").await;
    let sleepy = party_stats(&stats, "sleepy");
    assert_eq!(
        (
            &sleepy["rooms"],
            &sleepy["hibernating"],
            &sleepy["connections"]
        ),
        (&json!(1), &json!(1), &json!(1))
    );
}

#[tokio::test]
async fn a_room_shows_its_connections_storage_and_alarm() {
    let probe = Probe::new();
    let inspector = Inspector::start(&probe).await;
    let before = now_ms();
    let mut ann = inspector
        .join(
            "main",
            "detail",
            SocketOptions::new()
                .id("ann")
                .query("name", "ann")
                .query("tags", "red,blue"),
        )
        .await;
    let _bob = inspector
        .join("main", "detail", SocketOptions::new().id("bob"))
        .await;
    let after = now_ms();
    let whoami: Value =
        serde_json::from_str(&ask(&mut ann, "whoami").await).expect("whoami is JSON");
    for command in [
        "put a 1",
        r#"put b "two""#,
        "put c/1 [1,2]",
        r#"put c/2 {"x":true}"#,
        "put-text raw not json",
    ] {
        assert!(ask(&mut ann, command).await.starts_with("stored "));
    }
    let alarm: u64 = ask(&mut ann, "alarm 3600000").await["alarm ".len()..]
        .parse()
        .expect("the alarm's time");

    let detail = inspector.get("/__partykit/rooms/main/detail").await;
    let connections = detail["connections"].as_array().expect("connections");
    assert_eq!(connections.len(), 2, "{detail:#}");
    let connection = |id: &str| {
        connections
            .iter()
            .find(|connection| connection["id"] == id)
            .unwrap_or_else(|| panic!("no connection {id}: {detail:#}"))
            .clone()
    };
    let ann_info = connection("ann");
    let connected_at = ann_info["connected_at"].as_u64().expect("connected_at");
    assert!((before..=after).contains(&connected_at), "{ann_info:#}");
    assert_eq!(
        ann_info,
        json!({
            "id": "ann", "uri": whoami["uri"], "tags": whoami["tags"],
            "state_bytes": r#"{"name":"ann"}"#.len(), "connected_at": connected_at,
            "queued_bytes": 0,
        })
    );
    assert_eq!(whoami["tags"], json!(["ann", "red", "blue"]));
    let bob_info = connection("bob");
    assert_eq!(bob_info["tags"], json!(["bob"]));
    assert_eq!(bob_info["state_bytes"], 0);
    let sizes = [
        ("a", 1),
        ("b", r#""two""#.len()),
        ("c/1", "[1,2]".len()),
        ("c/2", r#"{"x":true}"#.len()),
        ("raw", "not json".len()),
    ];
    let entries = |keys: &[&str]| -> Value {
        keys.iter()
            .map(|key| {
                let bytes = sizes.iter().find(|(own, _)| own == key).expect("a key").1;
                json!({ "key": key, "bytes": bytes })
            })
            .collect()
    };
    // The total counts keys and values; an entry, its value.
    let total: usize = sizes.iter().map(|(key, bytes)| key.len() + bytes).sum();
    assert_eq!(
        detail,
        json!({
            "party": "main", "id": whoami["room"], "live": true, "hibernating": false,
            "node": null, "alarm": alarm,
            "connections": detail["connections"],
            "storage": {
                "keys": 5, "bytes": total,
                "entries": entries(&["a", "b", "c/1", "c/2", "raw"]),
                "next_key": null,
            },
        })
    );

    // Keys a page at a time: every page counts all keys, and the pages follow each
    // other without a gap or a repeat.
    let mut listed = Vec::new();
    let mut path = "/__partykit/rooms/main/detail?keys_limit=2".to_owned();
    loop {
        let storage = inspector.get(&path).await["storage"].clone();
        assert_eq!(
            (storage["keys"].clone(), storage["bytes"].clone()),
            (json!(5), json!(total))
        );
        let page = storage["entries"].as_array().expect("entries");
        assert!(!page.is_empty() && page.len() <= 2, "{storage:#}");
        listed.extend(page.iter().cloned());
        match storage["next_key"].as_str() {
            Some(key) => {
                path = format!(
                    "/__partykit/rooms/main/detail?keys_limit=2&keys_after={}",
                    encode(key)
                );
            }
            None => break,
        }
    }
    assert_eq!(
        Value::from(listed),
        entries(&["a", "b", "c/1", "c/2", "raw"])
    );
    let prefixed = inspector
        .get("/__partykit/rooms/main/detail?key_prefix=c%2F")
        .await;
    assert_eq!(prefixed["storage"]["entries"], entries(&["c/1", "c/2"]));
    assert_eq!(prefixed["storage"]["next_key"], Value::Null);
    let after_b = inspector
        .get("/__partykit/rooms/main/detail?keys_after=b&keys_limit=1000")
        .await;
    assert_eq!(
        after_b["storage"]["entries"],
        entries(&["c/1", "c/2", "raw"])
    );

    // A room that was never opened: not live, nothing stored.
    assert_eq!(
        inspector.get("/__partykit/rooms/main/never").await,
        json!({
            "party": "main", "id": "never", "live": false, "hibernating": false,
            "node": null, "alarm": null, "connections": [],
            "storage": { "keys": 0, "bytes": 0, "entries": [], "next_key": null },
        })
    );
    // A room id is as in /parties/{party}/{room}: percent-encoded.
    let mut spaced = inspector
        .join("main", "a b", SocketOptions::new().id("spaced"))
        .await;
    let whoami: Value =
        serde_json::from_str(&ask(&mut spaced, "whoami").await).expect("whoami is JSON");
    assert_eq!(whoami["room"], "a%20b");
    let detail = inspector.get("/__partykit/rooms/main/a%20b").await;
    assert_eq!(detail["id"], "a%20b");
    assert_eq!(detail["live"], true);
    assert_eq!(detail["connections"][0]["id"], "spaced");

    inspector
        .get_error("/__partykit/rooms/nope/detail", 404)
        .await;
    for query in ["keys_limit=0", "keys_limit=1001", "keys_limit=many"] {
        inspector
            .get_error(&format!("/__partykit/rooms/main/detail?{query}"), 400)
            .await;
    }
}

#[tokio::test]
async fn a_stored_value_shows_as_json_and_base64() {
    let probe = Probe::new();
    let inspector = Inspector::start(&probe).await;
    let mut ann = inspector
        .join("main", "values", SocketOptions::new().id("ann"))
        .await;
    for command in [
        r#"put doc {"list":[1,2],"ok":true}"#,
        "put c/1 7",
        "put-text raw not json",
    ] {
        assert!(ask(&mut ann, command).await.starts_with("stored "));
    }
    let value = |key: &str, bytes: &[u8], json: Value| json!({ "key": key, "bytes": bytes.len(), "json": json, "base64": BASE64.encode(bytes) });
    assert_eq!(
        inspector
            .get("/__partykit/rooms/main/values/value?key=doc")
            .await,
        value(
            "doc",
            br#"{"list":[1,2],"ok":true}"#,
            json!({ "list": [1, 2], "ok": true })
        )
    );
    assert_eq!(
        inspector
            .get("/__partykit/rooms/main/values/value?key=c%2F1")
            .await,
        value("c/1", b"7", json!(7))
    );
    assert_eq!(
        inspector
            .get("/__partykit/rooms/main/values/value?key=raw")
            .await,
        value("raw", b"not json", Value::Null)
    );
    inspector
        .get_error("/__partykit/rooms/main/values/value?key=missing", 404)
        .await;
    inspector
        .get_error("/__partykit/rooms/main/values/value", 400)
        .await;
    inspector
        .get_error("/__partykit/rooms/nope/values/value?key=doc", 404)
        .await;
}

// ---------------------------------------------------------------------------------------
// Actions

#[tokio::test]
async fn closing_a_connection_gives_its_client_the_code_and_reason() {
    let probe = Probe::new();
    let inspector = Inspector::start(&probe).await;
    let mut ann = inspector
        .join("main", "closing", SocketOptions::new().id("ann"))
        .await;
    let mut bob = inspector
        .join("main", "closing", SocketOptions::new().id("bob"))
        .await;
    let mut cat = inspector
        .join("main", "closing", SocketOptions::new().id("cat"))
        .await;
    let close = |id: &str| format!("/__partykit/rooms/main/closing/connections/{id}/close");

    // Refused bodies close nothing.
    let too_long = json!({ "reason": "x".repeat(124) }).to_string();
    let too_long_in_bytes = json!({ "reason": "é".repeat(62) }).to_string();
    for body in [
        r#"{"code": 999}"#,
        r#"{"code": 1001}"#,
        r#"{"code": 1011}"#,
        r#"{"code": 2999}"#,
        r#"{"code": 5000}"#,
        r#"{"code": "4000"}"#,
        r#"{"reason": 7}"#,
        r#"{"code": 4000, "extra": true}"#,
        &too_long,
        &too_long_in_bytes,
        "not json",
        "[]",
    ] {
        let response = inspector.post(&close("ann"), Some(body)).await;
        error_of(&response, 400, &format!("close with {body}"));
    }
    assert_eq!(probe.count("close ann"), 0);

    let response = inspector
        .post(
            &close("ann"),
            Some(r#"{"code": 4000, "reason": "go away"}"#),
        )
        .await;
    assert_eq!(
        (response.status, response.json()),
        (200, json!({ "closed": true }))
    );
    assert_eq!(ann.closed().await, (4000, "go away".to_owned()));
    probe.wait_for("close ann", 1).await;

    // The longest reason, in bytes, is 123.
    let longest = "é".repeat(61) + "x";
    let body = json!({ "code": 3000, "reason": longest }).to_string();
    let response = inspector.post(&close("bob"), Some(&body)).await;
    assert_eq!(
        (response.status, response.json()),
        (200, json!({ "closed": true }))
    );
    assert_eq!(bob.closed().await, (3000, longest));

    // Without a body, or with an empty object: 1000 and no reason.
    let response = inspector.post(&close("cat"), None).await;
    assert_eq!(
        (response.status, response.json()),
        (200, json!({ "closed": true }))
    );
    assert_eq!(cat.closed().await, (1000, String::new()));
    probe.wait_for("close cat", 1).await;
    let mut dan = inspector
        .join("main", "closing", SocketOptions::new().id("dan"))
        .await;
    let response = inspector.post(&close("dan"), Some("{}")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(dan.closed().await, (1000, String::new()));

    // No such connection (any more), room or party.
    probe.wait_for("close dan", 1).await;
    for path in [
        close("ann"),
        close("nobody"),
        "/__partykit/rooms/main/not-live/connections/ann/close".to_owned(),
        "/__partykit/rooms/nope/closing/connections/ann/close".to_owned(),
    ] {
        let response = inspector.post(&path, None).await;
        error_of(&response, 404, &format!("POST {path}"));
    }
}

#[tokio::test]
async fn evicting_a_room_closes_its_sockets_with_1012_and_keeps_its_storage() {
    let probe = Probe::new();
    let inspector = Inspector::start(&probe).await;
    let mut sockets = Vec::new();
    for id in ["ann", "bob", "cat"] {
        sockets.push(
            inspector
                .join("main", "evicted", SocketOptions::new().id(id))
                .await,
        );
    }
    assert_eq!(ask(&mut sockets[0], "put kept 1").await, "stored kept");

    let response = inspector
        .post("/__partykit/rooms/main/evicted/evict", None)
        .await;
    assert_eq!(
        (response.status, response.json()),
        (200, json!({ "evicted": true, "connections": 3 }))
    );
    for socket in &mut sockets {
        assert_eq!(socket.closed().await, (1012, EVICTED.to_owned()));
    }
    for id in ["ann", "bob", "cat"] {
        probe.wait_for(&format!("close {id}"), 1).await;
    }
    // The room leaves memory; what it stored stays.
    inspector.wait_until_gone("main", "evicted").await;
    assert!(inspector.rooms("main", "evicted").await.is_empty());
    let detail = inspector.get("/__partykit/rooms/main/evicted").await;
    assert_eq!(detail["connections"], json!([]));
    assert_eq!(
        detail["storage"]["entries"],
        json!([{ "key": "kept", "bytes": 1 }])
    );
    assert_eq!(
        inspector
            .get("/__partykit/rooms/main/evicted/value?key=kept")
            .await["json"],
        1
    );
    let response = inspector
        .post("/__partykit/rooms/main/evicted/evict", None)
        .await;
    error_of(&response, 404, "evicting a room that is not live");
    let response = inspector
        .post("/__partykit/rooms/nope/evicted/evict", None)
        .await;
    error_of(&response, 404, "evicting a room of an unknown party");

    // A client that reconnects gets a new instance of the room, with its storage.
    assert_eq!(probe.count("new evicted"), 1);
    let _again = inspector
        .join("main", "evicted", SocketOptions::new().id("ann"))
        .await;
    assert_eq!(probe.count("new evicted"), 2);
    assert_eq!(inspector.rooms("main", "evicted").await.len(), 1);
}

#[tokio::test]
async fn deleting_the_alarm_stops_it_from_firing() {
    let probe = Probe::new();
    let inspector = Inspector::start(&probe).await;
    let mut ann = inspector
        .join("main", "alarmed", SocketOptions::new().id("ann"))
        .await;
    let alarm: u64 = ask(&mut ann, "alarm 60000").await["alarm ".len()..]
        .parse()
        .expect("the alarm's time");
    assert_eq!(
        inspector.get("/__partykit/rooms/main/alarmed").await["alarm"],
        alarm
    );

    let delete = "/__partykit/rooms/main/alarmed/alarm";
    let response = inspector.send("DELETE", delete, None).await;
    assert_eq!(
        (response.status, response.json()),
        (200, json!({ "deleted": true }))
    );
    assert_eq!(
        inspector.get("/__partykit/rooms/main/alarmed").await["alarm"],
        Value::Null
    );
    assert_eq!(
        inspector.kit().storage("main", "alarmed").alarm().await,
        None
    );
    assert_eq!(inspector.kit().advance(Duration::from_secs(120)).await, 0);
    assert_eq!(probe.count("alarm alarmed"), 0);
    let response = inspector.send("DELETE", delete, None).await;
    assert_eq!(
        (response.status, response.json()),
        (200, json!({ "deleted": false }))
    );

    // An alarm that is not deleted fires: the advance above would have fired it.
    assert!(ask(&mut ann, "alarm 60000").await.starts_with("alarm "));
    assert_eq!(inspector.kit().advance(Duration::from_secs(120)).await, 1);
    assert_eq!(probe.count("alarm alarmed"), 1);

    let response = inspector
        .send("DELETE", "/__partykit/rooms/nope/alarmed/alarm", None)
        .await;
    error_of(&response, 404, "deleting an alarm of an unknown party");
}

// ---------------------------------------------------------------------------------------
// Schemathesis

/// The checks that apply: no 5xx; statuses, content types, headers and bodies as the
/// document declares them; invalid input refused; 401 without the token; 405 (with
/// `allow`) for other methods. Not `positive_data_acceptance`: a reason of 123
/// characters fits the schema's `maxLength` but not the 123-byte limit.
const SCHEMATHESIS_CHECKS: &str = "not_a_server_error,status_code_conformance,\
content_type_conformance,response_schema_conformance,response_headers_conformance,\
negative_data_rejection,ignored_auth,unsupported_method";

/// Test cases per operation and phase: enough to cover each parameter's boundaries.
const SCHEMATHESIS_EXAMPLES: &str = "100";

/// A hang guard only, not a measure: the run takes well under a minute.
const SCHEMATHESIS_LIMIT: Duration = Duration::from_secs(10 * 60);

/// The `schemathesis` binary: `$SCHEMATHESIS`, else the first on `PATH`.
fn schemathesis() -> Option<PathBuf> {
    partykit_tests::external_tool(
        "SCHEMATHESIS",
        "schemathesis",
        "python3.11 -m pip install -r .ci/schemathesis-requirements.txt",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_answer_that_breaks_the_document() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let probe = Probe::new();
    let inspector = Inspector::start(&probe).await;
    // The room the document's examples name (`main`/`my-room`, key `messages`), with
    // connections, stored keys and an alarm, so that the examples reach real answers.
    let mut sockets = Vec::new();
    for id in ["conn-1", "conn-2"] {
        sockets.push(
            inspector
                .join(
                    "main",
                    "my-room",
                    SocketOptions::new().id(id).query("tags", "t"),
                )
                .await,
        );
    }
    assert!(
        ask(&mut sockets[0], r#"put messages ["hi","there"]"#)
            .await
            .starts_with("stored")
    );
    assert!(
        ask(&mut sockets[0], "put-text raw bytes")
            .await
            .starts_with("stored")
    );
    assert!(
        ask(&mut sockets[0], "alarm 600000")
            .await
            .starts_with("alarm")
    );
    let _other = inspector
        .kit()
        .socket_with("other", "x", SocketOptions::new())
        .await;

    // Run in a directory of its own: nothing it writes lands in the repository.
    let dir = TempDir::new("schemathesis");
    let url = format!("{}/__partykit/openapi.json", inspector.kit().url());
    let mut command = tokio::process::Command::new(&schemathesis);
    command
        .arg("run")
        .arg(&url)
        .args(["--header", &format!("Authorization: {}", bearer(TOKEN))])
        .args(["--checks", SCHEMATHESIS_CHECKS])
        .args(["--max-examples", SCHEMATHESIS_EXAMPLES])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "10"])
        .args(["--workers", "1"])
        .arg("--no-color")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCHEMATHESIS_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis still ran after {SCHEMATHESIS_LIMIT:?}"))
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", schemathesis.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // Every operation was run (none filtered out or skipped whole), but the document's
    // own, which Schemathesis leaves out when it loads the document from the server.
    let operations: usize = serde_json::from_str::<Value>(DOCUMENT).expect("the document is JSON")
        ["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| {
            ["get", "post", "delete"]
                .iter()
                .filter(|method| item.get(**method).is_some())
                .count()
        })
        .sum::<usize>()
        - 1;
    assert!(
        stdout.contains(&format!("Tested: {operations}\n")),
        "schemathesis did not test all {operations} operations:\n{stdout}"
    );
}

// ---------------------------------------------------------------------------------------

/// Percent-encodes `text` for a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
