//! One accepted WebSocket, as handlers see it.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::ws::{self, CloseFrame};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::Notify;

mod queue;

use crate::gate::{Gate, Sink};
use crate::{Error, Message, Request};

/// Close codes the runtime uses, named.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol: an unmasked frame, a reserved opcode, RSV
    /// bits without an extension, a fragmented or oversized control frame, a malformed
    /// close frame, a continuation frame out of place. The reason names the violation;
    /// `on_error` hears of it.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message (or a close reason) was not valid UTF-8; `on_error` hears of it.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The peer fell too far behind: its outbound queue exceeded
    /// [`Limits::max_outbound_buffer`](crate::Limits::max_outbound_buffer).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// An inbound frame exceeded [`Limits::max_message_size`](crate::Limits::max_message_size).
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// `connection_tags` or `on_connect` failed; the reason is the error's message, or an
    /// error id for an internal error (see [`Error`](crate::Error)).
    pub const INTERNAL_ERROR: u16 = 1011;
    /// Cluster mode: the room moved to another node (this node lost its lease, or is
    /// shutting down and handed its rooms off); reconnecting, through any node, reaches
    /// the new owner. Reason [`MOVED_REASON`] when the room moved, [`SHUTDOWN_REASON`]
    /// when the node shuts down.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The close reason sent with [`SERVICE_RESTART`] when the room moved.
    pub const MOVED_REASON: &str = "The room moved to another node; reconnect";
    /// The close reason sent with [`SERVICE_RESTART`] when a cluster node shuts down.
    pub const SHUTDOWN_REASON: &str = "This node is shutting down; reconnect";
    /// The room could not take the connection now (the server is shutting down, or is
    /// at its limit of live rooms): try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// A newer socket connected to the room with the same connection id (`_pk`) and
    /// took this one's place; reason [`REPLACED_REASON`].
    ///
    /// 4409 is in the range for applications (4000–4999), after HTTP's 409 Conflict, as
    /// graphql-ws numbers its codes. partysocket reconnects after any close, so two tabs
    /// sharing one id would take turns replacing each other; a client that shares ids on
    /// purpose can stop that by not reconnecting on this code (partysocket's
    /// `shouldReconnectOnClose: (event) => event.code !== 4409`).
    pub const REPLACED: u16 = 4409;

    /// The close reason sent with [`REPLACED`].
    pub const REPLACED_REASON: &str = "Replaced by a newer connection with the same id";
}

/// The longest close reason the WebSocket protocol allows, in bytes.
pub const MAX_CLOSE_REASON: usize = 123;

/// What `on_connect` and `connection_tags` get beside the connection.
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    pub(crate) request: Request,
}

impl ConnectionContext {
    /// The upgrade request, as forwarded by `on_before_connect` (headers it added are
    /// here).
    pub fn request(&self) -> &Request {
        &self.request
    }
}

/// Why a message could not be queued on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closed or closing.
    Closed,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the connection is closed"),
        }
    }
}

impl std::error::Error for SendError {}

pub(crate) enum Outbound {
    Frame(ws::Message),
    Close(CloseFrame),
}

/// A WebSocket connected to a room.
///
/// Cheap to clone: clones are handles to the same socket. Sending never blocks: the
/// message joins the connection's outbound queue, which its own task writes to the
/// socket. A peer that falls behind by more than
/// [`Limits::max_outbound_buffer`](crate::Limits::max_outbound_buffer) bytes is closed
/// with [`close_code::POLICY_VIOLATION`] rather than let the queue grow without bound.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    uri: String,
    /// When the socket was accepted, for the inspection API.
    connected_at: std::time::SystemTime,
    tags: OnceLock<Box<[String]>>,
    state: Mutex<Option<Bytes>>,
    outbound: queue::Sender,
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    closing: AtomicBool,
    /// The peer fell too far behind; nothing more is queued.
    aborted: AtomicBool,
    /// The room's output gate, once the connection has joined a room: what it sends
    /// after an unconfirmed write waits for the write to be durable.
    gate: OnceLock<Arc<Gate<Connection>>>,
    /// The largest state, serialized, when the room's party hibernates.
    state_limit: OnceLock<usize>,
    /// Wakes the socket's task to drop the socket now (its peer is too slow).
    abort: Notify,
    /// The connection's log span, a child of its room's: made once, when the room takes
    /// the connection, and entered for each of its events.
    span: OnceLock<tracing::Span>,
}

pub(crate) struct Outlet {
    pub(crate) frames: queue::Receiver,
}

impl Connection {
    pub(crate) fn new(id: String, uri: String, max_queued_bytes: usize) -> (Self, Outlet) {
        let (outbound, frames) = queue::queue();
        let connection = Self {
            inner: Arc::new(Inner {
                id,
                uri,
                connected_at: std::time::SystemTime::now(),
                tags: OnceLock::new(),
                state: Mutex::new(None),
                outbound,
                queued_bytes: AtomicUsize::new(0),
                max_queued_bytes,
                closing: AtomicBool::new(false),
                aborted: AtomicBool::new(false),
                gate: OnceLock::new(),
                state_limit: OnceLock::new(),
                abort: Notify::new(),
                span: OnceLock::new(),
            }),
        };
        (connection, Outlet { frames })
    }

    /// The connection id: the client's `_pk` query parameter, or a generated UUID v4.
    ///
    /// The client chooses it: it is not an identity, and anyone who has seen another
    /// client's id can send it. Within a room an id names one socket: a newer socket with
    /// the same id replaces the older one, which is closed with
    /// [`close_code::REPLACED`]. Authenticate in `on_before_connect` and refuse (or
    /// rewrite) a `_pk` that is not the caller's, as the `auth` example does; see
    /// `docs/CONNECTION_IDS.md`.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The full URL of the upgrade request, query included.
    pub fn uri(&self) -> &str {
        &self.inner.uri
    }

    /// The connection's tags: its id first, then those `connection_tags` returned.
    pub fn tags(&self) -> &[String] {
        self.inner.tags.get().map_or(&[], |tags| tags)
    }

    /// Whether this connection carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags().iter().any(|own| own == tag)
    }

    /// The state last stored with [`set_state`](Self::set_state), or `None`.
    ///
    /// Fails when the stored state does not deserialize as `T`.
    pub fn state<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        let stored = self.lock_state().clone();
        stored
            .map(|json| serde_json::from_slice(&json))
            .transpose()
            .map_err(Error::new)
    }

    /// Replaces the connection's state (serialized as JSON). It lives as long as the
    /// socket.
    ///
    /// In a hibernating party (`#[party(hibernate)]`), the serialized state may take at
    /// most [`Limits::max_hibernating_state`](crate::Limits::max_hibernating_state) bytes
    /// (2,048 by default); a larger state is refused with an error and the old one kept.
    pub fn set_state<T: Serialize + ?Sized>(&self, state: &T) -> Result<(), Error> {
        let json = serde_json::to_vec(state)?;
        if let Some(&limit) = self.inner.state_limit.get()
            && json.len() > limit
        {
            return Err(Error::msg(format!(
                "connection state is {} bytes serialized; a hibernating party allows {limit}",
                json.len()
            )));
        }
        *self.lock_state() = Some(json.into());
        Ok(())
    }

    /// Forgets the connection's state.
    pub fn clear_state(&self) {
        *self.lock_state() = None;
    }

    /// Queues a text or binary message for this connection.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.send_frame(message.into().into_frame())
    }

    /// Queues `value` as a JSON text message for this connection: an error if it does
    /// not serialize (a map with non-string keys) or the connection is closed.
    ///
    /// ```no_run
    /// # fn send(connection: &partykit_runtime::Connection) -> partykit_runtime::Result<()> {
    /// connection.send_json(&serde_json::json!({ "type": "welcome", "id": connection.id() }))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_json<T: serde::Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        let text = serde_json::to_string(value)?;
        Ok(self.send(text)?)
    }

    /// Closes the connection with `code` and `reason` (cut to 123 bytes at a character
    /// boundary). Messages queued before are sent first. Closing twice does nothing.
    ///
    /// Codes that may not be sent on the wire (1004–1006, 1015, below 1000, 1016–2999,
    /// above 4999) are refused with an error.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), Error> {
        if !is_sendable_close_code(code) {
            return Err(Error::msg(format!(
                "close code {code} cannot be sent: use 1000-1003, 1007-1014 or 3000-4999"
            )));
        }
        self.close_unchecked(code, reason);
        Ok(())
    }

    pub(crate) fn close_unchecked(&self, code: u16, reason: &str) {
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let frame = CloseFrame {
            code,
            reason: truncate_reason(reason).into(),
        };
        self.through_gate(Outbound::Close(frame));
    }

    pub(crate) fn send_frame(&self, frame: ws::Message) -> Result<(), SendError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        self.through_gate(Outbound::Frame(frame));
        Ok(())
    }

    fn through_gate(&self, outbound: Outbound) {
        match self.inner.gate.get() {
            Some(gate) => gate.send(self, outbound),
            None => {
                let _ = self.push(outbound);
            }
        }
    }

    /// Queues `outbound` for the socket task, past the gate.
    pub(crate) fn push(&self, outbound: Outbound) -> Result<(), SendError> {
        if !self.admit(&outbound) {
            return Err(SendError::Closed);
        }
        self.deliver(outbound);
        Ok(())
    }

    /// When the socket was accepted.
    pub(crate) fn connected_at(&self) -> std::time::SystemTime {
        self.inner.connected_at
    }

    /// The bytes queued for the socket (held at the gate included), not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.inner.queued_bytes.load(Ordering::Acquire)
    }

    /// The size of the connection's state, serialized.
    pub(crate) fn state_len(&self) -> usize {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map_or(0, Bytes::len)
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::Acquire)
    }

    /// Joins a room: output passes its gate from now on, and the state is limited to
    /// `state_limit` bytes if its party hibernates.
    pub(crate) fn join(&self, gate: Arc<Gate<Connection>>, state_limit: Option<usize>) {
        // A connection joins exactly one room, once.
        let _ = self.inner.gate.set(gate);
        if let Some(limit) = state_limit {
            let _ = self.inner.state_limit.set(limit);
        }
    }

    /// Called by the socket task for every frame it takes off the queue.
    pub(crate) fn dequeued(&self, frame: &ws::Message) {
        self.forget_frame(frame);
    }

    fn forget_frame(&self, frame: &ws::Message) {
        self.inner
            .queued_bytes
            .fetch_sub(frame_len(frame), Ordering::AcqRel);
    }

    pub(crate) async fn aborted(&self) {
        self.inner.abort.notified().await;
    }

    /// Whether the peer was found too slow; set before [`aborted`](Self::aborted) wakes.
    pub(crate) fn is_aborted(&self) -> bool {
        self.inner.aborted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_closed(&self) {
        self.inner.closing.store(true, Ordering::Release);
    }

    /// The connection's span (field `id`) under `room`'s, made on the first call: the
    /// room runs the connection's events in it, and its socket's task enters it where
    /// it logs. One span for the connection's life, not one per event: making a span
    /// costs an allocation and its fields' formatting, entering one does not.
    pub(crate) fn span_in(&self, room: &tracing::Span) -> tracing::Span {
        self.inner
            .span
            .get_or_init(|| tracing::error_span!(parent: room, "connection", id = self.id()))
            .clone()
    }

    /// The span of [`span_in`](Self::span_in), or none before the room took the
    /// connection.
    pub(crate) fn span(&self) -> tracing::Span {
        self.inner
            .span
            .get()
            .cloned()
            .unwrap_or_else(tracing::Span::none)
    }

    pub(crate) fn set_tags(&self, tags: Box<[String]>) {
        // Tags are set once, before the connection joins the room.
        let _ = self.inner.tags.set(tags);
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, Option<Bytes>> {
        // The state is a plain value: a panic elsewhere cannot leave it half-written.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `self` and `other` are the same socket (not merely the same id).
    pub fn same_socket(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// The connection is what the output gate delivers to. A frame counts against
/// [`Limits::max_outbound_buffer`](crate::Limits::max_outbound_buffer) from the moment it
/// is sent, whether the gate holds it or it waits in the queue, so a room whose commits
/// are slow cannot pile up output without bound.
impl Sink for Connection {
    type Item = Outbound;

    fn admit(&self, outbound: &Outbound) -> bool {
        let Outbound::Frame(frame) = outbound else {
            // A close is never refused: it is what ends the connection.
            return true;
        };
        if self.inner.aborted.load(Ordering::Acquire) {
            return false;
        }
        let size = frame_len(frame);
        let queued = self.inner.queued_bytes.fetch_add(size, Ordering::AcqRel) + size;
        if queued > self.inner.max_queued_bytes {
            tracing::warn!(
                connection = %self.inner.id,
                queued,
                "peer is too slow: closing it with 1008"
            );
            self.inner.closing.store(true, Ordering::Release);
            self.inner.aborted.store(true, Ordering::Release);
            self.inner.abort.notify_one();
            self.inner.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn deliver(&self, outbound: Outbound) {
        if let Outbound::Frame(frame) = &outbound
            && self.inner.aborted.load(Ordering::Acquire)
        {
            self.forget_frame(frame);
            return;
        }
        if let Err(Outbound::Frame(frame)) = self.inner.outbound.send(outbound) {
            // The socket task is gone; so is the frame.
            self.forget_frame(&frame);
        }
    }

    fn forget(&self, outbound: &Outbound) {
        if let Outbound::Frame(frame) = outbound {
            self.forget_frame(frame);
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("uri", &self.inner.uri)
            .field("tags", &self.tags())
            .finish_non_exhaustive()
    }
}

/// What a queued frame counts against the outbound limit: its payload plus a fixed
/// overhead, so that a flood of empty frames is bounded too.
fn frame_len(frame: &ws::Message) -> usize {
    const OVERHEAD: usize = 32;
    OVERHEAD
        + match frame {
            ws::Message::Text(text) => text.len(),
            ws::Message::Binary(bytes) => bytes.len(),
            _ => 0,
        }
}

fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A random RFC 4122 version 4 UUID, lower-case with dashes, as `crypto.randomUUID()`
/// gives PartyKit its connection ids.
pub(crate) fn new_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Cuts a close reason to the protocol's 123 bytes without splitting a character.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Checks and normalises the tags `connection_tags` returned: the id first, user
/// duplicates of the id dropped, at most 9 user tags of 1 to 256 characters.
pub(crate) fn validate_tags(id: &str, user_tags: Vec<String>) -> Result<Box<[String]>, Error> {
    const MAX_USER_TAGS: usize = 9;
    const MAX_TAG_CHARS: usize = 256;
    let mut tags = Vec::with_capacity(user_tags.len() + 1);
    tags.push(id.to_owned());
    for tag in user_tags {
        if tag.is_empty() {
            return Err(Error::msg("connection tags must not be empty"));
        }
        let chars = tag.chars().count();
        if chars > MAX_TAG_CHARS {
            return Err(Error::msg(format!(
                "connection tag is {chars} characters long; the limit is {MAX_TAG_CHARS}"
            )));
        }
        if tag != id && !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() - 1 > MAX_USER_TAGS {
        return Err(Error::msg(format!(
            "a connection can have at most {MAX_USER_TAGS} tags besides its id; got {}",
            tags.len() - 1
        )));
    }
    Ok(tags.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_at_a_char_boundary() {
        let reason = "é".repeat(100);
        let cut = truncate_reason(&reason);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate_reason("short"), "short");
    }

    #[test]
    fn tags_are_validated() {
        let tags = validate_tags("id", vec!["a".into(), "id".into(), "a".into()]).unwrap();
        assert_eq!(&*tags, ["id", "a"]);
        assert!(validate_tags("id", vec![String::new()]).is_err());
        assert!(validate_tags("id", vec!["x".repeat(257)]).is_err());
        assert!(validate_tags("id", vec!["é".repeat(256)]).is_ok());
        let nine: Vec<String> = (0..9).map(|i| i.to_string()).collect();
        assert!(validate_tags("id", nine.clone()).is_ok());
        let ten: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert!(validate_tags("id", ten).is_err());
    }

    #[test]
    fn generated_ids_are_uuid_v4() {
        let id = new_id();
        assert_eq!(id.len(), 36);
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'));
        assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert!(
            id.bytes()
                .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(new_id(), id);
    }

    #[test]
    fn only_wire_close_codes_are_accepted() {
        let (conn, _outlet) = Connection::new("c".into(), "http://x/".into(), 1024);
        assert!(conn.close(1005, "").is_err());
        assert!(conn.close(2000, "").is_err());
        assert!(conn.close(4000, "bye").is_ok());
        assert_eq!(conn.send("after close"), Err(SendError::Closed));
    }
}
