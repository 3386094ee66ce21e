//! Every deprecated way of writing a handler warns, on the handler's name, with the
//! class-style form to write instead. `#![deny(deprecated)]` turns the warnings into
//! errors so that this case locks them.

#![deny(deprecated)]

use partykit_runtime::{Connection, ConnectionContext, Error, Message, Request, Room, party};

/// Each object-style room handler, async or not.
#[party]
struct Legacy;

#[party]
impl Legacy {
    async fn on_connect(connection: &Connection, room: &Room, _ctx: &ConnectionContext) {
        let _ = connection.send(format!("welcome to {}", room.id()));
    }

    fn on_message(message: Message, sender: &Connection, room: &Room) {
        room.broadcast(message, &[sender.id()]);
    }

    fn on_close(_connection: &Connection, _room: &Room) {}

    async fn on_error(_connection: &Connection, _error: Error, _room: &Room) {}

    fn on_request(_request: Request, room: &Room) -> String {
        room.id().to_owned()
    }

    fn on_alarm() {}
}

/// `unstable_on_fetch` in class style.
#[party]
#[derive(Default)]
struct OldFetch;

#[party]
impl OldFetch {
    fn unstable_on_fetch(_request: Request) -> Option<String> {
        None
    }
}

fn main() {}
