//! A chat room: every message goes to everyone else in the room.
//!
//! - WebSocket: `ws://127.0.0.1:1999/parties/main/<room>` — send text, receive the others'.
//! - HTTP: `GET http://127.0.0.1:1999/parties/main/<room>` answers
//!   `{"room":"<room>","connections":<n>}`.

use partykit_runtime::{Connection, Json, Message, Request, Room, party};
use serde::Serialize;

/// The chat party (`main`).
#[party]
#[derive(Debug)]
pub struct Chat {
    room: Room,
}

/// What `GET` on a chat room answers.
#[derive(Debug, Serialize)]
pub struct RoomInfo {
    /// The room id.
    pub room: String,
    /// How many sockets are connected.
    pub connections: usize,
}

#[party]
impl Chat {
    fn new(room: Room) -> Self {
        Chat { room }
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) {
        self.room.broadcast(message, &[sender.id()]);
    }

    async fn on_request(&mut self, _request: Request) -> Json<RoomInfo> {
        Json(RoomInfo {
            room: self.room.id().to_owned(),
            connections: self.room.connection_count(),
        })
    }
}
