//! PartyKit's real-time room model for Rust, self-hosted.
//!
//! A *party* is a type whose handlers run for every *room* at
//! `/parties/<party>/<room>`: a single-owner actor with WebSocket connections, HTTP,
//! broadcast and tags. Write a struct and an impl block of handlers, put
//! [`#[party]`](macro@party) on both, and hand the type to a [`Server`]:
//!
//! ```no_run
//! use partykit_runtime::{party, Connection, ConnectionContext, Message, Room, Server};
//!
//! #[party]
//! struct Chat {
//!     room: Room,
//! }
//!
//! #[party]
//! impl Chat {
//!     fn new(room: Room) -> Self {
//!         Chat { room }
//!     }
//!
//!     async fn on_connect(&mut self, conn: &Connection, _ctx: &ConnectionContext) {
//!         let _ = conn.send(format!("welcome to {}", self.room.id()));
//!     }
//!
//!     async fn on_message(&mut self, message: Message, sender: &Connection) {
//!         self.room.broadcast(message, &[sender.id()]);
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), partykit_runtime::ServerError> {
//!     // ws://127.0.0.1:1999/parties/main/<room>
//!     Server::new().party::<Chat>().run().await
//! }
//! ```
//!
//! # How a room runs
//!
//! - A room is created on its first event: `new(room)` builds your value, then
//!   `on_start` runs to completion before any other event. If `on_start` fails, that event
//!   gets the error and the next event tries again with a fresh value.
//! - Events (connect, message, close, error, request) run one at a time with `&mut self`,
//!   in arrival order. A slow handler delays the room's next event, never interleaves
//!   with it.
//! - `on_message` of a connection never runs before its `on_connect` returned: inbound
//!   frames wait until then.
//! - A room with no connections is dropped after
//!   [`Limits::room_idle_timeout`] and rebuilt on its next event.
//! - A panicking handler does not take the server down: the event fails (HTTP 500, or
//!   close 1011 for a connect) and the value is rebuilt on the next event.
//!
//! # Handlers
//!
//! | handler | when | on error |
//! |---|---|---|
//! | `new(room) -> Self` | the room's first event | — |
//! | `on_start(&mut self)` | after `new` | the triggering event fails; retried |
//! | `connection_tags(&mut self, conn, ctx) -> Vec<String>` | before `on_connect` | close 1011 |
//! | `on_connect(&mut self, conn, ctx)` | a socket connected | close 1011 with the message |
//! | `on_message(&mut self, message, sender)` | a message arrived | logged |
//! | `on_close(&mut self, conn)` | a socket closed | logged |
//! | `on_error(&mut self, conn, error)` | a socket failed (then `on_close`) | logged |
//! | `on_request(&mut self, req) -> impl IntoResponse` | HTTP to the room | its status (500) and message |
//! | `on_alarm(&mut self)` | the room's alarm | logged |
//!
//! Static hooks (no `self`): `on_before_connect`, `on_before_request` (run before the
//! room; an error answers 401), `on_fetch`, `on_socket`, `on_cron` (main party only, for
//! paths outside `/parties/…`). See [`Party`] for signatures.
//!
//! Errors are deliberate ([`Error::msg`], [`Error::with_status`], a status given with
//! [`Error::status_code`]): the client sees their status and message; or internal (any
//! other error converted with `?`, the runtime's failures, panics): the client sees only
//! an error id, which the log line with the detail carries too. See [`Error`].
//!
//! Handlers may be `async` or not, take `&mut self` or `&self`, and leave out trailing
//! parameters they do not use, as in JavaScript. They return nothing or a `Result`.
//!
//! # Status and close codes
//!
//! | situation | result |
//! |---|---|
//! | `/parties/<unknown>/…` | 404 `Party <unknown> not found` |
//! | any other path nothing answers | 404 `Not found` |
//! | HTTP to a party without `on_request` | 500 `No onRequest handler` |
//! | `on_request`/`on_start`/`on_fetch` error | the error's status (default 500), its message as body |
//! | `on_before_*` error | 401, its message as body |
//! | `connection_tags`/`on_connect` error | 101, then close 1011 with the message |
//! | internal error (`?`, [`Error::new`], storage), panic | 500 (close 1011) `Internal error (error id <id>)`, the detail logged with the id |
//! | panic in a static hook | 500 with an error id; `on_socket`'s socket is dropped, `on_cron`'s is logged |
//! | inbound message over [`Limits::max_message_size`] | close 1009 |
//! | peer too slow ([`Limits::max_outbound_buffer`]) | close 1008 |
//! | a new room over [`Limits::max_rooms`] | 503 with a message (an upgrade too, before it completes) |
//! | a room id over [`Limits::max_room_id_length`] | 414 with a message, before any hook |
//! | a socket replaced by a newer one with the same `_pk` | close 4409 ([`close_code::REPLACED`]) |
//! | `/__scheduled__` without the token ([`Server::scheduled_token`]) | 401 (or an ordinary path when no token is set) |
//! | server shutdown (SIGINT/SIGTERM) | close 1001 |
//!
//! # Beyond one room
//!
//! - [`storage`]: durable key-value storage and alarms per room (`room.storage()`), on
//!   embedded SQLite by default, with atomic per-event commits and an output gate.
//! - [`parties`]: calls between rooms (`room.context().parties()`), cycle-safe.
//! - [`Server`]: project variables ([`Env`]), static assets, CORS, cron schedules,
//!   [`Limits`].
//! - `yjs` (cargo feature `yjs`): Yjs documents compatible with `y-partykit`.
//! - `testing` (cargo feature `testing`): test your parties in-process, with sockets,
//!   HTTP, alarms fired on demand and a view of storage; the guide is
//!   `guide::testing` (docs/TESTING.md).
//! - [`logging`]: text or JSON lines on stdout, filtered by `PARTYKIT_LOG`, each
//!   carrying its room's party and id and its connection's id ([`Server::run`]
//!   installs it).
//! - [`guide`]: the [tutorial](guide::tutorial) (a party from zero to tested); migrating
//!   from PartyKit's object style; debugging `#[party]` errors; testing.
//! - [`deprecated`]: PartyKit's old names, each pointing to its replacement.

#![cfg_attr(docsrs, feature(doc_cfg))]

// Lets this crate's own tests and doctests use `#[party]`, whose code names
// `::partykit_runtime`.
#[allow(unused_extern_crates)]
extern crate self as partykit_runtime;

mod alarms;
mod clock;
mod cluster;
mod connection;
mod cron;
pub mod deprecated;
mod env;
mod error;
mod gate;
pub mod guide;
pub mod handler;
mod inspect;
mod limits;
mod lobby;
pub mod logging;
mod message;
mod metrics;
pub mod parties;
mod party;
mod request;
mod room;
mod server;
pub mod storage;
mod tasks;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
#[cfg(feature = "yjs")]
#[cfg_attr(docsrs, doc(cfg(feature = "yjs")))]
pub mod yjs;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use axum::Json;
pub use axum::response::{IntoResponse, Response};
pub use http::{Method, StatusCode};

pub use cluster::{
    CLUSTER_SECRET_VAR, CLUSTER_URL_VAR, ClusterConfig, ClusterConfigError, DEFAULT_LEASE_TTL,
    LEASE_TTL_VAR, NODE_ADDR_VAR,
};
pub use connection::{Connection, ConnectionContext, MAX_CLOSE_REASON, SendError, close_code};
pub use cron::CronError;
pub use env::Env;
pub use error::{ERROR_ID_HEADER, Error, Result};
pub use limits::Limits;
pub use lobby::{Before, Cron, CronLobby, FetchLobby, FetchSocket, Lobby};
pub use message::{JsonRejection, Message, Utf8Bytes};
pub use metrics::METRICS_ADDR_VAR;
pub use parties::Context;
pub use party::{Handlers, Party, PartyOptions};
pub use partykit_macros::party;
pub use request::{Request, RequestBuilder};
pub use room::Room;
pub use server::{
    ADMIN_TOKEN_VAR, Cors, DEFAULT_ADDR, HOST_VAR, PORT_VAR, SCHEDULED_TOKEN_VAR, Server,
    ServerError, addr_from_env, shutdown_signal,
};
pub use storage::Storage;

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
