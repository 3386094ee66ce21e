//! `-D warnings` (here `#![deny(warnings)]`) makes a deprecation note an error, while
//! `#[allow(deprecated)]` on the fn or on the impl block still silences it.

#![deny(warnings)]

use partykit_runtime::{Connection, Message, Room, party};

#[party]
struct Legacy;

#[party]
impl Legacy {
    fn on_connect(connection: &Connection) {
        let _ = connection.send("Hello, world!");
    }

    #[allow(deprecated)]
    fn on_message(message: Message, sender: &Connection, room: &Room) {
        room.broadcast(message, &[sender.id()]);
    }
}

#[party(name = "silenced")]
struct Silenced;

#[party]
#[allow(deprecated)]
impl Silenced {
    fn on_close(_connection: &Connection) {}
}

fn main() {}
