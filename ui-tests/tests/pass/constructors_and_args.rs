//! Constructors (`fn new`, `fn new()` or `Default`) and the attribute's arguments.

// Class style only: the generated code must trigger no lint at all.
#![deny(warnings)]

use partykit_runtime::{Party, Room, party};

// `crate = "…"` for a renamed dependency: here the runtime is reached as `my_rename`.
extern crate partykit_runtime as my_rename;

#[party(name = "with-new")]
struct WithNew {
    room: Room,
}

#[party]
impl WithNew {
    fn new(room: Room) -> Self {
        WithNew { room }
    }

    fn on_start(&mut self) {
        let _ = self.room.id();
    }
}

#[party(name = "without_room")]
struct WithoutRoom {
    count: u32,
}

#[party]
impl WithoutRoom {
    // The room may be left out, like a handler's trailing parameters.
    pub fn new() -> WithoutRoom {
        WithoutRoom { count: 1 }
    }
}

#[party(name = "from-default-2")]
#[derive(Default)]
struct FromDefault {
    count: u32,
}

#[party]
impl FromDefault {}

#[party(crate = "my_rename", name = "renamed")]
#[derive(Default)]
struct Renamed;

#[party(crate = "my_rename")]
impl Renamed {
    async fn on_message(&mut self, _message: my_rename::Message) {}
}

// Handlers and constructors under `#[cfg]`: the generated impl follows the same
// conditions (`all()` is always true, `any()` never).
#[party(name = "configured")]
struct Configured {
    count: u32,
}

#[party]
impl Configured {
    #[cfg(all())]
    fn new(_room: Room) -> Self {
        Configured { count: 1 }
    }

    #[cfg(any())]
    fn new(_room: Room) -> Self {
        Configured { count: 2 }
    }

    #[cfg(any())]
    fn on_request(&mut self) -> &'static str {
        "never compiled"
    }

    #[cfg(all())]
    fn on_fetch() -> Option<String> {
        None
    }
}

mod nested {
    // Items of the user's that share names with what the macro generates or uses must
    // not get in its way.
    #[allow(dead_code)]
    struct Party;
    #[allow(dead_code)]
    struct Room;
    #[allow(dead_code)]
    enum Result {}
    #[allow(dead_code)]
    mod core {}

    #[partykit_runtime::party]
    #[derive(Default)]
    pub(crate) struct Shadowed;

    #[partykit_runtime::party]
    impl Shadowed {
        fn on_start(&mut self) {}
    }
}

/// `hibernate` alone, and beside the other arguments.
#[party(hibernate)]
#[derive(Default)]
struct Sleepy;

#[party]
impl Sleepy {}

#[party(name = "sleepy-named", hibernate, crate = "partykit_runtime")]
#[derive(Default)]
struct SleepyNamed;

#[party(crate = "partykit_runtime")]
impl SleepyNamed {}

fn main() {
    assert!(<Sleepy as Party>::OPTIONS.hibernate);
    assert!(<SleepyNamed as Party>::OPTIONS.hibernate);
    assert_eq!(<SleepyNamed as Party>::NAME, "sleepy-named");
    assert!(!<WithNew as Party>::OPTIONS.hibernate);
    assert_eq!(<WithNew as Party>::NAME, "with-new");
    assert_eq!(<WithoutRoom as Party>::NAME, "without_room");
    assert_eq!(<FromDefault as Party>::NAME, "from-default-2");
    assert_eq!(<Renamed as Party>::NAME, "renamed");
    assert_eq!(<nested::Shadowed as Party>::NAME, "main");
    assert!(!<Configured as Party>::HANDLERS.on_request);
    assert!(<Configured as Party>::HANDLERS.on_fetch);
    let _: fn(Room) -> Configured = Configured::new;
    let _ = |configured: Configured| configured.count;
    let _ = (WithoutRoom::new().count, FromDefault::default().count);
}
