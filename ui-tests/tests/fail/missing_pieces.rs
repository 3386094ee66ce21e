//! Half-done parties: a missing `#[party]` on either side, or no constructor.

use partykit_runtime::party;

// The struct lacks `#[party]`.
#[derive(Default)]
struct NoStructAttribute;

#[party]
impl NoStructAttribute {}

// The impl block lacks `#[party]`.
#[party]
#[derive(Default)]
struct NoImplAttribute;

impl NoImplAttribute {
    fn on_start(&mut self) {}
}

// Neither `fn new` nor `Default`.
#[party]
struct NoConstructor;

#[party]
impl NoConstructor {}

fn main() {}
