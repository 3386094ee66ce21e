//! What "now" is for a server's alarms: the wall clock, or (for
//! [`testing`](crate::testing)) the wall clock plus whatever a test advanced it by.
//!
//! Only alarms follow this clock: the alarm clock task schedules by it, the room actor
//! computes retry times with it, and [`Room::now`](crate::Room::now) reads it. Socket
//! and HTTP timeouts, idle rooms, hibernation and cron run on real time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A server's clock. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) enum Clock {
    /// The system's wall clock.
    #[default]
    Wall,
    /// The wall clock plus an offset that only [`ManualClock::advance`] moves.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    Manual(Arc<ManualClock>),
}

impl Clock {
    /// Now, in ms since the Unix epoch.
    pub(crate) fn now_millis(&self) -> i64 {
        let wall = wall_millis();
        match self {
            Self::Wall => wall,
            Self::Manual(manual) => wall.saturating_add(manual.offset()),
        }
    }

    /// Now, as a time.
    pub(crate) fn now(&self) -> SystemTime {
        let wall = SystemTime::now();
        match self {
            Self::Wall => wall,
            Self::Manual(manual) => {
                wall + Duration::from_millis(manual.offset().max(0).unsigned_abs())
            }
        }
    }

    pub(crate) fn manual(&self) -> Option<&Arc<ManualClock>> {
        match self {
            Self::Wall => None,
            Self::Manual(manual) => Some(manual),
        }
    }
}

/// A test's clock: the wall clock plus an offset. The alarm clock task owns the
/// receiving end of its advance requests, so an advance runs inside the task that
/// fires alarms, one due alarm after the other.
#[derive(Debug)]
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub(crate) struct ManualClock {
    /// Ms added to the wall clock; never decreases.
    offset: std::sync::atomic::AtomicI64,
    requests: tokio::sync::mpsc::Sender<Advance>,
    /// Taken by the alarm clock task when it starts.
    receiver: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Advance>>>,
}

/// A request to move the clock on by `by`, answered with how many alarms fired, or why
/// the advance stopped.
#[derive(Debug)]
pub(crate) struct Advance {
    pub(crate) by: Duration,
    pub(crate) reply: tokio::sync::oneshot::Sender<Result<usize, String>>,
}

#[cfg_attr(not(feature = "testing"), allow(dead_code))]
impl ManualClock {
    pub(crate) fn new() -> Arc<Self> {
        // One advance at a time is all a test makes; a second waits for room.
        let (requests, receiver) = tokio::sync::mpsc::channel(1);
        Arc::new(Self {
            offset: std::sync::atomic::AtomicI64::new(0),
            requests,
            receiver: std::sync::Mutex::new(Some(receiver)),
        })
    }

    /// The ms added to the wall clock so far.
    pub(crate) fn offset(&self) -> i64 {
        self.offset.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Moves the offset to `offset` unless it is further already.
    pub(crate) fn raise_to(&self, offset: i64) {
        self.offset
            .fetch_max(offset, std::sync::atomic::Ordering::AcqRel);
    }

    /// The receiving end of advance requests, once.
    pub(crate) fn take_receiver(&self) -> Option<tokio::sync::mpsc::Receiver<Advance>> {
        self.receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Moves the clock on by `by`, firing every alarm due meanwhile; see
    /// [`TestServer::advance`](crate::testing::TestServer::advance).
    pub(crate) async fn advance(&self, by: Duration) -> Result<usize, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let stopped =
            || "the server's alarm clock has stopped (is the server shut down?)".to_owned();
        self.requests
            .send(Advance { by, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The wall clock, in ms since the Unix epoch.
pub(crate) fn wall_millis() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// `duration` in ms, saturating.
pub(crate) fn millis_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
