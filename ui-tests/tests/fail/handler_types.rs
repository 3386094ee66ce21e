//! Signatures that parse but do not type-check: rustc reports them on the user's tokens.

use std::rc::Rc;

use partykit_runtime::{Connection, FetchLobby, Message, Request, Room, party};

#[party]
struct Types {
    room: Room,
}

struct NotAnError;

#[party]
impl Types {
    fn new(room: &Room) -> Self {
        Types { room: room.clone() }
    }

    // Wrong parameter types.
    fn on_message(&mut self, _message: Vec<u8>, _sender: Connection) {}

    // Wrong return types.
    fn on_close(&mut self) -> u32 {
        0
    }

    fn on_alarm(&mut self) -> Result<(), NotAnError> {
        Err(NotAnError)
    }

    fn connection_tags(&mut self) -> Vec<u32> {
        vec![1]
    }

    fn on_request(&mut self, _request: Request) -> u32 {
        0
    }

    fn on_fetch(_request: Request, _lobby: &FetchLobby) -> String {
        String::new()
    }

    // A future that is not `Send`.
    async fn on_connect(&mut self, connection: &Connection) {
        let shared = Rc::new(connection.id().to_owned());
        tokio_yield().await;
        let _ = (shared, &self.room);
    }
}

async fn tokio_yield() {}

#[party]
struct WrongConstructor;

#[party]
impl WrongConstructor {
    fn new(_room: Room) -> Option<Self> {
        None
    }
}

fn main() {
    let _ = Message::from("unused import guard");
}
