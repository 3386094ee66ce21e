//! One task per accepted socket: it runs the room's `on_connect`, then moves frames
//! between the socket and the room until either side closes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::WebSocketUpgrade;
use axum::extract::ws::{CloseFrame, Message as Frame, WebSocket};
use futures_util::SinkExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::connection::{Outbound, Outlet, close_code, truncate_reason};
use crate::room::{Event, Rooms};
use crate::{Connection, ConnectionContext, Error, Limits, Message};

/// How long a closing socket waits for the peer's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer that stopped reading gets to take its close frame.
const ABANDON_TIMEOUT: Duration = Duration::from_millis(500);
/// The most frames written between two flushes: bounds one batch's write buffer.
const MAX_BATCH: usize = 64;

/// Sizes a socket's buffers deliberately: tungstenite's defaults (128 KiB to read) would
/// cost megabytes per thousand idle connections. The read buffer is allocated and
/// zero-filled for every socket, idle or not, and again before every read: 1 KiB holds
/// many chat-sized frames per read, and a larger frame is still read whole, in more
/// reads.
pub(super) fn configure(upgrade: WebSocketUpgrade, limits: &Limits) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(limits.max_message_size)
        .max_frame_size(limits.max_message_size)
}

pub(super) struct Session {
    pub(super) connection: Connection,
    pub(super) outlet: Outlet,
    pub(super) rooms: Arc<Rooms>,
    pub(super) room: String,
    pub(super) stopping: CancellationToken,
}

/// How the frame pump ended.
enum End {
    /// The peer closed, or the socket ended cleanly.
    Closed,
    /// The socket failed; `on_error` hears about it.
    Failed(Error),
}

impl Session {
    /// `ctx` goes to `on_connect` and is not kept: the upgrade request's headers share
    /// hyper's read buffer (8–16 KiB), which would otherwise live as long as the socket.
    ///
    /// Not an `async fn`: one would keep a second copy of its arguments (the socket, the
    /// session) in the task's future for the socket's whole life.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn run(
        mut self,
        mut socket: WebSocket,
        ctx: Box<ConnectionContext>,
    ) -> impl Future<Output = ()> + Send {
        async move {
            let (reply, connected) = oneshot::channel();
            let connect = Event::Connect {
                connection: self.connection.clone(),
                ctx: *ctx,
                reply,
            };
            // Inbound frames wait in the socket until `on_connect` has returned.
            let refused = match self.rooms.send(&self.room, connect).await {
                Err(refused) => Some((close_code::TRY_AGAIN_LATER, refused.to_string())),
                Ok(()) => match connected.await {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some((
                        close_code::INTERNAL_ERROR,
                        error.public("connecting failed", "").message,
                    )),
                    Err(_) => Some((
                        close_code::INTERNAL_ERROR,
                        "The room stopped before accepting the connection".to_owned(),
                    )),
                },
            };
            if let Some((code, mut reason)) = refused {
                if reason.is_empty() {
                    reason = "Uncaught exception when connecting".to_owned();
                }
                self.connection.mark_closed();
                close(&mut socket, code, &reason).await;
                return;
            }
            let end = self.pump(&mut socket).await;
            self.connection.mark_closed();
            let error = match end {
                End::Closed => None,
                End::Failed(error) => Some(error),
            };
            let closed = Event::Closed {
                connection: self.connection,
                error,
            };
            // The room is live while it has this socket, so this is not refused.
            let _ = self.rooms.send(&self.room, closed).await;
        }
    }

    async fn pump(&mut self, socket: &mut WebSocket) -> End {
        loop {
            tokio::select! {
                biased;
                () = self.stopping.cancelled() => {
                    close(socket, close_code::GOING_AWAY, "Server shutting down").await;
                    return End::Closed;
                }
                () = self.connection.aborted() => {
                    abandon(socket).await;
                    return End::Closed;
                }
                outbound = self.outlet.frames.recv() => {
                    let Some(outbound) = outbound else { return End::Closed };
                    match self.write(socket, outbound).await {
                        Ok(Some(close_frame)) => {
                            finish_close(socket, close_frame).await;
                            return End::Closed;
                        }
                        Ok(None) => {}
                        Err(end) => return end,
                    }
                }
                inbound = socket.recv() => {
                    let message = match inbound {
                        Some(Ok(Frame::Text(text))) => Message::Text(text),
                        Some(Ok(Frame::Binary(bytes))) => Message::Binary(bytes),
                        Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => continue,
                        Some(Ok(Frame::Close(_))) => {
                            // Send the close reply tungstenite queued, before the socket
                            // is dropped: the peer's closing handshake completes.
                            let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
                            return End::Closed;
                        }
                        None => return End::Closed,
                        Some(Err(error)) => return self.read_failed(socket, error).await,
                    };
                    let event = Event::Message { connection: self.connection.clone(), message };
                    let _ = self.rooms.send(&self.room, event).await;
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued, then flushes once. Returns the close
    /// frame if the room asked to close. Gives up when the peer is aborted or the server
    /// stops, so a peer that stopped reading cannot hold the task forever.
    async fn write(
        &mut self,
        socket: &mut WebSocket,
        first: Outbound,
    ) -> Result<Option<CloseFrame>, End> {
        let Self {
            connection,
            outlet,
            stopping,
            ..
        } = self;
        let batch = async {
            let mut next = Some(first);
            let mut written = 0;
            while let Some(outbound) = next.take() {
                match outbound {
                    Outbound::Frame(frame) => {
                        connection.dequeued(&frame);
                        socket.feed(frame).await?;
                    }
                    Outbound::Close(close_frame) => {
                        socket.flush().await?;
                        return Ok(Some(close_frame));
                    }
                }
                written += 1;
                if written < MAX_BATCH {
                    next = outlet.frames.try_recv();
                }
            }
            socket.flush().await?;
            Ok::<_, axum::Error>(None)
        };
        tokio::select! {
            result = batch => return result.map_err(|error| End::Failed(Error::new(error))),
            () = connection.aborted() => abandon(socket).await,
            () = stopping.cancelled() => {
                close(socket, close_code::GOING_AWAY, "Server shutting down").await;
            }
        }
        Err(End::Closed)
    }

    async fn read_failed(&self, socket: &mut WebSocket, error: axum::Error) -> End {
        let too_big = std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<tungstenite::Error>())
            .is_some_and(|error| matches!(error, tungstenite::Error::Capacity(_)));
        if too_big {
            close(socket, close_code::MESSAGE_TOO_BIG, "Message is too large").await;
            End::Closed
        } else {
            End::Failed(Error::new(error))
        }
    }
}

/// Closes a peer that fell too far behind: it is not reading, so the close frame gets one
/// short chance to go out and the peer's answer is not awaited; the room hears of the
/// close at once.
async fn abandon(socket: &mut WebSocket) {
    let frame = CloseFrame {
        code: close_code::POLICY_VIOLATION,
        reason: "outbound queue limit exceeded".into(),
    };
    let _ = tokio::time::timeout(ABANDON_TIMEOUT, socket.send(Frame::Close(Some(frame)))).await;
}

/// Sends a close frame and waits (briefly) for the peer's.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: truncate_reason(reason).into(),
    };
    finish_close(socket, frame).await;
}

async fn finish_close(socket: &mut WebSocket, frame: CloseFrame) {
    let handshake = async {
        if socket.send(Frame::Close(Some(frame))).await.is_err() {
            return;
        }
        // Read until the peer answers the close (or goes away), dropping data frames.
        while let Some(Ok(frame)) = socket.recv().await {
            if matches!(frame, Frame::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, handshake).await;
}
