//! A connection to a room from inside the server: what `RoomStub::socket` returns.

use std::fmt;
use std::sync::Arc;

use axum::extract::ws::Message as Frame;
use tokio::sync::oneshot;

use super::waits::Waiting;
use crate::connection::{Outbound, Outlet, new_id};
use crate::room::{Event, LiveRooms, Refused};
use crate::{Connection, ConnectionContext, Error, Message, Request};

/// An in-process connection to a room: the room sees an ordinary connection (with
/// `on_connect`, `on_message`, `on_close`); this side sends and receives its messages.
///
/// Dropping it closes the connection.
pub struct StubSocket {
    /// Records, while `recv` waits, that the calling room waits for the target room.
    waits: Option<Box<WaitFn>>,
    connection: Connection,
    outlet: Outlet,
    rooms: Arc<LiveRooms>,
    room: String,
    closed: bool,
}

impl StubSocket {
    pub(super) async fn open(
        rooms: Arc<LiveRooms>,
        room: &str,
        target: &str,
    ) -> Result<Self, Error> {
        let uri = format!("http://internal{target}");
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
            connection,
            outlet,
            rooms,
            room: room.to_owned(),
            closed: false,
        })
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
        self.connection.id()
    }

    /// Sends a message to the room (`on_message` runs with it).
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        if self.closed {
            return Err(Error::msg("the connection is closed"));
        }
        let event = Event::Message {
            connection: self.connection.clone(),
            message: message.into(),
        };
        let Some(event) = self
            .rooms
            .try_send(&self.room, event)
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
        self.rooms
            .send(&self.room, event)
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
        Ok(self.next().await)
    }

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

    /// Closes the connection; the room's `on_close` runs.
    pub async fn close(mut self) {
        self.finish().await;
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

impl Drop for StubSocket {
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
        f.debug_struct("StubSocket")
            .field("room", &self.room)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}
