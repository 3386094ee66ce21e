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
    /// The largest HTTP request body, in bytes; larger answers 413. Default 16 MiB.
    pub max_request_body: usize,
    /// How long a room with no connections and no events stays in memory. Default 30 s.
    pub room_idle_timeout: Duration,
    /// How many events may wait in one room's mailbox before senders wait. Default 1024.
    pub room_mailbox: usize,
    /// How long shutdown waits for sockets to flush their close frames. Default 5 s.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 1024 * 1024,
            max_outbound_buffer: 16 * 1024 * 1024,
            max_request_body: 16 * 1024 * 1024,
            room_idle_timeout: Duration::from_secs(30),
            room_mailbox: 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}
