//! A macro call inside a `#[party]` impl block expands after `#[party]` ran, so the
//! handlers it would write are never called.

use partykit_runtime::{Message, party};

macro_rules! handlers {
    () => {
        fn on_message(&mut self, _message: Message) {}
    };
}

#[party]
#[derive(Default)]
struct Generated;

#[party]
impl Generated {
    handlers!();
}

#[party]
#[derive(Default)]
struct Qualified;

#[party]
impl Qualified {
    handlers! {}
}

fn main() {}
