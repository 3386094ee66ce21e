//! What a room's mailbox carries.

use tokio::sync::oneshot;

use crate::{Connection, ConnectionContext, Error, Message, Request, Response};

pub(crate) enum Event {
    /// Build and start the room if needed, so a failure can answer the upgrade with HTTP.
    Prepare {
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// A socket was accepted: tag it, register it, run `on_connect`.
    Connect {
        connection: Connection,
        ctx: ConnectionContext,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Message {
        connection: Connection,
        message: Message,
    },
    /// The socket ended; `error` is set when it failed rather than closed.
    Closed {
        connection: Connection,
        error: Option<Error>,
    },
    Request {
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    /// The room's alarm set for `time` (ms since the Unix epoch) is due. `done`, if
    /// set, gets the room's storage once the handler has run and its writes were handed
    /// to the committer (a test's advance waits for them to be durable); it is dropped
    /// when the alarm was stale.
    Alarm {
        time: i64,
        done: Option<oneshot::Sender<crate::Storage>>,
    },
    /// An operator's action, from the inspection API.
    Admin(Admin),
}

/// What an operator can do to a room through the inspection API.
pub(crate) enum Admin {
    /// Close every socket with 1012 (so clients reconnect) and leave memory once their
    /// `on_close` ran and the room's writes are durable; `reply` gets how many sockets
    /// were closed.
    Evict { reply: oneshot::Sender<usize> },
    /// Delete the room's alarm, durably; `reply` gets whether one was set.
    DeleteAlarm {
        reply: oneshot::Sender<Result<bool, Error>>,
    },
}
