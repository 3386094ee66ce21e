//! Mistakes whose messages used to name internals or mislead.

use std::future::Future;

use partykit_runtime::{Connection, Message, party};

// Names that mean a handler although they are spelled otherwise.
#[party]
#[derive(Default)]
struct Meanings;

#[party]
impl Meanings {
    fn on_disconnect(&mut self, _connection: &Connection) {}
    fn on_join(&mut self, _connection: &Connection) {}
    fn on_data(&mut self, _message: Message) {}
    fn on_init(&mut self) {}
    fn on_timer(&mut self) {}
}

// A party that borrows.
#[party]
struct Borrowing<'a> {
    name: &'a str,
}

#[party]
impl<'a> Borrowing<'a> {
    fn on_start(&mut self) {
        let _ = self.name;
    }
}

// `#[party]` twice.
#[party]
#[party(name = "twice")]
#[derive(Default)]
struct Twice;

#[party]
#[party]
impl Twice {}

// `impl Trait` for a parameter.
#[party]
#[derive(Default)]
struct ImplTrait;

#[party]
impl ImplTrait {
    fn on_message(&mut self, _message: impl Into<Message>) {}
}

fn main() {}

// A future written by hand: `async fn` is what to write.
#[party]
#[derive(Default)]
struct HandWritten;

#[party]
impl HandWritten {
    fn on_start(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
