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
    unreachable,
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
                let _ = owner.send(peer_close(close_code::GOING_AWAY, SHUTDOWN_REASON)).await;
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
                let _ = owner.send(PeerFrame::Close(close)).await;
                return;
            }
            None | Some(Err(_)) => {
                let _ = owner
                    .send(peer_close(close_code::INTERNAL_ERROR, CLIENT_GONE_REASON))
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
                let _ = client.send(client_close(OWNER_GONE, SHUTDOWN_REASON)).await;
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
                let _ = client.send(ClientFrame::Close(close)).await;
                return;
            }
            None | Some(Err(_)) => {
                let _ = client
                    .send(client_close(OWNER_GONE, OWNER_GONE_REASON))
                    .await;
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
            return;
        }
    }
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
