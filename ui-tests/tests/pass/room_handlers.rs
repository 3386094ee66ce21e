//! Every accepted form of the room handlers: sync or async, `&mut self` or `&self`,
//! trailing parameters left out, returning nothing or a `Result`.

// Class style only: the generated code must trigger no lint at all.
#![deny(warnings)]

use partykit_runtime::{
    Connection, ConnectionContext, Error, Handlers, Message, Party, Room, party,
};

/// The fullest signatures, all async, all `&mut self`, returning nothing.
#[party]
struct Full {
    room: Room,
}

#[party]
impl Full {
    fn new(room: Room) -> Self {
        Full { room }
    }

    async fn on_start(&mut self) {}

    async fn connection_tags(
        &mut self,
        _connection: &Connection,
        _ctx: &ConnectionContext,
    ) -> Vec<String> {
        vec![self.room.id().to_owned()]
    }

    async fn on_connect(&mut self, _connection: &Connection, _ctx: &ConnectionContext) {}

    async fn on_message(&mut self, message: Message, sender: &Connection) {
        self.room.broadcast(message, &[sender.id()]);
    }

    async fn on_close(&mut self, _connection: &Connection) {}

    async fn on_error(&mut self, _connection: &Connection, _error: Error) {}

    async fn on_alarm(&mut self) {}

    /// A helper: not a handler, left alone, callable as usual.
    fn helper(&self) -> usize {
        self.room.connection_count()
    }
}

/// Sync handlers taking `&self`, with trailing parameters left out.
#[party]
#[derive(Default)]
struct Short;

#[party]
impl Short {
    fn on_start(&self) {}

    fn connection_tags(&self) -> Vec<&'static str> {
        vec!["reader"]
    }

    fn on_connect(&self, _connection: &Connection) {}

    // A text-only handler: a binary message is an error, and the handler does not run.
    fn on_message(&self, message: String) {
        let _ = message.len();
    }

    fn on_close(&self) {}

    fn on_error(&self, _connection: &Connection) {}

    fn on_alarm(&self) {}
}

/// Handlers returning `Result`s, with `self: &mut Self` / `self: &Self` spellings and
/// explicit lifetimes.
#[party]
#[derive(Default)]
struct Fallible {
    messages: usize,
}

#[derive(Debug)]
struct MyError;

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("my error")
    }
}

impl std::error::Error for MyError {}

#[party]
impl Fallible {
    async fn on_start(self: &mut Self) -> Result<(), Error> {
        Ok(())
    }

    fn connection_tags(
        &mut self,
        connection: &Connection,
    ) -> Result<Vec<String>, MyError> {
        Ok(vec![connection.id().to_owned()])
    }

    async fn on_connect<'a>(&'a mut self, connection: &'a Connection) -> Result<(), Error> {
        connection.send("hello")?;
        Ok(())
    }

    fn on_message(self: &mut Self, message: Message) -> partykit_runtime::Result {
        self.messages += message.len();
        Ok(())
    }

    async fn on_close(&self, _connection: &Connection) -> Result<(), MyError> {
        Err(MyError)
    }

    async fn on_alarm(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

/// No handlers at all.
#[party]
#[derive(Default)]
struct Empty;

#[party]
impl Empty {}

fn assert_send<T: Send>(_: T) {}

fn main() {
    // The generated futures are `Send` and the impls are real `Party` impls.
    let room_handlers_are_send = |full: &mut Full, short: &mut Short| {
        assert_send(<Full as Party>::on_start(full));
        assert_send(<Short as Party>::on_alarm(short));
    };
    let _ = room_handlers_are_send;
    assert_eq!(<Full as Party>::HANDLERS, Handlers { on_request: false, ..Handlers::DEFAULT });
    assert_eq!(<Empty as Party>::NAME, "main");
    let _ = Full::helper;
    let _ = partykit_runtime::Server::new().party::<Full>();
    let _ = (Short, Fallible::default(), Empty);
}
