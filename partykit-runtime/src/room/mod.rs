//! LiveRooms: the public [`Room`] handle, the connection registry, and the actor that owns a
//! room's value and runs its events one at a time.

mod actor;
mod event;
mod live;
mod registry;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

pub(crate) use actor::RoomActor;
pub(crate) use event::{Admin, Event};
pub(crate) use live::{LiveRooms, Location, Refused, RoomSlots, Seed, Services};
use registry::Registry;

use crate::clock::Clock;
use crate::connection::Outbound;
use crate::metrics::PartyMetrics;
use crate::parties::Context;
use crate::storage::Storage;
use crate::{Connection, Env, Message};

/// A room: one instance of a party, addressed by `/parties/<party>/<id>`.
///
/// `new` receives it; keep it in your struct to broadcast and to look up connections.
/// Cheap to clone.
///
/// ```
/// use partykit_runtime::{party, Connection, Message, Room};
///
/// #[party]
/// struct Relay {
///     room: Room,
/// }
///
/// #[party]
/// impl Relay {
///     fn new(room: Room) -> Self {
///         Relay { room }
///     }
///
///     fn on_message(&mut self, message: Message, sender: &Connection) {
///         // Everyone but the sender; the frame is encoded once for all of them.
///         self.room.broadcast(message, &[sender.id()]);
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Room {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    party: &'static str,
    env: Env,
    storage: Storage,
    context: Context,
    clock: Clock,
    registry: Mutex<Registry>,
    metrics: Arc<PartyMetrics>,
    /// The user's value is dropped while the sockets stay open.
    hibernating: AtomicBool,
}

/// A room's handle that does not keep it alive (the directory's).
pub(crate) struct WeakRoom(Weak<Inner>);

impl WeakRoom {
    pub(crate) fn upgrade(&self) -> Option<Room> {
        self.0.upgrade().map(|inner| Room { inner })
    }
}

impl Room {
    pub(crate) fn new(
        id: String,
        party: &'static str,
        env: Env,
        storage: Storage,
        context: Context,
        clock: Clock,
        metrics: Arc<PartyMetrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                party,
                env,
                storage,
                context,
                clock,
                registry: Mutex::new(Registry::default()),
                metrics,
                hibernating: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) fn downgrade(&self) -> WeakRoom {
        WeakRoom(Arc::downgrade(&self.inner))
    }

    /// What the room counts with.
    pub(crate) fn metrics(&self) -> &PartyMetrics {
        &self.inner.metrics
    }

    /// Whether the room hibernates: its value is dropped, its sockets open.
    pub(crate) fn is_hibernating(&self) -> bool {
        self.inner.hibernating.load(Ordering::Acquire)
    }

    /// The room went into hibernation, or came out of it (or stopped).
    pub(crate) fn set_hibernating(&self, hibernating: bool) {
        if self.inner.hibernating.swap(hibernating, Ordering::AcqRel) != hibernating {
            if hibernating {
                self.inner.metrics.hibernating.inc();
            } else {
                self.inner.metrics.hibernating.dec();
            }
        }
    }

    /// The room id: the raw (still percent-encoded) path segment, e.g. `a%20b`.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The party's name (`main` unless set with `#[party(name = "…")]`).
    pub fn name(&self) -> &str {
        self.inner.party
    }

    /// The project's variables.
    pub fn env(&self) -> &Env {
        &self.inner.env
    }

    /// What the room can reach beyond itself: the server's other parties and rooms.
    pub fn context(&self) -> &Context {
        &self.inner.context
    }

    /// The server's time: the time to set alarms from, as `Date.now()` is in PartyKit.
    ///
    /// It is the wall clock, except in a `testing::TestServer` (the test kit, cargo
    /// feature `testing`), whose clock runs ahead of the wall clock by what the test
    /// advanced it; an alarm set from
    /// `room.now()` fires there when the test advances past it, and an `on_alarm` that
    /// sets its next alarm from `room.now()` fires again within one advance as often as
    /// it would in that much real time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use partykit_runtime::{party, Error, Room};
    ///
    /// #[party]
    /// struct Ticker {
    ///     room: Room,
    /// }
    ///
    /// #[party]
    /// impl Ticker {
    ///     fn new(room: Room) -> Self {
    ///         Ticker { room }
    ///     }
    ///
    ///     async fn on_alarm(&mut self) -> Result<(), Error> {
    ///         let next = self.room.now() + Duration::from_secs(60);
    ///         self.room.storage().set_alarm(next).await
    ///     }
    /// }
    /// # fn main() {}
    /// ```
    pub fn now(&self) -> std::time::SystemTime {
        self.inner.clock.now()
    }

    /// The server's clock, for the runtime's own alarm times.
    pub(crate) fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The room's durable key-value storage; see [`storage`](crate::storage).
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// Sends `message` to every connection of the room except those whose id is in
    /// `without`. The frame is built once and shared by all recipients.
    ///
    /// A recipient that is closing is skipped; one whose queue is over its limit is
    /// closed with 1008 and skipped.
    pub fn broadcast(&self, message: impl Into<Message>, without: &[&str]) {
        let frame = message.into().into_frame();
        let registry = self.registry();
        let recipients = registry
            .iter()
            .filter(|connection| !connection.is_closing() && !without.contains(&connection.id()));
        self.inner
            .storage
            .gate()
            .send_each(recipients, || Outbound::Frame(frame.clone()));
    }

    /// Sends `value` as JSON text to every connection of the room except those whose id is
    /// in `without`, as [`broadcast`](Room::broadcast): serialized once, for all. An error
    /// only if it does not serialize (a map with non-string keys); then nothing is sent.
    ///
    /// ```no_run
    /// # fn vote(room: &partykit_runtime::Room, sender: &str) -> partykit_runtime::Result<()> {
    /// room.broadcast_json(&serde_json::json!({ "voted": sender }), &[sender])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn broadcast_json<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
        without: &[&str],
    ) -> Result<(), crate::Error> {
        self.broadcast(serde_json::to_string(value)?, without);
        Ok(())
    }

    /// The connection with this id, if it is connected to this room.
    pub fn get_connection(&self, id: &str) -> Option<Connection> {
        self.registry().get(id).cloned()
    }

    /// The room's connections in connection order; with a tag, only those carrying it.
    pub fn get_connections(&self, tag: Option<&str>) -> Vec<Connection> {
        let registry = self.registry();
        match tag {
            None => registry.iter().cloned().collect(),
            Some(tag) => registry
                .iter()
                .filter(|connection| connection.has_tag(tag))
                .cloned()
                .collect(),
        }
    }

    /// How many connections the room has.
    pub fn connection_count(&self) -> usize {
        self.registry().len()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // The registry's operations cannot leave it half-updated, so a poisoned lock
        // still guards a consistent map.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Room")
            .field("party", &self.inner.party)
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}
