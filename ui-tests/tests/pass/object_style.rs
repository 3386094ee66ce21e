//! Every accepted form of object-style (legacy) handlers: sync or async, the room where
//! PartyKit's object syntax had it, trailing parameters left out, returning nothing or a
//! `Result`, beside the static hooks. The deprecation notes are silenced with
//! `#[allow(deprecated)]` on the impl block or on each fn, under `#![deny(warnings)]`.

#![deny(warnings)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use partykit_runtime::{
    Connection, ConnectionContext, Error, FetchLobby, Handlers, Lobby, Message, Party,
    PartyOptions, Request, Room, party,
};

/// The fullest signatures, all async, silenced on the impl block.
#[party(name = "full")]
struct Full;

#[party]
#[allow(deprecated)]
impl Full {
    async fn on_connect(connection: &Connection, room: &Room, ctx: &ConnectionContext) {
        let _ = connection.send(format!("{} {}", room.id(), ctx.request().path()));
    }

    async fn on_message(message: Message, sender: &Connection, room: &Room) {
        room.broadcast(message, &[sender.id()]);
    }

    async fn on_close(connection: &Connection, room: &Room) {
        room.broadcast(format!("{} left", connection.id()), &[]);
    }

    async fn on_error(connection: &Connection, error: Error, room: &Room) {
        let _ = (connection, error, room);
    }

    async fn on_request(request: Request, room: &Room) -> String {
        format!("{} {}", request.path(), room.id())
    }

    async fn on_alarm(room: &Room) {
        let _ = room.id();
    }

    // Static hooks are written as in class style.
    async fn on_before_connect(request: Request, _lobby: &Lobby) -> Request {
        request
    }

    fn on_fetch(_request: Request, _lobby: &FetchLobby) -> Option<&'static str> {
        None
    }

    /// A helper: not a handler, left alone.
    fn helper() -> u32 {
        1
    }
}

/// Sync handlers with trailing parameters left out (the room included), a text-only
/// message, a braced struct without fields; silenced on each fn.
#[party(name = "short")]
struct Short {}

#[party]
impl Short {
    #[allow(deprecated)]
    fn on_connect(connection: &Connection) {
        let _ = connection.send("hello");
    }

    #[allow(deprecated)]
    fn on_message(message: String) {
        let _ = message.len();
    }

    #[allow(deprecated)]
    fn on_close() {}

    #[allow(deprecated)]
    fn on_error(_connection: &Connection, _error: Error) {}

    #[allow(deprecated)]
    fn on_request() -> &'static str {
        "short"
    }

    #[allow(deprecated)]
    fn on_alarm() {}
}

/// Handlers returning `Result`s, a tuple struct without fields.
#[party(name = "fallible")]
struct Fallible();

#[party]
#[allow(deprecated)]
impl Fallible {
    fn on_connect(connection: &Connection, _room: &Room) -> Result<(), Error> {
        connection.send("hello")?;
        Ok(())
    }

    async fn on_message(message: Message, _sender: &Connection, room: &Room) -> Result<(), Error> {
        let number: u32 = message.json()?;
        room.broadcast((number + 1).to_string(), &[]);
        Ok(())
    }

    async fn on_request(request: Request, _room: &Room) -> Result<String, Error> {
        Ok(request.text()?.to_owned())
    }

    // The old name of `on_fetch`, which is also deprecated.
    fn unstable_on_fetch(request: Request) -> Option<String> {
        Some(request.path().to_owned())
    }
}

/// PartyKit's hibernation rule for object style: `on_connect` only does not hibernate;
/// `on_request` only does. Under `#[cfg]`, the rule follows the configuration.
#[party(name = "connect-only")]
struct ConnectOnly;

#[party]
#[allow(deprecated)]
impl ConnectOnly {
    fn on_connect(_connection: &Connection) {}

    #[cfg(any())]
    fn on_message(_message: Message) {}
}

#[party(name = "request-only")]
struct RequestOnly;

#[party]
#[allow(deprecated)]
impl RequestOnly {
    fn on_request(_request: Request) -> &'static str {
        "hello"
    }
}

/// Only static hooks: class style (nothing deprecated, nothing to silence), so it needs
/// `Default` or `new`.
#[party(name = "hooks-only")]
#[derive(Default)]
struct HooksOnly;

#[party]
impl HooksOnly {
    fn on_before_request(request: Request) -> Request {
        request
    }
}

fn main() {
    let hibernates = |options: PartyOptions| options.hibernate;
    // `on_message`, or no `on_connect`: hibernate.
    assert!(hibernates(<Full as Party>::OPTIONS));
    assert!(hibernates(<Short as Party>::OPTIONS));
    assert!(hibernates(<Fallible as Party>::OPTIONS));
    assert!(hibernates(<RequestOnly as Party>::OPTIONS));
    // `on_connect` without `on_message` (the one under `#[cfg(any())]` does not exist).
    assert!(!hibernates(<ConnectOnly as Party>::OPTIONS));
    // Class style never does unless it says so.
    assert!(!hibernates(<HooksOnly as Party>::OPTIONS));

    assert_eq!(<Full as Party>::NAME, "full");
    assert_eq!(
        <Full as Party>::HANDLERS,
        Handlers {
            on_request: true,
            on_fetch: true,
            ..Handlers::DEFAULT
        }
    );
    assert!(<Fallible as Party>::HANDLERS.on_fetch);
    assert!(!<ConnectOnly as Party>::HANDLERS.on_request);
    assert_eq!(Full::helper(), 1);

    // Outside a room's task an object-style handler fails instead of panicking.
    let mut party = Full;
    let mut alarm = pin!(<Full as Party>::on_alarm(&mut party));
    let mut context = Context::from_waker(Waker::noop());
    match alarm.as_mut().poll(&mut context) {
        Poll::Ready(Err(error)) => assert!(error.to_string().contains("outside a room")),
        other => panic!("expected an error, got {other:?}"),
    }

    let _ = partykit_runtime::Server::new()
        .party::<Full>()
        .party::<Short>()
        .party::<Fallible>();
}
