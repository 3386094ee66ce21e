//! WebSockets between nodes: a client of a room another node owns stays connected to the
//! node it reached, which relays its frames to and from a WebSocket on the owner's
//! internal listener.
//!
//! The upstream socket opens before the client's upgrade completes, so a refusal by the
//! owner (a failing `on_start`, the room cap, a wrong secret) reaches the client as the
//! owner's HTTP answer. Then frames pass both ways unchanged: text stays text, binary
//! stays binary, a close frame's code and reason pass through; ping and pong are answered
//! on each hop. A side that ends without a close frame is reported to the other: the
//! owner with 1011, the client with 1012 (reconnect: another node may own the room now).
//!
//! Each direction awaits its send before it reads the next frame, so a slow client slows
//! the relay's reads from the owner, and the owner's outbound limit applies to it as to
//! any client; the relay itself holds at most one frame per direction.

use std::time::Duration;

use axum::extract::ws::{self, CloseFrame as ClientClose, Message as ClientFrame, WebSocket};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Uri};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame as PeerClose, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self as ts, Message as PeerFrame};
use tokio_util::sync::CancellationToken;

use super::Peer;
use super::chain::Chain;
use super::forward::{
    CONNECT_TIMEOUT, Misdirected, RESPONSE_TIMEOUT, internal_uri, is_misdirected, prepare_headers,
    secret_refused, unreachable,
};
use crate::Response;
use crate::connection::close_code;

/// A WebSocket to the owner's internal listener.
pub(crate) type Upstream = WebSocketStream<TcpStream>;

/// The close a client gets when the owner's side ended without a close frame.
pub(crate) const OWNER_GONE: u16 = 1012;
pub(crate) const OWNER_GONE_REASON: &str = "the room's node went away; reconnect";
const CLIENT_GONE_REASON: &str = "the client's connection ended without a close frame";
const SHUTDOWN_REASON: &str = "the relaying node is shutting down; reconnect";
/// How long the second direction may take to finish once the first has ended.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a WebSocket to `peer` for the public request `uri` with `headers` (as the hooks
/// left them). A refusal by the owner comes back as its HTTP answer; an unreachable
/// owner as 503.
pub(crate) async fn open(
    peer: &Peer,
    uri: &Uri,
    headers: &HeaderMap,
    secret: &HeaderValue,
    chain: &Chain,
) -> Result<Result<Upstream, Response>, Misdirected> {
    let uri = match internal_uri(peer, uri, "ws") {
        Ok(uri) => uri,
        Err(response) => return Ok(Err(response)),
    };
    let mut headers = headers.clone();
    prepare_headers(&mut headers, secret, chain);
    // Negotiated on each hop: the handshake's own headers are the relay's.
    for name in [
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-accept",
    ] {
        headers.remove(name);
    }
    if !headers.contains_key(header::HOST) {
        headers.insert(
            header::HOST,
            HeaderValue::from_str(&peer.addr).unwrap_or(HeaderValue::from_static("localhost")),
        );
    }
    let mut request = http::Request::new(());
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let handshake = request.headers_mut();
    handshake.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    handshake.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    handshake.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    handshake.insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::try_from(ts::handshake::client::generate_key())
            .expect("a generated key is a header value"),
    );

    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&*peer.addr)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Ok(Err(unreachable(peer, &error))),
        Err(_) => {
            return Ok(Err(unreachable(
                peer,
                &format!("no connection within {CONNECT_TIMEOUT:?}"),
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    // The owner's frames are what its room sends, which a direct client would receive
    // whatever their size.
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
    match tokio::time::timeout(RESPONSE_TIMEOUT, handshake).await {
        Ok(Ok((upstream, _))) => Ok(Ok(upstream)),
        Ok(Err(ts::Error::Http(response))) => {
            if is_misdirected(response.status(), response.headers()) {
                return Err(Misdirected);
            }
            if let Some(refused) = secret_refused(peer, response.status(), response.headers()) {
                return Ok(Err(refused));
            }
            let (mut parts, body) = response.into_parts();
            super::forward::strip_hop_by_hop(&mut parts.headers);
            let body = axum::body::Body::from(body.unwrap_or_default());
            Ok(Err(Response::from_parts(parts, body)))
        }
        Ok(Err(error)) => Ok(Err(unreachable(peer, &error))),
        Err(_) => Ok(Err(unreachable(
            peer,
            &format!("no WebSocket handshake within {RESPONSE_TIMEOUT:?}"),
        ))),
    }
}

/// Relays frames between the client and the owner until both directions have ended, or
/// shutdown closes the client with 1012 and the owner with 1001.
pub(crate) async fn pump(client: WebSocket, upstream: Upstream, stopping: CancellationToken) {
    let (client_tx, client_rx) = client.split();
    let (upstream_tx, upstream_rx) = upstream.split();
    let up = client_to_owner(client_rx, upstream_tx, stopping.clone());
    let down = owner_to_client(upstream_rx, client_tx, stopping);
    tokio::pin!(up, down);
    // Once one direction has ended (usually: a close passed through), the other gets a
    // bounded time to carry the answering close.
    tokio::select! {
        () = &mut up => { let _ = tokio::time::timeout(CLOSE_TIMEOUT, down).await; }
        () = &mut down => { let _ = tokio::time::timeout(CLOSE_TIMEOUT, up).await; }
    }
}

async fn client_to_owner<R, W>(mut client: R, mut owner: W, stopping: CancellationToken)
where
    R: Stream<Item = Result<ClientFrame, axum::Error>> + Unpin,
    W: Sink<PeerFrame, Error = ts::Error> + Unpin,
{
    loop {
        let frame = tokio::select! {
            biased;
            () = stopping.cancelled() => {
                finish(&mut owner, peer_close(close_code::GOING_AWAY, SHUTDOWN_REASON)).await;
                return;
            }
            frame = client.next() => frame,
        };
        let frame = match frame {
            Some(Ok(ClientFrame::Text(text))) => match ts::Utf8Bytes::try_from(Bytes::from(text)) {
                Ok(text) => PeerFrame::Text(text),
                Err(_) => continue, // axum validated it; cannot happen.
            },
            Some(Ok(ClientFrame::Binary(bytes))) => PeerFrame::Binary(bytes),
            // Answered on this hop by the client's socket.
            Some(Ok(ClientFrame::Ping(_) | ClientFrame::Pong(_))) => continue,
            Some(Ok(ClientFrame::Close(close))) => {
                let close = close.map(|close| PeerClose {
                    code: CloseCode::from(close.code),
                    reason: ts::Utf8Bytes::try_from(Bytes::from(close.reason)).unwrap_or_default(),
                });
                finish(&mut owner, PeerFrame::Close(close)).await;
                return;
            }
            None | Some(Err(_)) => {
                finish(
                    &mut owner,
                    peer_close(close_code::INTERNAL_ERROR, CLIENT_GONE_REASON),
                )
                .await;
                return;
            }
        };
        let sent = tokio::select! {
            biased;
            () = stopping.cancelled() => continue,
            sent = owner.send(frame) => sent,
        };
        if sent.is_err() {
            // The owner closed first: flush the answer to its close.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, owner.close()).await;
            return;
        }
    }
}

async fn owner_to_client<R, W>(mut owner: R, mut client: W, stopping: CancellationToken)
where
    R: Stream<Item = Result<PeerFrame, ts::Error>> + Unpin,
    W: Sink<ClientFrame, Error = axum::Error> + Unpin,
{
    loop {
        let frame = tokio::select! {
            biased;
            () = stopping.cancelled() => {
                finish(&mut client, client_close(OWNER_GONE, SHUTDOWN_REASON)).await;
                return;
            }
            frame = owner.next() => frame,
        };
        let frame = match frame {
            Some(Ok(PeerFrame::Text(text))) => {
                match ws::Utf8Bytes::try_from(Bytes::from(text)) {
                    Ok(text) => ClientFrame::Text(text),
                    Err(_) => continue, // tungstenite validated it; cannot happen.
                }
            }
            Some(Ok(PeerFrame::Binary(bytes))) => ClientFrame::Binary(bytes),
            Some(Ok(PeerFrame::Ping(_) | PeerFrame::Pong(_) | PeerFrame::Frame(_))) => continue,
            Some(Ok(PeerFrame::Close(close))) => {
                let close = close.map(|close| ClientClose {
                    code: close.code.into(),
                    reason: ws::Utf8Bytes::try_from(Bytes::from(close.reason)).unwrap_or_default(),
                });
                finish(&mut client, ClientFrame::Close(close)).await;
                return;
            }
            None | Some(Err(_)) => {
                finish(&mut client, client_close(OWNER_GONE, OWNER_GONE_REASON)).await;
                return;
            }
        };
        // Shutdown must not wait for a client that does not read.
        let sent = tokio::select! {
            biased;
            () = stopping.cancelled() => continue,
            sent = client.send(frame) => sent,
        };
        if sent.is_err() {
            // The client closed first: flush the answer to its close.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await;
            return;
        }
    }
}

/// Sends the last frame (a close) and completes the close: the frame may be refused when
/// the other side closed first, and then the close this hop owes it (queued by the
/// WebSocket library when that close arrived) still has to be flushed. Bounded: a peer
/// that does not read must not hold the relay.
async fn finish<S, T>(sink: &mut S, last: T)
where
    S: Sink<T> + Unpin,
{
    let close = async {
        let _ = sink.send(last).await;
        let _ = sink.close().await;
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
}

fn peer_close(code: u16, reason: &'static str) -> PeerFrame {
    PeerFrame::Close(Some(PeerClose {
        code: CloseCode::from(code),
        reason: ts::Utf8Bytes::from_static(reason),
    }))
}

fn client_close(code: u16, reason: &'static str) -> ClientFrame {
    ClientFrame::Close(Some(ClientClose {
        code,
        reason: ws::Utf8Bytes::from_static(reason),
    }))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::{FromRequestParts, Path, State, WebSocketUpgrade};
    use axum::response::IntoResponse;
    use axum::routing::any;
    use http::StatusCode;
    use tokio::sync::mpsc;
    use tokio_tungstenite::MaybeTlsStream;

    use super::*;
    use crate::cluster::forward::{MISDIRECTED_HEADER, SECRET_HEADER};
    use crate::cluster::test_support::{peer, serve};
    use crate::storage::RoomKey;

    const SECRET: &str = "s3cret";
    /// A hang guard, never a measure.
    const GUARD: Duration = Duration::from_secs(60);
    const FLOOD_FRAMES: usize = 512;
    const FLOOD_FRAME: usize = 256 * 1024;

    type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

    /// What the owner saw.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Close(Option<(u16, String)>),
    }

    #[derive(Clone)]
    struct Owner {
        seen: mpsc::Sender<Seen>,
        /// Bytes the flooding room has handed to its socket.
        flooded: Arc<AtomicUsize>,
    }

    /// The owner's internal listener, as far as the relay can tell: rooms that echo,
    /// close, vanish, refuse, have moved, or flood.
    async fn owner() -> (SocketAddr, mpsc::Receiver<Seen>, Arc<AtomicUsize>) {
        async fn room(
            State(owner): State<Owner>,
            Path(room): Path<String>,
            request: axum::extract::Request,
        ) -> crate::Response {
            match room.as_str() {
                "refuse" => return (StatusCode::FORBIDDEN, "no such room here").into_response(),
                "moved" => {
                    return (
                        StatusCode::MISDIRECTED_REQUEST,
                        [(MISDIRECTED_HEADER, "1")],
                        "this node does not own main/moved",
                    )
                        .into_response();
                }
                _ => {}
            }
            let (mut parts, _) = request.into_parts();
            let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
                .await
                .unwrap();
            let seen = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .map(|value| value.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let handshake = serde_json::json!({
                "uri": parts.uri.to_string(),
                "host": seen("host"),
                "secret": seen(SECRET_HEADER),
                "chain": seen(crate::cluster::chain::HEADER),
                "user": seen("x-user"),
            })
            .to_string();
            upgrade.on_upgrade(move |socket| session(room, socket, owner, handshake))
        }

        async fn session(room: String, mut socket: WebSocket, owner: Owner, handshake: String) {
            if room == "flood" {
                let frame = Bytes::from(vec![7u8; FLOOD_FRAME]);
                for _ in 0..FLOOD_FRAMES {
                    if socket
                        .send(ClientFrame::Binary(frame.clone()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    owner.flooded.fetch_add(FLOOD_FRAME, Ordering::SeqCst);
                }
                let _ = socket.send(client_close(1000, "flood done")).await;
                return;
            }
            while let Some(frame) = socket.recv().await {
                let reply = match frame {
                    Ok(ClientFrame::Text(text)) => match text.as_str() {
                        "handshake" => ClientFrame::Text(handshake.clone().into()),
                        "close-please" => client_close(4001, "bye from the room"),
                        "vanish" => return,
                        _ => ClientFrame::Text(text),
                    },
                    Ok(ClientFrame::Binary(bytes)) => ClientFrame::Binary(bytes),
                    Ok(ClientFrame::Close(close)) => {
                        let close = close.map(|close| (close.code, close.reason.to_string()));
                        let _ = owner.seen.send(Seen::Close(close)).await;
                        return;
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                };
                if socket.send(reply).await.is_err() {
                    break;
                }
            }
            let _ = owner.seen.send(Seen::Close(None)).await;
        }

        let (seen, seen_rx) = mpsc::channel(16);
        let flooded = Arc::new(AtomicUsize::new(0));
        let state = Owner {
            seen,
            flooded: Arc::clone(&flooded),
        };
        let router = axum::Router::new()
            .route("/parties/main/{room}", any(room))
            .with_state(state);
        (serve(router).await, seen_rx, flooded)
    }

    /// The first node: opens the owner's socket before completing the client's upgrade,
    /// then pumps.
    async fn front(owner: SocketAddr, stopping: CancellationToken) -> SocketAddr {
        async fn relay(
            State((owner, stopping)): State<(SocketAddr, CancellationToken)>,
            request: axum::extract::Request,
        ) -> crate::Response {
            let (mut parts, _) = request.into_parts();
            let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
                .await
                .unwrap();
            let secret = HeaderValue::from_static(SECRET);
            let chain = Chain(vec![RoomKey::new("main", "caller room")]);
            match open(&peer(owner), &parts.uri, &parts.headers, &secret, &chain).await {
                Err(Misdirected) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "misdirected").into_response()
                }
                Ok(Err(refusal)) => refusal,
                Ok(Ok(upstream)) => {
                    upgrade.on_upgrade(move |client| pump(client, upstream, stopping))
                }
            }
        }
        let router = axum::Router::new()
            .route("/parties/main/{room}", any(relay))
            .with_state((owner, stopping));
        serve(router).await
    }

    async fn connect(front: SocketAddr, room: &str) -> Client {
        let request = http::Request::builder()
            .uri(format!("ws://{front}/parties/main/{room}?x=1"))
            .header("host", front.to_string())
            .header("x-user", "ada")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", ts::handshake::client::generate_key())
            .body(())
            .unwrap();
        let (client, _) = tokio::time::timeout(GUARD, tokio_tungstenite::connect_async(request))
            .await
            .unwrap()
            .unwrap();
        client
    }

    async fn next(client: &mut Client) -> Option<PeerFrame> {
        tokio::time::timeout(GUARD, client.next())
            .await
            .expect("a frame within the guard")
            .map(Result::unwrap)
    }

    fn close_of(frame: Option<PeerFrame>) -> (u16, String) {
        match frame {
            Some(PeerFrame::Close(Some(close))) => (close.code.into(), close.reason.to_string()),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    async fn seen(rx: &mut mpsc::Receiver<Seen>) -> Seen {
        tokio::time::timeout(GUARD, rx.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn frames_and_the_clients_close_pass_through_unchanged() {
        let (owner, mut seen_rx, _) = owner().await;
        let front = front(owner, CancellationToken::new()).await;
        let mut client = connect(front, "echo").await;

        client.send(PeerFrame::text("handshake")).await.unwrap();
        let Some(PeerFrame::Text(handshake)) = next(&mut client).await else {
            panic!("no handshake");
        };
        let handshake: serde_json::Value = serde_json::from_str(&handshake).unwrap();
        assert_eq!(handshake["uri"], "/parties/main/echo?x=1");
        assert_eq!(handshake["host"], front.to_string());
        assert_eq!(handshake["secret"], SECRET);
        assert_eq!(handshake["user"], "ada");
        let chain = HeaderValue::from_str(handshake["chain"].as_str().unwrap()).unwrap();
        assert_eq!(
            Chain::decode(&chain).unwrap(),
            Chain(vec![RoomKey::new("main", "caller room")])
        );

        client.send(PeerFrame::text("héllo")).await.unwrap();
        assert_eq!(next(&mut client).await, Some(PeerFrame::text("héllo")));
        let binary = Bytes::from_static(&[0, 1, 2, 0xff]);
        client
            .send(PeerFrame::Binary(binary.clone()))
            .await
            .unwrap();
        assert_eq!(next(&mut client).await, Some(PeerFrame::Binary(binary)));
        // Text that looks binary stays text, and the other way round.
        client.send(PeerFrame::text("\u{0}\u{1}")).await.unwrap();
        assert_eq!(next(&mut client).await, Some(PeerFrame::text("\u{0}\u{1}")));

        client
            .send(PeerFrame::Close(Some(PeerClose {
                code: CloseCode::from(4100),
                reason: "client says bye".into(),
            })))
            .await
            .unwrap();
        assert_eq!(
            seen(&mut seen_rx).await,
            Seen::Close(Some((4100, "client says bye".to_owned())))
        );
        // The owner's answering close comes back through the relay.
        assert_eq!(
            close_of(next(&mut client).await),
            (4100, "client says bye".to_owned())
        );
    }

    #[tokio::test]
    async fn the_owners_close_code_and_reason_reach_the_client() {
        let (owner, _seen, _) = owner().await;
        let front = front(owner, CancellationToken::new()).await;
        let mut client = connect(front, "echo").await;
        client.send(PeerFrame::text("close-please")).await.unwrap();
        assert_eq!(
            close_of(next(&mut client).await),
            (4001, "bye from the room".to_owned())
        );
    }

    #[tokio::test]
    async fn an_owner_that_vanishes_closes_the_client_1012() {
        let (owner, _seen, _) = owner().await;
        let front = front(owner, CancellationToken::new()).await;
        let mut client = connect(front, "echo").await;
        client.send(PeerFrame::text("vanish")).await.unwrap();
        assert_eq!(
            close_of(next(&mut client).await),
            (OWNER_GONE, OWNER_GONE_REASON.to_owned())
        );
    }

    #[tokio::test]
    async fn a_client_that_vanishes_closes_the_owner_1011() {
        let (owner, mut seen_rx, _) = owner().await;
        let front = front(owner, CancellationToken::new()).await;
        let mut client = connect(front, "echo").await;
        client.send(PeerFrame::text("ping")).await.unwrap();
        assert_eq!(next(&mut client).await, Some(PeerFrame::text("ping")));
        drop(client);
        assert_eq!(
            seen(&mut seen_rx).await,
            Seen::Close(Some((
                close_code::INTERNAL_ERROR,
                CLIENT_GONE_REASON.to_owned()
            )))
        );
    }

    #[tokio::test]
    async fn shutdown_closes_the_client_1012_and_the_owner_1001() {
        let (owner, mut seen_rx, _) = owner().await;
        let stopping = CancellationToken::new();
        let front = front(owner, stopping.clone()).await;
        let mut client = connect(front, "echo").await;
        client.send(PeerFrame::text("ping")).await.unwrap();
        assert_eq!(next(&mut client).await, Some(PeerFrame::text("ping")));
        stopping.cancel();
        assert_eq!(
            close_of(next(&mut client).await),
            (OWNER_GONE, SHUTDOWN_REASON.to_owned())
        );
        assert_eq!(
            seen(&mut seen_rx).await,
            Seen::Close(Some((close_code::GOING_AWAY, SHUTDOWN_REASON.to_owned())))
        );
    }

    #[tokio::test]
    async fn the_owners_refusal_is_the_clients_http_answer() {
        let (owner, _seen, _) = owner().await;
        let front = front(owner, CancellationToken::new()).await;
        let url = format!("ws://{front}/parties/main/refuse");
        match tokio_tungstenite::connect_async(url).await {
            Err(ts::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::FORBIDDEN);
                assert_eq!(response.body().as_deref(), Some(&b"no such room here"[..]));
            }
            other => panic!("expected the owner's 403, got {other:?}"),
        }
        let secret = HeaderValue::from_static(SECRET);
        let moved: Uri = "/parties/main/moved".parse().unwrap();
        let answer = open(
            &peer(owner),
            &moved,
            &HeaderMap::new(),
            &secret,
            &Chain::empty(),
        )
        .await;
        assert!(matches!(answer, Err(Misdirected)));
        let closed = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let answer = open(
            &peer(closed),
            &moved,
            &HeaderMap::new(),
            &secret,
            &Chain::empty(),
        )
        .await;
        let Ok(Err(response)) = answer else {
            panic!("expected a 503");
        };
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_stops_the_relay_reading_from_the_owner() {
        let (owner, _seen, flooded) = owner().await;
        let front = front(owner, CancellationToken::new()).await;
        // A small receive buffer, so the client's kernel holds little.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        let stream = socket.connect(front).await.unwrap();
        let url = format!("ws://{front}/parties/main/flood");
        let (mut client, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        // Wait until the owner's sends stop making progress: with back-pressure they stop
        // once the kernels' buffers on the way are full; a relay that buffered would let
        // the owner hand over everything.
        let total = FLOOD_FRAMES * FLOOD_FRAME;
        let stalled = tokio::time::timeout(GUARD, async {
            let mut last = usize::MAX;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = flooded.load(Ordering::SeqCst);
                if now == last || now == total {
                    return now;
                }
                last = now;
            }
        })
        .await
        .unwrap();
        assert!(
            stalled <= total / 2,
            "the owner sent {stalled} of {total} bytes to a client that reads nothing"
        );
        // Nothing was dropped on the way: the client reads every frame, then the close.
        let mut received = 0;
        loop {
            match next(&mut client).await {
                Some(PeerFrame::Binary(bytes)) => received += bytes.len(),
                Some(PeerFrame::Close(close)) => {
                    assert_eq!(close.unwrap().reason.as_str(), "flood done");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(received, total);
    }
}
