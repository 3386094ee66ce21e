//! The live rooms of one party: finds a room's mailbox, starting the room if needed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::response::IntoResponse;
use http::StatusCode;
use tokio::sync::mpsc;

use super::{Event, Room};
use crate::alarms::AlarmClock;
use crate::parties::{Context, Parties};
use crate::server::PartyType;
use crate::storage::{Backend, Mutation, RoomKey, Storage};
use crate::{Env, Error, Limits};

/// What every room of every party shares.
pub(crate) struct Services {
    pub(crate) env: Env,
    pub(crate) limits: Limits,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) alarms: AlarmClock,
    pub(crate) parties: Arc<crate::parties::Directory>,
    /// The live rooms of every party, against [`Limits::max_rooms`].
    pub(crate) room_slots: Arc<RoomSlots>,
}

/// Counts the live rooms of every party against [`Limits::max_rooms`]: each live room
/// holds a [`Slot`], given back when the room leaves its directory.
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

/// Why a room could not be started.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refused {
    /// [`Limits::max_rooms`] rooms are live.
    TooManyRooms { limit: usize },
    /// The id is longer than [`Limits::max_room_id_length`].
    IdTooLong { length: usize, limit: usize },
}

impl Refused {
    /// The id's length against the limit, checked before any room or hook work.
    pub(crate) fn check_id(room_id: &str, limits: &Limits) -> Result<(), Self> {
        let (length, limit) = (room_id.len(), limits.max_room_id_length);
        if length > limit {
            return Err(Self::IdTooLong { length, limit });
        }
        Ok(())
    }

    /// 503 (a client may try again once rooms have been evicted) or 414.
    pub(crate) fn error(self) -> Error {
        match self {
            Self::TooManyRooms { limit } => Error::with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Too many rooms are live (the limit is {limit}); try again later"),
            ),
            Self::IdTooLong { length, limit } => Error::with_status(
                StatusCode::URI_TOO_LONG,
                format!("The room id is {length} bytes long; the limit is {limit}"),
            ),
        }
    }

    /// Answers whoever waits on `event` with the refusal.
    fn answer(self, event: Event, party: &str, room_id: &str) {
        match event {
            Event::Prepare { reply } | Event::Connect { reply, .. } => {
                let _ = reply.send(Err(self.error()));
            }
            Event::Request { reply, .. } => {
                let _ = reply.send(self.error().into_response());
            }
            // Never refused (see `Rooms::send`); an id too long has no room to reach.
            Event::Message { .. } | Event::Closed { .. } | Event::Alarm { .. } => {
                tracing::warn!(party, room = room_id, refused = ?self, "event dropped");
            }
        }
    }
}

pub(crate) struct Rooms {
    party: Arc<dyn PartyType>,
    services: Arc<Services>,
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
    /// Given back when the entry leaves the map: the room was evicted, or its actor was
    /// found gone.
    _slot: Slot,
}

/// What a room's actor is started with.
pub(crate) struct Seed {
    pub(crate) room: Room,
    pub(crate) mailbox: mpsc::Receiver<Event>,
    pub(crate) rooms: Arc<Rooms>,
    pub(crate) generation: u64,
}

impl Rooms {
    pub(crate) fn new(party: Arc<dyn PartyType>, services: Arc<Services>) -> Self {
        Self {
            party,
            services,
            live: Mutex::new(Live::default()),
        }
    }

    pub(crate) fn handlers(&self) -> crate::Handlers {
        self.party.handlers()
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.services.limits
    }

    /// Delivers `event` to the room, starting it if it is not live. An event that races
    /// with the room's eviction is delivered to its successor.
    ///
    /// A room that is not live is not started when [`Limits::max_rooms`] rooms are, or
    /// when its id is longer than [`Limits::max_room_id_length`]: a request, a `Prepare`
    /// or a `Connect` is then answered with the refusal ([`Refused::error`]: 503 or 414).
    /// The room's own work (an alarm, or events of connections it accepted) is never
    /// refused: such a room is counted but may exceed the limit.
    ///
    /// The future holds `event` once: waiting for room in the mailbox (`reserve`) does
    /// not hold it, which keeps every socket task's future small (464 bytes, not 1,312).
    #[allow(clippy::manual_async_fn)] // An `async fn` would hold `event` twice.
    pub(crate) fn send<'a>(
        self: &'a Arc<Self>,
        room_id: &'a str,
        event: Event,
    ) -> impl Future<Output = ()> + Send + 'a {
        async move {
            let forced = matches!(
                event,
                Event::Alarm { .. } | Event::Message { .. } | Event::Closed { .. }
            );
            loop {
                let (generation, mailbox) = match self.mailbox(room_id, forced) {
                    Ok(found) => found,
                    Err(refused) => return refused.answer(event, self.party.name(), room_id),
                };
                match mailbox.reserve().await {
                    Ok(permit) => return permit.send(event),
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

    fn mailbox(
        self: &Arc<Self>,
        room_id: &str,
        forced: bool,
    ) -> Result<(u64, mpsc::Sender<Event>), Refused> {
        let mut live = self.lock();
        if let Some(entry) = live.rooms.get(room_id) {
            return Ok((entry.generation, entry.mailbox.clone()));
        }
        let limits = &self.services.limits;
        if !forced {
            Refused::check_id(room_id, limits)?;
        }
        let slot = self
            .services
            .room_slots
            .take(forced)
            .ok_or(Refused::TooManyRooms {
                limit: limits.max_rooms,
            })?;
        let generation = live.next_generation;
        live.next_generation += 1;
        let (sender, mailbox) = mpsc::channel(limits.room_mailbox);
        live.rooms.insert(
            room_id.to_owned(),
            Entry {
                generation,
                mailbox: sender.clone(),
                _slot: slot,
            },
        );
        let key = RoomKey::new(self.party.name(), room_id);
        let parties = Parties::new(Arc::clone(&self.services.parties), Some(key));
        let room = Room::new(
            room_id.to_owned(),
            self.party.name(),
            self.services.env.clone(),
            self.storage(room_id),
            Context::new(parties),
        );
        self.party.spawn_room(Seed {
            room,
            mailbox,
            rooms: Arc::clone(self),
            generation,
        });
        Ok((generation, sender))
    }

    fn storage(&self, room_id: &str) -> Storage {
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
            live.rooms.remove(room_id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
