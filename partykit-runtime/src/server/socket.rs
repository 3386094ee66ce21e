//! One task per accepted socket: it runs the room's `on_connect`, then moves frames
//! between the socket and the room until either side closes.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use axum::extract::WebSocketUpgrade;
use axum::extract::ws::{CloseFrame, Message as Frame, WebSocket};
use futures_util::task::AtomicWaker;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::connection::{Outbound, Outlet, close_code, truncate_reason};
use crate::room::{Event, LiveRooms};
use crate::tasks::Tasks;
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

/// Completes `upgrade` (sized by [`configure`]) with `run` as the socket's task, owned by
/// `tasks`. Shutdown counts the socket from this call on, not only once its task has
/// started, so a socket accepted just before shutdown still joins its room and closes
/// with the server's farewell.
pub(super) fn accept<F, Fut>(
    upgrade: WebSocketUpgrade,
    limits: &Limits,
    tasks: &Tasks,
    run: F,
) -> axum::response::Response
where
    F: FnOnce(WebSocket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let hold = tasks.hold_connection();
    let tasks = tasks.clone();
    configure(upgrade, limits)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |websocket| {
            let task = tasks.track_connection(run(websocket));
            drop(hold);
            task
        })
}

pub(super) struct Session {
    pub(super) connection: Connection,
    pub(super) outlet: Outlet,
    pub(super) rooms: Arc<LiveRooms>,
    pub(super) room: String,
    pub(super) stopping: CancellationToken,
}

/// How the frame pump ended, with the socket's close code (1005: a close frame without
/// a code; 1006: no close frame at all), as the metrics count it.
enum End {
    /// The peer closed, or the socket ended cleanly.
    Closed(u16),
    /// The socket failed; `on_error` hears about it.
    Failed(Error, u16),
}

/// No close code: the socket ended without a close frame.
const ABNORMAL: u16 = 1006;
/// The peer's close frame had no code.
const NO_STATUS: u16 = 1005;

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
                    // The room made the connection's span before it ran `on_connect`.
                    Ok(Err(error)) => Some((
                        close_code::INTERNAL_ERROR,
                        (self.connection.span())
                            .in_scope(|| error.public("connecting failed", ""))
                            .message,
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
            // The frame pump is not instrumented with the connection's span: it is woken
            // for every outbound frame, and entering and leaving a span on each wake-up
            // costs about 10% of a delivery's instructions (callgrind, `bench callgrind`),
            // for a loop that logs nothing of its own. What the task logs enters the span
            // where it logs (`Connection::span`), as the failed connect above does.
            let metrics = Arc::clone(self.rooms.metrics());
            metrics.connections_opened.inc();
            metrics.connections.inc();
            let end = self.pump(&mut socket).await;
            self.connection.mark_closed();
            let error = match end {
                End::Closed(code) => {
                    metrics.closed(code);
                    None
                }
                End::Failed(error, code) => {
                    metrics.closed(code);
                    Some(error)
                }
            };
            let closed = Event::Closed {
                connection: self.connection,
                error,
            };
            // The room is live while it has this socket, so this is not refused.
            let _ = self.rooms.send(&self.room, closed).await;
        }
    }

    /// Moves frames until the socket ends. While an inbound message waits for room in the
    /// room's mailbox, the socket is not read (the peer's frames wait in TCP: back-pressure),
    /// but outbound frames, the server's shutdown and an abort are still served: a busy
    /// room must not stall its sockets' writers.
    async fn pump(&mut self, socket: &mut WebSocket) -> End {
        let Self {
            connection,
            outlet,
            rooms,
            room,
            stopping,
        } = self;
        // Registered once for the socket's life, not once per frame.
        let token = &*stopping;
        let cancelled = pin!(token.cancelled());
        let mut stopping = WakeOnce::new(cancelled, || token.is_cancelled());
        let conn = &*connection;
        let abort = pin!(conn.aborted());
        let mut aborted = WakeOnce::new(abort, || conn.is_aborted());
        let (farewell_code, farewell) = farewell(rooms);
        let metrics = rooms.metrics();
        let mut reader = Reader::new();
        // The inbound message on its way to the room's mailbox, if any.
        let mut delivery = pin!(None::<Event>.map(|event| rooms.send(room, event)));
        let end = loop {
            tokio::select! {
                biased;
                () = &mut stopping => {
                    close(socket, farewell_code, farewell).await;
                    break End::Closed(farewell_code);
                }
                () = &mut aborted => {
                    abandon(socket, rooms).await;
                    break End::Closed(close_code::POLICY_VIOLATION);
                }
                outbound = outlet.frames.recv() => {
                    let Some(outbound) = outbound else { break End::Closed(ABNORMAL) };
                    let written = write(
                        socket,
                        connection,
                        outlet,
                        (&mut stopping, &mut aborted),
                        outbound,
                        rooms,
                        (farewell_code, farewell),
                    );
                    match written.await {
                        Ok(Some(close_frame)) => {
                            let code = close_frame.code;
                            finish_close(socket, close_frame).await;
                            break End::Closed(code);
                        }
                        Ok(None) => {}
                        Err(end) => break end,
                    }
                }
                // A message of a live room's own connection is never refused.
                _ = async { delivery.as_mut().as_pin_mut().expect("guarded").await },
                    if delivery.is_some() =>
                {
                    delivery.set(None);
                }
                inbound = poll_fn(|cx| reader.poll_next(cx, socket)), if delivery.is_none() => {
                    let message = match inbound {
                        Some(Ok(Frame::Text(text))) => Message::Text(text),
                        Some(Ok(Frame::Binary(bytes))) => Message::Binary(bytes),
                        Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => continue,
                        Some(Ok(Frame::Close(frame))) => {
                            // Send the close reply tungstenite queued, before the socket
                            // is dropped: the peer's closing handshake completes.
                            let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
                            break End::Closed(frame.map_or(NO_STATUS, |frame| frame.code));
                        }
                        None => break End::Closed(ABNORMAL),
                        Some(Err(error)) => break read_failed(socket, error).await,
                    };
                    metrics.messages_in.inc();
                    metrics.bytes_in.inc_by(message.len() as u64);
                    let event = Event::Message { connection: connection.clone(), message };
                    delivery.set(Some(rooms.send(room, event)));
                }
            }
        };
        // A message read before the socket ended still reaches the room, before `Closed`.
        if let Some(pending) = delivery.as_mut().as_pin_mut() {
            let _ = pending.await;
        }
        end
    }
}

/// Writes `first` and whatever else is queued, then flushes once. Returns the close frame
/// if the room asked to close. Gives up when the peer is aborted or the server stops, so a
/// peer that stopped reading cannot hold the task forever.
///
/// The party's counters move once per batch: each frame written is a message sent.
async fn write(
    socket: &mut WebSocket,
    connection: &Connection,
    outlet: &mut Outlet,
    (stopping, aborted): (
        &mut (impl Future<Output = ()> + Unpin),
        &mut (impl Future<Output = ()> + Unpin),
    ),
    first: Outbound,
    rooms: &LiveRooms,
    (farewell_code, farewell): (u16, &str),
) -> Result<Option<CloseFrame>, End> {
    let (mut frames, mut bytes) = (0_u64, 0_u64);
    let batch = async {
        let mut next = Some(first);
        while let Some(outbound) = next.take() {
            match outbound {
                Outbound::Frame(frame) => {
                    connection.dequeued(&frame);
                    frames += 1;
                    bytes += payload_len(&frame) as u64;
                    socket.feed(frame).await?;
                }
                Outbound::Close(close_frame) => {
                    socket.flush().await?;
                    return Ok(Some(close_frame));
                }
            }
            if frames < MAX_BATCH as u64 {
                next = outlet.frames.try_recv();
            }
        }
        socket.flush().await?;
        Ok::<_, axum::Error>(None)
    };
    let outcome = tokio::select! {
        result = batch => Ok(result),
        () = aborted => Err(Interrupted::Aborted),
        () = stopping => Err(Interrupted::Stopping),
    };
    let metrics = rooms.metrics();
    metrics.messages_out.inc_by(frames);
    metrics.bytes_out.inc_by(bytes);
    // The batch borrowed the socket; it is dropped now.
    match outcome {
        Ok(result) => result.map_err(|error| End::Failed(Error::new(error), ABNORMAL)),
        Err(Interrupted::Aborted) => {
            abandon(socket, rooms).await;
            Err(End::Closed(close_code::POLICY_VIOLATION))
        }
        Err(Interrupted::Stopping) => {
            close(socket, farewell_code, farewell).await;
            Err(End::Closed(farewell_code))
        }
    }
}

/// A data frame's payload length.
fn payload_len(frame: &Frame) -> usize {
    match frame {
        Frame::Text(text) => text.len(),
        Frame::Binary(bytes) => bytes.len(),
        _ => 0,
    }
}

/// How sockets close when the server shuts down: 1001 Going Away, or in cluster mode 1012
/// Service Restart, since the room is served on by another node and the client should
/// reconnect at once.
pub(crate) fn farewell(rooms: &LiveRooms) -> (u16, &'static str) {
    if rooms.cluster().is_some() {
        (close_code::SERVICE_RESTART, close_code::SHUTDOWN_REASON)
    } else {
        (close_code::GOING_AWAY, "Server shutting down")
    }
}

/// A wake-up (shutdown, abort) registered once per socket and then checked by its flag.
///
/// Polling a waiting `Notified` takes its `Notify`'s lock every time, and the shutdown
/// token's is shared by every socket: a frame pump that polled it on every wake-up would
/// lock it once per delivered frame. The socket's task is a Tokio task, whose waker is
/// the same for its whole life, so the registration made by the first poll stays valid;
/// later polls only read the flag the notifier sets before it wakes the task.
struct WakeOnce<'a, F, C> {
    wait: Pin<&'a mut F>,
    fired: C,
    registered: bool,
}

impl<'a, F: Future<Output = ()>, C: Fn() -> bool> WakeOnce<'a, F, C> {
    fn new(wait: Pin<&'a mut F>, fired: C) -> Self {
        Self {
            wait,
            fired,
            registered: false,
        }
    }
}

impl<F: Future<Output = ()>, C: Fn() -> bool + Unpin> Future for WakeOnce<'_, F, C> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if (self.fired)() {
            return Poll::Ready(());
        }
        if self.registered {
            return Poll::Pending;
        }
        self.registered = true;
        self.wait.as_mut().poll(cx)
    }
}

/// The socket's read side, polled only when it may have something: the pump's task wakes
/// for every outbound frame, and polling the read side each time (tungstenite's read path,
/// its waker registrations, a zero-filled read buffer) costs about as much as writing the
/// frame. The read side gets a waker of its own, which marks it woken; once it has
/// answered `Pending`, it is polled again only after that waker fired. (tokio-tungstenite
/// wakes the read waker for write readiness too, so a pong that tungstenite could not
/// flush while reading still goes out.)
struct Reader {
    wake: Arc<ReadWake>,
    waker: Waker,
    /// The last poll answered `Pending` and nothing woke the read side since.
    idle: bool,
}

struct ReadWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Reader {
    fn new() -> Self {
        let wake = Arc::new(ReadWake {
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        Self {
            waker: Waker::from(Arc::clone(&wake)),
            wake,
            idle: false,
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut WebSocket,
    ) -> Poll<Option<Result<Frame, axum::Error>>> {
        self.wake.task.register(cx.waker());
        let woken = self.wake.woken.swap(false, Ordering::AcqRel);
        if self.idle && !woken {
            return Poll::Pending;
        }
        let polled = socket.poll_next_unpin(&mut Context::from_waker(&self.waker));
        self.idle = polled.is_pending();
        polled
    }
}

enum Interrupted {
    Aborted,
    Stopping,
}

/// Answers a failed read: a frame that broke the protocol gets a close frame saying why
/// (RFC 6455 section 7.1.7 fails the connection with 1002 or 1007) before the socket is
/// dropped, and `on_error` hears of it; an oversized message is closed with 1009.
async fn read_failed(socket: &mut WebSocket, error: axum::Error) -> End {
    use tungstenite::error::ProtocolError;
    let cause = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>());
    let (code, reason) = match cause {
        Some(tungstenite::Error::Capacity(_)) => {
            close(socket, close_code::MESSAGE_TOO_BIG, "Message is too large").await;
            return End::Closed(close_code::MESSAGE_TOO_BIG);
        }
        Some(tungstenite::Error::Utf8(_)) => (
            close_code::INVALID_PAYLOAD,
            "Invalid UTF-8 in a text message".to_owned(),
        ),
        // The peer went away without a close frame: there is no one to tell.
        Some(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) | None => {
            return End::Failed(Error::new(error), ABNORMAL);
        }
        Some(tungstenite::Error::Protocol(violation)) => (
            close_code::PROTOCOL_ERROR,
            format!("Protocol error: {violation}"),
        ),
        Some(_) => return End::Failed(Error::new(error), ABNORMAL),
    };
    // tungstenite stops reading after a protocol error, but can still write: the close
    // frame goes out, and the peer's answer is not awaited (its frames cannot be parsed).
    close(socket, code, &reason).await;
    End::Failed(Error::new(error), code)
}

/// Closes a peer that fell too far behind: it is not reading, so the close frame gets one
/// short chance to go out and the peer's answer is not awaited; the room hears of the
/// close at once.
async fn abandon(socket: &mut WebSocket, rooms: &LiveRooms) {
    rooms
        .server_metrics()
        .refused(crate::metrics::Refusal::SlowConsumer);
    let frame = CloseFrame {
        code: close_code::POLICY_VIOLATION,
        reason: "outbound queue limit exceeded".into(),
    };
    let _ = tokio::time::timeout(ABANDON_TIMEOUT, socket.send(Frame::Close(Some(frame)))).await;
}

/// Sends a close frame and waits (briefly) for the peer's.
pub(super) async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
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
