//! CORS for party routes (`Server::cors`, partyserver's semantics) and project variables
//! (`.env`, `PARTYKIT_VAR_*`, `Server::var`), over TCP.

use partykit_runtime::{
    Before, Connection, ConnectionContext, Cors, Env, Error, FetchLobby, Handlers, IntoResponse,
    Json, Lobby, Party, Request, Response, Result, Room, Server, ServerError, StatusCode,
};
use partykit_tests::{HttpResponse, Probe, TempDir, TestServer, init_tracing, record};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------
// Parties

/// Answers every request with its method and path; sets its own CORS header so the test
/// can see it replaced. `?mode=` makes the hook deny, fail or answer.
struct Main {
    room: Room,
}

fn before(request: Request, lobby: &Lobby) -> Result<Before> {
    record(
        lobby.env(),
        format!("before {} {}", lobby.party(), request.method()),
    );
    match request.query("mode").as_deref() {
        Some("error") => Err(Error::msg("bad token")),
        Some("respond") => Ok(Before::Respond(
            (StatusCode::FORBIDDEN, "denied by hook").into_response(),
        )),
        _ => Ok(Before::Forward(request)),
    }
}

impl Party for Main {
    const HANDLERS: Handlers = Handlers {
        on_fetch: true,
        ..Handlers::DEFAULT
    };

    fn new(room: Room) -> Self {
        Main { room }
    }

    async fn on_before_request(request: Request, lobby: &Lobby) -> Result<Before> {
        before(request, lobby)
    }

    async fn on_before_connect(request: Request, lobby: &Lobby) -> Result<Before> {
        before(request, lobby)
    }

    async fn on_connect(
        &mut self,
        connection: &Connection,
        _ctx: &ConnectionContext,
    ) -> Result<()> {
        connection.send("hello")?;
        Ok(())
    }

    async fn on_request(&mut self, request: Request) -> Result<Response> {
        record(
            self.room.env(),
            format!("request {} {}", self.room.name(), request.method()),
        );
        if request.path().ends_with("/fail") {
            return Err(Error::with_status(
                StatusCode::IM_A_TEAPOT,
                "short and stout",
            ));
        }
        if request.path().ends_with("/env") {
            return Ok(Json(env_json(self.room.env())).into_response());
        }
        Ok((
            [("access-control-allow-origin", "https://own.example")],
            format!("{} {}", request.method(), request.path()),
        )
            .into_response())
    }

    async fn on_fetch(request: Request, lobby: &FetchLobby) -> Result<Option<Response>> {
        if request.path() == "/env" {
            return Ok(Some(Json(env_json(lobby.env())).into_response()));
        }
        Ok(Some(format!("fetch {}", request.path()).into_response()))
    }
}

/// The same behaviour under another name, for a per-party setting.
struct Custom(Main);

impl Party for Custom {
    const NAME: &'static str = "custom";

    fn new(room: Room) -> Self {
        Custom(Main::new(room))
    }

    async fn on_before_request(request: Request, lobby: &Lobby) -> Result<Before> {
        before(request, lobby)
    }

    async fn on_request(&mut self, request: Request) -> Result<Response> {
        self.0.on_request(request).await
    }
}

/// Without CORS.
struct Plain(Main);

impl Party for Plain {
    const NAME: &'static str = "plain";

    fn new(room: Room) -> Self {
        Plain(Main::new(room))
    }

    async fn on_before_request(request: Request, lobby: &Lobby) -> Result<Before> {
        before(request, lobby)
    }

    async fn on_request(&mut self, request: Request) -> Result<Response> {
        self.0.on_request(request).await
    }
}

/// With CORS, but no `on_request`: 500 `No onRequest handler`.
struct NoRequest;

impl Party for NoRequest {
    const NAME: &'static str = "norequest";
    const HANDLERS: Handlers = Handlers {
        on_request: false,
        ..Handlers::DEFAULT
    };

    fn new(_room: Room) -> Self {
        NoRequest
    }
}

fn env_json(env: &Env) -> Value {
    Value::Object(
        env.iter()
            .map(|(name, value)| (name.to_owned(), value.clone()))
            .collect::<Map<String, Value>>(),
    )
}

const CUSTOM: [(&str, &str); 3] = [
    ("Access-Control-Allow-Origin", "https://app.example"),
    ("Access-Control-Allow-Credentials", "true"),
    ("Vary", "Origin"),
];

async fn start(probe: &Probe) -> TestServer {
    init_tracing();
    TestServer::start(
        probe
            .server()
            .no_env_file()
            .party::<Main>()
            .party::<Custom>()
            .party::<Plain>()
            .party::<NoRequest>()
            .cors("main", Cors::On)
            .cors("custom", Cors::headers(CUSTOM))
            .cors("norequest", Cors::On)
            // Set, then switched off again: the last setting wins.
            .cors("plain", Cors::On)
            .cors("plain", Cors::Off),
    )
    .await
}

#[track_caller]
fn assert_default_cors(response: &HttpResponse) {
    let expected = [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-methods", "GET, POST, HEAD, OPTIONS"),
        ("access-control-allow-headers", "*"),
        ("access-control-max-age", "86400"),
    ];
    for (name, value) in expected {
        assert_eq!(response.header(name), Some(value), "{name} of {response:?}");
        let count = response
            .headers
            .iter()
            .filter(|(own, _)| own == name)
            .count();
        assert_eq!(count, 1, "{name} appears {count} times");
    }
}

#[track_caller]
fn assert_no_cors(response: &HttpResponse) {
    let cors: Vec<_> = response
        .headers
        .iter()
        .filter(|(name, _)| {
            name.starts_with("access-control-max") || name == "access-control-allow-methods"
        })
        .collect();
    assert!(cors.is_empty(), "unexpected CORS headers: {cors:?}");
}

// ---------------------------------------------------------------------------------------
// CORS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_is_answered_before_the_hooks_and_the_room() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let preflight = [
        ("Origin", "https://elsewhere.example"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type"),
    ];
    for path in ["/parties/main/r", "/parties/main/r/sub?x=1", "/party/r"] {
        let response = server.http("OPTIONS", path, &preflight, b"").await;
        assert_eq!(response.status, 200, "{path}");
        assert!(response.body.is_empty(), "{path}");
        assert_default_cors(&response);
    }
    // Even a bare OPTIONS (partyserver does not look for the preflight headers).
    let response = server.http("OPTIONS", "/parties/main/r", &[], b"").await;
    assert_eq!(response.status, 200);
    assert_default_cors(&response);
    assert!(
        probe.events().is_empty(),
        "no hook and no room ran: {:?}",
        probe.events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_of_party_routes_get_the_headers() {
    let probe = Probe::new();
    let server = start(&probe).await;
    for (method, path) in [
        ("GET", "/parties/main/r"),
        ("POST", "/parties/main/r/sub"),
        ("DELETE", "/party/r"),
        ("HEAD", "/parties/main/r"),
    ] {
        let response = server
            .http(method, path, &[("Origin", "https://x.example")], b"")
            .await;
        assert_eq!(response.status, 200, "{method} {path}");
        // The room's own `access-control-allow-origin` is replaced, as partyserver's
        // `headers.set` does.
        assert_default_cors(&response);
        if method != "HEAD" {
            assert_eq!(response.text(), format!("{method} {path}"));
        }
    }
    assert_eq!(probe.count("request main POST"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_hook_answers_get_the_headers() {
    let probe = Probe::new();
    let server = start(&probe).await;
    // The hook throws: 401.
    let response = server.get("/parties/main/r?mode=error").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (401, "bad token")
    );
    assert_default_cors(&response);
    // The hook answers.
    let response = server.get("/parties/main/r?mode=respond").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (403, "denied by hook")
    );
    assert_default_cors(&response);
    // The room fails.
    let response = server.get("/parties/main/r/fail").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (418, "short and stout")
    );
    assert_default_cors(&response);
    // No on_request.
    let response = server.get("/parties/norequest/r").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (500, "No onRequest handler")
    );
    assert_default_cors(&response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_party_and_other_paths_get_no_headers() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let response = server.get("/parties/nope/r").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (404, "Party nope not found")
    );
    assert_no_cors(&response);
    assert_eq!(response.header("access-control-allow-origin"), None);
    let response = server.http("OPTIONS", "/parties/nope/r", &[], b"").await;
    assert_eq!(response.status, 404);
    assert_no_cors(&response);
    // Paths outside the parties are on_fetch's business.
    let response = server.get("/api/x").await;
    assert_eq!(response.text(), "fetch /api/x");
    assert_eq!(response.header("access-control-allow-origin"), None);
    let response = server.http("OPTIONS", "/api/x", &[], b"").await;
    assert_eq!(response.text(), "fetch /api/x");
    assert_no_cors(&response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_without_cors_is_left_alone() {
    let probe = Probe::new();
    let server = start(&probe).await;
    // OPTIONS goes through the hook to the room like any method.
    let response = server.http("OPTIONS", "/parties/plain/r", &[], b"").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "OPTIONS /parties/plain/r")
    );
    assert_no_cors(&response);
    // The room's own header stays.
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://own.example")
    );
    assert_eq!(probe.count("before plain OPTIONS"), 1);
    assert_eq!(probe.count("request plain OPTIONS"), 1);
    let response = server.get("/parties/plain/r?mode=error").await;
    assert_eq!(response.status, 401);
    assert_eq!(response.header("access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_replace_the_defaults() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let check = |response: &HttpResponse| {
        for (name, value) in CUSTOM {
            assert_eq!(response.header(name), Some(value), "{name}");
        }
        assert_no_cors(response);
    };
    let response = server.http("OPTIONS", "/parties/custom/r", &[], b"").await;
    assert_eq!(response.status, 200);
    assert!(response.body.is_empty());
    check(&response);
    let response = server.get("/parties/custom/r").await;
    assert_eq!(response.text(), "GET /parties/custom/r");
    check(&response);
    let response = server.get("/parties/custom/r?mode=error").await;
    assert_eq!(response.status, 401);
    check(&response);
    assert!(probe.count("before custom OPTIONS") == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_left_alone() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let mut ws = server.connect("/parties/main/r").await;
    assert_eq!(ws.recv_text().await, "hello");
    ws.close().await;
    // A refused upgrade is not decorated either (partyserver skips WebSocket requests).
    let response = server.refused_upgrade("/parties/main/r?mode=respond").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (403, "denied by hook")
    );
    assert_eq!(response.header("access-control-allow-origin"), None);
    let response = server.refused_upgrade("/parties/main/r?mode=error").await;
    assert_eq!(response.status, 401);
    assert_eq!(response.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn bad_cors_settings_refuse_to_start() {
    let error = Server::new()
        .in_memory()
        .no_env_file()
        .party::<Main>()
        .cors("nope", Cors::On)
        .router()
        .await
        .expect_err("an unknown party");
    assert!(
        matches!(error, ServerError::Cors { ref party, .. } if party == "nope"),
        "{error}"
    );
    assert!(error.to_string().contains("`nope`"), "{error}");

    let error = Server::new()
        .in_memory()
        .no_env_file()
        .party::<Main>()
        .cors("main", Cors::headers([("bad header", "x")]))
        .router()
        .await
        .expect_err("an invalid header");
    assert!(error.to_string().contains("bad header"), "{error}");

    // Off for an unknown party is still a mistake worth reporting.
    let error = Server::new()
        .in_memory()
        .no_env_file()
        .party::<Main>()
        .cors("nope", Cors::Off)
        .router()
        .await
        .expect_err("an unknown party");
    assert!(matches!(error, ServerError::Cors { .. }), "{error}");
}

// ---------------------------------------------------------------------------------------
// Project variables

const DOTENV: &str = r#"
# The project's variables.
API_URL=https://api.example.com   # a comment
MAX_PLAYERS=8
RATIO=0.5
ENABLED=true
NOTHING=null
FEATURES={"chat": true, "rooms": [1, 2]}
VERSION="1.0"
QUOTED_NUMBER='42'
PADDED = spaced out
export EXPORTED=yes
BIG=12345678901234567890123
LEADING_ZERO=0042
EMPTY=
ESCAPES="line\nbreak \"quoted\""
FROM_FILE=file
OVERRIDDEN=file
"#;

fn expected_from_file() -> Value {
    json!({
        "API_URL": "https://api.example.com",
        "MAX_PLAYERS": 8,
        "RATIO": 0.5,
        "ENABLED": true,
        "NOTHING": null,
        "FEATURES": {"chat": true, "rooms": [1, 2]},
        "VERSION": "1.0",
        "QUOTED_NUMBER": "42",
        "PADDED": "spaced out",
        "EXPORTED": "yes",
        "BIG": "12345678901234567890123",
        "LEADING_ZERO": "0042",
        "EMPTY": "",
        "ESCAPES": "line\nbreak \"quoted\"",
        "FROM_FILE": "file",
        "OVERRIDDEN": "file",
    })
}

/// The variables the room, `on_before_request`'s lobby and `on_fetch`'s lobby see, which
/// must be the same.
async fn seen(server: &TestServer) -> Value {
    let room = server.get("/parties/main/r/env").await;
    assert_eq!(room.status, 200, "{}", room.text());
    let fetch = server.get("/env").await;
    assert_eq!(fetch.status, 200, "{}", fetch.text());
    assert_eq!(
        room.json(),
        fetch.json(),
        "the room and on_fetch see different variables"
    );
    room.json()
}

/// A server whose variables tests read; its `.env` is chosen by the caller.
fn env_server() -> Server {
    init_tracing();
    Server::new().in_memory().party::<Main>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_come_from_the_env_file_as_json_or_strings() {
    let dir = TempDir::new("file");
    let file = dir.write("vars.env", DOTENV);
    let server = TestServer::start(env_server().env_file(&file)).await;
    let seen = seen(&server).await;
    // Whatever else the process environment holds, only prefixed variables could add to
    // these (and this test's process sets none).
    let seen_without_prefixed: Map<String, Value> = seen
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| std::env::var_os(format!("PARTYKIT_VAR_{name}")).is_none())
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    assert_eq!(Value::Object(seen_without_prefixed), expected_from_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lobby_of_the_hooks_sees_them_too() {
    // `on_before_request` records what it sees; a dedicated party makes it visible.
    struct Hooked;
    impl Party for Hooked {
        const NAME: &'static str = "hooked";
        fn new(_room: Room) -> Self {
            Hooked
        }
        async fn on_before_request(_request: Request, lobby: &Lobby) -> Result<Before> {
            Ok(Before::Respond(Json(env_json(lobby.env())).into_response()))
        }
    }
    let dir = TempDir::new("lobby");
    let file = dir.write(".env", "FROM_FILE=1\n");
    let server = TestServer::start(
        env_server()
            .party::<Hooked>()
            .env_file(&file)
            .var("FROM_BUILDER", json!({"x": 1})),
    )
    .await;
    let lobby = server.get("/parties/hooked/r").await.json();
    assert_eq!(lobby["FROM_FILE"], 1);
    assert_eq!(lobby["FROM_BUILDER"], json!({"x": 1}));
    assert_eq!(lobby, seen(&server).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_wins_over_the_file() {
    let dir = TempDir::new("builder");
    let file = dir.write(".env", "OVERRIDDEN=file\nFROM_FILE=file\n");
    let server = TestServer::start(
        env_server()
            .env_file(&file)
            .var("OVERRIDDEN", "builder")
            .var("TWICE", 1)
            .var("TWICE", 2),
    )
    .await;
    let seen = seen(&server).await;
    assert_eq!(seen["OVERRIDDEN"], "builder");
    assert_eq!(seen["FROM_FILE"], "file");
    assert_eq!(seen["TWICE"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_environment_does_not_leak_in() {
    let dir = TempDir::new("leak");
    let file = dir.write(".env", "A=1\n");
    let server = TestServer::start(env_server().env_file(&file)).await;
    let seen = seen(&server).await;
    assert!(
        std::env::var_os("PATH").is_some(),
        "the test expects PATH to be set"
    );
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("PARTYKIT_VAR_") {
            continue;
        }
        assert!(
            seen.get(name).is_none(),
            "process variable {name} leaked into room.env"
        );
    }
    assert!(seen.get("PATH").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_env_file_is_fine() {
    let dir = TempDir::new("missing");
    let server = TestServer::start(
        env_server()
            .env_file(dir.path().join("does-not-exist.env"))
            .var("ONLY", "builder"),
    )
    .await;
    assert_eq!(seen(&server).await["ONLY"], "builder");
}

#[tokio::test]
async fn a_malformed_env_file_refuses_to_start_naming_the_line() {
    let dir = TempDir::new("malformed");
    let file = dir.write("bad.env", "# ok\nGOOD=1\n\nthis line is wrong\nLATER=2\n");
    let error = Server::new()
        .in_memory()
        .env_file(&file)
        .router()
        .await
        .expect_err("a malformed line");
    match &error {
        ServerError::EnvFile {
            path,
            line,
            message,
        } => {
            assert_eq!(path, &file);
            assert_eq!(*line, 4);
            assert!(message.contains("this line is wrong"), "{message}");
        }
        other => panic!("expected EnvFile, got {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains("bad.env") && text.contains("line 4"),
        "{text}"
    );

    for (contents, line) in [
        ("A=\"unterminated\n", 1),
        ("OK=1\n1BAD=x\n", 2),
        ("A='x' trailing\n", 1),
    ] {
        let file = dir.write("more.env", contents);
        match Server::new().in_memory().env_file(&file).router().await {
            Err(ServerError::EnvFile { line: at, .. }) => assert_eq!(at, line, "{contents:?}"),
            other => panic!("{contents:?}: expected EnvFile, got {:?}", other.err()),
        }
    }

    // A directory where the file should be cannot be read.
    let error = Server::new()
        .in_memory()
        .env_file(dir.path())
        .router()
        .await
        .expect_err("a directory");
    assert!(matches!(error, ServerError::ReadEnvFile { .. }), "{error}");
}

// The process environment and the default `.env` of the current directory are per
// process: a child process (this test binary again, running only `child_sees_*`) gets
// them, so that no test of this process changes its own environment or directory.

const CHILD_MARKER: &str = "PARTYKIT_TEST_ENV_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_variables_and_the_default_env_file() {
    let dir = TempDir::new("child");
    dir.write(
        ".env",
        "FROM_FILE=file\nOVERRIDDEN_BY_PROCESS=file\nOVERRIDDEN_BY_BUILDER=file\n",
    );
    let unique = format!("P{}", std::process::id());
    let output = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "child_sees_the_environment",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .current_dir(dir.path())
        .env(CHILD_MARKER, &unique)
        .env("PARTYKIT_VAR_FROM_PROCESS", r#"{"n": 1}"#)
        .env("PARTYKIT_VAR_PLAIN", "plain text")
        .env("PARTYKIT_VAR_NUMBER", "7")
        .env("PARTYKIT_VAR_OVERRIDDEN_BY_PROCESS", "process")
        .env("PARTYKIT_VAR_OVERRIDDEN_BY_BUILDER", "process")
        .env(format!("PARTYKIT_VAR_{unique}_case"), "kept")
        .env("PARTYKIT_VAR_", "no name")
        .env("NOT_PREFIXED_SECRET", "hidden")
        .output()
        .await
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the child failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(
        stdout.contains("child checked the environment"),
        "the child did not run its checks\n--- stdout\n{stdout}"
    );
}

/// Does nothing unless started by `process_variables_and_the_default_env_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_sees_the_environment() {
    let Ok(unique) = std::env::var(CHILD_MARKER) else {
        return;
    };
    // `Server::new()` reads `.env` from the current directory, which the parent chose
    // (the test kit would not: this is a plain server).
    let server =
        TestServer::start_plain(env_server().var("OVERRIDDEN_BY_BUILDER", "builder")).await;
    let seen = seen(&server).await;
    let expected = json!({
        "FROM_FILE": "file",
        "FROM_PROCESS": {"n": 1},
        "PLAIN": "plain text",
        "NUMBER": 7,
        // builder > process > .env
        "OVERRIDDEN_BY_PROCESS": "process",
        "OVERRIDDEN_BY_BUILDER": "builder",
        format!("{unique}_case"): "kept",
    });
    // Prefixed variables the parent inherited from its own environment may add more;
    // none of the rest of the process environment may.
    let seen = seen.as_object().unwrap();
    for (name, value) in expected.as_object().unwrap() {
        assert_eq!(seen.get(name), Some(value), "{name}");
    }
    for name in seen.keys() {
        assert!(
            expected.get(name).is_some()
                || std::env::var_os(format!("PARTYKIT_VAR_{name}")).is_some(),
            "{name} is not a project variable"
        );
    }
    for absent in [
        "PATH",
        "HOME",
        "NOT_PREFIXED_SECRET",
        CHILD_MARKER,
        "",
        "PARTYKIT_VAR_PLAIN",
    ] {
        assert!(seen.get(absent).is_none(), "{absent:?} leaked");
    }

    // `no_env_file` skips the file, not the process variables.
    let server = TestServer::start(env_server().no_env_file()).await;
    let seen = self::seen(&server).await;
    assert!(seen.get("FROM_FILE").is_none());
    assert_eq!(seen["FROM_PROCESS"], json!({"n": 1}));
    println!("child checked the environment");
}
