//! Durable room storage: the Durable Objects key-value API.
//!
//! Every room has one [`Storage`], reached with [`Room::storage`](crate::Room::storage).
//!
//! # Model
//!
//! - Keys are strings ordered by their UTF-8 bytes. Values are JSON (through serde:
//!   [`put`](Storage::put)/[`get`](Storage::get)) or raw bytes
//!   ([`put_bytes`](Storage::put_bytes)/[`get_bytes`](Storage::get_bytes)), stored as
//!   given. A value put as bytes reads back with `get` only if it is JSON.
//! - A room reads its own writes at once: a live room keeps its key space in memory,
//!   loaded on first use.
//! - What one event (one handler call) writes is committed atomically. Messages and HTTP
//!   responses that follow a write are held until that write is durable (the *output
//!   gate*), so no client hears of state that a crash could undo. A write made through
//!   [`allow_unconfirmed`](Storage::allow_unconfirmed) does not hold output.
//! - If a commit fails, the output waiting for it is dropped (held HTTP requests answer
//!   500), the error is logged, and the room is reset: its value is rebuilt and its
//!   storage reloaded on the next event.
//!
//! # Limits
//!
//! | what | limit | on violation |
//! |---|---|---|
//! | key | 2,048 bytes | error, nothing written |
//! | value | [`Limits::max_value_size`](crate::Limits::max_value_size), 128 KiB by default | error, nothing written |
//! | keys per batch call (`get_many`, `put_many`, `delete_many`) | 128 | error, nothing read or written |
//!
//! ```
//! use partykit_runtime::{party, Error, Request, Room};
//!
//! #[party]
//! struct Visits {
//!     room: Room,
//! }
//!
//! #[party]
//! impl Visits {
//!     fn new(room: Room) -> Self {
//!         Visits { room }
//!     }
//!
//!     async fn on_request(&mut self, _req: Request) -> Result<String, Error> {
//!         let storage = self.room.storage();
//!         let visits: u64 = storage.get("visits").await?.unwrap_or(0) + 1;
//!         storage.put("visits", &visits).await?;
//!         // The response leaves only once the put is durable.
//!         Ok(visits.to_string())
//!     }
//! }
//! ```

mod backend;
mod committer;
mod list;
mod memory;
mod on_first_write;
mod postgres;
mod sqlite;
mod transaction;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{mpsc, watch};

#[cfg(any(test, feature = "conformance"))]
pub use backend::conformance;
pub use backend::{
    Backend, BackendError, BoxFuture, Durability, Mutation, RoomCommit, RoomKey, RoomSnapshot,
};
pub use list::ListOptions;
pub use memory::{CommitHook, MemoryBackend};
pub(crate) use on_first_write::SqliteOnFirstWrite;
pub use postgres::{PostgresBackend, PostgresBuilder};
pub use sqlite::{DEFAULT_PATH, SqliteBackend};
pub use transaction::Transaction;

pub(crate) use committer::moved as moved_response;
use committer::{Batch, Shared};

use crate::gate::Gate;
use crate::metrics::StorageMetrics;
use crate::tasks::Tasks;
use crate::{Connection, Error};

/// The longest key, in bytes.
pub const MAX_KEY_SIZE: usize = 2048;
/// The most keys one batch call takes.
pub const MAX_BATCH_KEYS: usize = 128;

/// Called when a commit is durable, with the room and what it changed (the server uses
/// it to schedule alarms).
pub(crate) type OnDurable = Arc<dyn Fn(&RoomKey, &[Mutation]) + Send + Sync>;

/// A room's storage. Cheap to clone; every clone is the same storage.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
    confirmed: bool,
}

struct Inner {
    room: RoomKey,
    backend: Arc<dyn Backend>,
    max_value_size: usize,
    on_durable: OnDurable,
    shared: Arc<Shared>,
    finished: watch::Receiver<u64>,
    cache: Mutex<Option<Cache>>,
    loading: tokio::sync::Mutex<()>,
    /// Started on the first write; taken by [`close`](Storage::close), which ends it.
    committer: Mutex<Committer>,
    tasks: Tasks,
}

enum Committer {
    NotStarted,
    Running(mpsc::Sender<Batch>),
    Closed,
}

/// A live room's key space, and what it wrote since the last commit was handed over.
#[derive(Default)]
pub(crate) struct Cache {
    pub(crate) entries: BTreeMap<String, Bytes>,
    pub(crate) alarm: Option<i64>,
    pub(crate) pending: Vec<Mutation>,
}

impl Storage {
    pub(crate) fn new(
        room: RoomKey,
        backend: Arc<dyn Backend>,
        max_value_size: usize,
        on_durable: OnDurable,
        tasks: Tasks,
        lease: Option<crate::cluster::Tenure>,
        metrics: Arc<StorageMetrics>,
    ) -> Self {
        let (finished, finished_rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            gate: Arc::new(Gate::default()),
            epoch: Default::default(),
            failed: Default::default(),
            finished,
            lease,
            metrics,
        });
        Self {
            inner: Arc::new(Inner {
                room,
                backend,
                max_value_size,
                on_durable,
                shared,
                finished: finished_rx,
                cache: Mutex::new(None),
                loading: tokio::sync::Mutex::new(()),
                committer: Mutex::new(Committer::NotStarted),
                tasks,
            }),
            confirmed: true,
        }
    }

    /// A view of this storage whose writes do not hold outgoing messages until they are
    /// durable (`allowUnconfirmed` in Durable Objects). They are still committed with
    /// the event's other writes.
    #[must_use]
    pub fn allow_unconfirmed(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            confirmed: false,
        }
    }

    /// The value under `key`, decoded from JSON; `None` if there is none.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.get_bytes(key)
            .await?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    /// The raw bytes under `key`.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, Error> {
        check_key(key)?;
        Ok(self.cache().await?.entries.get(key).cloned())
    }

    /// The values of those `keys` that exist, by key (at most 128 keys).
    pub async fn get_many<T: DeserializeOwned>(
        &self,
        keys: &[&str],
    ) -> Result<BTreeMap<String, T>, Error> {
        check_batch(keys.len())?;
        keys.iter().try_for_each(|key| check_key(key))?;
        let found: Vec<(String, Bytes)> = {
            let cache = self.cache().await?;
            keys.iter()
                .filter_map(|key| Some(((*key).to_owned(), cache.entries.get(*key)?.clone())))
                .collect()
        };
        found
            .into_iter()
            .map(|(key, bytes)| Ok((key.clone(), decode(&key, &bytes)?)))
            .collect()
    }

    /// Stores `value` (as JSON) under `key`.
    pub async fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        let bytes = encode(key, value)?;
        self.put_bytes(key, bytes).await
    }

    /// Stores raw bytes under `key`.
    pub async fn put_bytes(&self, key: &str, value: impl Into<Bytes>) -> Result<(), Error> {
        let value = value.into();
        check_key(key)?;
        self.check_value(key, &value)?;
        let mut cache = self.cache().await?;
        cache.entries.insert(key.to_owned(), value.clone());
        cache.pending.push(Mutation::Put(key.to_owned(), value));
        self.wrote();
        Ok(())
    }

    /// Stores every pair atomically (at most 128).
    pub async fn put_many<K, T>(
        &self,
        entries: impl IntoIterator<Item = (K, T)>,
    ) -> Result<(), Error>
    where
        K: Into<String>,
        T: Serialize,
    {
        let encoded = entries
            .into_iter()
            .map(|(key, value)| {
                let key = key.into();
                check_key(&key)?;
                let bytes = encode(&key, &value)?;
                self.check_value(&key, &bytes)?;
                Ok((key, bytes))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        check_batch(encoded.len())?;
        let mut cache = self.cache().await?;
        for (key, value) in encoded {
            cache.entries.insert(key.clone(), value.clone());
            cache.pending.push(Mutation::Put(key, value));
        }
        self.wrote();
        Ok(())
    }

    /// Removes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        check_key(key)?;
        let mut cache = self.cache().await?;
        let existed = cache.entries.remove(key).is_some();
        cache.pending.push(Mutation::Delete(key.to_owned()));
        self.wrote();
        Ok(existed)
    }

    /// Removes those `keys` (at most 128); how many existed.
    pub async fn delete_many(&self, keys: &[&str]) -> Result<usize, Error> {
        check_batch(keys.len())?;
        keys.iter().try_for_each(|key| check_key(key))?;
        let mut cache = self.cache().await?;
        let mut deleted = 0;
        for key in keys {
            deleted += usize::from(cache.entries.remove(*key).is_some());
            cache.pending.push(Mutation::Delete((*key).to_owned()));
        }
        self.wrote();
        Ok(deleted)
    }

    /// Removes every key of the room. The alarm stays; see
    /// [`delete_alarm`](Self::delete_alarm).
    pub async fn delete_all(&self) -> Result<(), Error> {
        let mut cache = self.cache().await?;
        cache.entries.clear();
        cache.pending.push(Mutation::DeleteAll);
        self.wrote();
        Ok(())
    }

    /// The entries `options` select, decoded from JSON, in the order asked for.
    pub async fn list<T: DeserializeOwned>(
        &self,
        options: ListOptions,
    ) -> Result<Vec<(String, T)>, Error> {
        self.list_bytes(options)
            .await?
            .into_iter()
            .map(|(key, bytes)| {
                let value = decode(&key, &bytes)?;
                Ok((key, value))
            })
            .collect()
    }

    /// The entries `options` select, as raw bytes, in the order asked for.
    pub async fn list_bytes(&self, options: ListOptions) -> Result<Vec<(String, Bytes)>, Error> {
        let cache = self.cache().await?;
        Ok(options
            .select(&cache.entries)?
            .into_iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    /// Runs `body` as one transaction: its writes apply together if it returns `Ok` and
    /// did not call [`Transaction::rollback`], and not at all otherwise.
    ///
    /// The body is synchronous: a room's storage is in memory, so nothing inside a
    /// transaction needs to wait.
    pub async fn transaction<R>(
        &self,
        body: impl FnOnce(&mut Transaction<'_>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let mut cache = self.cache().await?;
        let mut transaction = Transaction::new(&cache.entries, self.inner.max_value_size);
        let result = body(&mut transaction)?;
        let mutations = transaction.into_mutations().unwrap_or_default();
        if !mutations.is_empty() {
            for mutation in &mutations {
                apply(&mut cache.entries, mutation);
            }
            cache.pending.extend(mutations);
            self.wrote();
        }
        Ok(result)
    }

    /// Waits until every write made so far is durable.
    pub async fn sync(&self) -> Result<(), Error> {
        let Some(seq) = self.submit().await else {
            let submitted = self.inner.shared.gate.last_submitted();
            return self.wait_finished(submitted).await;
        };
        self.wait_finished(seq).await
    }

    /// When the alarm will fire, if one is set.
    pub async fn get_alarm(&self) -> Result<Option<SystemTime>, Error> {
        Ok(self.cache().await?.alarm.map(from_millis))
    }

    /// Sets the room's one alarm, replacing any other. A time in the past fires as soon
    /// as possible. The alarm is durable: it fires after a restart too.
    pub async fn set_alarm(&self, time: SystemTime) -> Result<(), Error> {
        let millis = to_millis(time);
        let mut cache = self.cache().await?;
        cache.alarm = Some(millis);
        cache.pending.push(Mutation::SetAlarm(Some(millis)));
        self.wrote();
        Ok(())
    }

    /// Removes the pending alarm, if any.
    pub async fn delete_alarm(&self) -> Result<(), Error> {
        let mut cache = self.cache().await?;
        cache.alarm = None;
        cache.pending.push(Mutation::SetAlarm(None));
        self.wrote();
        Ok(())
    }

    pub(crate) fn gate(&self) -> &Arc<Gate<Connection>> {
        &self.inner.shared.gate
    }

    /// Hands what the event wrote to the committer; returns the commit's number.
    ///
    /// Waits while the committer's queue is full: a room whose commits are slow (a slow
    /// disk) slows down, its mailbox fills and senders wait, instead of queueing writes
    /// without bound.
    pub(crate) async fn submit(&self) -> Option<u64> {
        let mutations = {
            let mut slot = self.lock();
            let cache = slot.as_mut()?;
            if cache.pending.is_empty() {
                return None;
            }
            std::mem::take(&mut cache.pending)
        };
        let seq = self.inner.shared.gate.submitted();
        let batch = Batch {
            seq,
            epoch: self.inner.shared.epoch.load(Ordering::Acquire),
            mutations,
            submitted: std::time::Instant::now(),
        };
        let sent = match self.committer() {
            Some(committer) => committer.send(batch).await.map_err(|error| error.0.seq),
            // Closed: the room is gone, and so is everyone its output was for.
            None => Err(seq),
        };
        if let Err(seq) = sent {
            // Closed, or the committer ended (aborted at shutdown): the batch is never
            // committed.
            self.inner
                .shared
                .gate
                .discard_through(seq, committer::failure);
            self.inner.shared.finished.send_replace(seq);
        }
        Some(seq)
    }

    fn committer(&self) -> Option<mpsc::Sender<Batch>> {
        let mut committer = self
            .inner
            .committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*committer {
            Committer::Running(sender) => Some(sender.clone()),
            Committer::Closed => None,
            Committer::NotStarted => {
                let on_durable = Arc::clone(&self.inner.on_durable);
                let sender = committer::spawn(
                    &self.inner.tasks,
                    self.inner.room.clone(),
                    Arc::clone(&self.inner.backend),
                    Arc::clone(&self.inner.shared),
                    move |room, mutations| on_durable(room, mutations),
                );
                *committer = Committer::Running(sender.clone());
                Some(sender)
            }
        }
    }

    /// The server's task owner, for work a room starts.
    #[cfg(feature = "yjs")]
    pub(crate) fn tasks(&self) -> &Tasks {
        &self.inner.tasks
    }

    /// In cluster mode, cancelled when the room is lost to another node (a fenced commit,
    /// or a lease that could not be renewed).
    pub(crate) fn lost(&self) -> Option<&tokio_util::sync::CancellationToken> {
        self.inner.shared.lease.as_ref().map(|lease| &lease.lost)
    }

    /// The room is done with its storage: its committer commits what it was handed and
    /// ends.
    pub(crate) fn close(&self) {
        *self
            .inner
            .committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Committer::Closed;
    }

    /// Whether a commit failed since the last [`reset`](Self::reset).
    pub(crate) fn failed(&self) -> bool {
        self.inner.shared.failed.load(Ordering::Acquire)
    }

    /// Forgets the cached key space and anything not yet committed, after a failed
    /// commit: the next access reloads what is durable.
    pub(crate) fn reset(&self) {
        *self.lock() = None;
        self.inner.shared.gate.reset(committer::failure);
        self.inner.shared.epoch.fetch_add(1, Ordering::AcqRel);
        self.inner.shared.failed.store(false, Ordering::Release);
    }

    /// Drops the cached key space if nothing is waiting to be committed; the next access
    /// reloads it.
    pub(crate) fn unload(&self) {
        let mut cache = self.lock();
        if cache.as_ref().is_some_and(|cache| cache.pending.is_empty()) && self.is_settled_now() {
            *cache = None;
        }
    }

    fn is_settled_now(&self) -> bool {
        *self.inner.finished.borrow() >= self.inner.shared.gate.last_submitted()
    }

    /// Whether every handed-over commit has finished (so the room may be evicted).
    pub(crate) fn is_settled(&self) -> bool {
        let pending = self
            .lock()
            .as_ref()
            .is_some_and(|cache| !cache.pending.is_empty());
        !pending && *self.inner.finished.borrow() >= self.inner.shared.gate.last_submitted()
    }

    /// Reads the key space and the alarm (ms since the Unix epoch) for the inspection
    /// API: as the room sees them now when they are in memory (writes not yet durable
    /// included), else as stored. Nothing is loaded into the room.
    pub(crate) async fn inspect<R>(
        &self,
        read: impl FnOnce(&BTreeMap<String, Bytes>, Option<i64>) -> R,
    ) -> Result<R, BackendError> {
        if let Some(cache) = self.lock().as_ref() {
            return Ok(read(&cache.entries, cache.alarm));
        }
        inspect_stored(&*self.inner.backend, &self.inner.room, read).await
    }

    /// The alarm's time in ms since the Unix epoch.
    pub(crate) async fn alarm_millis(&self) -> Result<Option<i64>, Error> {
        Ok(self.cache().await?.alarm)
    }

    /// Hides the alarm from `get_alarm` while its handler runs, without writing.
    pub(crate) async fn hide_alarm(&self) -> Result<(), Error> {
        self.cache().await?.alarm = None;
        Ok(())
    }

    /// Writes the alarm on the runtime's behalf (clearing it after a run, or setting a
    /// retry). Output does not wait for it: no client can observe an alarm.
    pub(crate) async fn write_alarm(&self, time: Option<i64>) -> Result<(), Error> {
        let mut cache = self.cache().await?;
        cache.alarm = time;
        cache.pending.push(Mutation::SetAlarm(time));
        Ok(())
    }

    /// Waits until every commit handed over so far has finished (durably or not), for
    /// a test's advance: an alarm a handler set is scheduled by then.
    pub(crate) async fn settled(&self) {
        let submitted = self.inner.shared.gate.last_submitted();
        let mut finished = self.inner.finished.clone();
        let _ = finished.wait_for(|done| *done >= submitted).await;
    }

    async fn wait_finished(&self, seq: u64) -> Result<(), Error> {
        let mut finished = self.inner.finished.clone();
        finished
            .wait_for(|done| *done >= seq)
            .await
            .map_err(|_| Error::msg("storage closed"))?;
        if self.failed() {
            return Err(Error::msg("a storage commit failed; the room will reset"));
        }
        Ok(())
    }

    fn wrote(&self) {
        if self.confirmed {
            self.inner.shared.gate.hold_output();
        }
    }

    /// The cache, loading it first if needed.
    async fn cache(&self) -> Result<CacheGuard<'_>, Error> {
        if self.lock().is_none() {
            let _loading = self.inner.loading.lock().await;
            if self.lock().is_none() {
                let snapshot = self
                    .inner
                    .backend
                    .load(&self.inner.room)
                    .await
                    .map_err(|error| self.load_failed(error))?;
                *self.lock() = Some(Cache {
                    entries: snapshot.entries.into_iter().collect(),
                    alarm: snapshot.alarm,
                    pending: Vec::new(),
                });
            }
        }
        Ok(CacheGuard { guard: self.lock() })
    }

    /// A backend that cannot be reached now (its database is down) answers 503: the
    /// same request may succeed later. The detail is for the operator's log.
    fn load_failed(&self, error: BackendError) -> Error {
        if !error.is_unavailable() {
            return Error::new(error);
        }
        tracing::warn!(room = %self.inner.room, %error, "cannot load the room's storage");
        Error::with_status(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "Storage is unavailable; try again later",
        )
    }

    fn lock(&self) -> MutexGuard<'_, Option<Cache>> {
        // Cache updates cannot be left half-done by a panic elsewhere.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn check_value(&self, key: &str, value: &Bytes) -> Result<(), Error> {
        if value.len() > self.inner.max_value_size {
            return Err(Error::msg(format!(
                "the value for key {key:?} is {} bytes; the limit is {} bytes",
                value.len(),
                self.inner.max_value_size
            )));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("room", &self.inner.room)
            .field("confirmed", &self.confirmed)
            .finish_non_exhaustive()
    }
}

/// A locked, loaded cache.
struct CacheGuard<'s> {
    guard: MutexGuard<'s, Option<Cache>>,
}

impl std::ops::Deref for CacheGuard<'_> {
    type Target = Cache;

    fn deref(&self) -> &Cache {
        // Built only after the cache was loaded, and nothing unloads it while locked.
        self.guard
            .as_ref()
            .unwrap_or_else(|| unreachable!("cache is loaded"))
    }
}

impl std::ops::DerefMut for CacheGuard<'_> {
    fn deref_mut(&mut self) -> &mut Cache {
        self.guard
            .as_mut()
            .unwrap_or_else(|| unreachable!("cache is loaded"))
    }
}

/// Reads a room's stored key space and alarm, for the inspection API.
pub(crate) async fn inspect_stored<R>(
    backend: &dyn Backend,
    room: &RoomKey,
    read: impl FnOnce(&BTreeMap<String, Bytes>, Option<i64>) -> R,
) -> Result<R, BackendError> {
    let snapshot = backend.load(room).await?;
    let entries: BTreeMap<String, Bytes> = snapshot.entries.into_iter().collect();
    Ok(read(&entries, snapshot.alarm))
}

pub(crate) fn apply(entries: &mut BTreeMap<String, Bytes>, mutation: &Mutation) {
    match mutation {
        Mutation::Put(key, value) => {
            entries.insert(key.clone(), value.clone());
        }
        Mutation::Delete(key) => {
            entries.remove(key);
        }
        Mutation::DeleteAll => entries.clear(),
        Mutation::SetAlarm(_) => {}
    }
}

pub(crate) fn check_key(key: &str) -> Result<(), Error> {
    if key.len() > MAX_KEY_SIZE {
        return Err(Error::msg(format!(
            "a key is {} bytes long; the limit is {MAX_KEY_SIZE} bytes",
            key.len()
        )));
    }
    Ok(())
}

fn check_batch(len: usize) -> Result<(), Error> {
    if len > MAX_BATCH_KEYS {
        return Err(Error::msg(format!(
            "a batch has {len} keys; the limit is {MAX_BATCH_KEYS}"
        )));
    }
    Ok(())
}

pub(crate) fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|error| Error::msg(format!("cannot encode the value for key {key:?}: {error}")))
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|error| {
        Error::msg(format!(
            "the value stored under {key:?} does not decode as the type asked for: {error}"
        ))
    })
}

fn to_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn from_millis(millis: i64) -> SystemTime {
    if millis >= 0 {
        UNIX_EPOCH + Duration::from_millis(millis.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(millis.unsigned_abs())
    }
}
