//! Two parties that talk to each other through `room.context().parties()`: chat rooms
//! report how many users they have to one room of a lobby party, which answers with
//! every room's count.
//!
//! - Chat, party `chat`: WebSocket `ws://127.0.0.1:1999/parties/chat/<room>` — send text,
//!   receive the others'. Every join and leave is reported to the lobby with a stub
//!   `fetch` (an in-process HTTP request to another room). `GET` on a chat room answers
//!   `{"room":"<room>","users":<n>}`.
//! - Lobby, party `lobby`, room `global`:
//!   - `GET http://127.0.0.1:1999/parties/lobby/global` answers
//!     `{"rooms":{"<room>":<users>,…},"total":<users>}` (rooms without users are left
//!     out);
//!   - a WebSocket to `ws://127.0.0.1:1999/parties/lobby/global` receives the same JSON
//!     when it connects and after every change;
//!   - any other method answers 405 from `on_before_request`. The chat rooms' reports
//!     (`POST …/report`) get through because calls between rooms skip the
//!     `on_before_*` hooks: clients cannot forge counts.
//!
//! The chat room awaits the lobby while it reports, and the lobby never calls a chat
//! room, so rooms never wait for each other in a cycle (which the runtime would refuse
//! with 508 rather than deadlock).

use std::collections::BTreeMap;

use partykit_runtime::{
    Before, Connection, Error, IntoResponse, Json, Message, Method, Request, Room, StatusCode,
    party,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The lobby party's name.
pub const LOBBY_PARTY: &str = "lobby";
/// The lobby room every chat room reports to.
pub const LOBBY_ROOM: &str = "global";

/// What a chat room reports to the lobby: its id and how many users it has now.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// The chat room's id.
    pub room: String,
    /// Its connections, now.
    pub users: usize,
}

/// The chat party (`chat`).
#[party(name = "chat")]
#[derive(Debug)]
pub struct Chat {
    room: Room,
}

#[party]
impl Chat {
    fn new(room: Room) -> Self {
        Chat { room }
    }

    async fn on_connect(&mut self, connection: &Connection) {
        self.report().await;
        let joined = format!("{} joined", connection.id());
        self.room.broadcast(joined, &[connection.id()]);
    }

    fn on_message(&mut self, message: Message, sender: &Connection) {
        self.room.broadcast(message, &[sender.id()]);
    }

    async fn on_close(&mut self, connection: &Connection) {
        // The closed connection is no longer counted.
        self.report().await;
        self.room
            .broadcast(format!("{} left", connection.id()), &[]);
    }

    fn on_request(&mut self) -> Json<serde_json::Value> {
        Json(json!({ "room": self.room.id(), "users": self.room.connection_count() }))
    }
}

impl Chat {
    /// Tells the lobby how many users this room has. A failure is logged: the chat works
    /// without the lobby.
    async fn report(&self) {
        if let Err(error) = self.try_report().await {
            // The room's span names the room.
            tracing::warn!(%error, "cannot report to the lobby");
        }
    }

    async fn try_report(&self) -> Result<(), Error> {
        let lobby = self
            .room
            .context()
            .parties()
            .get(LOBBY_PARTY)
            .ok_or_else(|| Error::msg("the server has no lobby party"))?
            .get(LOBBY_ROOM);
        let report = Report {
            room: self.room.id().to_owned(),
            users: self.room.connection_count(),
        };
        let request = Request::builder()
            .method(Method::POST)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&report)?)?;
        let response = lobby.fetch("/report", request).await?;
        if !response.status().is_success() {
            let status = response.status();
            // The lobby says why in its body.
            let why = response.text().await?;
            return Err(Error::msg(format!("the lobby answered {status}: {why}")));
        }
        Ok(())
    }
}

/// The lobby party (`lobby`): users per chat room.
#[party(name = "lobby")]
#[derive(Debug)]
pub struct LobbyParty {
    room: Room,
    /// Users per chat room; rooms with none are left out.
    counts: BTreeMap<String, usize>,
}

const COUNTS: &str = "counts";

#[party]
impl LobbyParty {
    fn new(room: Room) -> Self {
        LobbyParty {
            room,
            counts: BTreeMap::new(),
        }
    }

    /// The counts outlive the lobby room's eviction (it is dropped when idle): they are
    /// kept in its storage.
    async fn on_start(&mut self) -> Result<(), Error> {
        self.counts = self.room.storage().get(COUNTS).await?.unwrap_or_default();
        Ok(())
    }

    /// Clients may only read; reports come from rooms, which skip this hook.
    fn on_before_request(request: Request) -> Before {
        if matches!(*request.method(), Method::GET | Method::HEAD) {
            Before::Forward(request)
        } else {
            let refusal = (
                StatusCode::METHOD_NOT_ALLOWED,
                "the lobby is read-only: its counts come from the chat rooms",
            );
            Before::Respond(refusal.into_response())
        }
    }

    fn on_connect(&mut self, connection: &Connection) -> Result<(), Error> {
        connection.send(self.summary().to_string())?;
        Ok(())
    }

    async fn on_request(&mut self, request: Request) -> Result<Json<serde_json::Value>, Error> {
        if *request.method() == Method::POST && request.path().ends_with("/report") {
            let report: Report = request.json()?;
            if report.users == 0 {
                self.counts.remove(&report.room);
            } else {
                self.counts.insert(report.room, report.users);
            }
            self.room.storage().put(COUNTS, &self.counts).await?;
            self.room.broadcast(self.summary().to_string(), &[]);
        }
        Ok(Json(self.summary()))
    }
}

impl LobbyParty {
    fn summary(&self) -> serde_json::Value {
        let total: usize = self.counts.values().sum();
        json!({ "rooms": self.counts, "total": total })
    }
}
