//! PartyKit's first server, in the object style its README showed (deprecated in PartyKit,
//! and here): every client is greeted, every message it sends is logged.
//!
//! ```js
//! export default {
//!   onConnect(ws, room) {
//!     ws.send("Hello, world!");
//!     ws.addEventListener("message", (evt) => console.log(evt.data));
//!   },
//!   onRequest(req, room) {
//!     return new Response(`Hello from room ${room.id}!`);
//!   },
//! } satisfies PartyKitServer;
//! ```
//!
//! - WebSocket: `ws://127.0.0.1:1999/parties/main/<room>` — receive `Hello, world!`; what
//!   you send is logged.
//! - HTTP: `GET http://127.0.0.1:1999/parties/main/<room>` answers
//!   `Hello from room <room>!`.
//!
//! Building it prints one deprecation warning per handler, each with the class-style
//! signature to write instead: showing them is the point of this example, so they are not
//! silenced. (Only under clippy, which the CI runs with `-D warnings`, are they allowed, by
//! the `cfg_attr(clippy, …)` below.) The class-style version is in
//! `partykit_runtime::guide::migration`.
//!
//! A Rust connection has no event listeners, so the message listener PartyKit's version
//! added in `onConnect` is `on_message` here; PartyKit would have made this server
//! hibernate for it (`Party::OPTIONS.hibernate`).

#![cfg_attr(clippy, allow(deprecated))]

use partykit_runtime::{Connection, Message, Request, Room, party};

/// The legacy party (`main`). Object-style parties have no fields: their handlers take no
/// `self`, and get the room as a parameter.
#[party]
#[derive(Debug)]
pub struct Legacy;

#[party]
impl Legacy {
    fn on_connect(connection: &Connection, _room: &Room) {
        // The socket may already be gone; then there is no one to greet.
        let _ = connection.send("Hello, world!");
    }

    fn on_message(message: Message, _sender: &Connection, _room: &Room) {
        // The line carries the party, the room's id and the sender's id: the room runs
        // the sender's events in its `room` and `connection` spans.
        match message.as_text() {
            Some(text) => tracing::info!("{text}"),
            None => tracing::info!("{} bytes", message.len()),
        }
    }

    fn on_request(_request: Request, room: &Room) -> String {
        format!("Hello from room {}!", room.id())
    }
}
