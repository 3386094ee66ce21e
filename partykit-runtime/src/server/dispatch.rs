//! The request path, in PartyKit's order: party paths go through the party's static hooks to the
//! room; everything else goes to the main party's `on_socket`, `on_cron` and `on_fetch`,
//! then 404.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{FromRequestParts, State, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::any;
use bytes::Bytes;
use http::{Method, StatusCode, header};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

pub(crate) use super::routing::{Target, parse as parse_target};
use super::{App, PartyEntry, body, socket};
use crate::cluster::chain::Chain;
use crate::cluster::forward::{self, Owner};
use crate::cluster::relay;
use crate::connection::close_code;
use crate::room::{Event, Refused};
use crate::{
    Before, Connection, ConnectionContext, Cron, CronLobby, Error, FetchLobby, FetchSocket, Lobby,
    Request, Response,
};

pub(super) fn router(app: Arc<App>) -> axum::Router {
    // Party paths are routes of their own so the router merges into an app with other
    // routes; the dispatcher parses the raw path itself either way.
    axum::Router::new()
        .route("/parties/{party}/{room}", any(dispatch))
        .route("/parties/{party}/{room}/{*rest}", any(dispatch))
        .route("/party/{room}", any(dispatch))
        .route("/party/{room}/{*rest}", any(dispatch))
        .fallback(dispatch)
        .with_state(app)
}

async fn dispatch(State(app): State<Arc<App>>, request: axum::extract::Request) -> Response {
    let path = request.uri().path().to_owned();
    match parse_target(&path) {
        Some(Target { party, room }) => {
            // partyserver's `cors`: a known party's preflights are answered
            // before its hooks; its non-WebSocket responses, errors included, get the
            // headers.
            match app.cors.get(party).filter(|_| !is_upgrade(&request)) {
                Some(cors) if request.method() == Method::OPTIONS => cors.preflight(),
                Some(cors) => cors.apply(to_party(&app, party, room, request).await),
                None => to_party(&app, party, room, request).await,
            }
        }
        None => outside_parties(&app, request).await,
    }
}

async fn to_party(app: &App, party: &str, room: &str, request: axum::extract::Request) -> Response {
    let Some(entry) = app.parties.get(party) else {
        return (StatusCode::NOT_FOUND, format!("Party {party} not found")).into_response();
    };
    // Before any hook: a long id costs memory in every room structure that keys on it.
    if let Err(refused) = Refused::check_id(room, &app.limits) {
        return refused.into_error().into_response();
    }
    let lobby = Lobby {
        id: room.to_owned(),
        party: entry.party.name(),
        env: app.env.clone(),
        parties: app.parties(),
    };
    if is_upgrade(&request) {
        let (mut parts, _body) = request.into_parts();
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade,
            Err(rejection) => return rejection.into_response(),
        };
        let request = Request::from(http::Request::from_parts(parts, Bytes::new()));
        match entry.party.before_connect(request, &lobby).await {
            Err(error) => unauthorized(&error, "on_before_connect"),
            Ok(Before::Respond(response)) => response,
            Ok(Before::Forward(request)) => {
                connect_or_relay(app, entry, room, request, upgrade).await
            }
        }
    } else {
        let request = match body::buffer(request, &app.limits, &app.bodies).await {
            Ok(request) => request,
            Err(response) => return response,
        };
        match entry.party.before_request(request, &lobby).await {
            Err(error) => unauthorized(&error, "on_before_request"),
            Ok(Before::Respond(response)) => response,
            Ok(Before::Forward(_)) if !entry.party.handlers().on_request => {
                (StatusCode::INTERNAL_SERVER_ERROR, "No onRequest handler").into_response()
            }
            Ok(Before::Forward(request)) => deliver_or_forward(entry, room, request).await,
        }
    }
}

/// After the hooks: the request goes to the room here, or to the node that owns it.
async fn deliver_or_forward(entry: &PartyEntry, room: &str, request: Request) -> Response {
    let Some(cluster) = entry.rooms.cluster() else {
        return deliver(entry, room, request).await;
    };
    let forwarder = cluster.forwarder();
    let chain = Chain::empty();
    let routed = forward::route(&entry.rooms, room, |peer| {
        let request = request.clone();
        let chain = &chain;
        async move { forwarder.request(&peer, request, chain).await }
    })
    .await;
    match routed {
        Ok(Owner::Here) => deliver(entry, room, request).await,
        Ok(Owner::Remote(response)) => response,
        Err(error) => error.into_response(),
    }
}

/// An HTTP request to a room of this node, its hooks done (here or on the node the
/// client reached).
async fn deliver(entry: &PartyEntry, room: &str, request: Request) -> Response {
    if !entry.party.handlers().on_request {
        return (StatusCode::INTERNAL_SERVER_ERROR, "No onRequest handler").into_response();
    }
    let (reply, response) = oneshot::channel();
    let event = Event::Request { request, reply };
    if let Err(refused) = entry.rooms.send(room, event).await {
        return refused.into_error().into_response();
    }
    response.await.unwrap_or_else(|_| room_gone())
}

/// An event another node forwarded to a room this node owns: its hooks ran there, so it
/// goes to the room as it is (a WebSocket through the same start-then-upgrade path as a
/// client's).
pub(crate) async fn owned(
    app: &App,
    entry: &PartyEntry,
    room: &str,
    request: axum::extract::Request,
) -> Response {
    if is_upgrade(&request) {
        let (mut parts, _body) = request.into_parts();
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade,
            Err(rejection) => return rejection.into_response(),
        };
        let request = Request::from(http::Request::from_parts(parts, Bytes::new()));
        connect(app, entry, room, request, upgrade).await
    } else {
        match body::buffer(request, &app.limits, &app.bodies).await {
            Ok(request) => deliver(entry, room, request).await,
            Err(response) => response,
        }
    }
}

/// After `on_before_connect`: the socket joins the room here, or is relayed to the node
/// that owns it. The owner's socket opens before the client's upgrade completes, so that
/// its refusal reaches the client as HTTP.
async fn connect_or_relay(
    app: &App,
    entry: &PartyEntry,
    room: &str,
    request: Request,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(cluster) = entry.rooms.cluster() else {
        return connect(app, entry, room, request, upgrade).await;
    };
    let secret = cluster.forwarder().secret();
    let chain = Chain::empty();
    let routed = forward::route(&entry.rooms, room, |peer| {
        let (request, chain) = (&request, &chain);
        async move { relay::open(&peer, request.uri(), request.headers(), secret, chain).await }
    })
    .await;
    let upstream = match routed {
        Ok(Owner::Here) => return connect(app, entry, room, request, upgrade).await,
        Ok(Owner::Remote(Ok(upstream))) => upstream,
        Ok(Owner::Remote(Err(refusal))) => return refusal,
        Err(error) => return error.into_response(),
    };
    let tasks = app.tasks.clone();
    let stopping = tasks.stopping().clone();
    socket::configure(upgrade, &app.limits)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |client| tasks.track_connection(relay::pump(client, upstream, stopping)))
}

/// Starts the room (so that a failing `on_start` answers with HTTP, as in PartyKit), then
/// completes the upgrade and hands the socket to its task, which runs `on_connect`.
async fn connect(
    app: &App,
    entry: &PartyEntry,
    room: &str,
    request: Request,
    upgrade: WebSocketUpgrade,
) -> Response {
    let (reply, started) = oneshot::channel();
    if let Err(refused) = entry.rooms.send(room, Event::Prepare { reply }).await {
        return refuse_socket(app, upgrade, refused);
    }
    match started.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return error.into_response(),
        Err(_) => return room_gone(),
    }
    let id = match request.query("_pk") {
        Some(id) if !id.is_empty() => id.into_owned(),
        _ => crate::connection::new_id(),
    };
    let limits = &app.limits;
    let (connection, outlet) = Connection::new(id, request.url(), limits.max_outbound_buffer);
    let session = socket::Session {
        connection,
        outlet,
        rooms: Arc::clone(&entry.rooms),
        room: room.to_owned(),
        stopping: app.tasks.stopping().clone(),
    };
    // Boxed: the socket task's future would otherwise carry the request twice.
    let ctx = Box::new(ConnectionContext { request });
    let tasks = app.tasks.clone();
    socket::configure(upgrade, limits)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |websocket| tasks.track_connection(session.run(websocket, ctx)))
}

/// A socket for a room that cannot start now (the room cap, shutdown) is accepted and
/// closed at once with 1013 Try Again Later and the reason, which WebSocket clients can
/// read (a refused upgrade only shows them a failed connection); an id over the limit is
/// refused before the upgrade.
fn refuse_socket(app: &App, upgrade: WebSocketUpgrade, refused: Refused) -> Response {
    if matches!(refused, Refused::IdTooLong { .. }) {
        return refused.into_error().into_response();
    }
    let tasks = app.tasks.clone();
    let reason = refused.to_string();
    socket::configure(upgrade, &app.limits).on_upgrade(move |mut websocket| {
        tasks.track_connection(async move {
            socket::close(&mut websocket, close_code::TRY_AGAIN_LATER, &reason).await;
        })
    })
}

async fn outside_parties(app: &App, request: axum::extract::Request) -> Response {
    let main = app.parties.get("main");
    let handlers = main.map(|entry| entry.party.handlers()).unwrap_or_default();
    let lobby = FetchLobby {
        env: app.env.clone(),
        parties: app.parties(),
    };
    if let Some(main) = main.filter(|_| handlers.on_socket && is_upgrade(&request)) {
        let (mut parts, _body) = request.into_parts();
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade,
            Err(rejection) => return rejection.into_response(),
        };
        let request = Request::from(http::Request::from_parts(parts, Bytes::new()));
        let party = Arc::clone(&main.party);
        let tasks = app.tasks.clone();
        return socket::configure(upgrade, &app.limits).on_upgrade(move |socket| {
            tasks.track_connection(async move {
                let (socket, handed_back) = FetchSocket::new(socket, request);
                let (code, reason) = match party.socket(socket, &lobby).await {
                    Ok(()) => (close_code::NORMAL, String::new()),
                    Err(error) => (
                        close_code::INTERNAL_ERROR,
                        error.public("on_socket failed", "on_socket failed").message,
                    ),
                };
                // The hook is done and dropped the socket (unless it took it with
                // `into_inner`): close it, so the client hears how it ended.
                if let Ok(mut socket) = handed_back.await {
                    socket::close(&mut socket, code, &reason).await;
                }
            })
        });
    }
    let request = match body::buffer(request, &app.limits, &app.bodies).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    if let Some(main) = main
        && handlers.on_cron
        && request.path() == "/__scheduled__"
        && let Some(token) = &app.scheduled_token
    {
        return scheduled(app, main, token, &request).await;
    }
    // A static asset shadows `on_fetch`.
    if let Some(assets) = &app.assets
        && let Some(response) = assets.serve(&request).await
    {
        return response;
    }
    let head = request.method() == Method::HEAD;
    if let Some(main) = main
        && handlers.on_fetch
    {
        match main.party.fetch(request, &lobby).await {
            Ok(Some(response)) => return response,
            Ok(None) => {}
            Err(error) => return error.response("on_fetch failed"),
        }
    }
    // Step 6: the `404.html` asset, with status 404.
    if let Some(assets) = &app.assets
        && let Some(response) = assets.not_found(head).await
    {
        return response;
    }
    not_found()
}

/// `/__scheduled__?cron=<name>`: runs the declared schedule `name` at once, for a
/// caller with the operator's bearer token.
async fn scheduled(app: &App, main: &PartyEntry, token: &str, request: &Request) -> Response {
    let given = request
        .header(header::AUTHORIZATION.as_str())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Constant time: how long the comparison takes must not tell how much of a guess
    // was right.
    if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "/__scheduled__ needs the scheduled token: Authorization: Bearer <token>",
        )
            .into_response();
    }
    let name = request
        .query("cron")
        .map(|name| name.into_owned())
        .unwrap_or_default();
    let Some(expression) = app.crons.expression_of(&name) else {
        return (
            StatusCode::NOT_FOUND,
            format!("No cron schedule named {name:?} is declared"),
        )
            .into_response();
    };
    let expression = expression.to_owned();
    let cron = Cron {
        name: name.clone(),
        cron: expression.clone(),
        scheduled_time: SystemTime::now(),
    };
    let lobby = CronLobby {
        env: app.env.clone(),
        parties: app.parties(),
    };
    match main.party.cron(cron, &lobby).await {
        Ok(()) => (StatusCode::OK, format!("ran cron {name}: {expression}")).into_response(),
        Err(error) => error.response("on_cron failed"),
    }
}

/// A WebSocket upgrade, as PartyKit tells it: the `upgrade` header says `websocket`.
fn is_upgrade(request: &axum::extract::Request) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// A refusal by `on_before_connect` / `on_before_request`: 401 with the message, as on
/// PartyKit; an internal error's message is replaced by its id. A panic is no refusal
/// but a bug: 500.
fn unauthorized(error: &Error, hook: &str) -> Response {
    if error.is_panic() {
        return error.response(hook);
    }
    let public = error.public(&format!("{hook} failed"), "Unauthorised");
    match public.id {
        None => (StatusCode::UNAUTHORIZED, public.message).into_response(),
        Some(id) => (
            StatusCode::UNAUTHORIZED,
            [(crate::ERROR_ID_HEADER, id.clone())],
            format!("Unauthorised (error id {id})"),
        )
            .into_response(),
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not found").into_response()
}

fn room_gone() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "The room stopped before answering",
    )
        .into_response()
}

/// The internal listener's router and forwarding between nodes over real sockets. The
/// nodes run in this process and share no database: which node owns a room is set by
/// hand (`Cluster::set_owner`), every other room is owned where it is asked for.
#[cfg(test)]
mod cluster_tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use http_body_util::BodyExt;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::{self as ts, Message as PeerFrame};

    use crate::cluster::chain::{self, Chain};
    use crate::cluster::forward::{REFUSED_SECRET_HEADER, SECRET_HEADER};
    use crate::cluster::{Cluster, Peer, internal};
    use crate::storage::RoomKey;
    use crate::tasks::Tasks;
    use crate::{
        Before, Connection, ConnectionContext, Error, Lobby, Message, Request, Room, Server, party,
    };

    const SECRET: &str = "s3cret";
    /// A hang guard, never a measure.
    const GUARD: Duration = Duration::from_secs(30);

    type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    #[party(name = "main")]
    struct Probe {
        room: Room,
    }

    fn node_of(env: &crate::Env) -> String {
        env.get_str("NODE").unwrap_or("-").to_owned()
    }

    fn text_of(message: Option<Message>) -> String {
        match message {
            Some(Message::Text(text)) => text.to_string(),
            other => format!("{other:?}"),
        }
    }

    #[party]
    impl Probe {
        fn new(room: Room) -> Self {
            Probe { room }
        }

        async fn on_before_request(mut request: Request, lobby: &Lobby) -> Result<Before, Error> {
            let node = node_of(lobby.env());
            request
                .headers_mut()
                .insert("x-hooked-on", node.parse().map_err(Error::new)?);
            Ok(Before::Forward(request))
        }

        async fn on_connect(
            &mut self,
            connection: &Connection,
            _ctx: &ConnectionContext,
        ) -> Result<(), Error> {
            let node = node_of(self.room.env());
            let _ = connection.send(format!(
                "{} welcomes {} on {node}",
                self.room.id(),
                connection.id()
            ));
            Ok(())
        }

        async fn on_request(&mut self, request: Request) -> Result<String, Error> {
            let main = self.room.context().parties().get("main").unwrap();
            // `?call=a,b`: call `a`, which calls `b`.
            if let Some(calls) = request.query("call") {
                let calls = calls.into_owned();
                let (target, rest) = calls.split_once(',').unwrap_or((&calls, ""));
                let path = match rest {
                    "" => String::new(),
                    rest => format!("/next?call={rest}"),
                };
                let answer = main
                    .get(target)
                    .fetch(&path, Request::builder().body("")?)
                    .await?;
                let status = answer.status();
                let body = answer.into_body().collect().await.map_err(Error::msg)?;
                let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
                return Ok(format!("{target} answered {status}: {body}"));
            }
            if let Some(target) = request.query("socket") {
                let mut socket = main.get(&target).socket("").await?;
                let greeting = text_of(socket.recv().await?);
                socket.send("ping").await?;
                let echo = text_of(socket.recv().await?);
                let id = socket.id().to_owned();
                socket.close().await;
                return Ok(format!("{id}: {greeting}; {echo}"));
            }
            Ok(format!(
                "{} on {}: {} {} hooked on {}",
                self.room.id(),
                node_of(self.room.env()),
                request.url(),
                request.header("x-user").unwrap_or_default(),
                request.header("x-hooked-on").unwrap_or_default(),
            ))
        }

        async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<(), Error> {
            if let Message::Text(text) = &message
                && let Some(code) = text.strip_prefix("close:")
            {
                let _ = sender.close(code.parse().unwrap(), "closed by the room");
                return Ok(());
            }
            let _ = sender.send(message);
            Ok(())
        }
    }

    struct Node {
        public: SocketAddr,
        internal: SocketAddr,
        cluster: Arc<Cluster>,
        _tasks: crate::tasks::StopOnDrop,
    }

    impl Node {
        fn peer(&self) -> Peer {
            Peer {
                node_id: Arc::from(format!("node-{}", self.internal.port())),
                addr: Arc::from(self.internal.to_string()),
            }
        }
    }

    async fn serve(router: axum::Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    async fn node(name: &str) -> Node {
        let cluster = Arc::new(Cluster::new(Arc::from(SECRET)));
        let tasks = Tasks::new();
        let app = Server::new()
            .party::<Probe>()
            .in_memory()
            .no_env_file()
            .var("NODE", name)
            .with_cluster(Arc::clone(&cluster))
            .build(tasks.clone())
            .await
            .unwrap();
        let app = Arc::new(app);
        Node {
            public: serve(super::router(Arc::clone(&app))).await,
            internal: serve(internal::router(app)).await,
            cluster,
            _tasks: tasks.stop_on_drop(),
        }
    }

    async fn request(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (http::StatusCode, http::HeaderMap, String) {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let mut builder = http::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", "public.example");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(GUARD, sender.send_request(request))
            .await
            .unwrap()
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(GUARD, body.collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    async fn websocket(
        addr: SocketAddr,
        path: &str,
        secret: Option<&str>,
    ) -> Result<Socket, ts::Error> {
        let mut request = http::Request::builder()
            .uri(format!("ws://{addr}{path}"))
            .header("host", "public.example")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", ts::handshake::client::generate_key());
        if let Some(secret) = secret {
            request = request.header(SECRET_HEADER, secret);
        }
        let connect = tokio_tungstenite::connect_async(request.body(()).unwrap());
        Ok(tokio::time::timeout(GUARD, connect).await.unwrap()?.0)
    }

    async fn next(socket: &mut Socket) -> PeerFrame {
        tokio::time::timeout(GUARD, socket.next())
            .await
            .expect("a frame within the guard")
            .expect("a frame")
            .expect("no error")
    }

    #[tokio::test]
    async fn without_the_secret_or_with_a_wrong_one_everything_is_401() {
        let b = node("b").await;
        for path in ["/parties/main/a", "/parties/nope/a", "/elsewhere"] {
            for headers in [
                vec![],
                vec![(SECRET_HEADER, "wrong")],
                vec![(SECRET_HEADER, "")],
            ] {
                let (status, response_headers, body) = request(b.internal, path, &headers).await;
                assert_eq!(status, http::StatusCode::UNAUTHORIZED, "{path} {headers:?}");
                assert_eq!(body, "internal listener: missing or wrong cluster secret");
                assert!(response_headers.contains_key(REFUSED_SECRET_HEADER));
            }
        }
        for secret in [None, Some("wrong")] {
            match websocket(b.internal, "/parties/main/sock", secret).await {
                Err(ts::Error::Http(response)) => {
                    assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
                }
                other => panic!("a socket with secret {secret:?} was not refused: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn with_the_secret_the_room_answers_without_hooks() {
        let b = node("b").await;
        let secret = (SECRET_HEADER, SECRET);
        let (status, _, body) = request(
            b.internal,
            "/parties/main/a?q=1",
            &[secret, ("x-user", "ada")],
        )
        .await;
        assert_eq!(status, http::StatusCode::OK);
        // `host` came with the request: the room sees the public URL.
        assert_eq!(
            body,
            "a on b: http://public.example/parties/main/a?q=1 ada hooked on "
        );
        let (status, _, _) = request(b.internal, "/elsewhere", &[secret]).await;
        assert_eq!(status, http::StatusCode::NOT_FOUND);
        let (status, _, body) = request(b.internal, "/parties/nope/a", &[secret]).await;
        assert_eq!(
            (status, body.as_str()),
            (http::StatusCode::NOT_FOUND, "Party nope not found")
        );
        let (status, _, body) = request(
            b.internal,
            "/parties/main/a",
            &[secret, (chain::HEADER, "[[1]]")],
        )
        .await;
        assert_eq!(status, http::StatusCode::BAD_REQUEST);
        assert!(body.starts_with(chain::HEADER), "{body}");

        let mut socket = websocket(b.internal, "/parties/main/sock?_pk=me", Some(SECRET))
            .await
            .unwrap();
        assert_eq!(
            next(&mut socket).await,
            PeerFrame::text("sock welcomes me on b")
        );
        socket.send(PeerFrame::text("direct")).await.unwrap();
        assert_eq!(next(&mut socket).await, PeerFrame::text("direct"));
    }

    #[tokio::test]
    async fn a_chain_that_the_target_calls_back_into_is_a_cycle() {
        let b = node("b").await;
        // Another node's room `x`, waited for by `y`, calls `t` here; `t` calls `y`.
        let chain = Chain(vec![RoomKey::new("main", "x"), RoomKey::new("main", "y")]).encode();
        let chain = chain.to_str().unwrap();
        let headers = [(SECRET_HEADER, SECRET), (chain::HEADER, chain)];
        let (status, _, body) = request(b.internal, "/parties/main/t?call=y", &headers).await;
        assert_eq!(status, http::StatusCode::LOOP_DETECTED, "{body}");
        assert!(body.contains("main/t -> main/y -> main/t"), "{body}");
        // A call to a room outside the chain goes through; the chain's edges are gone
        // once the forwarded call ended.
        let (status, _, body) = request(b.internal, "/parties/main/t?call=z", &headers).await;
        assert_eq!(status, http::StatusCode::OK);
        assert!(body.starts_with("z answered 200 OK: z on b"), "{body}");
        let (status, _, _) = request(
            b.internal,
            "/parties/main/t?call=y",
            &[(SECRET_HEADER, SECRET)],
        )
        .await;
        assert_eq!(status, http::StatusCode::OK);
        // A chain through the target itself is refused at once.
        let own = Chain(vec![RoomKey::new("main", "t")]).encode();
        let (status, _, _) = request(
            b.internal,
            "/parties/main/t",
            &[
                (SECRET_HEADER, SECRET),
                (chain::HEADER, own.to_str().unwrap()),
            ],
        )
        .await;
        assert_eq!(status, http::StatusCode::LOOP_DETECTED);
    }

    #[tokio::test]
    async fn a_request_through_another_node_reaches_the_owner_after_the_first_nodes_hooks() {
        let (a, b) = (node("a").await, node("b").await);
        a.cluster.set_owner("main", "r", b.peer());
        let (status, _, body) =
            request(a.public, "/parties/main/r/x?q=1", &[("x-user", "ada")]).await;
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(
            body,
            "r on b: http://public.example/parties/main/r/x?q=1 ada hooked on a"
        );
        let (_, _, body) = request(a.public, "/parties/main/s", &[]).await;
        assert_eq!(
            body,
            "s on a: http://public.example/parties/main/s  hooked on a"
        );
        // A forged chain or secret from a client is not forwarded.
        let (status, _, body) = request(
            a.public,
            "/parties/main/r",
            &[(chain::HEADER, "not json"), (SECRET_HEADER, "guess")],
        )
        .await;
        assert_eq!(status, http::StatusCode::OK, "{body}");
    }

    #[tokio::test]
    async fn a_socket_through_another_node_is_relayed_to_the_owner() {
        let (a, b) = (node("a").await, node("b").await);
        a.cluster.set_owner("main", "r", b.peer());
        let mut socket = websocket(a.public, "/parties/main/r?_pk=ada", None)
            .await
            .unwrap();
        assert_eq!(
            next(&mut socket).await,
            PeerFrame::text("r welcomes ada on b")
        );
        socket.send(PeerFrame::text("text")).await.unwrap();
        assert_eq!(next(&mut socket).await, PeerFrame::text("text"));
        let binary = bytes::Bytes::from_static(&[1, 2, 3]);
        socket
            .send(PeerFrame::Binary(binary.clone()))
            .await
            .unwrap();
        assert_eq!(next(&mut socket).await, PeerFrame::Binary(binary));
        socket.send(PeerFrame::text("close:4321")).await.unwrap();
        assert_eq!(
            next(&mut socket).await,
            PeerFrame::Close(Some(CloseFrame {
                code: CloseCode::from(4321),
                reason: "closed by the room".into(),
            }))
        );
    }

    #[tokio::test]
    async fn rooms_call_rooms_of_other_nodes() {
        let (a, b) = (node("a").await, node("b").await);
        a.cluster.set_owner("main", "r", b.peer());
        let (status, _, body) = request(a.public, "/parties/main/p?call=r", &[]).await;
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(
            body,
            "r answered 200 OK: r on b: http://localhost/parties/main/r  hooked on "
        );
        let (status, _, body) = request(a.public, "/parties/main/p?socket=r", &[]).await;
        assert_eq!(status, http::StatusCode::OK, "{body}");
        let (id, rest) = body.split_once(": ").unwrap();
        assert_eq!(rest, format!("r welcomes {id} on b; ping"));
    }

    #[tokio::test]
    async fn a_cycle_across_nodes_is_508() {
        let (a, b) = (node("a").await, node("b").await);
        a.cluster.set_owner("main", "r", b.peer());
        b.cluster.set_owner("main", "p", a.peer());
        // p (on a) calls r (on b), which calls p back.
        let (status, _, body) = request(a.public, "/parties/main/p?call=r,p", &[]).await;
        assert_eq!(status, http::StatusCode::OK, "{body}");
        assert!(
            body.starts_with("r answered 508 Loop Detected: calling main/p would deadlock"),
            "{body}"
        );
        // Through three rooms: p (a) -> r (b) -> q (a) -> p.
        b.cluster.set_owner("main", "q", a.peer());
        let (_, _, body) = request(a.public, "/parties/main/p?call=r,q,p", &[]).await;
        assert!(
            body.starts_with("r answered 200 OK: q answered 508 Loop Detected"),
            "{body}"
        );
        // Without a cycle the same rooms answer.
        let (_, _, body) = request(a.public, "/parties/main/p?call=r,q", &[]).await;
        assert!(
            body.starts_with("r answered 200 OK: q answered 200 OK: q on a"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_room_that_keeps_moving_or_an_unreachable_owner_is_503() {
        let (a, b) = (node("a").await, node("b").await);
        // Each node thinks the other owns `r`: every attempt is misdirected.
        a.cluster.set_owner("main", "r", b.peer());
        b.cluster.set_owner("main", "r", a.peer());
        let (status, _, body) = request(a.public, "/parties/main/r", &[]).await;
        assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "the room r changed owner 3 times while this request was routed; try again"
        );
        match websocket(a.public, "/parties/main/r", None).await {
            Err(ts::Error::Http(response)) => {
                assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
            }
            other => panic!("expected a 503, got {other:?}"),
        }
        // An owner that is gone.
        let gone = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let dead = Peer {
            node_id: Arc::from("node-dead"),
            addr: Arc::from(gone.to_string()),
        };
        a.cluster.set_owner("main", "d", dead);
        let (status, _, body) = request(a.public, "/parties/main/d", &[]).await;
        assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.starts_with(&format!(
                "the room's node node-dead ({gone}) is unreachable"
            )),
            "{body}"
        );
        match websocket(a.public, "/parties/main/d", None).await {
            Err(ts::Error::Http(response)) => {
                assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
                let body = String::from_utf8(response.into_body().unwrap()).unwrap();
                assert!(body.contains("is unreachable"), "{body}");
            }
            other => panic!("expected a 503, got {other:?}"),
        }
    }
}
