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
use crate::metrics::{Forwarded, Handler, Refusal};
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
    let response = route(&app, request).await;
    app.metrics.answered(response.status());
    response
}

async fn route(app: &Arc<App>, request: axum::extract::Request) -> Response {
    let path = request.uri().path().to_owned();
    if crate::inspect::is_inspect_path(&path) {
        return crate::inspect::handle(app, request).await;
    }
    match parse_target(&path) {
        Some(Target { party, room }) => {
            // partyserver's `cors`: a known party's preflights are answered
            // before its hooks; its non-WebSocket responses, errors included, get the
            // headers.
            match app.cors.get(party).filter(|_| !is_upgrade(&request)) {
                Some(cors) if request.method() == Method::OPTIONS => cors.preflight(),
                Some(cors) => cors.apply(to_party(app, party, room, request).await),
                None => to_party(app, party, room, request).await,
            }
        }
        None => outside_parties(app, request).await,
    }
}

/// The request with its body read under the body limits; a refusal is counted by the
/// limit that refused.
pub(crate) async fn buffered(
    app: &App,
    request: axum::extract::Request,
) -> Result<Request, Response> {
    body::buffer(request, &app.limits, &app.bodies)
        .await
        .inspect_err(|refusal| {
            let reason = match refusal.status() {
                StatusCode::PAYLOAD_TOO_LARGE => Refusal::BodyTooLarge,
                StatusCode::REQUEST_TIMEOUT => Refusal::BodyTimeout,
                StatusCode::SERVICE_UNAVAILABLE => Refusal::BodyBudget,
                _ => return,
            };
            app.metrics.refused(reason);
        })
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
        let (upgrade, request) = match upgrade_of(request).await {
            Ok(split) => split,
            Err(rejection) => return rejection,
        };
        let metrics = entry.rooms.metrics();
        let hook = entry.party.before_connect(request, &lobby);
        match metrics.time(Handler::OnBeforeConnect, hook).await {
            Err(error) => unauthorized(&error, "on_before_connect"),
            Ok(Before::Respond(response)) => response,
            Ok(Before::Forward(request)) => {
                connect_or_relay(app, entry, room, request, upgrade).await
            }
        }
    } else {
        let request = match buffered(app, request).await {
            Ok(request) => request,
            Err(response) => return response,
        };
        let metrics = entry.rooms.metrics();
        let hook = entry.party.before_request(request, &lobby);
        match metrics.time(Handler::OnBeforeRequest, hook).await {
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
        async move {
            let started = std::time::Instant::now();
            let answer = forwarder.request(&peer, request, chain).await;
            cluster
                .metrics()
                .forwarded(Forwarded::Request, started.elapsed());
            answer
        }
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
        let (upgrade, request) = match upgrade_of(request).await {
            Ok(split) => split,
            Err(rejection) => return rejection,
        };
        connect(app, entry, room, request, upgrade).await
    } else {
        match buffered(app, request).await {
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
        async move {
            let started = std::time::Instant::now();
            let opened = relay::open(&peer, request.uri(), request.headers(), secret, chain).await;
            cluster
                .metrics()
                .forwarded(Forwarded::Socket, started.elapsed());
            opened
        }
    })
    .await;
    let upstream = match routed {
        Ok(Owner::Here) => return connect(app, entry, room, request, upgrade).await,
        Ok(Owner::Remote(Ok(upstream))) => upstream,
        Ok(Owner::Remote(Err(refusal))) => return refusal,
        Err(error) => return error.into_response(),
    };
    let stopping = app.tasks.stopping().clone();
    socket::accept(upgrade, &app.limits, &app.tasks, move |client| {
        relay::pump(client, upstream, stopping)
    })
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
    socket::accept(upgrade, limits, &app.tasks, move |websocket| {
        session.run(websocket, ctx)
    })
}

/// A socket for a room that cannot start now (the room cap, shutdown) is accepted and
/// closed at once with 1013 Try Again Later and the reason, which WebSocket clients can
/// read (a refused upgrade only shows them a failed connection); an id over the limit is
/// refused before the upgrade.
fn refuse_socket(app: &App, upgrade: WebSocketUpgrade, refused: Refused) -> Response {
    if matches!(refused, Refused::IdTooLong { .. }) {
        return refused.into_error().into_response();
    }
    let reason = refused.to_string();
    socket::accept(
        upgrade,
        &app.limits,
        &app.tasks,
        move |mut websocket| async move {
            socket::close(&mut websocket, close_code::TRY_AGAIN_LATER, &reason).await;
        },
    )
}

async fn outside_parties(app: &App, request: axum::extract::Request) -> Response {
    let main = app.parties.get("main");
    let handlers = main.map(|entry| entry.party.handlers()).unwrap_or_default();
    let lobby = FetchLobby {
        env: app.env.clone(),
        parties: app.parties(),
    };
    if let Some(main) = main.filter(|_| handlers.on_socket && is_upgrade(&request)) {
        let (upgrade, request) = match upgrade_of(request).await {
            Ok(split) => split,
            Err(rejection) => return rejection,
        };
        let party = Arc::clone(&main.party);
        return socket::accept(upgrade, &app.limits, &app.tasks, move |socket| async move {
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
        });
    }
    let request = match buffered(app, request).await {
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
        let hook = main.party.fetch(request, &lobby);
        match main.rooms.metrics().time(Handler::OnFetch, hook).await {
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
    let hook = main.party.cron(cron, &lobby);
    match main.rooms.metrics().time(Handler::OnCron, hook).await {
        Ok(()) => (StatusCode::OK, format!("ran cron {name}: {expression}")).into_response(),
        Err(error) => error.response("on_cron failed"),
    }
}

/// An upgrade request split into the upgrade and the request the hooks and the room see
/// (its head, no body); a malformed upgrade gets axum's rejection.
async fn upgrade_of(
    request: axum::extract::Request,
) -> Result<(WebSocketUpgrade, Request), Response> {
    let (mut parts, _body) = request.into_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((
        upgrade,
        Request::from(http::Request::from_parts(parts, Bytes::new())),
    ))
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
