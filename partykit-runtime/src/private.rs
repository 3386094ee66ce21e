//! What `#[party]`'s generated code names besides the public API. Not public API: it
//! may change in any release. Nothing here appears in a compile error: the traits errors
//! are about are public, in [`crate::handler`].

pub use std::future::Future;
pub use std::result::Result as StdResult;

pub use crate::{
    Before, Connection, ConnectionContext, Cron, CronLobby, Error, FetchLobby, FetchSocket,
    Handlers, Lobby, Message, Party, PartyOptions, Request, Response, Room,
};

tokio::task_local! {
    /// The room whose actor task is running: object-style handlers receive it as an
    /// argument, while the `Party` trait's handlers only get `&mut self`.
    static CURRENT_ROOM: Room;
}

/// Runs a room's actor with `room` as [`current_room`].
pub(crate) fn in_room<F: Future>(room: Room, actor: F) -> impl Future<Output = F::Output> {
    CURRENT_ROOM.scope(room, actor)
}

/// The room an object-style handler runs for; an error if `handler` was called outside a
/// room's task (for instance by calling the `Party` method directly in a test).
pub fn current_room(handler: &str) -> Result<Room, Error> {
    CURRENT_ROOM.try_with(Room::clone).map_err(|_| {
        Error::msg(format!(
            "the object-style handler `{handler}` ran outside a room: it gets its room from \
             the room's task, so call it through a `Server`"
        ))
    })
}

/// Whether two party names are equal, in a `const` (`str`'s `==` is not `const`): the
/// check `#[party]` on a struct makes that its name is the one the `Party` impl serves.
pub const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
