//! Static hooks in both handler styles (`on_before_*`, `on_fetch`, `on_socket`, `on_cron`), calls between rooms, and the
//! `auth`, `multi-party` and `cursors` examples, over TCP.

use partykit_examples::auth::Auth;
use partykit_examples::cursors::{self, Cursors};
use partykit_examples::multi_party::{Chat, LobbyParty};
use partykit_runtime::{
    Before, Connection, ConnectionContext, Cron, CronLobby, Error, FetchLobby, FetchSocket,
    IntoResponse, Json, Lobby, Message, Method, Request, Result, Room, Server, ServerError,
    StatusCode, party,
};
use partykit_tests::{HttpResponse, Probe, TestServer, WAIT, Ws, init_tracing, record, within};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// `on_before_connect` / `on_before_request`, class and object style

/// Both styles' hooks: `?mode=respond` answers 403, `?mode=error` fails (401), anything
/// else forwards with `x-hook` set.
fn check(mut request: Request, lobby: &Lobby, hook: &str) -> Result<Before> {
    record(
        lobby.env(),
        format!("{hook} {}/{}", lobby.party(), lobby.id()),
    );
    match request.query("mode").as_deref() {
        Some("respond") => Ok(Before::Respond(
            (StatusCode::FORBIDDEN, format!("{hook} said no")).into_response(),
        )),
        Some("error") => Err(Error::msg(format!("{hook} failed"))),
        _ => {
            request.headers_mut().insert("x-hook", hook.parse()?);
            Ok(Before::Forward(request))
        }
    }
}

fn greet(connection: &Connection, room: &Room, ctx: &ConnectionContext) -> Result<()> {
    record(room.env(), format!("reached {}/{}", room.name(), room.id()));
    let hook = ctx.request().header("x-hook").unwrap_or("none");
    connection.send(format!("hello {}/{} x-hook={hook}", room.name(), room.id()))?;
    Ok(())
}

fn answer(request: &Request, room: &Room) -> String {
    record(room.env(), format!("reached {}/{}", room.name(), room.id()));
    let hook = request.header("x-hook").unwrap_or("none");
    format!(
        "{}/{} {} x-hook={hook}",
        room.name(),
        room.id(),
        request.method()
    )
}

#[party(name = "class-gate")]
struct ClassGate {
    room: Room,
}

#[party]
impl ClassGate {
    fn new(room: Room) -> Self {
        ClassGate { room }
    }

    fn on_before_connect(request: Request, lobby: &Lobby) -> Result<Before> {
        check(request, lobby, "before_connect")
    }

    async fn on_before_request(request: Request, lobby: &Lobby) -> Result<Before> {
        check(request, lobby, "before_request")
    }

    fn on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext) -> Result<()> {
        greet(connection, &self.room, ctx)
    }

    fn on_request(&mut self, request: Request) -> String {
        answer(&request, &self.room)
    }
}

#[party(name = "object-gate")]
struct ObjectGate;

#[party]
#[allow(deprecated)]
impl ObjectGate {
    async fn on_before_connect(request: Request, lobby: &Lobby) -> Result<Before> {
        check(request, lobby, "before_connect")
    }

    fn on_before_request(request: Request, lobby: &Lobby) -> Result<Before> {
        check(request, lobby, "before_request")
    }

    fn on_connect(connection: &Connection, room: &Room, ctx: &ConnectionContext) -> Result<()> {
        greet(connection, room, ctx)
    }

    fn on_request(request: Request, room: &Room) -> String {
        answer(&request, room)
    }
}

#[tokio::test]
async fn before_hooks_forward_answer_and_fail_in_both_styles() {
    let probe = Probe::new();
    let server = TestServer::start(class_main_server(&probe)).await;
    for party in ["class-gate", "object-gate"] {
        // Forwarded, with the header the hook added.
        let response = server.get(&format!("/parties/{party}/http")).await;
        assert_eq!(response.status, 200, "{party}: {}", response.text());
        assert_eq!(
            response.text(),
            format!("{party}/http GET x-hook=before_request")
        );
        let mut ws = server.connect(&format!("/parties/{party}/ws")).await;
        assert_eq!(
            ws.recv_text().await,
            format!("hello {party}/ws x-hook=before_connect")
        );

        // A response of the hook's own, as it is; an error is 401 with its message.
        let denied = server
            .get(&format!("/parties/{party}/no?mode=respond"))
            .await;
        assert_status(&denied, 403, "before_request said no");
        let failed = server.get(&format!("/parties/{party}/no?mode=error")).await;
        assert_status(&failed, 401, "before_request failed");
        let denied = server
            .refused_upgrade(&format!("/parties/{party}/no?mode=respond"))
            .await;
        assert_status(&denied, 403, "before_connect said no");
        let failed = server
            .refused_upgrade(&format!("/parties/{party}/no?mode=error"))
            .await;
        assert_status(&failed, 401, "before_connect failed");

        // The hooks ran every time; the refused requests never reached a room.
        let events = probe.events();
        assert_eq!(probe.count(&format!("before_request {party}/no")), 2);
        assert_eq!(probe.count(&format!("before_connect {party}/no")), 2);
        assert_eq!(probe.count(&format!("reached {party}/http")), 1);
        assert_eq!(probe.count(&format!("reached {party}/ws")), 1);
        assert!(
            !events.contains(&format!("reached {party}/no")),
            "{events:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// `on_fetch`, `on_socket`, `on_cron`: the main party's only

fn fetch(request: Request, lobby: &FetchLobby, style: &str) -> Option<String> {
    record(lobby.env(), format!("on_fetch {style} {}", request.path()));
    (request.path() == "/hello").then(|| format!("hello from the {style} main party"))
}

/// Echoes every frame back until the client closes.
async fn echo(mut socket: FetchSocket, lobby: &FetchLobby, style: &str) {
    record(
        lobby.env(),
        format!("on_socket {style} {}", socket.request().path()),
    );
    while let Some(Ok(frame)) = socket.recv().await {
        if socket.send(frame).await.is_err() {
            break;
        }
    }
}

fn ran_cron(cron: &Cron, lobby: &CronLobby, style: &str) {
    record(
        lobby.env(),
        format!("on_cron {style} {}: {}", cron.name(), cron.cron()),
    );
}

#[party]
#[derive(Default)]
struct ClassMain;

#[party]
impl ClassMain {
    fn on_fetch(request: Request, lobby: &FetchLobby) -> Option<String> {
        fetch(request, lobby, "class")
    }

    async fn on_socket(socket: FetchSocket, lobby: &FetchLobby) {
        echo(socket, lobby, "class").await;
    }

    fn on_cron(cron: Cron, lobby: &CronLobby) {
        ran_cron(&cron, lobby, "class");
    }
}

#[party]
struct ObjectMain;

#[party]
#[allow(deprecated)]
impl ObjectMain {
    fn on_request(_request: Request, room: &Room) -> String {
        format!("object main {}", room.id())
    }

    async fn on_fetch(request: Request, lobby: &FetchLobby) -> Option<String> {
        fetch(request, lobby, "object")
    }

    async fn on_socket(socket: FetchSocket, lobby: &FetchLobby) {
        echo(socket, lobby, "object").await;
    }

    async fn on_cron(cron: Cron, lobby: &CronLobby) -> Result<()> {
        ran_cron(&cron, lobby, "object");
        Ok(())
    }
}

/// A main party with none of the outside hooks.
#[party]
#[derive(Default)]
struct PlainMain;

#[party]
impl PlainMain {
    fn on_request(&mut self) -> &'static str {
        "plain"
    }
}

/// Not the main party: its outside hooks are never used.
#[party(name = "ignored")]
#[derive(Default)]
struct Ignored;

#[party]
impl Ignored {
    fn on_fetch(_request: Request, lobby: &FetchLobby) -> Option<&'static str> {
        record(lobby.env(), "ignored on_fetch");
        Some("from the ignored party")
    }

    async fn on_socket(socket: FetchSocket, lobby: &FetchLobby) {
        record(lobby.env(), "ignored on_socket");
        drop(socket);
    }

    fn on_cron(_cron: Cron, lobby: &CronLobby) {
        record(lobby.env(), "ignored on_cron");
    }
}

/// A schedule that never fires during a test run; only the trigger runs it.
const NIGHTLY: (&str, &str) = ("nightly", "0 3 1 1 *");
/// The operator's token for `/__scheduled__`.
const CRON_TOKEN: &str = "cron-secret";

/// `GET /__scheduled__?cron=<name>` with the operator's token.
async fn trigger(server: &TestServer, name: &str) -> HttpResponse {
    let authorization = format!("Bearer {CRON_TOKEN}");
    server
        .http(
            "GET",
            &format!("/__scheduled__?cron={name}"),
            &[("authorization", authorization.as_str())],
            b"",
        )
        .await
}

fn class_main_server(probe: &Probe) -> Server {
    init_tracing();
    probe
        .server()
        .no_env_file()
        .party::<ClassMain>()
        .party::<ClassGate>()
        .party::<ObjectGate>()
        .party::<Ignored>()
        .cron(NIGHTLY.0, NIGHTLY.1)
        .scheduled_token(CRON_TOKEN)
}

fn object_main_server(probe: &Probe) -> Server {
    init_tracing();
    probe
        .server()
        .no_env_file()
        .party::<ObjectMain>()
        .party::<Ignored>()
        .cron(NIGHTLY.0, NIGHTLY.1)
        .scheduled_token(CRON_TOKEN)
}

fn plain_main_server(probe: &Probe) -> Server {
    init_tracing();
    probe
        .server()
        .no_env_file()
        .party::<PlainMain>()
        .party::<Ignored>()
        .cron(NIGHTLY.0, NIGHTLY.1)
        .scheduled_token(CRON_TOKEN)
}

#[track_caller]
fn assert_status(response: &HttpResponse, status: u16, body: &str) {
    assert_eq!(
        (response.status, response.text().as_str()),
        (status, body),
        "{response:?}"
    );
}

#[tokio::test]
async fn on_fetch_answers_paths_outside_the_parties_and_none_is_404() {
    for style in ["class", "object"] {
        let probe = Probe::new();
        let server = match style {
            "class" => TestServer::start(class_main_server(&probe)).await,
            _ => TestServer::start(object_main_server(&probe)).await,
        };
        let hello = server.get("/hello").await;
        assert_status(&hello, 200, &format!("hello from the {style} main party"));
        let post = server.http("POST", "/hello", &[], b"body").await;
        assert_status(&post, 200, &format!("hello from the {style} main party"));
        // `None`: on to 404.
        assert_status(&server.get("/other/path").await, 404, "Not found");
        // Empty room ids are not party paths either.
        assert_status(&server.get("/parties/main/").await, 404, "Not found");
        assert_eq!(probe.count(&format!("on_fetch {style} /other/path")), 1);
        assert_eq!(probe.count(&format!("on_fetch {style} /parties/main/")), 1);
        // The main party's rooms are still there.
        if style == "object" {
            assert_status(&server.get("/party/r").await, 200, "object main r");
        }
        assert_eq!(probe.count("ignored on_fetch"), 0);
    }
}

#[tokio::test]
async fn on_socket_takes_upgrades_outside_the_parties_in_both_styles() {
    for style in ["class", "object"] {
        let probe = Probe::new();
        let server = match style {
            "class" => TestServer::start(class_main_server(&probe)).await,
            _ => TestServer::start(object_main_server(&probe)).await,
        };
        let mut ws = server.connect("/echo/here?x=1").await;
        assert_eq!(ws.ask("ping").await, "ping");
        ws.send_binary(vec![1, 2, 3]).await;
        assert_eq!(ws.recv().await.into_data().as_ref(), &[1, 2, 3]);
        assert_eq!(probe.count(&format!("on_socket {style} /echo/here")), 1);
        ws.close().await;
        // A plain request to the same path goes to `on_fetch`.
        assert_status(&server.get("/echo/here").await, 404, "Not found");
        assert_eq!(probe.count(&format!("on_fetch {style} /echo/here")), 1);
    }
}

#[tokio::test]
async fn without_on_socket_an_upgrade_outside_the_parties_is_plain_http() {
    let probe = Probe::new();
    let server = TestServer::start(plain_main_server(&probe)).await;
    let refused = server.refused_upgrade("/echo/here").await;
    assert_status(&refused, 404, "Not found");
    assert!(server.try_connect("/echo/here").await.is_err());
    assert_eq!(probe.count("ignored on_socket"), 0);
}

#[tokio::test]
async fn only_the_main_partys_on_fetch_on_socket_and_on_cron_are_used() {
    // With a main party that has them: the main party's answer, never the other's.
    let probe = Probe::new();
    let server = TestServer::start(class_main_server(&probe)).await;
    assert_status(&server.get("/anything").await, 404, "Not found");
    let mut ws = server.connect("/anything").await;
    assert_eq!(ws.ask("echo").await, "echo");
    let ran = trigger(&server, "nightly").await;
    assert_eq!(ran.status, 200);

    // With a main party that has none of them, and with no main party at all: 404s.
    let plain = Probe::new();
    let plain_server = TestServer::start(plain_main_server(&plain)).await;
    let no_main = Probe::new();
    let no_main_server = TestServer::start(
        no_main
            .server()
            .no_env_file()
            .party::<Ignored>()
            .cron(NIGHTLY.0, NIGHTLY.1)
            .scheduled_token(CRON_TOKEN),
    )
    .await;
    for server in [&plain_server, &no_main_server] {
        assert_status(&server.get("/anything").await, 404, "Not found");
        assert_status(&server.refused_upgrade("/anything").await, 404, "Not found");
        assert_status(&trigger(server, "nightly").await, 404, "Not found");
    }
    // The ignored party's own paths still work.
    let room = no_main_server.get("/parties/ignored/r").await;
    assert_status(&room, 500, "No onRequest handler");

    for probe in [&probe, &plain, &no_main] {
        let events = probe.events();
        assert!(
            !events.iter().any(|event| event.starts_with("ignored")),
            "{events:#?}"
        );
    }
}

#[tokio::test]
async fn the_cron_trigger_runs_on_cron_with_the_declared_expression() {
    for style in ["class", "object"] {
        let probe = Probe::new();
        let server = match style {
            "class" => TestServer::start(class_main_server(&probe)).await,
            _ => TestServer::start(object_main_server(&probe)).await,
        };
        let ran = trigger(&server, "nightly").await;
        assert_status(&ran, 200, "ran cron nightly: 0 3 1 1 *");
        // A name no `cron` declared is not run.
        let unknown = trigger(&server, "whatever").await;
        assert_status(
            &unknown,
            404,
            "No cron schedule named \"whatever\" is declared",
        );
        assert_eq!(
            probe.count(&format!("on_cron {style} nightly: 0 3 1 1 *")),
            1
        );
        assert!(
            !probe
                .events()
                .iter()
                .any(|event| event.contains("whatever")),
            "{:?}",
            probe.events()
        );
        // The trigger is `/__scheduled__` exactly; `on_fetch` gets the rest.
        assert_status(&server.get("/__scheduled__/x").await, 404, "Not found");
        assert_eq!(probe.count("ignored on_cron"), 0);
    }
}

#[tokio::test]
async fn without_on_cron_the_trigger_is_404() {
    let probe = Probe::new();
    let server = TestServer::start(plain_main_server(&probe)).await;
    assert_status(&trigger(&server, "nightly").await, 404, "Not found");
}

#[tokio::test]
async fn the_cron_trigger_needs_the_operators_token() {
    let probe = Probe::new();
    let server = TestServer::start(class_main_server(&probe)).await;
    let wrong = [
        vec![],
        vec![("authorization", "Bearer nope")],
        vec![("authorization", "Bearer cron-secre")],
        vec![("authorization", "Bearer cron-secret-and-more")],
        vec![("authorization", "cron-secret")],
        vec![("authorization", "Basic cron-secret")],
    ];
    for headers in wrong {
        let refused = server
            .http("GET", "/__scheduled__?cron=nightly", &headers, b"")
            .await;
        assert_status(
            &refused,
            401,
            "/__scheduled__ needs the scheduled token: Authorization: Bearer <token>",
        );
        assert_eq!(
            refused.header("www-authenticate"),
            Some("Bearer"),
            "{headers:?}"
        );
    }
    assert_eq!(probe.count("on_cron class nightly: 0 3 1 1 *"), 0);
    assert_status(
        &trigger(&server, "nightly").await,
        200,
        "ran cron nightly: 0 3 1 1 *",
    );
    assert_eq!(probe.count("on_cron class nightly: 0 3 1 1 *"), 1);
}

#[tokio::test]
async fn without_a_token_the_cron_trigger_is_an_ordinary_path() {
    let probe = Probe::new();
    let server = TestServer::start(
        probe
            .server()
            .no_env_file()
            .party::<ClassMain>()
            .cron(NIGHTLY.0, NIGHTLY.1),
    )
    .await;
    // Even with a token the operator never configured: `on_fetch`, then 404.
    assert_status(&trigger(&server, "nightly").await, 404, "Not found");
    assert_status(
        &server.get("/__scheduled__?cron=nightly").await,
        404,
        "Not found",
    );
    assert_eq!(probe.count("on_fetch class /__scheduled__"), 2);
    assert!(
        !probe
            .events()
            .iter()
            .any(|event| event.starts_with("on_cron")),
        "{:?}",
        probe.events()
    );
}

#[tokio::test]
async fn an_invalid_cron_expression_refuses_to_start() {
    for (expression, fragment) in [
        ("61 * * * *", "minute field `61`"),
        ("* * * *", "expected 5 fields"),
        ("every minute", "expected 5 fields"),
    ] {
        let server = Server::new()
            .in_memory()
            .no_env_file()
            .party::<ClassMain>()
            .cron("ok", "*/5 * * * *")
            .cron("broken", expression);
        match server.router().await {
            Err(ServerError::InvalidCron(error)) => {
                let message = error.to_string();
                assert!(message.contains(expression), "{message}");
                assert!(message.contains(fragment), "{message}");
            }
            Err(other) => panic!("{expression:?}: expected InvalidCron, got {other:?}"),
            Ok(_) => panic!("{expression:?}: the server started"),
        }
    }
    // `serve` refuses too, without serving.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = Server::new()
        .in_memory()
        .no_env_file()
        .party::<ClassMain>()
        .cron("broken", "* * * * * *")
        .serve(listener, std::future::pending());
    let result = within("serve to refuse an invalid cron", served).await;
    assert!(
        matches!(result, Err(ServerError::InvalidCron(_))),
        "{result:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Calls between rooms: `context().parties()`

/// What calls reach: describes requests, greets and answers connections. Its hooks
/// refuse everyone from outside: calls between rooms skip them.
#[party(name = "target")]
struct Target {
    room: Room,
}

#[party]
impl Target {
    fn new(room: Room) -> Self {
        Target { room }
    }

    fn on_before_request(_request: Request) -> Result<Request> {
        Err(Error::msg("no entry from outside"))
    }

    fn on_before_connect(_request: Request) -> Result<Request> {
        Err(Error::msg("no entry from outside"))
    }

    fn on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext) -> Result<()> {
        let uri = ctx.request().uri().to_string();
        record(
            self.room.env(),
            format!("target connect {} {uri}", self.room.id()),
        );
        connection.send(format!("hello from {} at {uri}", self.room.id()))?;
        Ok(())
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        let text = message.as_text().unwrap_or("(binary)");
        record(
            self.room.env(),
            format!("target message {} {text}", self.room.id()),
        );
        // `call <party> <room>`: call that room back while it may be waiting for us.
        if let Some(back) = text.strip_prefix("call ") {
            let (party, room) = back.split_once(' ').unwrap_or((back, ""));
            let answer = match stub(&self.room, party, room)?.fetch("/leaf", get()).await {
                Ok(response) => format!("target call answered {}", described(response).await),
                Err(error) => failure("target call", &error),
            };
            sender.send(answer)?;
            return Ok(());
        }
        sender.send(format!("target got {text}"))?;
        Ok(())
    }

    fn on_close(&mut self) {
        record(self.room.env(), format!("target close {}", self.room.id()));
    }

    fn on_request(&mut self, request: Request) -> Result<Json<Value>> {
        Ok(Json(json!({
            "room": self.room.id(),
            "method": request.method().as_str(),
            "path": request.path(),
            "q": request.query("q"),
            "x-test": request.header("x-test"),
            "body": request.text()?,
        })))
    }
}

/// A party without `on_request`.
#[party(name = "silent")]
#[derive(Default)]
struct Silent;

#[party]
impl Silent {
    fn on_connect(&mut self, connection: &Connection) -> Result<()> {
        connection.send("silent")?;
        Ok(())
    }
}

/// A room's answer as `<status> <body>`, read with `RoomResponse`'s own helpers.
async fn described(response: partykit_runtime::parties::RoomResponse) -> String {
    let status = response.status().as_u16();
    let body = response.text().await.expect("the room's answer is text");
    format!("{status} {body}")
}

fn get() -> Request {
    Request::get("/").expect("a request")
}

fn stub(room: &Room, party: &str, id: &str) -> Result<partykit_runtime::parties::RoomStub> {
    let party = room
        .context()
        .parties()
        .get(party)
        .ok_or_else(|| Error::msg(format!("no party {party}")))?;
    Ok(party.get(id))
}

/// What a room answers for a call it made to `party/id` at `path` that failed.
fn failure(what: &str, error: &Error) -> String {
    format!("{what} failed: {} {error}", error.status().as_u16())
}

/// Makes calls to other rooms, chosen by the last path segment.
async fn call(room: &Room, request: &Request) -> Result<String> {
    let action = request.path().rsplit('/').next().unwrap_or_default();
    Ok(match action {
        "fetch" => {
            let call = Request::builder()
                .method(Method::PUT)
                .header("x-test", "from a room")
                .body("payload")?;
            let response = stub(room, "target", "t1")?
                .fetch("/sub/path?q=1", call)
                .await?;
            described(response).await
        }
        "no-request" => described(stub(room, "silent", "s1")?.fetch("", get()).await?).await,
        "no-slash" => match stub(room, "target", "t1")?.fetch("sub", get()).await {
            Ok(response) => format!("unexpected answer {}", described(response).await),
            Err(error) => format!("error: {error}"),
        },
        "socket" => {
            let mut socket = stub(room, "target", "t2")?.socket("/chat?x=1").await?;
            let mut transcript = vec![format!("id {}", socket.id())];
            transcript.push(socket.recv().await?.map(text).unwrap_or_default());
            socket.send("ping").await?;
            transcript.push(socket.recv().await?.map(text).unwrap_or_default());
            socket.close().await;
            transcript.join("\n")
        }
        // Waits on a socket for a room that calls back here: one of the two waits must
        // fail with 508 (whichever closes the cycle), and the request completes.
        "socket-cycle" => {
            let mut socket = stub(room, "target", "t3")?.socket("").await?;
            socket.recv().await?; // the greeting
            socket
                .send(format!("call {} {}", room.name(), room.id()))
                .await?;
            match socket.recv().await {
                Ok(answer) => answer.map(text).unwrap_or_default(),
                Err(error) => failure("socket wait", &error),
            }
        }
        // Waits for `peer`, which calls back here: the inner call must fail with 508.
        "cycle" => {
            let peer = request.query("peer").unwrap_or_default().into_owned();
            let path = format!("/bounce?back={}", room.id());
            match stub(room, room.name(), &peer)?.fetch(&path, get()).await {
                Ok(response) => format!("outer got {}", described(response).await),
                Err(error) => failure("outer call", &error),
            }
        }
        "bounce" => {
            let back = request.query("back").unwrap_or_default().into_owned();
            match stub(room, room.name(), &back)?.fetch("/leaf", get()).await {
                Ok(response) => format!("inner call answered {}", described(response).await),
                Err(error) => failure("inner call", &error),
            }
        }
        "self" => match stub(room, room.name(), room.id())?
            .fetch("/leaf", get())
            .await
        {
            Ok(response) => format!("self call answered {}", described(response).await),
            Err(error) => failure("self call", &error),
        },
        "leaf" => "leaf".to_owned(),
        other => return Err(Error::with_status(StatusCode::NOT_FOUND, other)),
    })
}

fn text(message: Message) -> String {
    message.as_text().unwrap_or("(binary)").to_owned()
}

#[party(name = "caller")]
struct Caller {
    room: Room,
}

#[party]
impl Caller {
    fn new(room: Room) -> Self {
        Caller { room }
    }

    async fn on_request(&mut self, request: Request) -> Result<String> {
        call(&self.room, &request).await
    }
}

#[party(name = "object-caller")]
struct ObjectCaller;

#[party]
#[allow(deprecated)]
impl ObjectCaller {
    async fn on_request(request: Request, room: &Room) -> Result<String> {
        call(room, &request).await
    }
}

/// Calls a room from its `on_before_request` hook and answers with that room's answer.
#[party(name = "door")]
#[derive(Default)]
struct Door;

#[party]
impl Door {
    async fn on_before_request(request: Request, lobby: &Lobby) -> Result<Before> {
        let target = lobby
            .parties()
            .get("target")
            .ok_or_else(|| Error::msg("no target party"))?
            .get(&format!("from-door-{}", lobby.id()));
        let call = Request::builder()
            .method(request.method().clone())
            .header("x-test", "from a hook")
            .body(request.body().clone())?;
        Ok(Before::Respond(
            target.fetch("/via-door", call).await?.into(),
        ))
    }
}

fn parties_server(probe: &Probe) -> Server {
    init_tracing();
    probe
        .server()
        .no_env_file()
        .party::<Target>()
        .party::<Silent>()
        .party::<Caller>()
        .party::<ObjectCaller>()
        .party::<Door>()
}

#[tokio::test]
async fn a_stub_fetch_reaches_the_room_with_everything_and_skips_its_hook() {
    let probe = Probe::new();
    let server = TestServer::start(parties_server(&probe)).await;
    // From outside, the target's hooks refuse.
    assert_status(
        &server.get("/parties/target/t1").await,
        401,
        "no entry from outside",
    );
    assert_status(
        &server.refused_upgrade("/parties/target/t1").await,
        401,
        "no entry from outside",
    );
    for caller in ["caller", "object-caller"] {
        let response = server.get(&format!("/parties/{caller}/c/fetch")).await;
        assert_eq!(response.status, 200, "{caller}: {}", response.text());
        let text = response.text();
        let (status, body) = text.split_once(' ').unwrap();
        assert_eq!(status, "200", "{caller}: {text}");
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            body,
            json!({
                "room": "t1",
                "method": "PUT",
                "path": "/parties/target/t1/sub/path",
                "q": "1",
                "x-test": "from a room",
                "body": "payload",
            }),
            "{caller}"
        );
    }
}

#[tokio::test]
async fn a_stub_fetch_to_a_party_without_on_request_is_500() {
    let probe = Probe::new();
    let server = TestServer::start(parties_server(&probe)).await;
    for caller in ["caller", "object-caller"] {
        let response = server.get(&format!("/parties/{caller}/c/no-request")).await;
        assert_status(&response, 200, "500 No onRequest handler");
    }
    // As from outside.
    assert_status(
        &server.get("/parties/silent/s1").await,
        500,
        "No onRequest handler",
    );
}

#[tokio::test]
async fn a_stub_path_must_start_with_a_slash() {
    let probe = Probe::new();
    let server = TestServer::start(parties_server(&probe)).await;
    for caller in ["caller", "object-caller"] {
        let response = server.get(&format!("/parties/{caller}/c/no-slash")).await;
        assert_status(&response, 200, "error: Path must start with /");
    }
}

#[tokio::test]
async fn a_stub_socket_connects_talks_both_ways_and_closes() {
    let probe = Probe::new();
    let server = TestServer::start(parties_server(&probe)).await;
    for (n, caller) in ["caller", "object-caller"].into_iter().enumerate() {
        let response = server.get(&format!("/parties/{caller}/c/socket")).await;
        assert_eq!(response.status, 200, "{caller}: {}", response.text());
        let text = response.text();
        let lines: Vec<&str> = text.lines().collect();
        let [id, hello, reply] = lines[..] else {
            panic!("{caller}: {text}");
        };
        // No `_pk`: the room made up a UUID.
        assert!(
            partykit_tests::is_uuid_v4(id.trim_start_matches("id ")),
            "{id}"
        );
        assert_eq!(hello, "hello from t2 at /parties/target/t2/chat?x=1");
        assert_eq!(reply, "target got ping");
        // `close` ran the target's `on_close`; its `on_connect` and `on_message` ran too.
        probe.wait_for("target close t2", n + 1).await;
        assert_eq!(
            probe.count("target connect t2 /parties/target/t2/chat?x=1"),
            n + 1
        );
        assert_eq!(probe.count("target message t2 ping"), n + 1);
    }
}

#[tokio::test]
async fn a_hooks_lobby_can_call_rooms() {
    let probe = Probe::new();
    let server = TestServer::start(parties_server(&probe)).await;
    let response = server
        .http("POST", "/parties/door/d1", &[], b"knock knock")
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json(),
        json!({
            "room": "from-door-d1",
            "method": "POST",
            "path": "/parties/target/from-door-d1/via-door",
            "q": null,
            "x-test": "from a hook",
            "body": "knock knock",
        })
    );
}

#[tokio::test]
async fn rooms_waiting_for_each_other_in_a_cycle_fail_fast_with_508() {
    let probe = Probe::new();
    let server = TestServer::start(parties_server(&probe)).await;
    for caller in ["caller", "object-caller"] {
        // a awaits b, which calls a back: the inner call fails at once, and both
        // requests complete.
        for _ in 0..2 {
            let response = server
                .get(&format!("/parties/{caller}/a/cycle?peer=b"))
                .await;
            assert_eq!(response.status, 200, "{caller}: {}", response.text());
            let text = response.text();
            assert!(
                text.starts_with("outer got 200 inner call failed: 508 "),
                "{caller}: {text}"
            );
            assert!(text.contains("cycle"), "{caller}: {text}");
        }
        // A room calling itself.
        let response = server.get(&format!("/parties/{caller}/a/self")).await;
        assert_eq!(response.status, 200, "{caller}: {}", response.text());
        assert!(
            response.text().starts_with("self call failed: 508 "),
            "{caller}: {}",
            response.text()
        );
        // Waiting on a stub socket counts as waiting too.
        let response = server
            .get(&format!("/parties/{caller}/a/socket-cycle"))
            .await;
        assert_eq!(response.status, 200, "{caller}: {}", response.text());
        let text = response.text();
        assert!(
            text.starts_with("target call failed: 508 ")
                || text.starts_with("socket wait failed: 508 "),
            "{caller}: {text}"
        );
        // The waits ended with the calls: b calling a is fine now.
        let response = server
            .get(&format!("/parties/{caller}/b/bounce?back=a"))
            .await;
        assert_status(&response, 200, "inner call answered 200 leaf");
    }
}

// ---------------------------------------------------------------------------------------
// The `multi-party` example

async fn lobby_counts(server: &TestServer) -> Value {
    let response = server.get("/parties/lobby/global").await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// Polls the lobby until it reports `expected` (the reports travel after the sockets
/// open and close).
async fn wait_for_counts(server: &TestServer, expected: Value) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let counts = lobby_counts(server).await;
        if counts == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lobby says {counts}, expected {expected}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_multi_party_example_counts_joins_and_leaves_in_the_lobby() {
    init_tracing();
    let server = TestServer::start(
        Server::new()
            .in_memory()
            .no_env_file()
            .party::<Chat>()
            .party::<LobbyParty>(),
    )
    .await;
    wait_for_counts(&server, json!({ "rooms": {}, "total": 0 })).await;
    let mut lobby = server.connect("/parties/lobby/global").await;
    assert_eq!(lobby.recv_json().await, json!({ "rooms": {}, "total": 0 }));

    let mut a1 = server.connect("/parties/chat/a").await;
    let mut a2 = server.connect("/parties/chat/a?_pk=a2").await;
    let b1 = server.connect("/parties/chat/b").await;
    wait_for_counts(&server, json!({ "rooms": { "a": 2, "b": 1 }, "total": 3 })).await;
    assert_eq!(a1.recv_text().await, "a2 joined");
    // The chat still chats.
    a2.send_text("hi").await;
    assert_eq!(a1.recv_text().await, "hi");
    let room = server.get("/parties/chat/a").await;
    assert_eq!(room.json(), json!({ "room": "a", "users": 2 }));

    // Leaves are counted; a room without users is left out.
    a2.close().await;
    drop(b1);
    wait_for_counts(&server, json!({ "rooms": { "a": 1 }, "total": 1 })).await;
    assert_eq!(a1.recv_text().await, "a2 left");

    // The lobby socket saw every change, ending with the same counts.
    let mut last = Value::Null;
    while last != json!({ "rooms": { "a": 1 }, "total": 1 }) {
        last = lobby.recv_json().await;
    }

    // Clients may only read the lobby: only rooms can report.
    let forged = server
        .http(
            "POST",
            "/parties/lobby/global/report",
            &[("content-type", "application/json")],
            br#"{"room":"fake","users":99}"#,
        )
        .await;
    assert_eq!(forged.status, 405, "{}", forged.text());
    assert_eq!(
        lobby_counts(&server).await,
        json!({ "rooms": { "a": 1 }, "total": 1 })
    );
}

// ---------------------------------------------------------------------------------------
// The `auth` example

#[tokio::test]
async fn the_auth_example_lets_good_tokens_in_and_passes_the_user_to_the_room() {
    init_tracing();
    let server = TestServer::start(Server::new().in_memory().no_env_file().party::<Auth>()).await;

    // A token in the query; a forged user header is replaced.
    let mut alice = server
        .try_connect_with(
            "/parties/main/r?token=alice-token",
            &[("x-user-id", "mallory")],
        )
        .await
        .expect("alice's token is good");
    assert_eq!(
        welcome(&mut alice, "alice").await,
        json!({ "type": "welcome", "user": "alice", "online": ["alice"] })
    );
    // A token in the `Authorization` header.
    let mut bob = server
        .try_connect_with("/parties/main/r", &[("authorization", "Bearer bob-token")])
        .await
        .expect("bob's token is good");
    assert_eq!(
        welcome(&mut bob, "bob").await,
        json!({ "type": "welcome", "user": "bob", "online": ["alice", "bob"] })
    );
    assert_eq!(
        alice.recv_json().await,
        json!({ "type": "joined", "user": "bob" })
    );
    bob.send_text("hello").await;
    assert_eq!(
        alice.recv_json().await,
        json!({ "type": "message", "user": "bob", "text": "hello" })
    );

    // HTTP: the same check, the same header.
    let response = server
        .http(
            "GET",
            "/parties/main/r",
            &[
                ("authorization", "Bearer alice-token"),
                ("x-user-id", "mallory"),
            ],
            b"",
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json(),
        json!({ "room": "r", "user": "alice", "online": ["alice", "bob"] })
    );

    bob.close().await;
    assert_eq!(
        alice.recv_json().await,
        json!({ "type": "left", "user": "bob" })
    );
}

/// The auth example's welcome, without its connection id, which is checked to be the
/// user's: `<user>:<random>` when the client sent no `_pk`.
async fn welcome(ws: &mut Ws, user: &str) -> serde_json::Value {
    let mut welcome = ws.recv_json().await;
    let id = welcome
        .as_object_mut()
        .and_then(|object| object.remove("id"))
        .unwrap_or_default();
    let id = id.as_str().unwrap_or_default();
    let random = id.strip_prefix(&format!("{user}:")).unwrap_or_default();
    assert!(
        random.len() == 16 && random.bytes().all(|byte| byte.is_ascii_hexdigit()),
        "{user}'s generated connection id: {id:?}"
    );
    welcome
}

#[tokio::test]
async fn the_auth_example_binds_connection_ids_to_users() {
    init_tracing();
    let server = TestServer::start(Server::new().in_memory().no_env_file().party::<Auth>()).await;
    let mut alice = server
        .connect("/parties/main/r?token=alice-token&_pk=alice%3Atab-1")
        .await;
    assert_eq!(
        alice.recv_json().await,
        json!({ "type": "welcome", "user": "alice", "id": "alice:tab-1", "online": ["alice"] })
    );
    // Bob cannot take Alice's id, nor one that merely looks like his.
    for id in ["alice%3Atab-1", "alice", "bobby", "x%3Abob%3A1"] {
        let refused = server
            .refused_upgrade(&format!("/parties/main/r?token=bob-token&_pk={id}"))
            .await;
        assert_eq!(refused.status, 403, "{id}: {}", refused.text());
        assert!(
            refused.text().starts_with("Connection id ")
                && refused
                    .text()
                    .ends_with(r#"is not yours: use one that starts with "bob:""#),
            "{id}: {}",
            refused.text()
        );
    }
    // His own ids are fine: `bob` and `bob:…`.
    for (id, expected) in [("bob", "bob"), ("bob%3Aphone", "bob:phone")] {
        let mut bob = server
            .connect(&format!("/parties/main/r?token=bob-token&_pk={id}"))
            .await;
        let welcome = bob.recv_json().await;
        assert_eq!(welcome["id"], expected, "{welcome}");
        assert_eq!(
            alice.recv_json().await,
            json!({ "type": "joined", "user": "bob" })
        );
        bob.close().await;
        assert_eq!(
            alice.recv_json().await,
            json!({ "type": "left", "user": "bob" })
        );
    }
    // Alice was never replaced.
    let response = server.get("/parties/main/r?token=alice-token").await;
    assert_eq!(response.json()["online"], json!(["alice"]));
}

#[tokio::test]
async fn the_auth_example_refuses_missing_and_bad_tokens() {
    init_tracing();
    let server = TestServer::start(Server::new().in_memory().no_env_file().party::<Auth>()).await;
    let cases = [
        ("/parties/main/r", 401, "Missing token"),
        ("/parties/main/r?token=", 401, "Missing token"),
        ("/parties/main/r?token=mallory-token", 403, "Invalid token"),
    ];
    for (path, status, body) in cases {
        assert_status(&server.refused_upgrade(path).await, status, body);
        assert_status(&server.get(path).await, status, body);
    }
    let bad_bearer = server
        .http(
            "GET",
            "/parties/main/r",
            &[("authorization", "Bearer nope")],
            b"",
        )
        .await;
    assert_status(&bad_bearer, 403, "Invalid token");
    // Refused requests never started the room: nobody is online.
    let response = server.get("/parties/main/r?token=bob-token").await;
    assert_eq!(
        response.json(),
        json!({ "room": "r", "user": "bob", "online": [] })
    );
}

#[tokio::test]
async fn the_auth_example_reads_its_tokens_from_the_environment() {
    init_tracing();
    let server = TestServer::start(
        Server::new()
            .in_memory()
            .no_env_file()
            .var("AUTH_TOKENS", json!({ "carol-secret": "carol" }))
            .party::<Auth>(),
    )
    .await;
    let response = server.get("/parties/main/r?token=carol-secret").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["user"], "carol");
    // The demo tokens are off.
    let demo = server.get("/parties/main/r?token=alice-token").await;
    assert_status(&demo, 403, "Invalid token");
}

// ---------------------------------------------------------------------------------------
// The `cursors` example

fn cursors_server() -> Server {
    init_tracing();
    Server::new()
        .in_memory()
        .no_env_file()
        .party::<Cursors>()
        .serve_dir(cursors::assets_dir())
}

#[tokio::test]
async fn the_cursors_page_and_its_partysocket_bundle_are_served() {
    let server = TestServer::start(cursors_server()).await;
    let page = server.get("/").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(
        html.contains(r#"import PartySocket from "./vendor/partysocket/index.js";"#),
        "{html}"
    );
    assert_eq!(server.get("/index.html").await.body, page.body);

    // The bundle, and the module it imports, as JavaScript.
    let index = server.get("/vendor/partysocket/index.js").await;
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(index.text().contains(r#"from "./ws.js""#));
    assert!(index.text().contains("PartySocket"));
    let ws = server.get("/vendor/partysocket/ws.js").await;
    assert_eq!(ws.status, 200);
    assert_eq!(
        ws.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    // Shipped with its license.
    let license = server.get("/vendor/partysocket/LICENSE.txt").await;
    assert_eq!(license.status, 200);
    assert!(license.text().contains("MIT License"));
    assert_status(&server.get("/missing.js").await, 404, "Not found");
}

#[tokio::test]
async fn the_cursors_party_shares_everyones_cursor() {
    let server = TestServer::start(cursors_server()).await;
    let mut alice = server.connect("/parties/main/lobby?_pk=alice").await;
    assert_eq!(
        alice.recv_json().await,
        json!({ "type": "sync", "self": "alice", "cursors": {} })
    );
    let mut bob = server.connect("/parties/main/lobby?_pk=bob").await;
    let sync = bob.recv_json().await;
    assert_eq!(sync["self"], "bob");

    // Alice moves: Bob sees it.
    alice.send_text(r#"{"x":0.25,"y":0.5}"#).await;
    let update = bob.recv_json().await;
    assert_eq!(
        (&update["type"], &update["id"], &update["x"], &update["y"]),
        (&json!("update"), &json!("alice"), &json!(0.25), &json!(0.5))
    );
    let alice_color = update["color"].as_str().unwrap().to_owned();
    assert!(alice_color.starts_with("hsl("), "{alice_color}");

    // Bob moves: Alice sees it.
    bob.send_text(r#"{"x":1,"y":0}"#).await;
    let update = alice.recv_json().await;
    assert_eq!(
        (&update["type"], &update["id"], &update["x"], &update["y"]),
        (&json!("update"), &json!("bob"), &json!(1.0), &json!(0.0))
    );

    // A newcomer gets both cursors, kept in the connections' state.
    let mut carol = server.connect("/parties/main/lobby?_pk=carol").await;
    let sync = carol.recv_json().await;
    assert_eq!(
        sync["cursors"]["alice"],
        json!({ "x": 0.25, "y": 0.5, "color": alice_color })
    );
    assert_eq!(sync["cursors"]["bob"]["x"], json!(1.0));

    // The pointer left (or is off the page): the others remove the cursor.
    bob.send_text(r#"{"x":null,"y":null}"#).await;
    assert_eq!(
        alice.recv_json().await,
        json!({ "type": "remove", "id": "bob" })
    );
    assert_eq!(
        carol.recv_json().await,
        json!({ "type": "remove", "id": "bob" })
    );
    alice.send_text(r#"{"x":2,"y":0.5}"#).await;
    assert_eq!(
        bob.recv_json().await,
        json!({ "type": "remove", "id": "alice" })
    );
    assert_eq!(
        carol.recv_json().await,
        json!({ "type": "remove", "id": "alice" })
    );

    // A closed connection's cursor goes away.
    carol.close().await;
    assert_eq!(
        alice.recv_json().await,
        json!({ "type": "remove", "id": "carol" })
    );
    assert_eq!(
        bob.recv_json().await,
        json!({ "type": "remove", "id": "carol" })
    );
}
