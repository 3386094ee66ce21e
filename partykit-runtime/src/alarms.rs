//! The server's alarm clock: one timer for every room's alarm.
//!
//! Rooms set alarms through their storage; once the write is durable the clock learns
//! the new time. When an alarm is due, the clock sends the room an `Alarm` event (which
//! starts the room if it is not live). Alarms stored before a restart are loaded at
//! startup, so those that came due meanwhile fire at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::room::{Event, Rooms};
use crate::storage::RoomKey;

/// Hands alarm times to the clock's task.
#[derive(Clone)]
pub(crate) struct AlarmClock {
    commands: mpsc::UnboundedSender<(RoomKey, Option<i64>)>,
}

pub(crate) struct ClockTask {
    commands: mpsc::UnboundedReceiver<(RoomKey, Option<i64>)>,
}

impl AlarmClock {
    pub(crate) fn new() -> (Self, ClockTask) {
        let (commands, receiver) = mpsc::unbounded_channel();
        (Self { commands }, ClockTask { commands: receiver })
    }

    /// The room's alarm is now `time` (ms since the Unix epoch), or none.
    pub(crate) fn set(&self, room: RoomKey, time: Option<i64>) {
        // The task ends only with the server; then no alarm needs to fire.
        let _ = self.commands.send((room, time));
    }
}

impl ClockTask {
    /// Runs the clock: fires due alarms into the parties' rooms.
    pub(crate) async fn run(mut self, parties: HashMap<&'static str, Arc<Rooms>>) {
        let mut by_time: BTreeSet<(i64, RoomKey)> = BTreeSet::new();
        let mut by_room: HashMap<RoomKey, i64> = HashMap::new();
        loop {
            let next = by_time.first().map(|(time, _)| *time);
            let wake = next.map(instant_of);
            tokio::select! {
                command = self.commands.recv() => {
                    let Some((room, time)) = command else { return };
                    if let Some(old) = by_room.remove(&room) {
                        by_time.remove(&(old, room.clone()));
                    }
                    if let Some(time) = time {
                        by_room.insert(room.clone(), time);
                        by_time.insert((time, room));
                    }
                }
                () = sleep_until(wake) => {
                    let now = now_millis();
                    while let Some((time, room)) = by_time.first().cloned() {
                        if time > now {
                            break;
                        }
                        by_time.pop_first();
                        by_room.remove(&room);
                        fire(&parties, room, time);
                    }
                }
            }
        }
    }
}

fn fire(parties: &HashMap<&'static str, Arc<Rooms>>, room: RoomKey, time: i64) {
    let Some(rooms) = parties.get(&*room.party) else {
        tracing::warn!(room = %room, "an alarm is stored for a party this server does not serve; ignoring it");
        return;
    };
    let rooms = Arc::clone(rooms);
    tokio::spawn(async move {
        rooms.send(&room.room, Event::Alarm { time }).await;
    });
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(wake) => tokio::time::sleep_until(wake).await,
        None => std::future::pending().await,
    }
}

pub(crate) fn now_millis() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

fn instant_of(millis: i64) -> Instant {
    let wait = millis.saturating_sub(now_millis()).max(0);
    Instant::now() + Duration::from_millis(wait.unsigned_abs())
}
