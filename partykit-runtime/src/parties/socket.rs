//! A connection to a room from inside the server: what `RoomStub::socket` returns.

use std::fmt;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{self, Message as Frame};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::{self as ts, Message as PeerFrame};

use super::waits::Waiting;
use crate::cluster::relay::Upstream;
use crate::connection::{Outbound, Outlet, new_id};
use crate::room::{Event, LiveRooms, Refused};
use crate::tasks::Tasks;
use crate::{Connection, ConnectionContext, Error, Message, Request};

/// A connection to a room: the room sees an ordinary connection (with `on_connect`,
/// `on_message`, `on_close`); this side sends and receives its messages. The room may live
/// in this process or, in cluster mode, on the node that owns it (then the connection is
/// a WebSocket to that node).
///
/// Dropping it closes the connection.
pub struct StubSocket {
    /// Records, while `recv` waits, that the calling room waits for the target room.
    waits: Option<Box<WaitFn>>,
    inner: Inner,
}

enum Inner {
    Local(Local),
    Remote(Remote),
}

/// A connection to a room of this process.
struct Local {
    connection: Connection,
    outlet: Outlet,
    rooms: Arc<LiveRooms>,
    room: String,
    closed: bool,
}

/// A WebSocket to the internal listener of the node that owns the room.
struct Remote {
    id: String,
    sink: Arc<tokio::sync::Mutex<SplitSink<Upstream, PeerFrame>>>,
    stream: SplitStream<Upstream>,
    /// Owns the close a dropped socket still sends.
    tasks: Tasks,
    closed: bool,
}

/// The host of a stub connection's `uri`.
pub(super) const STUB_HOST: &str = "internal";

/// How long a close to the owner's node may take when the socket is closed or dropped.
const REMOTE_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl StubSocket {
    pub(super) async fn open(
        rooms: Arc<LiveRooms>,
        room: &str,
        target: &str,
    ) -> Result<Self, Error> {
        let uri = format!("http://{STUB_HOST}{target}");
        let request = Request::builder()
            .uri(target)
            .header(http::header::UPGRADE, "websocket")
            .body(bytes::Bytes::new())?;
        let (connection, outlet) =
            Connection::new(new_id(), uri, rooms.limits().max_outbound_buffer);
        let (reply, connected) = oneshot::channel();
        let connect = Event::Connect {
            connection: connection.clone(),
            ctx: ConnectionContext { request },
            reply,
        };
        rooms
            .send(room, connect)
            .await
            .map_err(Refused::into_error)?;
        connected
            .await
            .map_err(|_| Error::msg("the room stopped before accepting the connection"))??;
        Ok(Self {
            waits: None,
            inner: Inner::Local(Local {
                connection,
                outlet,
                rooms,
                room: room.to_owned(),
                closed: false,
            }),
        })
    }

    /// A connection over a WebSocket to the room's owner, whose room knows it as `id`.
    pub(super) fn remote(id: String, upstream: Upstream, tasks: &Tasks) -> Self {
        let (sink, stream) = upstream.split();
        Self {
            waits: None,
            inner: Inner::Remote(Remote {
                id,
                sink: Arc::new(tokio::sync::Mutex::new(sink)),
                stream,
                tasks: tasks.clone(),
                closed: false,
            }),
        }
    }

    pub(super) fn with_waits(
        mut self,
        waits: impl Fn() -> Result<Option<Waiting>, Error> + Send + Sync + 'static,
    ) -> Self {
        self.waits = Some(Box::new(waits));
        self
    }

    /// The connection's id, as the room sees it.
    pub fn id(&self) -> &str {
        match &self.inner {
            Inner::Local(local) => local.connection.id(),
            Inner::Remote(remote) => &remote.id,
        }
    }

    /// Sends a message to the room (`on_message` runs with it).
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        let local = match &self.inner {
            Inner::Local(local) => local,
            Inner::Remote(remote) => {
                return remote.send(message.into(), self.waits.as_deref()).await;
            }
        };
        if local.closed {
            return Err(Error::msg("the connection is closed"));
        }
        let event = Event::Message {
            connection: local.connection.clone(),
            message: message.into(),
        };
        let Some(event) = local
            .rooms
            .try_send(&local.room, event)
            .map_err(Refused::into_error)?
        else {
            return Ok(());
        };
        // The room's mailbox is full: waiting for room in it is waiting for the room,
        // which may be waiting for the caller.
        let _waiting = match &self.waits {
            Some(waits) => waits()?,
            None => None,
        };
        local
            .rooms
            .send(&local.room, event)
            .await
            .map_err(Refused::into_error)
    }

    /// The next message from the room; `None` once the room closed the connection.
    ///
    /// Fails with 508 if waiting would deadlock: the room being waited for is itself
    /// (directly or through others) waiting for the caller's room.
    pub async fn recv(&mut self) -> Result<Option<Message>, Error> {
        let _waiting = match &self.waits {
            Some(waits) => waits()?,
            None => None,
        };
        match &mut self.inner {
            Inner::Local(local) => Ok(local.next().await),
            Inner::Remote(remote) => Ok(remote.next().await),
        }
    }

    /// Closes the connection; the room's `on_close` runs.
    pub async fn close(mut self) {
        match &mut self.inner {
            Inner::Local(local) => local.finish().await,
            Inner::Remote(remote) => remote.finish().await,
        }
    }
}

impl Local {
    async fn next(&mut self) -> Option<Message> {
        loop {
            match self.outlet.frames.recv().await? {
                Outbound::Frame(frame) => {
                    self.connection.dequeued(&frame);
                    match frame {
                        Frame::Text(text) => return Some(Message::Text(text)),
                        Frame::Binary(bytes) => return Some(Message::Binary(bytes)),
                        _ => continue,
                    }
                }
                Outbound::Close(_) => {
                    self.finish().await;
                    return None;
                }
            }
        }
    }

    async fn finish(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        self.connection.mark_closed();
        let closed = Event::Closed {
            connection: self.connection.clone(),
            error: None,
        };
        // A room with an open connection is live, so this is not refused.
        let _ = self.rooms.send(&self.room, closed).await;
    }
}

impl Remote {
    async fn send(&self, message: Message, waits: Option<&WaitFn>) -> Result<(), Error> {
        if self.closed {
            return Err(Error::msg("the connection is closed"));
        }
        let frame = match message {
            Message::Text(text) => {
                PeerFrame::Text(ts::Utf8Bytes::try_from(Bytes::from(text)).map_err(Error::new)?)
            }
            Message::Binary(bytes) => PeerFrame::Binary(bytes),
        };
        let mut sink = self.sink.lock().await;
        // A socket whose last write could not go out at once (the owner's room does not
        // read) makes this send wait for the room, which may be waiting for the caller.
        let ready = std::future::poll_fn(|cx| Poll::Ready(sink.poll_ready_unpin(cx))).await;
        let _waiting = match waits {
            Some(waits) if ready.is_pending() => waits()?,
            _ => None,
        };
        sink.send(frame).await.map_err(|error| {
            Error::msg(format!("the connection to the room's node failed: {error}"))
        })
    }

    async fn next(&mut self) -> Option<Message> {
        if self.closed {
            return None;
        }
        loop {
            match self.stream.next().await {
                Some(Ok(PeerFrame::Text(text))) => {
                    if let Ok(text) = ws::Utf8Bytes::try_from(Bytes::from(text)) {
                        return Some(Message::Text(text));
                    }
                }
                Some(Ok(PeerFrame::Binary(bytes))) => return Some(Message::Binary(bytes)),
                Some(Ok(PeerFrame::Ping(_) | PeerFrame::Pong(_) | PeerFrame::Frame(_))) => {}
                Some(Ok(PeerFrame::Close(_)) | Err(_)) | None => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }

    async fn finish(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let close = async {
            let _ = self.sink.lock().await.send(PeerFrame::Close(None)).await;
        };
        let _ = tokio::time::timeout(REMOTE_CLOSE_TIMEOUT, close).await;
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // Drop cannot await: a task of the server's tells the owner, so its room runs
        // `on_close` without waiting for the TCP connection to time out.
        let sink = Arc::clone(&self.sink);
        self.tasks.spawn(async move {
            let close = async {
                let _ = sink.lock().await.send(PeerFrame::Close(None)).await;
            };
            let _ = tokio::time::timeout(REMOTE_CLOSE_TIMEOUT, close).await;
        });
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.connection.mark_closed();
        let rooms = Arc::clone(&self.rooms);
        let room = std::mem::take(&mut self.room);
        let connection = self.connection.clone();
        let closed = Event::Closed {
            connection,
            error: None,
        };
        // Drop cannot await; the room still hears of the close, at once if its mailbox
        // has room, otherwise from a task of the server's.
        if let Ok(Some(closed)) = rooms.try_send(&room, closed) {
            let tasks = rooms.tasks().clone();
            tasks.spawn(async move {
                let _ = rooms.send(&room, closed).await;
            });
        }
    }
}

type WaitFn = dyn Fn() -> Result<Option<Waiting>, Error> + Send + Sync;

impl fmt::Debug for StubSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Local(local) => f
                .debug_struct("StubSocket")
                .field("room", &local.room)
                .field("connection", &local.connection)
                .finish_non_exhaustive(),
            Inner::Remote(remote) => f
                .debug_struct("StubSocket")
                .field("id", &remote.id)
                .field("remote", &true)
                .finish_non_exhaustive(),
        }
    }
}

/// The target with the connection's id as `_pk`, which the owner's room takes as the
/// connection's id.
pub(super) fn remote_uri(target: &str, id: &str) -> Result<http::Uri, Error> {
    let separator = if target.contains('?') { '&' } else { '?' };
    format!("{target}{separator}_pk={id}")
        .parse()
        .map_err(|error| Error::msg(format!("cannot call {target}: {error}")))
}

/// The error of a socket the owner's node refused, with its status and message.
pub(super) async fn refused(response: crate::Response) -> Error {
    let status = response.status();
    // The owner's refusals are short messages; a larger body is not read.
    let body = http_body_util::Limited::new(response.into_body(), 64 * 1024);
    let message = match http_body_util::BodyExt::collect(body).await {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    Error::with_status(
        status,
        format!("the room refused the connection: {message}"),
    )
}
