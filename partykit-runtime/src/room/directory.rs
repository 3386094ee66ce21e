//! The live rooms of one party: finds a room's mailbox, starting the room if needed.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use http::StatusCode;
use tokio::sync::mpsc;

use super::{Event, Room};
use crate::alarms::AlarmClock;
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
    /// Weak: the directory holds every party's rooms, which hold this.
    pub(crate) parties: Weak<crate::parties::Directory>,
    pub(crate) tasks: Tasks,
}

/// Why a room could not take an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The server is shutting down and starts no more rooms.
    ShuttingDown,
}

impl Refused {
    /// The error a caller answers with.
    pub(crate) fn into_error(self) -> Error {
        Error::with_status(StatusCode::SERVICE_UNAVAILABLE, self)
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShuttingDown => f.write_str("The server is shutting down"),
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
    rooms: HashMap<String, (u64, mpsc::Sender<Event>)>,
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

    pub(crate) fn tasks(&self) -> &Tasks {
        &self.services.tasks
    }

    /// Delivers `event` to the room, starting it if it is not live. An event that races
    /// with the room's eviction is delivered to its successor. Waits while the room's
    /// mailbox is full.
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
            loop {
                let (generation, mailbox) = self.mailbox(room_id)?;
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
        let (_, mailbox) = self.mailbox(room_id)?;
        match mailbox.try_send(event) {
            Ok(()) => Ok(None),
            // Closed: the room is being evicted; `send` finds its successor.
            Err(
                mpsc::error::TrySendError::Full(event) | mpsc::error::TrySendError::Closed(event),
            ) => Ok(Some(event)),
        }
    }

    fn mailbox(self: &Arc<Self>, room_id: &str) -> Result<(u64, mpsc::Sender<Event>), Refused> {
        let mut live = self.lock();
        if let Some((generation, mailbox)) = live.rooms.get(room_id) {
            return Ok((*generation, mailbox.clone()));
        }
        let draining = self.services.tasks.draining().is_cancelled();
        let Some(directory) = self.services.parties.upgrade().filter(|_| !draining) else {
            return Err(Refused::ShuttingDown);
        };
        let generation = live.next_generation;
        live.next_generation += 1;
        let (sender, mailbox) = mpsc::channel(self.services.limits.room_mailbox);
        live.rooms
            .insert(room_id.to_owned(), (generation, sender.clone()));
        let key = RoomKey::new(self.party.name(), room_id);
        let parties = Parties::new(directory, Some(key));
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
            self.services.tasks.clone(),
        )
    }

    /// Forgets the room if `generation` is still the live one.
    pub(crate) fn evict(&self, room_id: &str, generation: u64) {
        let mut live = self.lock();
        if live
            .rooms
            .get(room_id)
            .is_some_and(|(current, _)| *current == generation)
        {
            live.rooms.remove(room_id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
