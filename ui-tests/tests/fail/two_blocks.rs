//! Two `#[party]` impl blocks for one party: one error, rustc's conflict, and warnings
//! that say to merge the blocks; no false "has no constructor".

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

#[party]
impl Chat {
    fn on_message(&mut self, message: Message) {
        let _ = message;
    }
}

fn main() {}
