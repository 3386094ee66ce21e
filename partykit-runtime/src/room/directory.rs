//! The live rooms of one party: finds a room's mailbox, starting the room if needed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use super::{Event, Room};
use crate::server::PartyType;
use crate::{Env, Limits};

pub(crate) struct Rooms {
    party: Arc<dyn PartyType>,
    env: Env,
    limits: Arc<Limits>,
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
    pub(crate) fn new(party: Arc<dyn PartyType>, env: Env, limits: Arc<Limits>) -> Self {
        Self {
            party,
            env,
            limits,
            live: Mutex::new(Live::default()),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Delivers `event` to the room, starting it if it is not live. An event that races
    /// with the room's eviction is delivered to its successor.
    pub(crate) async fn send(self: &Arc<Self>, room_id: &str, mut event: Event) {
        loop {
            let (generation, mailbox) = self.mailbox(room_id);
            match mailbox.send(event).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(returned)) => {
                    event = returned;
                    self.evict(room_id, generation);
                }
            }
        }
    }

    fn mailbox(self: &Arc<Self>, room_id: &str) -> (u64, mpsc::Sender<Event>) {
        let mut live = self.lock();
        if let Some((generation, mailbox)) = live.rooms.get(room_id) {
            return (*generation, mailbox.clone());
        }
        let generation = live.next_generation;
        live.next_generation += 1;
        let (sender, mailbox) = mpsc::channel(self.limits.room_mailbox);
        live.rooms
            .insert(room_id.to_owned(), (generation, sender.clone()));
        let room = Room::new(room_id.to_owned(), self.party.name(), self.env.clone());
        self.party.spawn_room(Seed {
            room,
            mailbox,
            rooms: Arc::clone(self),
            generation,
        });
        (generation, sender)
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
