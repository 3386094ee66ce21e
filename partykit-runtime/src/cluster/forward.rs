//! HTTP between nodes: a request for a room another node owns goes to that node's
//! internal listener, and its answer comes back unchanged.
//!
//! The forwarded request has the public request's method, path and query, its headers as
//! the hooks left them (without hop-by-hop headers; `host` is kept, so the room sees the
//! same `url()` as on the first node), its buffered body, the cluster secret and the wait
//! chain (`docs/PROTOCOL.md`, "Between cluster nodes").

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::Peer;
use super::chain::{self, Chain};
use super::throttle::Throttle;
use crate::room::{LiveRooms, Location, Refused};
use crate::{Error, Request, Response};

/// The header that carries the cluster secret.
pub(crate) const SECRET_HEADER: &str = "x-partykit-cluster-secret";
/// Set by the internal listener on its 421 answers, so that a 421 a room answers itself
/// is not mistaken for "this node does not own the room".
pub(crate) const MISDIRECTED_HEADER: &str = "x-partykit-misdirected";
/// Set by the internal listener on its 508 answers: the call's wait chain closes a cycle
/// on the owner, and the calling room hears it as the error its own check would give.
pub(crate) const LOOP_HEADER: &str = "x-partykit-loop-detected";
/// Set by the internal listener on its 401 answers (a missing or wrong secret): the nodes
/// are misconfigured, which the client hears as 503, not as a refusal of its own.
pub(crate) const REFUSED_SECRET_HEADER: &str = "x-partykit-secret-refused";

/// How long connecting to a peer may take: a node that died must not hang a client.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer may take to answer a forwarded request (its head; the body then
/// streams): a node that stopped (but whose kernel still accepts connections) must not
/// hang a client either.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a request follows a room that moved (the owner answered 421) before
/// giving up with 503.
pub(crate) const ATTEMPTS: usize = 3;
/// Idle keep-alive connections per peer.
const IDLE_PER_PEER: usize = 32;

/// The peer answered 421: it does not own the room (any more); locate it again.
#[derive(Debug)]
pub(crate) struct Misdirected;

/// Sends requests to other nodes over pooled keep-alive connections.
pub(crate) struct Forwarder {
    secret: HeaderValue,
    client: Client<HttpConnector, Full<Bytes>>,
    response_timeout: Duration,
}

impl Forwarder {
    pub(crate) fn new(secret: Arc<str>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(IDLE_PER_PEER)
            .build(connector);
        Self {
            secret: secret_value(&secret),
            client,
            response_timeout: RESPONSE_TIMEOUT,
        }
    }

    /// The secret as a header value.
    pub(crate) fn secret(&self) -> &HeaderValue {
        &self.secret
    }

    /// Sends `request` to `peer`'s internal listener. An unreachable peer is answered
    /// here: 503 with a message naming it.
    pub(crate) async fn request(
        &self,
        peer: &Peer,
        request: Request,
        chain: &Chain,
    ) -> Result<Response, Misdirected> {
        let (mut parts, body) = request.into_inner().into_parts();
        parts.uri = match internal_uri(peer, &parts.uri, "http") {
            Ok(uri) => uri,
            Err(response) => return Ok(response),
        };
        prepare_headers(&mut parts.headers, &self.secret, chain);
        // The body is sent whole: its length is the body's, whatever a hook left in the
        // header.
        parts.headers.remove(header::CONTENT_LENGTH);
        let request = http::Request::from_parts(parts, Full::new(body));
        let timeout = self.response_timeout;
        let response = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Ok(unreachable(peer, &error)),
            Err(_) => {
                return Ok(unreachable(peer, &format!("no answer within {timeout:?}")));
            }
        };
        if is_misdirected(response.status(), response.headers()) {
            return Err(Misdirected);
        }
        if let Some(refused) = secret_refused(peer, response.status(), response.headers()) {
            return Ok(refused);
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, axum::body::Body::new(body)))
    }
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

/// Where a room's event went.
pub(crate) enum Owner<T> {
    /// This node owns the room: deliver the event here.
    Here,
    /// The owner answered.
    Remote(T),
}

/// Locates `room` and, while another node owns it, runs `attempt` against that node,
/// locating again (the lease moved) each time the node answers that it is not the owner,
/// at most [`ATTEMPTS`] times; then 503.
pub(crate) async fn route<T, F, Fut>(
    rooms: &Arc<LiveRooms>,
    room: &str,
    mut attempt: F,
) -> Result<Owner<T>, Error>
where
    F: FnMut(Peer) -> Fut,
    Fut: Future<Output = Result<T, Misdirected>>,
{
    for _ in 0..ATTEMPTS {
        match rooms.locate(room).await.map_err(Refused::into_error)? {
            Location::Here => return Ok(Owner::Here),
            Location::Node(peer) => match attempt(peer).await {
                Ok(answer) => return Ok(Owner::Remote(answer)),
                Err(Misdirected) => continue,
            },
        }
    }
    Err(Error::with_status(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the room {room} changed owner {ATTEMPTS} times while this request was routed; try again"
        ),
    ))
}

/// `scheme://<peer>/<the request's path and query>`; a peer whose address makes no URI
/// is as unreachable as a dead one.
#[allow(clippy::result_large_err)] // Rare, and answered at once.
pub(crate) fn internal_uri(peer: &Peer, uri: &Uri, scheme: &str) -> Result<Uri, Response> {
    let target = uri.path_and_query().map_or("/", |target| target.as_str());
    format!("{scheme}://{}{target}", peer.addr)
        .parse()
        .map_err(|error| unreachable(peer, &format!("invalid address: {error}")))
}

/// The 503 a client gets when the owner cannot be reached.
pub(crate) fn unreachable(peer: &Peer, error: &dyn std::fmt::Display) -> Response {
    // Clients retry while a dead node's leases run out: one line per second is enough.
    static FAILURES: Throttle = Throttle::new(Duration::from_secs(1));
    if let Some(held_back) = FAILURES.admit() {
        tracing::warn!(node = %peer.node_id, addr = %peer.addr, %error, failed_since_last_log = held_back, "forwarding to a node failed");
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the room's node {} ({}) is unreachable: {error}",
            peer.node_id, peer.addr
        ),
    )
        .into_response()
}

/// The 503 for an answer of the internal listener that refused this node's secret.
pub(crate) fn secret_refused(
    peer: &Peer,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<Response> {
    if status != StatusCode::UNAUTHORIZED || !headers.contains_key(REFUSED_SECRET_HEADER) {
        return None;
    }
    tracing::error!(node = %peer.node_id, addr = %peer.addr, "a node refused this node's cluster secret: every node needs the same PARTYKIT_CLUSTER_SECRET");
    Some(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the room's node {} ({}) refused this node's cluster secret",
                peer.node_id, peer.addr
            ),
        )
            .into_response(),
    )
}

/// Whether an answer of the internal listener says it does not own the room.
pub(crate) fn is_misdirected(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::MISDIRECTED_REQUEST && headers.contains_key(MISDIRECTED_HEADER)
}

/// The headers of a forwarded request: the client's, minus hop-by-hop ones and any
/// cluster header the client sent, plus this node's secret and the wait chain.
pub(crate) fn prepare_headers(headers: &mut HeaderMap, secret: &HeaderValue, chain: &Chain) {
    strip_hop_by_hop(headers);
    headers.remove(chain::HEADER);
    headers.insert(SECRET_HEADER, secret.clone());
    if !chain.is_empty() {
        headers.insert(chain::HEADER, chain.encode());
    }
}

/// Removes the headers that describe one connection, not the message: the standard ones
/// and any the `connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// A secret that is no valid header value cannot authenticate anything: the lead's
/// configuration refuses it at start; here it becomes a value no listener accepts.
fn secret_value(secret: &str) -> HeaderValue {
    HeaderValue::from_str(secret).unwrap_or_else(|_| {
        tracing::error!(
            "the cluster secret is not a valid header value; forwarding will be refused"
        );
        HeaderValue::from_static("")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::test_support::{peer, serve};
    use crate::storage::RoomKey;
    use axum::routing::any;
    use http_body_util::BodyExt;
    use std::net::SocketAddr;

    const SECRET: &str = "s3cret";

    /// The owner's side: shows what it received, as a room would answer.
    async fn owner() -> SocketAddr {
        async fn echo(request: axum::extract::Request) -> Response {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let seen = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .map(|value| value.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            (
                StatusCode::CREATED,
                [
                    ("x-seen-secret", seen(SECRET_HEADER)),
                    ("x-seen-host", seen("host")),
                    ("x-seen-chain", seen(chain::HEADER)),
                    ("x-seen-user", seen("x-user")),
                ],
                format!(
                    "{} {} {}",
                    parts.method,
                    parts.uri,
                    String::from_utf8_lossy(&body)
                ),
            )
                .into_response()
        }
        let router = axum::Router::new()
            .route("/parties/main/echo", any(echo))
            .route(
                "/parties/main/moved",
                any(|| async {
                    (
                        StatusCode::MISDIRECTED_REQUEST,
                        [(MISDIRECTED_HEADER, "1")],
                        "this node does not own main/moved",
                    )
                }),
            )
            .route(
                "/parties/main/own-421",
                any(|| async { (StatusCode::MISDIRECTED_REQUEST, "the room's own 421") }),
            )
            .route(
                "/parties/main/wrong-secret",
                any(|| async {
                    (
                        StatusCode::UNAUTHORIZED,
                        [(REFUSED_SECRET_HEADER, "1")],
                        "internal listener: missing or wrong cluster secret",
                    )
                }),
            )
            .route(
                "/parties/main/own-401",
                any(|| async { (StatusCode::UNAUTHORIZED, "the room's own 401") }),
            )
            .route("/parties/main/hang", any(std::future::pending::<Response>));
        serve(router).await
    }

    async fn text(response: Response) -> String {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_request_reaches_the_owner_as_sent_and_its_answer_comes_back_unchanged() {
        let owner = owner().await;
        let forwarder = Forwarder::new(Arc::from(SECRET));
        let chain = Chain(vec![RoomKey::new("main", "caller room")]);
        for round in 0..2 {
            // The second round reuses the pooled connection.
            let request = Request::builder()
                .method("POST")
                .uri("/parties/main/echo?q=1")
                .header("host", "public.example:1999")
                .header("x-user", "ada")
                .header(SECRET_HEADER, "forged")
                .body(format!("body {round}"))
                .unwrap();
            let response = forwarder
                .request(&peer(owner), request, &chain)
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            let headers = response.headers().clone();
            assert_eq!(headers["x-seen-secret"], SECRET);
            assert_eq!(headers["x-seen-host"], "public.example:1999");
            assert_eq!(headers["x-seen-user"], "ada");
            assert_eq!(Chain::decode(&headers["x-seen-chain"]).unwrap(), chain);
            assert_eq!(
                text(response).await,
                format!("POST /parties/main/echo?q=1 body {round}")
            );
        }
    }

    #[tokio::test]
    async fn only_the_internal_listeners_421_means_misdirected() {
        let owner = owner().await;
        let forwarder = Forwarder::new(Arc::from(SECRET));
        let get = |path: &str| Request::builder().uri(path).body("").unwrap();
        let moved = forwarder
            .request(&peer(owner), get("/parties/main/moved"), &Chain::empty())
            .await;
        assert!(moved.is_err(), "a 421 of the listener is Misdirected");
        let own = forwarder
            .request(&peer(owner), get("/parties/main/own-421"), &Chain::empty())
            .await
            .unwrap();
        assert_eq!(own.status(), StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(text(own).await, "the room's own 421");
    }

    #[tokio::test]
    async fn a_refused_secret_is_a_503_and_a_rooms_401_passes_through() {
        let owner = owner().await;
        let forwarder = Forwarder::new(Arc::from("not the owner's secret"));
        let get = |path: &str| Request::builder().uri(path).body("").unwrap();
        let refused = forwarder
            .request(
                &peer(owner),
                get("/parties/main/wrong-secret"),
                &Chain::empty(),
            )
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            text(refused).await,
            format!("the room's node node-b ({owner}) refused this node's cluster secret")
        );
        let own = forwarder
            .request(&peer(owner), get("/parties/main/own-401"), &Chain::empty())
            .await
            .unwrap();
        assert_eq!(own.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(text(own).await, "the room's own 401");
    }

    #[tokio::test]
    async fn an_unreachable_or_silent_owner_is_a_503_naming_it() {
        let closed = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let mut forwarder = Forwarder::new(Arc::from(SECRET));
        let get = |path: &str| Request::builder().uri(path).body("").unwrap();
        let refused = forwarder
            .request(&peer(closed), get("/parties/main/echo"), &Chain::empty())
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        let message = text(refused).await;
        assert!(
            message.starts_with(&format!("the room's node node-b ({closed}) is unreachable")),
            "{message}"
        );
        // A node that accepts but never answers.
        forwarder.response_timeout = Duration::from_millis(200);
        let owner = owner().await;
        let silent = forwarder
            .request(&peer(owner), get("/parties/main/hang"), &Chain::empty())
            .await
            .unwrap();
        assert_eq!(silent.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(text(silent).await.contains("no answer within"));
    }

    #[test]
    fn forwarded_headers_drop_hop_by_hop_and_forged_cluster_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("x-user", HeaderValue::from_static("ada"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(SECRET_HEADER, HeaderValue::from_static("guessed"));
        headers.insert(chain::HEADER, HeaderValue::from_static("[]"));
        let chain = Chain(vec![crate::storage::RoomKey::new("main", "a")]);
        prepare_headers(&mut headers, &HeaderValue::from_static("s3cret"), &chain);
        assert_eq!(headers[header::HOST], "example.com");
        assert_eq!(headers["x-user"], "ada");
        assert_eq!(headers[SECRET_HEADER], "s3cret");
        assert_eq!(Chain::decode(&headers[chain::HEADER]).unwrap(), chain);
        for gone in ["connection", "x-private", "transfer-encoding"] {
            assert!(!headers.contains_key(gone), "{gone} was forwarded");
        }
        prepare_headers(
            &mut headers,
            &HeaderValue::from_static("s3cret"),
            &Chain::empty(),
        );
        assert!(!headers.contains_key(chain::HEADER));
    }
}
