//! Object-style signatures that parse but do not type-check: rustc reports each on the
//! user's token, naming the type to write.

use partykit_runtime::{Connection, ConnectionContext, Error, Message, Request, Room, party};

#[party]
struct Legacy;

#[party]
#[allow(deprecated)]
impl Legacy {
    // The room by value instead of by reference.
    fn on_close(_connection: &Connection, _room: Room) {}

    // Class-style order in object style: the room comes second.
    fn on_connect(_connection: &Connection, _ctx: &ConnectionContext) {}

    // A message type that is neither `Message` nor `String`.
    fn on_message(_message: &str, _sender: &Connection, _room: &Room) {}

    // The error by reference.
    fn on_error(_connection: &Connection, _error: &Error, _room: &Room) {}

    // A return value that is not a response.
    fn on_request(_request: Request, _room: &Room) -> u32 {
        0
    }
}

// Object style on a struct with fields: nothing could read them.
#[party]
#[derive(Default)]
struct WithFields {
    count: u32,
}

#[party]
#[allow(deprecated)]
impl WithFields {
    fn on_message(_message: Message, _sender: &Connection, _room: &Room) {}
}

fn main() {
    let _ = WithFields::default().count;
}
