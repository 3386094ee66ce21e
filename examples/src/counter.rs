//! A counter shared by everyone in a room, kept in memory.
//!
//! - `GET /parties/main/<room>` answers the count.
//! - `POST /parties/main/<room>` increments it, broadcasts the new count to the room's
//!   sockets, and answers it.
//! - A socket receives the count when it connects and after every increment; sending it
//!   `increment` increments too.

use partykit_runtime::{Connection, Error, Message, Method, Request, Room, StatusCode, party};

/// The counter party (`main`).
#[party]
#[derive(Debug)]
pub struct Counter {
    room: Room,
    count: u64,
}

#[party]
impl Counter {
    fn new(room: Room) -> Self {
        Counter { room, count: 0 }
    }

    fn on_connect(&mut self, conn: &Connection) -> Result<(), Error> {
        conn.send(self.count.to_string())?;
        Ok(())
    }

    fn on_message(&mut self, message: Message) {
        if message.as_text() == Some("increment") {
            self.increment();
        }
    }

    fn on_request(&mut self, request: Request) -> Result<String, Error> {
        match *request.method() {
            Method::GET => Ok(self.count.to_string()),
            Method::POST => Ok(self.increment().to_string()),
            _ => Err(Error::with_status(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET to read the count or POST to increment it",
            )),
        }
    }
}

impl Counter {
    fn increment(&mut self) -> u64 {
        self.count += 1;
        self.room.broadcast(self.count.to_string(), &[]);
        self.count
    }
}
