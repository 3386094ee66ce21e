//! Limits that protect the server, with PartyKit's values as defaults.

use std::time::Duration;

/// Limits and timeouts of a [`Server`](crate::Server).
///
/// ```
/// use std::time::Duration;
/// use partykit_runtime::{Limits, Server};
///
/// let limits = Limits {
///     max_message_size: 4 * 1024 * 1024,
///     room_idle_timeout: Duration::from_secs(60),
///     ..Limits::default()
/// };
/// let server = Server::new().limits(limits);
/// # drop(server);
/// ```
/// Build one with struct update syntax, `Limits { field: …, ..Limits::default() }`, so
/// that limits added later keep their defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The largest inbound WebSocket message, in bytes; a larger one closes the socket
    /// with 1009. Default 1 MiB, as on PartyKit.
    pub max_message_size: usize,
    /// How many bytes may wait in one connection's outbound queue before the peer is
    /// deemed too slow and closed with 1008. Default 16 MiB.
    pub max_outbound_buffer: usize,
    /// The largest HTTP request body, in bytes; larger answers 413, at once when the
    /// request declares its `Content-Length` (before a byte of the body is read).
    /// Default 16 MiB.
    pub max_request_body: usize,
    /// The largest storage value, in bytes; a larger `put` fails. Default 128 KiB, as on
    /// PartyKit.
    pub max_value_size: usize,
    /// How long a room with no connections and no events stays in memory. Default 30 s.
    pub room_idle_timeout: Duration,
    /// How long a hibernating party's room (`#[party(hibernate)]`) may sit without
    /// events before its value is dropped; its sockets stay open. Default 10 s.
    pub hibernate_after: Duration,
    /// The largest connection state, serialized, of a hibernating party; a larger
    /// `set_state` fails. Default 2,048 bytes, as on PartyKit.
    pub max_hibernating_state: usize,
    /// How many events may wait in one room's mailbox before senders wait. Default 1024.
    pub room_mailbox: usize,
    /// The delay before the first retry of a failed `on_alarm`; each further retry waits
    /// twice as long. Default 2 s, as on Durable Objects.
    pub alarm_retry_base: Duration,
    /// How many times a failed `on_alarm` is retried before the alarm is dropped.
    /// Default 6.
    pub alarm_max_retries: u32,
    /// How long shutdown waits for sockets to close, rooms to run `on_close` and storage
    /// to flush. Default 5 s.
    pub shutdown_grace: Duration,
    /// How long the server goes on serving after the shutdown signal, with
    /// `GET /__partykit/health` answering 503, before it stops accepting and closes its
    /// sockets: time for a load balancer's health checks to take the node out of
    /// rotation, so that no new client is sent to it while it closes. Set it to a few of
    /// the load balancer's check intervals. Default 0 (stop at once).
    pub drain_delay: Duration,
    /// How long a client may take to send a request's head (request line and headers),
    /// counted from the moment the connection is accepted, or from the first byte of the
    /// next request on a kept-alive connection; a slower client is disconnected, so
    /// that a "slowloris" trickling one header byte at a time cannot hold a connection
    /// (and its file descriptor) for long. Default 10 s.
    ///
    /// Like every limit on connections, this applies to [`Server::serve`],
    /// [`listen`](crate::Server::listen) and [`run`](crate::Server::run); an app that
    /// serves [`Server::router`] itself sets its own.
    ///
    /// [`Server::serve`]: crate::Server::serve
    /// [`Server::router`]: crate::Server::router
    pub header_read_timeout: Duration,
    /// How long a kept-alive HTTP connection may sit idle between requests (no request
    /// in flight, no byte of the next one received) before it is closed. Default 30 s.
    pub keep_alive_timeout: Duration,
    /// The largest request head (request line and headers; HTTP/2: the header list), in
    /// bytes, at least 8 KiB; a larger one answers 431 and the connection closes. This
    /// bounds what a client holding an unfinished head pins. Default 32 KiB.
    pub max_request_head: usize,
    /// How long reading one request's body may take, from the moment its head was read;
    /// a slower body answers 408 and the connection closes. Default 30 s.
    pub body_read_timeout: Duration,
    /// The bytes of request bodies that may be buffered at once across the whole server,
    /// so anonymous clients cannot pin memory before a hook has decided. A body's
    /// declared `Content-Length` is reserved before its first byte is read (a chunked
    /// body reserves its bytes as they arrive); a request that does not fit answers 503
    /// at once. The reservation is given back when the request (which holds the body)
    /// is dropped, after the room or hook has answered it. Default 64 MiB.
    pub max_buffered_bodies: usize,
    /// The most client connections open at once, WebSockets included (an HTTP/2
    /// connection counts once); one more is answered a short 503 and closed. Where the
    /// process's file descriptor limit (`ulimit -n`, read from `/proc/self/limits`) is
    /// too low for this cap plus spare descriptors (an eighth of the limit, 16 to 128),
    /// the cap is lowered to fit (and logged), so that a full server answers 503 instead
    /// of going silent. Past the descriptor limit anyway, the server pauses accepting
    /// until descriptors free up.
    /// Default 10,000.
    pub max_connections: usize,
    /// The most rooms live at once across every party; a request for one more answers
    /// 503 with a message (and a call between rooms too; a WebSocket is accepted and
    /// closed with 1013 Try Again Later and the message) until rooms are evicted. An alarm
    /// whose room cannot start is retried a second later. Default 10,000.
    pub max_rooms: usize,
    /// The longest room id, in bytes of the raw path segment; a longer one answers 414
    /// with a message before any hook runs. Default 512.
    pub max_room_id_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 1024 * 1024,
            max_outbound_buffer: 16 * 1024 * 1024,
            max_request_body: 16 * 1024 * 1024,
            max_value_size: 128 * 1024,
            room_idle_timeout: Duration::from_secs(30),
            hibernate_after: Duration::from_secs(10),
            max_hibernating_state: 2048,
            room_mailbox: 1024,
            alarm_retry_base: Duration::from_secs(2),
            alarm_max_retries: 6,
            shutdown_grace: Duration::from_secs(5),
            drain_delay: Duration::ZERO,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(30),
            max_request_head: 32 * 1024,
            body_read_timeout: Duration::from_secs(30),
            max_buffered_bodies: 64 * 1024 * 1024,
            max_connections: 10_000,
            max_rooms: 10_000,
            max_room_id_length: 512,
        }
    }
}
