//! PartyKit's deprecated names, kept so that ported code compiles, each with a
//! deprecation note naming its replacement.
//!
//! Using any of them warns at build time (`#[allow(deprecated)]` silences it, `-D warnings`
//! makes it an error), like TypeScript's `@deprecated` did in PartyKit.
//!
//! | deprecated | write instead |
//! |---|---|
//! | [`Room::connections()`](crate::Room::connections) | [`Room::get_connections(None)`](crate::Room::get_connections), [`Room::get_connection(id)`](crate::Room::get_connection) |
//! | [`Connection::socket()`](crate::Connection::socket) | the connection itself |
//! | [`Connection::serialize_attachment(&v)`](crate::Connection::serialize_attachment) | [`Connection::set_state(&v)`](crate::Connection::set_state) |
//! | [`Connection::deserialize_attachment()`](crate::Connection::deserialize_attachment) | [`Connection::state()`](crate::Connection::state) |
//! | [`PartyKitRoom`] | [`Room`] |
//! | [`PartyKitConnection`], [`PartyConnection`] | [`Connection`] |
//! | [`PartyKitContext`], [`PartyConnectionContext`] | [`ConnectionContext`] |
//! | [`PartyKitStorage`], [`PartyStorage`] | [`Storage`] |
//! | [`PartyRequest`] | [`Request`] |
//! | [`PartyLobby`], [`PartyFetchLobby`] | [`Lobby`], [`FetchLobby`] |
//! | [`Room::parties()`](crate::Room::parties) | [`room.context().parties()`](crate::Room::context) |
//! | [`PartyStub`] | [`RoomStub`](crate::parties::RoomStub) |
//! | [`PartyContext`] | [`Context`](crate::Context) |
//! | object-style handlers (`export default { … } satisfies PartyKitServer`) | class style; `#[party]` warns, see the [migration guide](crate::guide::migration) |
//! | `unstable_on_fetch` | `on_fetch`; `#[party]` warns |
//!
//! Not carried over:
//!
//! - `PartyKitServer`, `PartyServer`, `PartyWorker`: these typed the exported object or
//!   class. In Rust that is `#[party]` on a struct and its impl block, or `impl Party`;
//!   a trait alias would add nothing.
//! - `Party.Party` (→ `Party.Room`): `Party` is the name of the trait here.
//! - `PartyExecutionContext`: hooks here are plain async functions; a task that must
//!   outlive the response is a `tokio::spawn`.

use serde::{Serialize, de::DeserializeOwned};

use crate::{Connection, ConnectionContext, Error, FetchLobby, Lobby, Request, Room, Storage};

impl Room {
    /// The room's connections.
    #[deprecated(
        note = "use `room.get_connections(None)` for every connection, or `room.get_connection(id)` for one"
    )]
    pub fn connections(&self) -> Vec<Connection> {
        self.get_connections(None)
    }

    /// Every party of the server.
    #[deprecated(note = "use `room.context().parties()`")]
    pub fn parties(&self) -> &crate::parties::Parties {
        self.context().parties()
    }
}

impl Connection {
    /// The connection itself: PartyKit's connections once wrapped a socket.
    #[deprecated(note = "a `Connection` is the socket: use the connection itself")]
    pub fn socket(&self) -> &Self {
        self
    }

    /// Stores `value` as the connection's state.
    ///
    /// # Errors
    ///
    /// When `value` does not serialize.
    #[deprecated(note = "use `connection.set_state(&value)`")]
    pub fn serialize_attachment<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        self.set_state(value)
    }

    /// The connection's state, as stored by `serialize_attachment` or `set_state`.
    ///
    /// # Errors
    ///
    /// When the stored state does not deserialize as `T`.
    #[deprecated(note = "use `connection.state::<T>()`")]
    pub fn deserialize_attachment<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        self.state()
    }
}

/// PartyKit's old name of [`Room`].
#[deprecated(note = "use `Room`")]
pub type PartyKitRoom = Room;

/// PartyKit's old name of [`Connection`].
#[deprecated(note = "use `Connection`")]
pub type PartyKitConnection = Connection;

/// PartyKit's old name of [`Connection`].
#[deprecated(note = "use `Connection`")]
pub type PartyConnection = Connection;

/// PartyKit's old name of [`ConnectionContext`].
#[deprecated(note = "use `ConnectionContext`")]
pub type PartyKitContext = ConnectionContext;

/// PartyKit's old name of [`ConnectionContext`].
#[deprecated(note = "use `ConnectionContext`")]
pub type PartyConnectionContext = ConnectionContext;

/// PartyKit's old name of [`Storage`].
#[deprecated(note = "use `Storage`")]
pub type PartyKitStorage = Storage;

/// PartyKit's old name of [`Storage`].
#[deprecated(note = "use `Storage`")]
pub type PartyStorage = Storage;

/// PartyKit's old name of [`Request`].
#[deprecated(note = "use `Request`")]
pub type PartyRequest = Request;

/// PartyKit's old name of [`Lobby`].
#[deprecated(note = "use `Lobby`")]
pub type PartyLobby = Lobby;

/// PartyKit's old name of [`FetchLobby`].
#[deprecated(note = "use `FetchLobby`")]
pub type PartyFetchLobby = FetchLobby;

/// The old name of [`RoomStub`](crate::parties::RoomStub).
#[deprecated(note = "use `partykit_runtime::parties::RoomStub`")]
pub type PartyStub = crate::parties::RoomStub;

/// The old name of [`Context`](crate::Context).
#[deprecated(note = "use `partykit_runtime::Context`")]
pub type PartyContext = crate::Context;

#[cfg(test)]
#[allow(deprecated)]
mod tests {
    use super::*;

    #[test]
    fn attachments_are_the_state() {
        let (connection, _outlet) = Connection::new("c".into(), "http://x/".into(), 1024);
        connection.serialize_attachment(&[1, 2]).unwrap();
        assert_eq!(connection.state::<Vec<u8>>().unwrap(), Some(vec![1, 2]));
        connection.set_state("s").unwrap();
        assert_eq!(
            connection.deserialize_attachment::<String>().unwrap(),
            Some("s".to_owned())
        );
        assert!(connection.socket().same_socket(&connection));
    }
}
