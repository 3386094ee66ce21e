//! The server's alarm clock: one timer for every room's alarm.
//!
//! LiveRooms set alarms through their storage; once the write is durable the clock learns
//! the new time. When an alarm is due, the clock sends the room an `Alarm` event (which
//! starts the room if it is not live). Alarms stored before a restart are loaded at
//! startup, so those that came due meanwhile fire at once.
//!
//! The clock tells time with the server's [`Clock`]: under a test's manual clock, it also
//! serves advance requests, firing the alarms due within them one after the other.

use std::collections::{BTreeSet, HashMap};
use std::mem;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::{Advance, Clock, ManualClock, millis_of};
use crate::room::{Event, LiveRooms, Refused};
use crate::storage::{Backend, RoomKey};

/// How many due alarms may be on their way into rooms at once; the rest wait their turn,
/// so a restart with many overdue alarms does not start every room at once.
const MAX_DELIVERIES: usize = 64;
/// How long an alarm whose room refused it (too many live rooms) waits before the next
/// try.
const REFUSED_RETRY: Duration = Duration::from_secs(1);
/// The most alarms one advance fires: a handler that keeps setting its alarm within
/// the advance (say, from the wall clock rather than [`Room::now`](crate::Room::now))
/// would otherwise keep it going forever.
const MAX_ADVANCE_FIRINGS: usize = 10_000;

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
    clock: Clock,
}

impl AlarmClock {
    pub(crate) fn new(clock: Clock) -> (Self, ClockTask) {
        let updates = Arc::new(Updates::default());
        (
            Self {
                updates: Arc::clone(&updates),
            },
            ClockTask { updates, clock },
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
        let manual = self.clock.manual().cloned();
        let mut advances = manual.as_ref().and_then(|manual| manual.take_receiver());
        loop {
            let wake = schedule
                .next()
                .filter(|_| deliveries.len() < MAX_DELIVERIES)
                .map(|millis| self.instant_of(millis));
            tokio::select! {
                () = stopping.cancelled() => return,
                () = self.updates.changed.notified() => self.apply_updates(&mut schedule),
                Some(advance) = next_advance(&mut advances) => {
                    let Some(manual) = &manual else { continue };
                    let Advance { by, reply } = advance;
                    let advanced = self.advance(&mut schedule, &parties, manual, by);
                    if let Some(outcome) = stopping.run_until_cancelled(advanced).await {
                        let _ = reply.send(outcome);
                    }
                }
                Some((room, alarm, outcome)) = deliveries.next() => {
                    if let Err(refused) = outcome
                        && !matches!(refused, Refused::ShuttingDown | Refused::NotOwner)
                        && !schedule.by_room.contains_key(&room)
                    {
                        // The room could not start now; unless its alarm changed
                        // meanwhile, try again soon.
                        let wait = millis_of(REFUSED_RETRY);
                        schedule.set(room, Some(alarm), Some(self.clock.now_millis().saturating_add(wait)));
                    }
                }
                () = sleep_until(wake) => {
                    let now = self.clock.now_millis();
                    while deliveries.len() < MAX_DELIVERIES
                        && let Some((room, alarm)) = schedule.take_due(now)
                    {
                        let Some(rooms) = parties.get(&*room.party) else {
                            tracing::warn!(room = %room, "an alarm is stored for a party this server does not serve; ignoring it");
                            continue;
                        };
                        let rooms = Arc::clone(rooms);
                        deliveries.push(async move {
                            let outcome = rooms.send(&room.room, Event::Alarm { time: alarm, done: None }).await;
                            (room, alarm, outcome)
                        });
                    }
                }
            }
        }
    }

    fn apply_updates(&self, schedule: &mut Schedule) {
        let updates = mem::take(
            &mut *self
                .updates
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (room, time) in updates {
            schedule.set(room, time, time);
        }
    }

    /// Moves the manual clock on by `by`: fires every alarm due by then in the order of
    /// their times, each once its predecessor's handler has finished and what it wrote
    /// is durable (so an alarm a handler sets within the advance fires in it too), with
    /// the clock standing at the alarm's time while its handler runs. Returns how many
    /// alarms fired.
    async fn advance(
        &self,
        schedule: &mut Schedule,
        parties: &HashMap<&'static str, Arc<LiveRooms>>,
        manual: &ManualClock,
        by: Duration,
    ) -> Result<usize, String> {
        let target = manual.offset().saturating_add(millis_of(by));
        let mut fired = 0;
        loop {
            self.apply_updates(schedule);
            let wall = crate::clock::wall_millis();
            let Some(next) = schedule.next() else { break };
            if next > wall.saturating_add(target) {
                break;
            }
            manual.raise_to(next.saturating_sub(wall));
            let Some((room, alarm)) = schedule.take_due(self.clock.now_millis()) else {
                continue;
            };
            if fired == MAX_ADVANCE_FIRINGS {
                manual.raise_to(target);
                return Err(format!(
                    "advancing fired {MAX_ADVANCE_FIRINGS} alarms and more were due: does on_alarm set its next alarm from the wall clock (SystemTime::now()) instead of room.now()?"
                ));
            }
            fired += 1;
            let Some(rooms) = parties.get(&*room.party) else {
                tracing::warn!(room = %room, "an alarm is stored for a party this server does not serve; ignoring it");
                continue;
            };
            let (done, handled) = oneshot::channel();
            let event = Event::Alarm {
                time: alarm,
                done: Some(done),
            };
            if let Err(refused) = rooms.send(&room.room, event).await {
                manual.raise_to(target);
                return Err(format!("the alarm of room {room} could not run: {refused}"));
            }
            // Dropped without an answer: the alarm was stale, or the room went away.
            if let Ok(storage) = handled.await {
                storage.settled().await;
            }
        }
        manual.raise_to(target);
        Ok(fired)
    }

    fn instant_of(&self, millis: i64) -> Instant {
        let wait = millis.saturating_sub(self.clock.now_millis()).max(0);
        Instant::now() + Duration::from_millis(wait.unsigned_abs())
    }
}

/// The next advance request; never, without a manual clock.
async fn next_advance(advances: &mut Option<mpsc::Receiver<Advance>>) -> Option<Advance> {
    match advances {
        Some(advances) => advances.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(wake) => tokio::time::sleep_until(wake).await,
        None => std::future::pending().await,
    }
}
