//! Object-style (legacy) parties over TCP (PartyKit's `export default { … }` style): the `legacy` example driven by
//! a real WebSocket client, and object-style parties against their class-style twins,
//! which must give the same messages, close codes and status codes.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use partykit_examples::legacy::Legacy;
use partykit_runtime::{
    Connection, ConnectionContext, Error, Message, Method, Party, Request, Room, Server,
    StatusCode, party,
};
use partykit_tests::{TestServer, WAIT, WsMessage, init_tracing};
use tracing_subscriber::util::SubscriberInitExt;

// ---------------------------------------------------------------------------------------
// The `legacy` example

#[tokio::test]
async fn the_legacy_example_greets_logs_and_answers() {
    let log = CapturedLog::default();
    let _guard = log.install_for_this_thread();
    let server = TestServer::start(Server::new().in_memory().party::<Legacy>()).await;

    let mut ws = server.connect("/parties/main/lobby").await;
    assert_eq!(ws.recv_text().await, "Hello, world!");
    ws.send_text("hi from the client").await;
    log.wait_for("hi from the client").await;
    // An object-style handler runs in its room's and its sender's spans too.
    let text = log.text();
    let line = text
        .lines()
        .find(|line| line.contains("hi from the client"));
    assert!(
        line.is_some_and(|line| line.contains(r#"room{party="main" room="lobby"}:connection{id=""#)),
        "{line:?}"
    );

    // The room keeps serving: another client (on the short `/party/` path) is greeted.
    let mut other = server.connect("/party/lobby").await;
    assert_eq!(other.recv_text().await, "Hello, world!");

    let response = server.get("/parties/main/lobby").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "Hello from room lobby!");

    // PartyKit's rule: an object with `onMessage` hibernates.
    const { assert!(<Legacy as Party>::OPTIONS.hibernate) };
}

/// The log lines of the current thread (a `#[tokio::test]` runs the server's tasks on it).
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl CapturedLog {
    /// Logs into this buffer until the returned guard is dropped.
    #[must_use]
    fn install_for_this_thread(&self) -> impl Sized {
        let log = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || log.clone())
            .with_ansi(false)
            .finish()
            .set_default()
    }

    fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    async fn wait_for(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.text().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {needle:?} in the log:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Object style against class style
//
// Both twins call the same functions, with the room the object-style party receives as a
// parameter and the class-style party keeps in a field, so any difference comes from how
// `#[party]` adapts object style: which room, which arguments, in which order, and how
// results become messages, close codes and status codes.

fn welcome(connection: &Connection, room: &Room, ctx: &ConnectionContext) -> Result<(), Error> {
    if ctx.request().query("reject").is_some() {
        return Err(Error::msg("rejected by on_connect"));
    }
    connection.send(format!(
        "welcome {} to {}/{} at {}",
        connection.id(),
        room.name(),
        room.id(),
        ctx.request().path()
    ))?;
    room.broadcast(format!("joined {}", connection.id()), &[connection.id()]);
    Ok(())
}

fn reply(message: Message, sender: &Connection, room: &Room) -> Result<(), Error> {
    match message.as_text() {
        Some("fail") => Err(Error::msg("on_message failed on purpose")),
        Some("count") => Ok(sender.send(format!("count {}", room.connection_count()))?),
        Some(text) => {
            room.broadcast(format!("{}: {text}", sender.id()), &[]);
            Ok(())
        }
        None => {
            let mut bytes = message.as_bytes().to_vec();
            bytes.reverse();
            Ok(sender.send(bytes)?)
        }
    }
}

fn left(connection: &Connection, room: &Room) {
    room.broadcast(format!("left {}", connection.id()), &[]);
}

async fn answer(request: Request, room: &Room) -> Result<String, Error> {
    if request.path().ends_with("/teapot") {
        return Err(Error::with_status(
            StatusCode::IM_A_TEAPOT,
            "short and stout",
        ));
    }
    if *request.method() == Method::POST {
        let due = SystemTime::now() + Duration::from_millis(20);
        room.storage().set_alarm(due).await?;
        return Ok("alarm set".to_owned());
    }
    Ok(format!(
        "{} {} {}",
        request.method(),
        room.id(),
        room.connection_count()
    ))
}

fn rang(room: &Room) {
    room.broadcast(format!("alarm in {}", room.id()), &[]);
}

#[party(name = "object")]
struct ObjectStyle;

// Object style on purpose: this test compares it with class style.
#[party]
#[allow(deprecated)]
impl ObjectStyle {
    async fn on_connect(
        connection: &Connection,
        room: &Room,
        ctx: &ConnectionContext,
    ) -> Result<(), Error> {
        welcome(connection, room, ctx)
    }

    fn on_message(message: Message, sender: &Connection, room: &Room) -> Result<(), Error> {
        reply(message, sender, room)
    }

    fn on_close(connection: &Connection, room: &Room) {
        left(connection, room);
    }

    async fn on_request(request: Request, room: &Room) -> Result<String, Error> {
        answer(request, room).await
    }

    fn on_alarm(room: &Room) {
        rang(room);
    }
}

#[party(name = "class")]
struct ClassStyle {
    room: Room,
}

#[party]
impl ClassStyle {
    fn new(room: Room) -> Self {
        ClassStyle { room }
    }

    async fn on_connect(
        &mut self,
        connection: &Connection,
        ctx: &ConnectionContext,
    ) -> Result<(), Error> {
        welcome(connection, &self.room, ctx)
    }

    fn on_message(&mut self, message: Message, sender: &Connection) -> Result<(), Error> {
        reply(message, sender, &self.room)
    }

    fn on_close(&mut self, connection: &Connection) {
        left(connection, &self.room);
    }

    async fn on_request(&mut self, request: Request) -> Result<String, Error> {
        answer(request, &self.room).await
    }

    fn on_alarm(&mut self) {
        rang(&self.room);
    }
}

/// What clients see of `party`, with its name replaced by `<party>`.
async fn transcript(server: &TestServer, party: &str) -> Vec<String> {
    let base = format!("/parties/{party}/room-1");
    let mut seen = Vec::new();

    let mut a = server.connect(&format!("{base}?_pk=a")).await;
    seen.push(a.recv_text().await);
    let mut b = server.connect(&format!("{base}?_pk=b")).await;
    seen.push(b.recv_text().await);
    seen.push(a.recv_text().await);

    a.send_text("hello").await;
    seen.push(a.recv_text().await);
    seen.push(b.recv_text().await);

    // A failing `on_message` is logged; the connection stays open.
    b.send_text("fail").await;
    seen.push(b.ask("count").await);
    b.send_binary(vec![1, 2, 3]).await;
    seen.push(match b.recv().await {
        WsMessage::Binary(bytes) => format!("binary {:?}", &bytes[..]),
        other => format!("unexpected {other:?}"),
    });

    for (method, path) in [
        ("GET", base.clone()),
        ("PUT", format!("{base}/sub/path")),
        ("GET", format!("{base}/teapot")),
        ("POST", base.clone()),
    ] {
        let response = server.http(method, &path, &[], b"").await;
        seen.push(format!(
            "{method} {path}: {} {}",
            response.status,
            response.text()
        ));
    }
    // The alarm set by the POST.
    seen.push(a.recv_text().await);
    seen.push(b.recv_text().await);

    b.close().await;
    seen.push(a.recv_text().await);

    let mut rejected = server.connect(&format!("{base}?_pk=c&reject=1")).await;
    let (code, reason) = rejected.closed().await;
    seen.push(format!("closed {code} {reason}"));

    seen.into_iter()
        .map(|line| line.replace(party, "<party>"))
        .collect()
}

#[tokio::test]
async fn object_style_behaves_as_its_class_style_twin() {
    init_tracing();
    let server = TestServer::start(
        Server::new()
            .in_memory()
            .party::<ObjectStyle>()
            .party::<ClassStyle>(),
    )
    .await;

    let object = transcript(&server, "object").await;
    let class = transcript(&server, "class").await;
    assert_eq!(object, class);

    // And what they both did is what the handlers say.
    assert_eq!(
        object,
        [
            "welcome a to <party>/room-1 at /parties/<party>/room-1",
            "welcome b to <party>/room-1 at /parties/<party>/room-1",
            "joined b",
            "a: hello",
            "a: hello",
            "count 2",
            "binary [3, 2, 1]",
            "GET /parties/<party>/room-1: 200 GET room-1 2",
            "PUT /parties/<party>/room-1/sub/path: 200 PUT room-1 2",
            "GET /parties/<party>/room-1/teapot: 418 short and stout",
            "POST /parties/<party>/room-1: 200 alarm set",
            "alarm in room-1",
            "alarm in room-1",
            "left b",
            "closed 1011 rejected by on_connect",
        ]
    );
}

#[party(name = "greeter-object")]
struct GreeterObject;

#[party]
#[allow(deprecated)]
impl GreeterObject {
    fn on_connect(connection: &Connection) {
        let _ = connection.send("hi");
    }
}

#[party(name = "greeter-class")]
#[derive(Default)]
struct GreeterClass;

#[party]
impl GreeterClass {
    fn on_connect(&mut self, connection: &Connection) {
        let _ = connection.send("hi");
    }
}

#[tokio::test]
async fn without_on_request_both_styles_answer_500() {
    init_tracing();
    let server = TestServer::start(
        Server::new()
            .in_memory()
            .party::<GreeterObject>()
            .party::<GreeterClass>(),
    )
    .await;
    for party in ["greeter-object", "greeter-class"] {
        let mut ws = server.connect(&format!("/parties/{party}/r")).await;
        assert_eq!(ws.recv_text().await, "hi", "{party}");
        let response = server.get(&format!("/parties/{party}/r")).await;
        assert_eq!(
            (response.status, response.text().as_str()),
            (500, "No onRequest handler"),
            "{party}"
        );
    }
    // PartyKit's rule: `onConnect` without `onMessage` does not hibernate.
    const { assert!(!<GreeterObject as Party>::OPTIONS.hibernate) };
    const { assert!(!<GreeterClass as Party>::OPTIONS.hibernate) };
}

#[party(name = "text-only")]
struct TextOnly;

#[party]
#[allow(deprecated)]
impl TextOnly {
    fn on_message(text: String, sender: &Connection) {
        let _ = sender.send(format!("echo {text}"));
    }
}

#[tokio::test]
async fn a_string_message_parameter_takes_text_frames_only() {
    init_tracing();
    let server = TestServer::start(Server::new().in_memory().party::<TextOnly>()).await;
    let mut ws = server.connect("/parties/text-only/r").await;
    // The binary frame is refused (logged) without running the handler; the socket stays.
    ws.send_binary(vec![0xff, 0x00]).await;
    assert_eq!(ws.ask("hello").await, "echo hello");
}
