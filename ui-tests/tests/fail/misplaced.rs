//! `#[party]` on items it does not go on.

use partykit_runtime::{Party, Room, party};

#[party]
enum Enum {
    A,
}

#[party]
union Union {
    a: u32,
}

#[party]
fn function() {}

#[party]
trait Trait {}

// Generic parties are refused on the struct and on the impl block.
#[party]
struct Generic<T> {
    value: T,
}

#[party]
impl<T> Generic<T> {}

// A trait impl instead of an inherent one.
#[party]
#[derive(Default)]
struct ByHand;

#[party]
impl Party for ByHand {
    fn new(_room: Room) -> Self {
        ByHand
    }
}

fn main() {}
