//! URL routing, status codes and the `on_before_*` hooks, over TCP.

use partykit_runtime::{
    Before, Connection, ConnectionContext, Error, Handlers, IntoResponse, Json, Limits, Lobby,
    Party, Request, Response, Result, Room, StatusCode,
};
use partykit_tests::{Probe, TestServer, init_tracing, record};
use serde_json::{Value, json};

/// What `on_request` saw, as JSON.
fn describe(room: &Room, hits: u32, request: &Request) -> Result<Response> {
    Ok(Json(json!({
        "party": room.name(),
        "room": room.id(),
        "hits": hits,
        "method": request.method().as_str(),
        "uri": request.uri().to_string(),
        "path": request.path(),
        "x": request.query("x"),
        "y": request.query("y"),
        "header": request.header("x-test"),
        "user": request.header("x-user"),
        "lobby": request.header("x-lobby"),
        "length": request.body().len(),
        "body": if request.body().len() <= 4096 { Some(request.text()?) } else { None },
    }))
    .into_response())
}

/// The main party: describes every request; some sub-paths fail.
struct Main {
    room: Room,
    hits: u32,
}

impl Party for Main {
    fn new(room: Room) -> Self {
        Main { room, hits: 0 }
    }

    async fn on_start(&mut self) -> Result<()> {
        record(self.room.env(), format!("start main/{}", self.room.id()));
        Ok(())
    }

    async fn on_request(&mut self, request: Request) -> Result<Response> {
        self.hits += 1;
        let path = request.path();
        if path.ends_with("/fail") {
            return Err(Error::msg("it broke"));
        }
        if path.ends_with("/teapot") {
            return Err(Error::with_status(
                StatusCode::IM_A_TEAPOT,
                "short and stout",
            ));
        }
        if path.ends_with("/empty-error") {
            return Err(Error::msg(""));
        }
        describe(&self.room, self.hits, &request)
    }
}

/// A second party with the same behaviour: the same room id is another room.
struct Other {
    room: Room,
    hits: u32,
}

impl Party for Other {
    const NAME: &'static str = "other";

    fn new(room: Room) -> Self {
        Other { room, hits: 0 }
    }

    async fn on_request(&mut self, request: Request) -> Result<Response> {
        self.hits += 1;
        describe(&self.room, self.hits, &request)
    }
}

/// A party without `on_request`: HTTP answers 500 without starting the room.
struct NoRequest {
    room: Room,
}

impl Party for NoRequest {
    const NAME: &'static str = "norequest";
    const HANDLERS: Handlers = Handlers {
        on_request: false,
        ..Handlers::DEFAULT
    };

    fn new(room: Room) -> Self {
        NoRequest { room }
    }

    async fn on_start(&mut self) -> Result<()> {
        record(
            self.room.env(),
            format!("start norequest/{}", self.room.id()),
        );
        Ok(())
    }

    async fn on_connect(
        &mut self,
        connection: &Connection,
        _ctx: &ConnectionContext,
    ) -> Result<()> {
        connection.send("connected")?;
        Ok(())
    }
}

/// A party whose hooks decide by the `mode` query parameter.
struct Guarded {
    room: Room,
    hits: u32,
}

fn before(mut request: Request, lobby: &Lobby, hook: &str) -> Result<Before> {
    record(
        lobby.env(),
        format!("{hook} {}/{}", lobby.party(), lobby.id()),
    );
    match request.query("mode").as_deref() {
        Some("deny") => Ok(Before::Respond(
            (StatusCode::FORBIDDEN, "denied by hook").into_response(),
        )),
        Some("error") => Err(Error::msg("bad token")),
        Some("empty-error") => Err(Error::msg("")),
        Some("rewrite") => {
            let uri = format!("{}?_pk=rewritten&by=hook", request.path());
            request.set_uri(uri.parse()?);
            Ok(Before::Forward(request))
        }
        _ => {
            let lobby_header = format!("{}/{}", lobby.party(), lobby.id());
            let headers = request.headers_mut();
            headers.insert("x-user", "alice".parse()?);
            headers.insert("x-lobby", lobby_header.parse()?);
            Ok(Before::Forward(request))
        }
    }
}

impl Party for Guarded {
    const NAME: &'static str = "guarded";

    fn new(room: Room) -> Self {
        Guarded { room, hits: 0 }
    }

    async fn on_start(&mut self) -> Result<()> {
        record(self.room.env(), format!("start guarded/{}", self.room.id()));
        Ok(())
    }

    async fn on_before_connect(request: Request, lobby: &Lobby) -> Result<Before> {
        before(request, lobby, "before_connect")
    }

    async fn on_before_request(request: Request, lobby: &Lobby) -> Result<Before> {
        before(request, lobby, "before_request")
    }

    async fn on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext) -> Result<()> {
        let request = ctx.request();
        let hello = json!({
            "id": connection.id(),
            "uri": connection.uri(),
            "user": request.header("x-user"),
            "lobby": request.header("x-lobby"),
            "path": request.path(),
        });
        connection.send(hello.to_string())?;
        Ok(())
    }

    async fn on_request(&mut self, request: Request) -> Result<Response> {
        self.hits += 1;
        describe(&self.room, self.hits, &request)
    }
}

async fn start(probe: &Probe) -> TestServer {
    init_tracing();
    TestServer::start(
        probe
            .server()
            .party::<Main>()
            .party::<Other>()
            .party::<NoRequest>()
            .party::<Guarded>()
            .limits(Limits {
                max_request_body: 1024,
                ..Limits::default()
            }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_path_reaches_on_request() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let response = server.get("/parties/main/lobby").await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body["party"], "main");
    assert_eq!(body["room"], "lobby");
    assert_eq!(body["hits"], 1);
    assert_eq!(body["uri"], "/parties/main/lobby");

    let response = server.get("/parties/other/lobby").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["party"], "other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_short_form_is_the_same_room_of_the_main_party() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let hits = |response: partykit_tests::HttpResponse| {
        assert_eq!(response.status, 200, "{}", response.text());
        let body = response.json();
        assert_eq!(body["party"], "main");
        assert_eq!(body["room"], "r");
        body["hits"].clone()
    };
    assert_eq!(hits(server.get("/parties/main/r").await), 1);
    assert_eq!(hits(server.get("/party/r").await), 2);
    assert_eq!(hits(server.get("/party/r/sub").await), 3);
    assert_eq!(hits(server.get("/parties/main/r/").await), 4);

    // The same id under another party is another room.
    let response = server.get("/parties/other/r").await;
    assert_eq!(response.json()["hits"], 1);
    assert_eq!(response.json()["party"], "other");

    // The main room was started once for all four requests.
    assert_eq!(probe.count("start main/r"), 1, "{:?}", probe.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_party_is_404_party_not_found() {
    let probe = Probe::new();
    let server = start(&probe).await;
    for (path, body) in [
        ("/parties/nope/r", "Party nope not found"),
        ("/parties/nope/r/sub?x=1", "Party nope not found"),
        // Party names are compared case-sensitively.
        ("/parties/Main/r", "Party Main not found"),
    ] {
        let response = server.get(path).await;
        assert_eq!(
            (response.status, response.text().as_str()),
            (404, body),
            "GET {path}"
        );
        let refused = server.refused_upgrade(path).await;
        assert_eq!(
            (refused.status, refused.text().as_str()),
            (404, body),
            "upgrade {path}"
        );
    }
    // The WebSocket client sees the refusal too.
    let error = server.try_connect("/parties/nope/r").await.unwrap_err();
    match error {
        partykit_tests::tungstenite::Error::Http(response) => assert_eq!(response.status(), 404),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_party_paths_are_404_not_found() {
    let probe = Probe::new();
    let server = start(&probe).await;
    for path in [
        "/",
        "/parties/main/",
        "/parties/main",
        "/parties",
        "/party/",
        "/party",
        "/partyx/y",
        "/api/parties/main/x",
        "/favicon.ico",
    ] {
        let response = server.get(path).await;
        assert_eq!(
            (response.status, response.text().as_str()),
            (404, "Not found"),
            "GET {path}"
        );
        let response = server.http("POST", path, &[], b"data").await;
        assert_eq!(
            (response.status, response.text().as_str()),
            (404, "Not found"),
            "POST {path}"
        );
    }
    // Without `on_socket`, an upgrade outside the parties is plain HTTP: 404.
    let refused = server.refused_upgrade("/").await;
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (404, "Not found")
    );
    let refused = server.refused_upgrade("/parties/main/").await;
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (404, "Not found")
    );
    assert!(
        probe.events().is_empty(),
        "no room was started: {:?}",
        probe.events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_a_party_without_on_request_is_500_and_does_not_start_the_room() {
    let probe = Probe::new();
    let server = start(&probe).await;
    for method in ["GET", "POST"] {
        let response = server.http(method, "/parties/norequest/r", &[], b"x").await;
        assert_eq!(
            (response.status, response.text().as_str()),
            (500, "No onRequest handler"),
            "{method}"
        );
    }
    assert_eq!(probe.count("start norequest/r"), 0, "{:?}", probe.events());

    // WebSockets still reach it, and that does start the room.
    let mut ws = server.connect("/parties/norequest/r").await;
    assert_eq!(ws.recv_text().await, "connected");
    assert_eq!(probe.count("start norequest/r"), 1, "{:?}", probe.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_request_errors_answer_with_their_status_and_message() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let cases = [
        ("/parties/main/r/fail", 500, "it broke"),
        ("/parties/main/r/teapot", 418, "short and stout"),
        (
            "/parties/main/r/empty-error",
            500,
            "Uncaught exception when making a request",
        ),
    ];
    for (path, status, body) in cases {
        let response = server.get(path).await;
        assert_eq!(
            (response.status, response.text().as_str()),
            (status, body),
            "{path}"
        );
    }
    // An error does not break the room.
    let response = server.get("/parties/main/r").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["hits"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_id_is_the_raw_path_segment() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let response = server.get("/parties/main/a%20b").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["room"], "a%20b");
    assert_eq!(response.json()["path"], "/parties/main/a%20b");
    // Same raw id, same room.
    let response = server.get("/party/a%20b/x").await;
    assert_eq!(response.json()["room"], "a%20b");
    assert_eq!(response.json()["hits"], 2);

    let response = server.get("/parties/main/caf%C3%A9").await;
    assert_eq!(response.json()["room"], "caf%C3%A9");
    assert_eq!(response.json()["hits"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_path_and_query_reach_on_request() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let response = server
        .get("/parties/main/r/items/42?x=1&y=two%20words")
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body["room"], "r");
    assert_eq!(body["path"], "/parties/main/r/items/42");
    assert_eq!(body["uri"], "/parties/main/r/items/42?x=1&y=two%20words");
    assert_eq!(body["x"], "1");
    assert_eq!(body["y"], "two words");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_headers_and_body_reach_on_request() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    for (n, method) in methods.into_iter().enumerate() {
        let body = format!("{method} body");
        let response = server
            .http(
                method,
                "/parties/main/r",
                &[("X-Test", "yes")],
                body.as_bytes(),
            )
            .await;
        assert_eq!(response.status, 200, "{method}: {}", response.text());
        let seen = response.json();
        assert_eq!(seen["method"], method);
        assert_eq!(seen["header"], "yes", "{method}");
        assert_eq!(seen["body"], body.as_str(), "{method}");
        assert_eq!(seen["hits"], n + 1);
    }
    // HEAD reaches the room too (the response has no body).
    let response = server.http("HEAD", "/parties/main/head", &[], b"").await;
    assert_eq!(response.status, 200);
    let response = server.get("/parties/main/head").await;
    assert_eq!(response.json()["hits"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_max_request_body_is_413() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let fits = vec![b'a'; 1024];
    let response = server.http("POST", "/parties/main/r", &[], &fits).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["body"].as_str().map(str::len), Some(1024));

    let too_big = vec![b'a'; 1025];
    let response = server.http("POST", "/parties/main/r", &[], &too_big).await;
    assert_eq!(response.status, 413, "{}", response.text());
    // The room never saw it.
    let response = server.get("/parties/main/r").await;
    assert_eq!(response.json()["hits"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_max_request_body_is_413() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let chunked = [("Transfer-Encoding", "chunked")];
    let fits = format!(
        "200\r\n{}\r\n200\r\n{}\r\n0\r\n\r\n",
        "a".repeat(512),
        "b".repeat(512)
    );
    let response = server
        .http("POST", "/parties/main/r", &chunked, fits.as_bytes())
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["length"], 1024);
    let too_big = format!(
        "200\r\n{}\r\n201\r\n{}\r\n0\r\n\r\n",
        "a".repeat(512),
        "b".repeat(513)
    );
    let response = server
        .http("POST", "/parties/main/r", &chunked, too_big.as_bytes())
        .await;
    assert_eq!(response.status, 413, "{}", response.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_body_limit_is_16_mib_not_axums_2_mib() {
    init_tracing();
    let probe = Probe::new();
    let server = TestServer::start(probe.server().party::<Main>()).await;
    let body = vec![b'z'; 3 * 1024 * 1024];
    let response = server.http("POST", "/parties/main/big", &[], &body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["length"], 3 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_before_request_can_forward_with_an_added_header() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let response = server.get("/parties/guarded/r/sub?x=1").await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body["user"], "alice");
    assert_eq!(body["lobby"], "guarded/r");
    assert_eq!(body["uri"], "/parties/guarded/r/sub?x=1");
    let events = probe.events();
    assert_eq!(events, ["before_request guarded/r", "start guarded/r"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_before_request_can_answer_without_touching_the_room() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let response = server.get("/parties/guarded/r?mode=deny").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (403, "denied by hook")
    );
    assert_eq!(probe.events(), ["before_request guarded/r"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_before_request_error_is_401_with_its_message() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let response = server.get("/parties/guarded/r?mode=error").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (401, "bad token")
    );
    let response = server.get("/parties/guarded/r?mode=empty-error").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (401, "Unauthorised")
    );
    assert_eq!(probe.count("start guarded/r"), 0, "{:?}", probe.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_before_connect_can_forward_with_an_added_header() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let mut ws = server.connect("/parties/guarded/r?token=t").await;
    let hello: Value = ws.recv_json().await;
    assert_eq!(hello["user"], "alice", "{hello}");
    assert_eq!(hello["lobby"], "guarded/r", "{hello}");
    assert_eq!(hello["path"], "/parties/guarded/r");
    let events = probe.events();
    assert_eq!(events, ["before_connect guarded/r", "start guarded/r"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_before_connect_can_rewrite_the_url() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let mut ws = server.connect("/parties/guarded/r?mode=rewrite").await;
    let hello: Value = ws.recv_json().await;
    assert_eq!(hello["id"], "rewritten", "{hello}");
    let uri = hello["uri"].as_str().unwrap();
    assert!(
        uri.ends_with("/parties/guarded/r?_pk=rewritten&by=hook"),
        "{uri}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_before_connect_can_answer_without_touching_the_room() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let refused = server.refused_upgrade("/parties/guarded/r?mode=deny").await;
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (403, "denied by hook")
    );
    let error = server
        .try_connect("/parties/guarded/r?mode=deny")
        .await
        .unwrap_err();
    match error {
        partykit_tests::tungstenite::Error::Http(response) => assert_eq!(response.status(), 403),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
    assert_eq!(probe.count("start guarded/r"), 0, "{:?}", probe.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_before_connect_error_is_401_with_its_message() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let refused = server
        .refused_upgrade("/parties/guarded/r?mode=error")
        .await;
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (401, "bad token")
    );
    let refused = server
        .refused_upgrade("/parties/guarded/r?mode=empty-error")
        .await;
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (401, "Unauthorised")
    );
    assert_eq!(probe.count("start guarded/r"), 0, "{:?}", probe.events());
}
