//! Handler signatures the macro refuses, all reported in one compile.

use partykit_runtime::{Connection, Lobby, Message, Request, Room, party};

#[party]
struct Chat {
    room: Room,
}

#[party]
impl Chat {
    async fn new(room: Room) -> Self {
        Chat { room }
    }

    // Typos and JavaScript spelling.
    fn on_conect(&mut self) {}

    fn onMessage(&mut self) {}

    fn on_whatever(&mut self) {}

    // Receivers.
    fn on_start(self) {}

    fn on_close(_connection: &Connection) {}

    fn on_before_connect(&self, request: Request, _lobby: &Lobby) -> Request {
        request
    }

    // Too many parameters.
    fn on_message(&mut self, _message: Message, _sender: &Connection, _extra: u32) {}

    // A response is required.
    fn on_request(&mut self, _request: Request) {}

    // Tags are required.
    fn connection_tags(&mut self) {}

    // Generic handler.
    fn on_alarm<T: Default>(&mut self) {}

    // Unsafe handler.
    unsafe fn on_error(&mut self) {}

    // Static hooks with a missing return type or a receiver.
    fn on_before_request(_request: Request) {}

    fn on_cron(&mut self) {}

}

#[party]
#[derive(Default)]
struct Constructors;

#[party]
impl Constructors {
    fn new(&self, _room: Room, _extra: u32) {}
}

fn main() {}

#[party]
#[derive(Default)]
struct Duplicates;

#[party]
impl Duplicates {
    fn on_start(&mut self) {}

    async fn on_start(&mut self) {}
}
