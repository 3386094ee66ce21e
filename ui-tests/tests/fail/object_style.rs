//! Object-style (legacy) impl blocks the macro refuses, all reported in one compile.

use partykit_runtime::{Connection, FetchLobby, FetchSocket, Message, Request, Room, party};

// Object-style handlers beside a constructor: one style per impl block.
#[party]
struct WithConstructor {
    room: Room,
}

#[party]
impl WithConstructor {
    fn new(room: Room) -> Self {
        WithConstructor { room }
    }

    fn on_message(_message: Message, _sender: &Connection, _room: &Room) {}
}

// Object-style handlers beside class-style ones: each object-style one is reported.
#[party]
#[derive(Default)]
struct Mixed;

#[party]
impl Mixed {
    async fn on_connect(&mut self, _connection: &Connection) {}

    async fn on_message(_message: Message, _sender: &Connection, _room: &Room) {}

    fn on_close(_connection: &Connection, _room: &Room) {}
}

// Handlers PartyKit's object syntax did not have, too many parameters, no response.
#[party]
struct Legacy;

#[party]
impl Legacy {
    fn on_start(_room: &Room) {}

    fn connection_tags(_connection: &Connection, _room: &Room) -> Vec<String> {
        Vec::new()
    }

    fn on_close(_connection: &Connection, _room: &Room, _extra: u32) {}

    fn on_alarm(_room: &Room, _extra: u32) {}

    fn on_request(_request: Request, _room: &Room) {}

    // Static hooks take no `self` in either style.
    fn on_socket(&self, _socket: FetchSocket, _lobby: &FetchLobby) {}
}

// `unstable_on_fetch` is the old name of `on_fetch`: not both.
#[party]
struct BothFetches;

#[party]
impl BothFetches {
    fn on_fetch(_request: Request) -> Option<String> {
        None
    }

    fn unstable_on_fetch(_request: Request) -> Option<String> {
        None
    }
}

fn main() {}
