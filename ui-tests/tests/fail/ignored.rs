//! What `#[party]` would otherwise accept and silently ignore: each is an error saying
//! what would have happened. (Name and option checks are evaluated at compile time, after
//! type checking: this file has no other error.)

use partykit_runtime::{Party, PartyOptions, Room, party};

// The name on the struct, but `Party` implemented by hand: the party would be served as
// `main`.
#[party(name = "chat")]
struct Chat;

impl Party for Chat {
    fn new(_room: Room) -> Self {
        Chat
    }
}

// `hibernate` on the struct, but `Party` implemented by hand without it.
#[party(hibernate)]
struct Sleepy;

impl Party for Sleepy {
    fn new(_room: Room) -> Self {
        Sleepy
    }
}

// A hand-written impl that agrees with the attribute is fine.
#[party(name = "agrees", hibernate)]
struct Agrees;

impl Party for Agrees {
    const NAME: &'static str = "agrees";
    const OPTIONS: PartyOptions = PartyOptions { hibernate: true };

    fn new(_room: Room) -> Self {
        Agrees
    }
}

fn main() {}
