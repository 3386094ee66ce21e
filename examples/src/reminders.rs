//! Reminders: schedule a message for later; when it is due, every socket in the room
//! receives it. Shows alarms, including several timers multiplexed onto a room's one
//! alarm, and that they fire after a restart.
//!
//! - `POST /parties/main/<room>?in=<ms>` with the message as body schedules it; answers
//!   the reminder's key.
//! - `GET /parties/main/<room>` lists pending reminders as JSON.
//! - Sockets on `ws://…/parties/main/<room>` receive each reminder when it is due.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use partykit_runtime::storage::ListOptions;
use partykit_runtime::{Error, Json, Method, Request, Room, StatusCode, party};
use serde::{Deserialize, Serialize};

/// Reminders are stored under `reminder:<due ms, zero-padded>:<n>`, so that key order is
/// due order and the first key is always the next one due.
const PREFIX: &str = "reminder:";

/// One pending reminder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reminder {
    /// When it is due, in ms since the Unix epoch.
    pub due: u64,
    /// What to send.
    pub message: String,
}

/// The reminders party (`main`).
#[party]
#[derive(Debug)]
pub struct Reminders {
    room: Room,
}

#[party]
impl Reminders {
    fn new(room: Room) -> Self {
        Reminders { room }
    }

    async fn on_request(&mut self, request: Request) -> Result<Json<serde_json::Value>, Error> {
        match *request.method() {
            Method::GET => {
                let pending: Vec<(String, Reminder)> = self
                    .room
                    .storage()
                    .list(ListOptions::new().prefix(PREFIX))
                    .await?;
                let pending: Vec<Reminder> = pending.into_iter().map(|(_, r)| r).collect();
                Ok(Json(serde_json::json!(pending)))
            }
            Method::POST => {
                let delay: u64 = request
                    .query("in")
                    .and_then(|ms| ms.parse().ok())
                    .ok_or_else(|| {
                        Error::with_status(StatusCode::BAD_REQUEST, "add ?in=<milliseconds>")
                    })?;
                let message = request.text()?.to_owned();
                let key = self.schedule(delay, message).await?;
                Ok(Json(serde_json::json!({ "key": key })))
            }
            _ => Err(Error::with_status(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST to schedule or GET to list",
            )),
        }
    }

    async fn on_alarm(&mut self) -> Result<(), Error> {
        let storage = self.room.storage();
        let now = millis(self.room.now());
        let due: Vec<(String, Reminder)> = storage
            .list(ListOptions::new().prefix(PREFIX).end(key_for(now + 1, 0)))
            .await?;
        for (key, reminder) in due {
            self.room.broadcast(reminder.message, &[]);
            storage.delete(&key).await?;
        }
        self.arm().await
    }
}

impl Reminders {
    async fn schedule(&mut self, delay_ms: u64, message: String) -> Result<String, Error> {
        let storage = self.room.storage();
        let due = millis(self.room.now()) + delay_ms;
        // Tell reminders due at the same millisecond apart.
        let same_time: Vec<(String, Reminder)> = storage
            .list(ListOptions::new().prefix(format!("{PREFIX}{due:020}:")))
            .await?;
        let key = key_for(due, same_time.len());
        storage.put(&key, &Reminder { due, message }).await?;
        self.arm().await?;
        Ok(key)
    }

    /// Points the room's one alarm at the earliest pending reminder.
    async fn arm(&mut self) -> Result<(), Error> {
        let storage = self.room.storage();
        let next: Vec<(String, Reminder)> = storage
            .list(ListOptions::new().prefix(PREFIX).limit(1))
            .await?;
        match next.first() {
            Some((_, reminder)) => {
                storage
                    .set_alarm(UNIX_EPOCH + Duration::from_millis(reminder.due))
                    .await
            }
            None => storage.delete_alarm().await,
        }
    }
}

fn key_for(due: u64, n: usize) -> String {
    format!("{PREFIX}{due:020}:{n:06}")
}

/// `time` in ms since the Unix epoch. Times come from `room.now()`, the server's clock,
/// so that a test's clock (`partykit_runtime::testing`) drives the reminders.
fn millis(time: SystemTime) -> u64 {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}
