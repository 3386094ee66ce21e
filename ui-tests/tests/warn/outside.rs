//! Handlers in an impl block without `#[party]` are never called: each gets a warning on
//! the `#[party]` block that does not have it.
#![deny(deprecated)]

use partykit_runtime::{Connection, Message, Room, party};

#[party]
struct Chat {
    room: Room,
}

#[party]
impl Chat {
    fn new(room: Room) -> Self {
        Chat { room }
    }

    fn on_connect(&mut self, connection: &Connection) {
        let _ = (connection, &self.room);
    }
}

impl Chat {
    // Never called: not in the `#[party]` block.
    fn on_message(&mut self, message: Message) {
        let _ = message;
    }

    fn on_close(&mut self, connection: &Connection) {
        let _ = connection;
    }

    // Not a handler's name: a helper, left alone.
    fn on_message_count(&self) -> usize {
        0
    }
}

fn main() {
    let _ = Chat::on_message_count;
}
