//! The live rooms of one party: finds a room's mailbox, starting the room if needed.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use http::StatusCode;
use tokio::sync::mpsc;

use super::{Event, Room, WeakRoom};
use crate::alarms::AlarmClock;
use crate::cluster::{Cluster, Owner, Peer, Tenure};
use crate::metrics::{Metrics, PartyMetrics, Refusal};
use crate::parties::{Context, Parties};
use crate::server::PartyType;
use crate::storage::{Backend, Mutation, RoomKey, Storage};
use crate::tasks::Tasks;
use crate::{Env, Error, Limits};

/// What every room of every party shares.
pub(crate) struct Services {
    pub(crate) env: Env,
    pub(crate) limits: Limits,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) alarms: AlarmClock,
    /// What "now" is for alarms.
    pub(crate) clock: crate::clock::Clock,
    /// Weak: the directory holds every party's rooms, which hold this.
    pub(crate) parties: Weak<crate::parties::Directory>,
    pub(crate) tasks: Tasks,
    /// The live rooms of every party, against [`Limits::max_rooms`].
    pub(crate) room_slots: Arc<RoomSlots>,
    /// In cluster mode, this node's leases: a room starts here only while this node
    /// holds its lease.
    pub(crate) cluster: Option<Arc<Cluster>>,
    pub(crate) metrics: Arc<Metrics>,
}

/// Where a room's events go.
#[derive(Debug)]
pub(crate) enum Location {
    /// This node serves the room.
    Here,
    /// Another node of the cluster owns the room: forward to it.
    Node(Peer),
}

/// Counts the live rooms of every party against [`Limits::max_rooms`]: each live room
/// holds a [`Slot`], given back when the room leaves its party's live rooms.
pub(crate) struct RoomSlots {
    live: AtomicUsize,
    max: usize,
}

/// One live room's place in [`RoomSlots`].
struct Slot(Arc<RoomSlots>);

impl RoomSlots {
    pub(crate) fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            live: AtomicUsize::new(0),
            max: limits.max_rooms,
        })
    }

    /// A slot if fewer than the limit are taken, or regardless when `forced`.
    fn take(self: &Arc<Self>, forced: bool) -> Option<Slot> {
        if forced {
            self.live.fetch_add(1, Ordering::AcqRel);
        } else {
            self.live
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                    (live < self.max).then_some(live + 1)
                })
                .ok()?;
        }
        Some(Slot(Arc::clone(self)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a room could not take an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// [`Limits::max_rooms`] rooms are live.
    TooManyRooms { limit: usize },
    /// The id is longer than [`Limits::max_room_id_length`].
    IdTooLong { length: usize, limit: usize },
    /// The server is shutting down and starts no more rooms.
    ShuttingDown,
    /// In cluster mode, another node owns the room (for events that cannot be forwarded:
    /// those of connections of a room this node lost).
    NotOwner,
    /// In cluster mode, the cluster database cannot be reached, so no room can start.
    Unavailable,
}

impl Refused {
    /// The limit that refused, as the metrics count it.
    pub(crate) fn as_refusal(self) -> Refusal {
        match self {
            Self::TooManyRooms { .. } => Refusal::RoomCap,
            Self::IdTooLong { .. } => Refusal::RoomIdTooLong,
            Self::ShuttingDown => Refusal::ShuttingDown,
            Self::NotOwner | Self::Unavailable => Refusal::Unavailable,
        }
    }

    /// The id's length against the limit, checked before any room or hook work.
    pub(crate) fn check_id(room_id: &str, limits: &Limits) -> Result<(), Self> {
        let (length, limit) = (room_id.len(), limits.max_room_id_length);
        if length > limit {
            return Err(Self::IdTooLong { length, limit });
        }
        Ok(())
    }

    /// The error a caller answers with: 503 (a client may try again later) or 414.
    pub(crate) fn into_error(self) -> Error {
        let status = match self {
            Self::IdTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::TooManyRooms { .. } | Self::ShuttingDown | Self::NotOwner | Self::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        Error::with_status(status, self)
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyRooms { limit } => write!(
                f,
                "Too many rooms are live (the limit is {limit}); try again later"
            ),
            Self::IdTooLong { length, limit } => write!(
                f,
                "The room id is {length} bytes long; the limit is {limit}"
            ),
            Self::ShuttingDown => f.write_str("The server is shutting down"),
            Self::NotOwner => f.write_str("The room is served by another node; try again"),
            Self::Unavailable => f.write_str(
                "The cluster database is unavailable, so the room cannot start; try again later",
            ),
        }
    }
}

pub(crate) struct LiveRooms {
    party: Arc<dyn PartyType>,
    services: Arc<Services>,
    metrics: Arc<PartyMetrics>,
    live: Mutex<Live>,
}

#[derive(Default)]
struct Live {
    next_generation: u64,
    rooms: HashMap<String, Entry>,
}

struct Entry {
    generation: u64,
    mailbox: mpsc::Sender<Event>,
    /// The room's handle, for the inspection API: its connections and storage. Weak:
    /// the room's context holds the directory, which holds this.
    room: WeakRoom,
    /// The epoch of the lease the room was started under, in cluster mode.
    lease: Option<u64>,
    /// Given back when the entry leaves the map: the room was evicted, or its actor was
    /// found gone.
    _slot: Slot,
    _counted: Counted,
}

/// Counts one in a gauge while it lives: the party's live rooms.
struct Counted(prometheus_client::metrics::gauge::Gauge);

impl Counted {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a room's actor is started with.
pub(crate) struct Seed {
    pub(crate) room: Room,
    pub(crate) mailbox: mpsc::Receiver<Event>,
    pub(crate) rooms: Arc<LiveRooms>,
    pub(crate) generation: u64,
}

impl LiveRooms {
    pub(crate) fn new(party: Arc<dyn PartyType>, services: Arc<Services>) -> Self {
        Self {
            metrics: services.metrics.party(party.name()),
            party,
            services,
            live: Mutex::new(Live::default()),
        }
    }

    /// The party's name.
    pub(crate) fn name(&self) -> &'static str {
        self.party.name()
    }

    /// What this party's rooms and sockets count with.
    pub(crate) fn metrics(&self) -> &Arc<PartyMetrics> {
        &self.metrics
    }

    /// The server's metrics.
    pub(crate) fn server_metrics(&self) -> &Metrics {
        &self.services.metrics
    }

    /// The live rooms' handles, in no order.
    pub(crate) fn rooms(&self) -> Vec<Room> {
        self.lock()
            .rooms
            .values()
            .filter_map(|entry| entry.room.upgrade())
            .collect()
    }

    /// The live room `room_id`'s handle.
    pub(crate) fn room(&self, room_id: &str) -> Option<Room> {
        self.lock().rooms.get(room_id)?.room.upgrade()
    }

    /// The storage backend, for a room that is not live.
    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.services.backend
    }

    pub(crate) fn handlers(&self) -> crate::Handlers {
        self.party.handlers()
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.services.limits
    }

    pub(crate) fn tasks(&self) -> &Tasks {
        &self.services.tasks
    }

    /// Delivers `event` to the room, starting it if it is not live. An event that races
    /// with the room's eviction is delivered to its successor. Waits while the room's
    /// mailbox is full.
    ///
    /// A room that is not live is not started when [`Limits::max_rooms`] rooms are, when
    /// its id is longer than [`Limits::max_room_id_length`], or when the server is
    /// shutting down: the event is refused. Events of connections a room accepted are
    /// never refused for the limit (their room is live, or is being succeeded after an
    /// eviction): such a room is counted but may exceed it.
    ///
    /// The future holds `event` once: waiting for room in the mailbox (`reserve`) does
    /// not hold it, which keeps every socket task's future small (464 bytes, not 1,312).
    #[allow(clippy::manual_async_fn)] // An `async fn` would hold `event` twice.
    pub(crate) fn send<'a>(
        self: &'a Arc<Self>,
        room_id: &'a str,
        event: Event,
    ) -> impl Future<Output = Result<(), Refused>> + Send + 'a {
        async move {
            let forced = of_a_live_connection(&event);
            let mut located = false;
            loop {
                let (generation, mailbox) = match self.mailbox(room_id, forced) {
                    // Not held here (cluster mode): take the room if nobody serves it.
                    // A connection of a room this node lost never brings it back: its
                    // room is elsewhere now.
                    Err(Refused::NotOwner) if !forced && !located => {
                        located = true;
                        match self.locate(room_id).await? {
                            Location::Here => continue,
                            Location::Node(_) => return Err(Refused::NotOwner),
                        }
                    }
                    result => result?,
                };
                match mailbox.reserve().await {
                    Ok(permit) => {
                        permit.send(event);
                        return Ok(());
                    }
                    Err(mpsc::error::SendError(())) => {
                        self.evict(room_id, generation);
                        // A room task that cannot run (the runtime is shutting down) must
                        // not make this loop spin: let the runtime run, or drop this task.
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    }

    /// Delivers `event` if the room's mailbox has room now; otherwise gives it back, for
    /// [`send`](Self::send) to wait with.
    pub(crate) fn try_send(
        self: &Arc<Self>,
        room_id: &str,
        event: Event,
    ) -> Result<Option<Event>, Refused> {
        let forced = of_a_live_connection(&event);
        let (_, mailbox) = self.mailbox(room_id, forced)?;
        match mailbox.try_send(event) {
            Ok(()) => Ok(None),
            // Closed: the room is being evicted; `send` finds its successor.
            Err(
                mpsc::error::TrySendError::Full(event) | mpsc::error::TrySendError::Closed(event),
            ) => Ok(Some(event)),
        }
    }

    /// Where the room's events go: here if the room is live here, or (cluster mode) if
    /// this node holds its lease or takes it now; else the node that holds it.
    pub(crate) async fn locate(self: &Arc<Self>, room_id: &str) -> Result<Location, Refused> {
        let Some(cluster) = &self.services.cluster else {
            return Ok(Location::Here);
        };
        if self.lock().rooms.contains_key(room_id) {
            return Ok(Location::Here);
        }
        let key = RoomKey::new(self.party.name(), room_id);
        match cluster.acquire(&key).await {
            Ok(Owner::Here) => Ok(Location::Here),
            Ok(Owner::Node(peer)) => Ok(Location::Node(peer)),
            Err(error) => {
                tracing::warn!(room = %key, %error, "cannot locate the room");
                Err(Refused::Unavailable)
            }
        }
    }

    /// This node's place in the cluster, in cluster mode.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.services.cluster.as_ref()
    }

    fn mailbox(
        self: &Arc<Self>,
        room_id: &str,
        forced: bool,
    ) -> Result<(u64, mpsc::Sender<Event>), Refused> {
        self.find_or_start(room_id, forced).inspect_err(|refused| {
            // Not owning the room is no refusal: the caller asks who does.
            if *refused != Refused::NotOwner {
                self.services.metrics.refused(refused.as_refusal());
            }
        })
    }

    fn find_or_start(
        self: &Arc<Self>,
        room_id: &str,
        forced: bool,
    ) -> Result<(u64, mpsc::Sender<Event>), Refused> {
        let mut live = self.lock();
        if let Some(entry) = live.rooms.get(room_id) {
            return Ok((entry.generation, entry.mailbox.clone()));
        }
        let draining = self.services.tasks.draining().is_cancelled();
        let Some(directory) = self.services.parties.upgrade().filter(|_| !draining) else {
            return Err(Refused::ShuttingDown);
        };
        let limits = &self.services.limits;
        if !forced {
            Refused::check_id(room_id, limits)?;
        }
        let key = RoomKey::new(self.party.name(), room_id);
        let slot = self
            .services
            .room_slots
            .take(forced)
            .ok_or(Refused::TooManyRooms {
                limit: limits.max_rooms,
            })?;
        // Claimed last: the room starts now, under the lease.
        let lease = match &self.services.cluster {
            None => None,
            Some(cluster) => Some(cluster.claim(&key).ok_or(Refused::NotOwner)?),
        };
        let generation = live.next_generation;
        live.next_generation += 1;
        let (sender, mailbox) = mpsc::channel(limits.room_mailbox);
        let lease_epoch = lease.as_ref().map(|lease| lease.epoch);
        let parties = Parties::new(directory, Some(key));
        let room = Room::new(
            room_id.to_owned(),
            self.party.name(),
            self.services.env.clone(),
            self.storage(room_id, lease),
            Context::new(parties),
            self.services.clock.clone(),
            Arc::clone(&self.metrics),
        );
        live.rooms.insert(
            room_id.to_owned(),
            Entry {
                generation,
                mailbox: sender.clone(),
                room: room.downgrade(),
                lease: lease_epoch,
                _slot: slot,
                _counted: Counted::new(&self.metrics.rooms),
            },
        );
        self.party.spawn_room(Seed {
            room,
            mailbox,
            rooms: Arc::clone(self),
            generation,
        });
        Ok((generation, sender))
    }

    fn storage(&self, room_id: &str, lease: Option<Tenure>) -> Storage {
        let alarms = self.services.alarms.clone();
        let on_durable = move |room: &RoomKey, mutations: &[Mutation]| {
            let alarm = mutations.iter().rev().find_map(|mutation| match mutation {
                Mutation::SetAlarm(time) => Some(*time),
                _ => None,
            });
            if let Some(time) = alarm {
                alarms.set(room.clone(), time);
            }
        };
        Storage::new(
            RoomKey::new(self.party.name(), room_id),
            Arc::clone(&self.services.backend),
            self.services.limits.max_value_size,
            Arc::new(on_durable),
            self.services.tasks.clone(),
            lease,
            Arc::clone(&self.metrics.storage),
        )
    }

    /// Forgets the room if `generation` is still the live one.
    pub(crate) fn evict(&self, room_id: &str, generation: u64) {
        let mut live = self.lock();
        if live
            .rooms
            .get(room_id)
            .is_some_and(|entry| entry.generation == generation)
        {
            // Dropping the entry gives its slot back.
            let entry = live.rooms.remove(room_id);
            // While the server shuts down, a room leaves before its last commits are
            // durable: its lease is released with every other one once they are (the
            // cluster's `leave`), or another node could take it and fence them.
            let draining = self.services.tasks.draining().is_cancelled();
            if let (Some(cluster), Some(epoch), false) = (
                &self.services.cluster,
                entry.and_then(|entry| entry.lease),
                draining,
            ) {
                // The room stopped here: the next event for it may be served anywhere.
                let cluster = Arc::clone(cluster);
                let key = RoomKey::new(self.party.name(), room_id);
                self.services
                    .tasks
                    .spawn(async move { cluster.release(&key, epoch).await });
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `event` comes from a connection the room already accepted: such events are
/// never refused for the room cap or the id length.
fn of_a_live_connection(event: &Event) -> bool {
    matches!(event, Event::Message { .. } | Event::Closed { .. })
}
