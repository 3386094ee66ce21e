//! Room lifecycle and the server itself: `on_start`
//! ordering and retries, panics, idle eviction, party names, graceful shutdown.

use std::time::Duration;

use futures_util::future::join_all;
use partykit_runtime::{
    Connection, ConnectionContext, Error, IntoResponse, Limits, Message, Party, Request, Response,
    Result, Room, Server, ServerError, StatusCode,
};
use partykit_tests::{Probe, TestServer, error_id, init_tracing, record, recorded};

/// Records its lifecycle. The room id's prefix chooses how `new` and `on_start` behave
/// (they see no request): `slow-start…` sleeps in `on_start`, `fail-start…` fails its
/// first `on_start`, `panic-start…` panics in it, `panic-new…` panics in its first `new`.
struct Main {
    room: Room,
}

impl Main {
    fn record(&self, event: &str) {
        record(self.room.env(), format!("{event} {}", self.room.id()));
    }

    fn first_time(&self, event: &str) -> bool {
        recorded(self.room.env(), &format!("{event} {}", self.room.id())) == 1
    }
}

impl Party for Main {
    fn new(room: Room) -> Self {
        let party = Main { room };
        party.record("new");
        if party.room.id().starts_with("panic-new") && party.first_time("new") {
            panic!("boom in new");
        }
        party
    }

    async fn on_start(&mut self) -> Result<()> {
        self.record("start-begin");
        let id = self.room.id().to_owned();
        if id.starts_with("slow-start") {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if id.starts_with("fail-start") && self.first_time("start-begin") {
            return Err(Error::with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready yet",
            ));
        }
        if id.starts_with("panic-start") && self.first_time("start-begin") {
            panic!("boom in on_start");
        }
        self.record("start-end");
        Ok(())
    }

    async fn on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext) -> Result<()> {
        self.record("connect");
        if ctx.request().query("panic").is_some() {
            panic!("boom in on_connect");
        }
        connection.send("hello")?;
        Ok(())
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        self.record("message");
        if message.as_text() == Some("panic") {
            panic!("boom in on_message");
        }
        sender.send(message)?;
        Ok(())
    }

    async fn on_close(&mut self, _connection: &Connection) -> Result<()> {
        self.record("close");
        Ok(())
    }

    async fn on_request(&mut self, request: Request) -> Result<Response> {
        self.record("request");
        if request.path().ends_with("/panic") {
            panic!("boom in on_request");
        }
        Ok(format!("ok {}", self.room.id()).into_response())
    }
}

impl Drop for Main {
    fn drop(&mut self) {
        self.record("drop");
    }
}

async fn start(probe: &Probe) -> TestServer {
    init_tracing();
    TestServer::start(probe.server().party::<Main>()).await
}

/// The events of one room, without the room id.
fn events_of(probe: &Probe, room: &str) -> Vec<String> {
    let suffix = format!(" {room}");
    probe
        .events()
        .iter()
        .filter_map(|event| event.strip_suffix(&suffix).map(str::to_owned))
        .collect()
}

fn count(probe: &Probe, event: &str, room: &str) -> usize {
    probe.count(&format!("{event} {room}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_start_runs_once_before_any_event_even_with_concurrent_first_events() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let room = "slow-start";
    let path = format!("/parties/main/{room}");
    let requests = join_all((0..6).map(|_| server.get(&path)));
    let sockets = join_all((0..2).map(|_| async {
        let mut ws = server.connect(&path).await;
        ws.send_text("sent at once").await;
        assert_eq!(ws.recv_text().await, "hello");
        assert_eq!(ws.recv_text().await, "sent at once");
        ws
    }));
    let (responses, _sockets) = tokio::join!(requests, sockets);
    for response in responses {
        assert_eq!(
            (response.status, response.text()),
            (200, format!("ok {room}"))
        );
    }
    let events = events_of(&probe, room);
    assert_eq!(
        events[..3],
        ["new", "start-begin", "start-end"],
        "{events:#?}"
    );
    let rest = &events[3..];
    assert!(
        rest.iter()
            .all(|event| ["request", "connect", "message"].contains(&event.as_str())),
        "{events:#?}"
    );
    assert_eq!(rest.iter().filter(|event| *event == "request").count(), 6);
    assert_eq!(rest.iter().filter(|event| *event == "connect").count(), 2);
    assert_eq!(rest.iter().filter(|event| *event == "message").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_on_start_fails_the_triggering_request_and_is_retried() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let response = server.get("/parties/main/fail-start").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (503, "not ready yet")
    );
    let response = server.get("/parties/main/fail-start").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "ok fail-start")
    );
    assert_eq!(
        events_of(&probe, "fail-start"),
        [
            "new",
            "start-begin",
            "drop",
            "new",
            "start-begin",
            "start-end",
            "request"
        ]
    );
    let response = server.get("/parties/main/fail-start").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        count(&probe, "new", "fail-start"),
        2,
        "not rebuilt once started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_on_start_refuses_the_triggering_upgrade_with_http() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let refused = server.refused_upgrade("/parties/main/fail-start-ws").await;
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (503, "not ready yet")
    );
    let mut ws = server.connect("/parties/main/fail-start-ws").await;
    assert_eq!(ws.recv_text().await, "hello");
    assert_eq!(count(&probe, "start-end", "fail-start-ws"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_on_request_answers_500_and_the_room_is_rebuilt() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let response = server.get("/parties/main/p").await;
    assert_eq!(response.status, 200);
    let response = server.get("/parties/main/p/panic").await;
    assert_eq!(response.status, 500, "{}", response.text());
    // A panic is internal: the client gets an id, not the panic's message.
    let text = response.text();
    assert_eq!(
        error_id(&text),
        response.header("x-partykit-error-id"),
        "{text}"
    );
    assert!(
        error_id(&text).is_some() && !text.contains("boom"),
        "{text}"
    );
    // The server keeps running; the room is rebuilt on its next event.
    let response = server.get("/parties/main/p").await;
    assert_eq!((response.status, response.text().as_str()), (200, "ok p"));
    assert_eq!(
        events_of(&probe, "p"),
        [
            "new",
            "start-begin",
            "start-end",
            "request",
            "request",
            "drop",
            "new",
            "start-begin",
            "start-end",
            "request"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_on_message_keeps_the_connection_and_rebuilds_the_room() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let mut ws = server.connect("/parties/main/m").await;
    assert_eq!(ws.recv_text().await, "hello");
    ws.send_text("panic").await;
    assert_eq!(ws.ask("still open").await, "still open");
    assert_eq!(count(&probe, "new", "m"), 2, "{:?}", probe.events());
    assert_eq!(count(&probe, "start-end", "m"), 2, "{:?}", probe.events());
    // The rebuilt value sees the connection.
    ws.close().await;
    probe.wait_for("close m", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_on_connect_closes_with_1011() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let mut ws = server.connect("/parties/main/c?panic").await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 1011, "{reason}");
    assert!(error_id(&reason).is_some(), "{reason}");
    assert!(!reason.contains("boom"), "{reason}");
    let mut ws = server.connect("/parties/main/c").await;
    assert_eq!(ws.recv_text().await, "hello");
    assert_eq!(count(&probe, "new", "c"), 2, "{:?}", probe.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_new_or_on_start_answers_500_and_is_retried() {
    let probe = Probe::new();
    let server = start(&probe).await;
    for room in ["panic-new", "panic-start"] {
        let path = format!("/parties/main/{room}");
        let response = server.get(&path).await;
        assert_eq!(response.status, 500, "{room}: {}", response.text());
        let text = response.text();
        assert!(
            error_id(&text).is_some() && !text.contains("boom"),
            "{room}: {text}"
        );
        let response = server.get(&path).await;
        assert_eq!(
            (response.status, response.text()),
            (200, format!("ok {room}"))
        );
        assert_eq!(count(&probe, "new", room), 2, "{:?}", probe.events());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_room_is_evicted_and_rebuilt_on_its_next_event() {
    init_tracing();
    let probe = Probe::new();
    let server = TestServer::start(probe.server().party::<Main>().limits(Limits {
        room_idle_timeout: Duration::from_millis(100),
        ..Limits::default()
    }))
    .await;
    let response = server.get("/parties/main/idle").await;
    assert_eq!(response.status, 200);
    probe.wait_for("drop idle", 1).await;
    let response = server.get("/parties/main/idle").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "ok idle")
    );
    assert_eq!(
        events_of(&probe, "idle"),
        [
            "new",
            "start-begin",
            "start-end",
            "request",
            "drop",
            "new",
            "start-begin",
            "start-end",
            "request"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_with_a_connection_is_not_evicted() {
    init_tracing();
    let probe = Probe::new();
    let idle = Duration::from_millis(100);
    let server = TestServer::start(probe.server().party::<Main>().limits(Limits {
        room_idle_timeout: idle,
        ..Limits::default()
    }))
    .await;
    let mut ws = server.connect("/parties/main/busy").await;
    assert_eq!(ws.recv_text().await, "hello");
    // Several idle timeouts without an event.
    tokio::time::sleep(idle * 5).await;
    assert_eq!(count(&probe, "drop", "busy"), 0, "{:?}", probe.events());
    assert_eq!(ws.ask("still here").await, "still here");
    let response = server.get("/parties/main/busy").await;
    assert_eq!(response.status, 200);
    assert_eq!(count(&probe, "new", "busy"), 1, "{:?}", probe.events());

    // Once the last connection is gone, the room is evicted.
    ws.close().await;
    probe.wait_for("drop busy", 1).await;
    let events = events_of(&probe, "busy");
    assert_eq!(events[events.len() - 2..], ["close", "drop"], "{events:#?}");
}

struct Twin;

impl Party for Twin {
    const NAME: &'static str = "twin";

    fn new(_room: Room) -> Self {
        Twin
    }
}

struct OtherTwin;

impl Party for OtherTwin {
    const NAME: &'static str = "twin";

    fn new(_room: Room) -> Self {
        OtherTwin
    }
}

struct Uppercase;

impl Party for Uppercase {
    const NAME: &'static str = "Chat";

    fn new(_room: Room) -> Self {
        Uppercase
    }
}

struct Spaced;

impl Party for Spaced {
    const NAME: &'static str = "my party";

    fn new(_room: Room) -> Self {
        Spaced
    }
}

struct Unnamed;

impl Party for Unnamed {
    const NAME: &'static str = "";

    fn new(_room: Room) -> Self {
        Unnamed
    }
}

/// `serve` refuses `server` before serving.
async fn serve_error(server: Server) -> ServerError {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    match partykit_tests::within(
        "serve to fail",
        server.serve(listener, std::future::pending()),
    )
    .await
    {
        Ok(()) => panic!("serve accepted the server"),
        Err(error) => error,
    }
}

#[tokio::test]
async fn two_parties_with_one_name_are_refused() {
    let error = serve_error(
        Server::new()
            .in_memory()
            .party::<Twin>()
            .party::<OtherTwin>(),
    )
    .await;
    assert!(
        matches!(error, ServerError::DuplicateParty("twin")),
        "{error:?}"
    );
    // The same party twice, too.
    let error = serve_error(Server::new().in_memory().party::<Twin>().party::<Twin>()).await;
    assert!(
        matches!(error, ServerError::DuplicateParty("twin")),
        "{error:?}"
    );
    let Err(error) = Server::new()
        .in_memory()
        .party::<Twin>()
        .party::<OtherTwin>()
        .router()
        .await
    else {
        panic!("router accepted two parties named twin");
    };
    assert!(
        matches!(error, ServerError::DuplicateParty("twin")),
        "{error:?}"
    );
}

#[tokio::test]
async fn invalid_party_names_are_refused() {
    let error = serve_error(Server::new().in_memory().party::<Uppercase>()).await;
    assert!(
        matches!(error, ServerError::InvalidPartyName("Chat")),
        "{error:?}"
    );
    let error = serve_error(Server::new().in_memory().party::<Spaced>()).await;
    assert!(
        matches!(error, ServerError::InvalidPartyName("my party")),
        "{error:?}"
    );
    let error = serve_error(Server::new().in_memory().party::<Unnamed>()).await;
    assert!(
        matches!(error, ServerError::InvalidPartyName("")),
        "{error:?}"
    );
    assert!(!error.to_string().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_open_sockets_with_1001_and_stops_serving() {
    let probe = Probe::new();
    let mut server = start(&probe).await;
    let mut first = server.connect("/parties/main/one").await;
    let mut second = server.connect("/parties/main/two").await;
    assert_eq!(first.recv_text().await, "hello");
    assert_eq!(second.recv_text().await, "hello");
    let addr = server.addr();

    server.trigger_shutdown();
    for ws in [&mut first, &mut second] {
        let (code, reason) = ws.closed().await;
        assert_eq!(code, 1001, "{reason}");
    }
    server.stopped().await.expect("serve returned an error");
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn dropping_the_runtime_with_open_sockets_does_not_hang() {
    // A server embedded in a runtime that is dropped (as at the end of every
    // `#[tokio::test]`) with sockets still open: the socket tasks see their peers go while
    // the runtime refuses new tasks, and must not spin trying to reach their rooms.
    for round in 0..10 {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let probe = Probe::new();
                let server = start(&probe).await;
                let sockets = join_all((0..50).map(|room| {
                    let server = &server;
                    async move {
                        let mut ws = server.connect(&format!("/parties/main/r{room}")).await;
                        assert_eq!(ws.recv_text().await, "hello");
                        ws
                    }
                }))
                .await;
                // The clients go, and right after them the runtime.
                drop(sockets);
                drop(server);
            });
            drop(runtime);
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("round {round}: dropping the runtime did not finish"));
    }
}
