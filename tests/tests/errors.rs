//! What clients are told when things fail: internal errors hide their text behind an id
//! that the log carries too; deliberate errors keep their status and message; a panic in
//! a static hook answers 500 (or is logged) and the server keeps serving.

use partykit_runtime::{
    Before, Connection, ConnectionContext, Cron, CronLobby, Error, FetchLobby, FetchSocket, Lobby,
    Request, Result, Room, Server, StatusCode, party,
};
use partykit_tests::{HttpResponse, Logs, TestServer, error_id};

/// The text of an internal failure: it must reach the log, never a client.
const SECRET: &str = "/var/lib/secret-db-path.sqlite3";

fn internal_failure() -> Result<()> {
    let error = std::io::Error::other(format!("cannot open {SECRET}"));
    Err(error)?;
    Ok(())
}

#[party]
struct Main {
    room: Room,
}

#[party]
impl Main {
    fn new(room: Room) -> Self {
        Main { room }
    }

    fn on_before_connect(request: Request, _lobby: &Lobby) -> Result<Before> {
        match request.query("hook").as_deref() {
            Some("panic") => panic!("boom in on_before_connect {SECRET}"),
            Some("internal") => internal_failure().map(|()| request.into()),
            _ => Ok(request.into()),
        }
    }

    fn on_before_request(request: Request, _lobby: &Lobby) -> Result<Before> {
        match request.query("hook").as_deref() {
            Some("panic") => panic!("boom in on_before_request {SECRET}"),
            Some("internal") => internal_failure().map(|()| request.into()),
            Some("refuse") => Err(Error::msg("no entry")),
            _ => Ok(request.into()),
        }
    }

    fn on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext) -> Result<()> {
        match ctx.request().query("connect").as_deref() {
            Some("internal") => internal_failure(),
            Some("refuse") => Err(Error::msg("room is full")),
            _ => {
                connection.send(format!("hello {}", self.room.id()))?;
                Ok(())
            }
        }
    }

    fn on_request(&mut self, request: Request) -> Result<String> {
        match request.path().rsplit('/').next() {
            Some("internal") => internal_failure().map(|()| String::new()),
            Some("deliberate") => Err(Error::msg("it broke")),
            Some("teapot") => Err(Error::with_status(
                StatusCode::IM_A_TEAPOT,
                "short and stout",
            )),
            Some("converted-with-status") => {
                let parsed: u32 = "x".parse().map_err(|error: std::num::ParseIntError| {
                    Error::new(error).status_code(StatusCode::BAD_REQUEST)
                })?;
                Ok(parsed.to_string())
            }
            _ => Ok(format!("ok {}", self.room.id())),
        }
    }

    fn on_fetch(request: Request, _lobby: &FetchLobby) -> Result<Option<String>> {
        match request.path() {
            "/panic" => panic!("boom in on_fetch {SECRET}"),
            "/internal" => internal_failure().map(|()| None),
            "/teapot" => Err(Error::with_status(StatusCode::IM_A_TEAPOT, "I'm a teapot")),
            "/hello" => Ok(Some("hello".to_owned())),
            _ => Ok(None),
        }
    }

    async fn on_socket(mut socket: FetchSocket, _lobby: &FetchLobby) {
        if socket.request().path() == "/panic" {
            panic!("boom in on_socket {SECRET}");
        }
        while let Some(Ok(frame)) = socket.recv().await {
            if socket.send(frame).await.is_err() {
                break;
            }
        }
    }

    fn on_cron(cron: Cron, _lobby: &CronLobby) {
        if cron.name() == "panics" {
            panic!("boom in on_cron {SECRET}");
        }
    }
}

async fn start() -> TestServer {
    TestServer::start(
        Server::new()
            .in_memory()
            .no_env_file()
            .party::<Main>()
            .cron("panics", "0 3 1 1 *")
            .scheduled_token("t"),
    )
    .await
}

/// An internal error's response: 500 (or `status`), an id in the body and the header,
/// nothing of the secret; the log has the detail under the same id.
#[track_caller]
fn assert_hidden(logs: &Logs, response: &HttpResponse, status: u16, detail: &str) {
    let text = response.text();
    assert_eq!(response.status, status, "{text}");
    assert!(!text.contains(SECRET) && !text.contains("boom"), "{text}");
    let id = error_id(&text).unwrap_or_else(|| panic!("no error id in {text:?}"));
    assert_eq!(response.header("x-partykit-error-id"), Some(id), "{text}");
    let lines = logs.lines_with(id);
    assert!(
        lines
            .iter()
            .any(|line| line.contains(detail) && line.contains("ERROR")),
        "the log has no error line with {id} and {detail:?}: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_answer_a_generic_500_with_an_id_that_the_log_has() {
    let logs = Logs::capture();
    let server = start().await;
    let room = server.get("/parties/main/r/internal").await;
    assert_hidden(&logs, &room, 500, SECRET);
    assert!(
        room.text().starts_with("Internal error (error id "),
        "{}",
        room.text()
    );
    let fetch = server.get("/internal").await;
    assert_hidden(&logs, &fetch, 500, SECRET);
    // Two failures, two ids.
    assert_ne!(error_id(&room.text()), error_id(&fetch.text()));
    // A hook's internal error stays a refusal (401), with an id instead of the text.
    let hook = server.get("/parties/main/r?hook=internal").await;
    assert_hidden(&logs, &hook, 401, SECRET);
    assert!(
        hook.text().starts_with("Unauthorised (error id "),
        "{}",
        hook.text()
    );
    let upgrade = server
        .refused_upgrade("/parties/main/r?hook=internal")
        .await;
    assert_hidden(&logs, &upgrade, 401, SECRET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliberate_errors_keep_their_status_and_message() {
    let server = start().await;
    let cases = [
        ("/parties/main/r/deliberate", 500, "it broke"),
        ("/parties/main/r/teapot", 418, "short and stout"),
        (
            "/parties/main/r/converted-with-status",
            400,
            "invalid digit found in string",
        ),
        ("/parties/main/r?hook=refuse", 401, "no entry"),
        ("/teapot", 418, "I'm a teapot"),
    ];
    for (path, status, body) in cases {
        let response = server.get(path).await;
        assert_eq!(
            (response.status, response.text().as_str()),
            (status, body),
            "{path}"
        );
        assert_eq!(response.header("x-partykit-error-id"), None, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_on_connect_error_closes_1011_with_an_id() {
    let logs = Logs::capture();
    let server = start().await;
    let mut ws = server.connect("/parties/main/r?connect=internal").await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 1011, "{reason}");
    assert!(!reason.contains(SECRET), "{reason}");
    let id = error_id(&reason).unwrap_or_else(|| panic!("no error id in {reason:?}"));
    assert!(
        logs.lines_with(id).iter().any(|line| line.contains(SECRET)),
        "{:?}",
        logs.lines_with(id)
    );
    // A deliberate refusal keeps its message.
    let mut ws = server.connect("/parties/main/r?connect=refuse").await;
    assert_eq!(ws.closed().await, (1011, "room is full".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_static_hook_answers_500_and_the_server_keeps_serving() {
    let logs = Logs::capture();
    let server = start().await;
    let cases = [
        (
            "on_before_request",
            server.get("/parties/main/r?hook=panic").await,
        ),
        (
            "on_before_connect",
            server.refused_upgrade("/parties/main/r?hook=panic").await,
        ),
        ("on_fetch", server.get("/panic").await),
        (
            "on_cron",
            server
                .http(
                    "GET",
                    "/__scheduled__?cron=panics",
                    &[("authorization", "Bearer t")],
                    b"",
                )
                .await,
        ),
    ];
    for (hook, response) in &cases {
        assert_hidden(
            &logs,
            response,
            500,
            &format!("{hook} panicked: boom in {hook}"),
        );
    }
    // Every path still works.
    assert_eq!(server.get("/parties/main/r").await.text(), "ok r");
    assert_eq!(server.get("/hello").await.text(), "hello");
    let mut ws = server.connect("/parties/main/r").await;
    assert_eq!(ws.recv_text().await, "hello r");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_on_socket_is_logged_and_the_server_keeps_serving() {
    let logs = Logs::capture();
    let server = start().await;
    let mut ws = server.connect("/panic").await;
    // The socket comes back to the runtime when the panicked hook is dropped: it is
    // closed with 1011 and an error id; the panic is logged with the same id.
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 1011, "{reason}");
    let id = error_id(&reason).expect("an error id in the close reason");
    assert!(
        !reason.contains("boom"),
        "the panic's text is not shown: {reason}"
    );
    let logged = logs.wait_for("on_socket panicked: boom in on_socket").await;
    assert!(
        logged.iter().any(|line| line.contains(id)),
        "logged with the id {id}: {logged:?}"
    );
    let mut echo = server.connect("/echo").await;
    assert_eq!(echo.ask("still here").await, "still here");
}
