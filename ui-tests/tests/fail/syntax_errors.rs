//! Half-typed code, as an editor sees it on every keystroke: rustc's syntax error must be
//! the only error. No copy from `#[party]`, and no "`X` is not a party" where the party
//! is used.

use partykit_runtime::{Connection, Message, Room, Server, party};

// A body being typed.
#[party]
struct Body {
    room: Room,
}

#[party]
impl Body {
    fn new(room: Room) -> Self {
        Body { room }
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) {
        let text = ;
        self.room.broadcast(message, &[sender.id()]);
    }
}

// A signature being typed.
#[party]
struct Signature;

#[party]
impl Signature {
    fn on_message(&mut self, message: ) {}
}

// A field being typed.
#[party(name = "field")]
struct Field {
    room:
}

#[party]
impl Field {
    fn new(room: Room) -> Self {
        Field { room }
    }
}

// A helper's body, in an impl block whose handlers are fine.
#[party]
#[derive(Default)]
struct Helper;

#[party]
impl Helper {
    fn on_start(&mut self) {}

    fn helper(&self) -> u32 {
        1 +
    }
}

fn main() {
    let _ = Server::new()
        .party::<Body>()
        .party::<Signature>()
        .party::<Field>()
        .party::<Helper>();
}
