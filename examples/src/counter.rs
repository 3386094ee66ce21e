//! A counter shared by everyone in a room, kept in durable storage: it survives restarts
//! (and `kill -9`: an increment is acknowledged only once it is on disk).
//!
//! - `GET /parties/main/<room>` answers the count.
//! - `POST /parties/main/<room>` increments it, broadcasts the new count to the room's
//!   sockets, and answers it.
//! - A socket receives the count when it connects and after every increment; sending it
//!   `increment` increments too.

use partykit_runtime::{Connection, Error, Message, Method, Request, Room, StatusCode, party};

const COUNT: &str = "count";

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

    async fn on_start(&mut self) -> Result<(), Error> {
        self.count = self.room.storage().get(COUNT).await?.unwrap_or(0);
        Ok(())
    }

    fn on_connect(&mut self, conn: &Connection) -> Result<(), Error> {
        conn.send(self.count.to_string())?;
        Ok(())
    }

    async fn on_message(&mut self, message: Message) -> Result<(), Error> {
        if message.as_text() == Some("increment") {
            self.increment().await?;
        }
        Ok(())
    }

    async fn on_request(&mut self, request: Request) -> Result<String, Error> {
        match *request.method() {
            Method::GET => Ok(self.count.to_string()),
            Method::POST => Ok(self.increment().await?.to_string()),
            _ => Err(Error::with_status(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET to read the count or POST to increment it",
            )),
        }
    }
}

impl Counter {
    async fn increment(&mut self) -> Result<u64, Error> {
        self.count += 1;
        self.room.storage().put(COUNT, &self.count).await?;
        // Held by the output gate until the put is durable.
        self.room.broadcast(self.count.to_string(), &[]);
        Ok(self.count)
    }
}
