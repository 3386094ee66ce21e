//! The server's alarm clock: one timer for every room's alarm.
//!
//! LiveRooms set alarms through their storage; once the write is durable the clock learns
//! the new time. When an alarm is due, the clock sends the room an `Alarm` event (which
//! starts the room if it is not live). Alarms stored before a restart are loaded at
//! startup, so those that came due meanwhile fire at once.

use std::collections::{BTreeSet, HashMap};
use std::mem;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::room::{Event, LiveRooms, Refused};
use crate::storage::{Backend, RoomKey};

/// How many due alarms may be on their way into rooms at once; the rest wait their turn,
/// so a restart with many overdue alarms does not start every room at once.
const MAX_DELIVERIES: usize = 64;
/// How long an alarm whose room refused it (too many live rooms) waits before the next
/// try.
const REFUSED_RETRY: Duration = Duration::from_secs(1);

/// Hands alarm times to the clock's task.
///
/// Updates are coalesced per room (the latest wins), so what waits for the clock is
/// bounded by the number of rooms with alarms, not by how often they change.
#[derive(Clone)]
pub(crate) struct AlarmClock {
    updates: Arc<Updates>,
}

#[derive(Default)]
struct Updates {
    pending: Mutex<HashMap<RoomKey, Option<i64>>>,
    changed: Notify,
}

pub(crate) struct ClockTask {
    updates: Arc<Updates>,
}

impl AlarmClock {
    pub(crate) fn new() -> (Self, ClockTask) {
        let updates = Arc::new(Updates::default());
        (
            Self {
                updates: Arc::clone(&updates),
            },
            ClockTask { updates },
        )
    }

    /// The room's alarm is now `time` (ms since the Unix epoch), or none.
    pub(crate) fn set(&self, room: RoomKey, time: Option<i64>) {
        self.updates
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(room, time);
        self.updates.changed.notify_one();
    }
}

/// The alarms the clock waits for: when each fires, and the stored time it fires for
/// (the same, unless a refused delivery is being retried).
#[derive(Default)]
struct Schedule {
    by_time: BTreeSet<(i64, RoomKey)>,
    by_room: HashMap<RoomKey, (i64, i64)>,
}

impl Schedule {
    fn set(&mut self, room: RoomKey, alarm: Option<i64>, fire_at: Option<i64>) {
        if let Some((old, _)) = self.by_room.remove(&room) {
            self.by_time.remove(&(old, room.clone()));
        }
        if let (Some(alarm), Some(fire_at)) = (alarm, fire_at) {
            self.by_room.insert(room.clone(), (fire_at, alarm));
            self.by_time.insert((fire_at, room));
        }
    }

    fn next(&self) -> Option<i64> {
        self.by_time.first().map(|(fire_at, _)| *fire_at)
    }

    /// The first alarm due by `now`, taken off the schedule.
    fn take_due(&mut self, now: i64) -> Option<(RoomKey, i64)> {
        let (fire_at, _) = self.by_time.first()?;
        if *fire_at > now {
            return None;
        }
        let (_, room) = self.by_time.pop_first()?;
        let (_, alarm) = self.by_room.remove(&room)?;
        Some((room, alarm))
    }
}

impl ClockTask {
    /// Runs the clock until `stopping`: loads the alarms stored before a restart from
    /// `stored` (those due meanwhile fire at once), then fires due alarms into the
    /// parties' rooms.
    pub(crate) async fn run(
        self,
        parties: HashMap<&'static str, Arc<LiveRooms>>,
        stored: Option<Arc<dyn Backend>>,
        stopping: CancellationToken,
    ) {
        let mut schedule = Schedule::default();
        if let Some(backend) = stored {
            match stopping.run_until_cancelled(backend.alarms()).await {
                None => return,
                Some(Ok(stored)) => {
                    for (room, time) in stored {
                        schedule.set(room, Some(time), Some(time));
                    }
                }
                Some(Err(error)) => tracing::error!(%error, "cannot load stored alarms"),
            }
        }
        let mut deliveries = FuturesUnordered::new();
        loop {
            let wake = schedule
                .next()
                .filter(|_| deliveries.len() < MAX_DELIVERIES)
                .map(instant_of);
            tokio::select! {
                () = stopping.cancelled() => return,
                () = self.updates.changed.notified() => {
                    let updates = mem::take(
                        &mut *self.updates.pending.lock().unwrap_or_else(PoisonError::into_inner),
                    );
                    for (room, time) in updates {
                        schedule.set(room, time, time);
                    }
                }
                Some((room, alarm, outcome)) = deliveries.next() => {
                    if let Err(refused) = outcome
                        && !matches!(refused, Refused::ShuttingDown | Refused::NotOwner)
                        && !schedule.by_room.contains_key(&room)
                    {
                        // The room could not start now; unless its alarm changed
                        // meanwhile, try again soon.
                        let wait = i64::try_from(REFUSED_RETRY.as_millis()).unwrap_or(i64::MAX);
                        schedule.set(room, Some(alarm), Some(now_millis().saturating_add(wait)));
                    }
                }
                () = sleep_until(wake) => {
                    let now = now_millis();
                    while deliveries.len() < MAX_DELIVERIES
                        && let Some((room, alarm)) = schedule.take_due(now)
                    {
                        let Some(rooms) = parties.get(&*room.party) else {
                            tracing::warn!(room = %room, "an alarm is stored for a party this server does not serve; ignoring it");
                            continue;
                        };
                        let rooms = Arc::clone(rooms);
                        deliveries.push(async move {
                            let outcome = rooms.send(&room.room, Event::Alarm { time: alarm }).await;
                            (room, alarm, outcome)
                        });
                    }
                }
            }
        }
    }
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
