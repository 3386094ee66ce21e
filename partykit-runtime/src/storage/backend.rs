//! Where rooms' storage lives: the trait every backend implements.
//!
//! A live room keeps its whole key space in memory (loaded once with [`Backend::load`]),
//! so reads never wait for the backend; what a room wrote during one event reaches the
//! backend as one [`RoomCommit`]. Backends batch concurrent commits of many rooms into
//! one durable write (group commit) however suits them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

/// A boxed, sendable future, as backends return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which room a commit or a load is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey {
    /// The party's name.
    pub party: Arc<str>,
    /// The room id (raw, as in the URL).
    pub room: Arc<str>,
}

impl RoomKey {
    /// The key of room `room` of party `party`.
    pub fn new(party: impl Into<Arc<str>>, room: impl Into<Arc<str>>) -> Self {
        Self {
            party: party.into(),
            room: room.into(),
        }
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.party, self.room)
    }
}

/// A room's stored state, as [`Backend::load`] returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomSnapshot {
    /// Every key and value, in any order.
    pub entries: Vec<(String, Bytes)>,
    /// The pending alarm, in milliseconds since the Unix epoch.
    pub alarm: Option<i64>,
}

/// One change of a room's stored state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Store `value` under `key`.
    Put(String, Bytes),
    /// Remove `key`.
    Delete(String),
    /// Remove every key of the room (not its alarm).
    DeleteAll,
    /// Set (`Some`, ms since the Unix epoch) or clear (`None`) the room's alarm.
    SetAlarm(Option<i64>),
}

/// What one room wrote during one event: applied atomically, after every earlier commit
/// of the same room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomCommit {
    /// The room.
    pub room: RoomKey,
    /// The changes, in the order they were made.
    pub mutations: Vec<Mutation>,
    /// In cluster mode, the epoch of the room's lease (its fencing token) that the writing
    /// room holds. A backend that keeps leases must apply the commit only if the room's
    /// lease still has this epoch, checked in the same transaction, and otherwise fail it
    /// with [`BackendError::fenced`]: another node took the room over, and the writer
    /// must not write after it. `None` outside cluster mode; backends without leases
    /// ignore it.
    pub lease: Option<u64>,
}

impl RoomCommit {
    /// A commit of `mutations` to `room`, outside cluster mode (no lease).
    pub fn new(room: RoomKey, mutations: Vec<Mutation>) -> Self {
        Self {
            room,
            mutations,
            lease: None,
        }
    }
}

/// A storage backend failed.
#[derive(Debug, Clone)]
pub struct BackendError {
    message: Arc<str>,
    kind: ErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Failed,
    Unavailable,
    Fenced,
}

impl BackendError {
    /// A backend error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Self::of(ErrorKind::Failed, message)
    }

    /// The backend cannot be reached now (its database is down, or a connection could not
    /// be had in time); the same request may succeed later. Clients hear 503.
    pub fn unavailable(message: impl fmt::Display) -> Self {
        Self::of(ErrorKind::Unavailable, message)
    }

    /// A commit was refused because the room's lease moved on: its
    /// [`lease`](RoomCommit::lease) epoch is no longer the room's. The writing room has
    /// lost the room to another node and stops.
    pub fn fenced(message: impl fmt::Display) -> Self {
        Self::of(ErrorKind::Fenced, message)
    }

    /// Whether this is an [`unavailable`](Self::unavailable) error.
    pub fn is_unavailable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }

    /// Whether this is a [`fenced`](Self::fenced) error.
    pub fn is_fenced(&self) -> bool {
        self.kind == ErrorKind::Fenced
    }

    fn of(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string().into(),
            kind,
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage backend failed: {}", self.message)
    }
}

impl std::error::Error for BackendError {}

/// How much a backend that writes to disk does to make a resolved commit survive a crash.
///
/// Each level names what a commit that already resolved `Ok` survives. A backend without a
/// disk (in memory) ignores it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Survives a process crash and a power loss or OS crash: every commit is flushed to the
    /// disk (fsync) before it resolves. The slowest; the default.
    #[default]
    Full,
    /// Survives a process crash (SIGKILL, panic, OOM kill) but not a power loss or OS
    /// crash, after which the most recent commits may be missing; the stored data stays
    /// consistent (no half-applied commit, no corruption).
    Normal,
    /// Survives a process crash, but a power loss or OS crash may lose recent commits or
    /// corrupt the stored data. For throwaway data and benchmarks only.
    Off,
}

/// A place to keep rooms' storage: in memory, an embedded database, or a shared one.
///
/// Contract:
/// - [`commit`](Backend::commit) resolves `Ok` only once the commit is durable (as the
///   backend defines durable), and applies it atomically: all of its mutations or none.
/// - Commits of one room are applied in the order `commit` was called.
/// - [`load`](Backend::load) sees every commit that resolved before it was called.
/// - A commit takes its place in its room's order when `commit` is called, and goes ahead
///   even if the returned future is dropped unpolled: awaiting it only learns the outcome.
pub trait Backend: Send + Sync + 'static {
    /// A room's whole stored state.
    fn load(&self, room: &RoomKey) -> BoxFuture<'_, Result<RoomSnapshot, BackendError>>;

    /// Applies one room's commit durably.
    fn commit(&self, commit: RoomCommit) -> BoxFuture<'_, Result<(), BackendError>>;

    /// Every room's pending alarm, so that alarms set before a restart still fire.
    fn alarms(&self) -> BoxFuture<'_, Result<Vec<(RoomKey, i64)>, BackendError>>;

    /// The server is done with the backend: finish the commits already handed over and
    /// release what the backend holds (files, connections). Called once, after the last
    /// room has stopped, by [`Server::serve`](crate::Server::serve). Does nothing by
    /// default.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// A shared backend is a backend: keep an `Arc` to inspect or steer it (e.g. a test's
/// [`MemoryBackend`](super::MemoryBackend) commit hook) while the server uses it.
impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn load(&self, room: &RoomKey) -> BoxFuture<'_, Result<RoomSnapshot, BackendError>> {
        (**self).load(room)
    }

    fn commit(&self, commit: RoomCommit) -> BoxFuture<'_, Result<(), BackendError>> {
        (**self).commit(commit)
    }

    fn alarms(&self) -> BoxFuture<'_, Result<Vec<(RoomKey, i64)>, BackendError>> {
        (**self).alarms()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        (**self).close()
    }
}

/// Checks of the [`Backend`] contract, for testing a backend of your own.
///
/// Each check takes a fresh, empty backend (a new database) and panics, saying what went
/// wrong, if the backend breaks the contract; call each on its own backend from a
/// multi-threaded Tokio runtime, e.g.
/// `conformance::round_trips(Arc::new(MyBackend::open(..)?)).await`. The checks commit at
/// most a few ten thousand small mutations each.
///
/// Available with the runtime's `conformance` feature. The memory and SQLite backends'
/// unit tests and the PostgreSQL backend's integration tests run every check.
#[cfg(any(test, feature = "conformance"))]
pub mod conformance {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::{Backend, Mutation, RoomCommit, RoomKey, RoomSnapshot};

    /// A put of `value` (as bytes) under `key`.
    pub fn put(key: &str, value: &str) -> Mutation {
        Mutation::Put(key.to_owned(), Bytes::copy_from_slice(value.as_bytes()))
    }

    /// `mutations` as one commit of `room`.
    pub fn room_commit(room: &RoomKey, mutations: Vec<Mutation>) -> RoomCommit {
        RoomCommit::new(room.clone(), mutations)
    }

    async fn commit(backend: &dyn Backend, room: &RoomKey, mutations: Vec<Mutation>) {
        backend
            .commit(room_commit(room, mutations))
            .await
            .expect("commit");
    }

    /// The room's state with its entries sorted, since `load` returns them in any order.
    async fn load_sorted(backend: &dyn Backend, room: &RoomKey) -> RoomSnapshot {
        let mut snapshot = backend.load(room).await.expect("load");
        snapshot.entries.sort();
        snapshot
    }

    fn entries(pairs: &[(&str, &str)]) -> Vec<(String, Bytes)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Bytes::copy_from_slice(v.as_bytes())))
            .collect()
    }

    /// Put, overwrite, delete, delete-all and alarms come back from `load` as written.
    pub async fn round_trips(backend: Arc<dyn Backend>) {
        let backend = &*backend;
        let room = RoomKey::new("main", "round-trips");
        assert_eq!(load_sorted(backend, &room).await, RoomSnapshot::default());

        commit(
            backend,
            &room,
            vec![put("a", "1"), put("b", "2"), put("c", "3")],
        )
        .await;
        commit(
            backend,
            &room,
            vec![
                put("b", "two"),
                Mutation::Delete("c".into()),
                Mutation::Delete("never-there".into()),
                Mutation::SetAlarm(Some(1_700_000_000_123)),
            ],
        )
        .await;
        assert_eq!(
            load_sorted(backend, &room).await,
            RoomSnapshot {
                entries: entries(&[("a", "1"), ("b", "two")]),
                alarm: Some(1_700_000_000_123),
            }
        );

        // An empty value and a binary value are values like any other.
        let binary = Bytes::from_static(&[0, 255, 1, 254]);
        commit(
            backend,
            &room,
            vec![
                put("empty", ""),
                Mutation::Put("bin".into(), binary.clone()),
            ],
        )
        .await;
        let snapshot = load_sorted(backend, &room).await;
        assert!(snapshot.entries.contains(&("empty".into(), Bytes::new())));
        assert!(snapshot.entries.contains(&("bin".into(), binary)));

        // DeleteAll removes every key but not the alarm.
        commit(backend, &room, vec![Mutation::DeleteAll]).await;
        assert_eq!(
            load_sorted(backend, &room).await,
            RoomSnapshot {
                entries: Vec::new(),
                alarm: Some(1_700_000_000_123),
            }
        );

        // A new alarm replaces the old one; None clears it.
        commit(backend, &room, vec![Mutation::SetAlarm(Some(-5))]).await;
        assert_eq!(load_sorted(backend, &room).await.alarm, Some(-5));
        commit(backend, &room, vec![Mutation::SetAlarm(None)]).await;
        assert_eq!(load_sorted(backend, &room).await, RoomSnapshot::default());
    }

    /// One commit's mutations apply in their order, and rooms (also of other parties with
    /// the same room id) do not see each other's keys.
    pub async fn commit_applies_in_order_and_rooms_are_separate(backend: Arc<dyn Backend>) {
        let backend = &*backend;
        let room = RoomKey::new("main", "r");
        let same_id_other_party = RoomKey::new("other", "r");
        let other_room = RoomKey::new("main", "r2");
        commit(backend, &other_room, vec![put("x", "other")]).await;
        commit(backend, &same_id_other_party, vec![put("x", "party")]).await;
        commit(
            backend,
            &room,
            vec![
                put("x", "1"),
                put("y", "1"),
                Mutation::DeleteAll,
                put("x", "2"),
                Mutation::Delete("x".into()),
                put("x", "3"),
                Mutation::SetAlarm(Some(1)),
                Mutation::SetAlarm(None),
                Mutation::SetAlarm(Some(7)),
            ],
        )
        .await;
        assert_eq!(
            load_sorted(backend, &room).await,
            RoomSnapshot {
                entries: entries(&[("x", "3")]),
                alarm: Some(7),
            }
        );
        assert_eq!(
            load_sorted(backend, &other_room).await.entries,
            entries(&[("x", "other")])
        );
        assert_eq!(
            load_sorted(backend, &same_id_other_party).await.entries,
            entries(&[("x", "party")])
        );
    }

    /// Keys are arbitrary Unicode and come back byte for byte, including the largest
    /// code point, NUL and the empty key.
    pub async fn unicode_keys_round_trip(backend: Arc<dyn Backend>) {
        let backend = &*backend;
        let room = RoomKey::new("pärty", "röom/ü 🎉");
        let keys = [
            "",
            "\u{0}",
            "a\u{0}b",
            "é",
            "e\u{301}",
            "日本語",
            "🎉",
            "\u{FFFF}",
            "\u{10FFFF}",
            "\u{10FFFF}\u{10FFFF}",
        ];
        let mutations = keys.iter().map(|k| put(k, k)).collect();
        commit(backend, &room, mutations).await;
        let mut expected: Vec<_> = keys.iter().map(|k| (*k, *k)).collect();
        expected.sort();
        assert_eq!(
            load_sorted(backend, &room).await.entries,
            entries(&expected)
        );
        commit(backend, &room, vec![Mutation::Delete("\u{10FFFF}".into())]).await;
        let loaded = load_sorted(backend, &room).await.entries;
        assert_eq!(loaded.len(), keys.len() - 1);
        assert!(!loaded.iter().any(|(k, _)| k == "\u{10FFFF}"));
    }

    /// Commits of one room issued back to back apply in the order `commit` was called,
    /// whatever order their futures are awaited in, and a commit whose future is dropped
    /// still applies.
    pub async fn commits_of_a_room_apply_in_call_order(backend: Arc<dyn Backend>) {
        let room = RoomKey::new("main", "ordered");
        let mut pending: Vec<_> = (0..500)
            .map(|i| {
                backend.commit(RoomCommit::new(
                    room.clone(),
                    vec![
                        put("last", &i.to_string()),
                        put(&format!("k{i:03}"), &i.to_string()),
                        Mutation::Delete(format!("k{:03}", i - 1)),
                    ],
                ))
            })
            .collect();
        // Awaited newest first: a backend that applied commits as their futures are
        // polled would end with the oldest.
        while let Some(result) = pending.pop() {
            result.await.expect("commit");
        }
        assert_eq!(
            load_sorted(&*backend, &room).await.entries,
            entries(&[("k499", "499"), ("last", "499")])
        );

        drop(backend.commit(RoomCommit::new(
            room.clone(),
            vec![put("dropped", "still applied")],
        )));
        commit(&*backend, &room, vec![put("after", "")]).await;
        assert_eq!(
            load_sorted(&*backend, &room).await.entries,
            entries(&[
                ("after", ""),
                ("dropped", "still applied"),
                ("k499", "499"),
                ("last", "499")
            ])
        );
    }

    /// A load running beside commits sees each commit whole or not at all.
    pub async fn loads_see_whole_commits(backend: Arc<dyn Backend>) {
        let room = RoomKey::new("main", "atomic");
        let writer = {
            let backend = backend.clone();
            let room = room.clone();
            tokio::spawn(async move {
                for i in 0..300 {
                    let value = i.to_string();
                    let mutations = vec![put("a", &value), put("b", &value), put("c", &value)];
                    commit(&*backend, &room, mutations).await;
                }
            })
        };
        let mut loads = 0;
        while !writer.is_finished() || loads == 0 {
            let snapshot = load_sorted(&*backend, &room).await;
            let values: Vec<_> = snapshot.entries.iter().map(|(_, v)| v).collect();
            assert!(
                values.is_empty() || (values.len() == 3 && values.iter().all(|v| *v == values[0])),
                "a load saw part of a commit: {:?}",
                snapshot.entries
            );
            loads += 1;
            tokio::task::yield_now().await;
        }
        writer.await.expect("writer task");
        let last = load_sorted(&*backend, &room).await;
        assert_eq!(
            last.entries,
            entries(&[("a", "299"), ("b", "299"), ("c", "299")])
        );
    }

    /// 100 rooms commit 100 times each, concurrently; then every room holds all of its
    /// own writes and `alarms` lists every room's alarm.
    pub async fn many_rooms_concurrently(backend: Arc<dyn Backend>) {
        const ROOMS: usize = 100;
        const COMMITS: usize = 100;
        let tasks: Vec<_> = (0..ROOMS)
            .map(|r| {
                let backend = backend.clone();
                tokio::spawn(async move {
                    let room = RoomKey::new("main", format!("room-{r}"));
                    for c in 0..COMMITS {
                        let mutations = vec![
                            put(&format!("k{c:03}"), &format!("{r}:{c}")),
                            put("last", &c.to_string()),
                            Mutation::SetAlarm(Some((r * 1000 + c) as i64)),
                        ];
                        commit(&*backend, &room, mutations).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("room task");
        }
        for r in 0..ROOMS {
            let room = RoomKey::new("main", format!("room-{r}"));
            let snapshot = load_sorted(&*backend, &room).await;
            let mut expected: Vec<(String, String)> = (0..COMMITS)
                .map(|c| (format!("k{c:03}"), format!("{r}:{c}")))
                .collect();
            expected.push(("last".into(), (COMMITS - 1).to_string()));
            let expected: Vec<(&str, &str)> = expected
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(snapshot.entries, entries(&expected), "room {r}");
            assert_eq!(snapshot.alarm, Some((r * 1000 + COMMITS - 1) as i64));
        }
        let mut alarms = backend.alarms().await.expect("alarms");
        alarms.sort();
        let mut expected: Vec<_> = (0..ROOMS)
            .map(|r| {
                (
                    RoomKey::new("main", format!("room-{r}")),
                    (r * 1000 + COMMITS - 1) as i64,
                )
            })
            .collect();
        expected.sort();
        assert_eq!(alarms, expected);
    }

    /// `alarms` lists exactly the rooms with an alarm set, with its time.
    pub async fn alarms_lists_pending_alarms(backend: Arc<dyn Backend>) {
        let backend = &*backend;
        assert_eq!(backend.alarms().await.expect("alarms"), Vec::new());
        let a = RoomKey::new("main", "a");
        let b = RoomKey::new("other", "b");
        let c = RoomKey::new("main", "c");
        commit(backend, &a, vec![Mutation::SetAlarm(Some(10))]).await;
        commit(
            backend,
            &b,
            vec![Mutation::SetAlarm(Some(20)), put("k", "v")],
        )
        .await;
        commit(backend, &c, vec![Mutation::SetAlarm(Some(30))]).await;
        commit(backend, &c, vec![Mutation::SetAlarm(None)]).await;
        commit(backend, &RoomKey::new("main", "d"), vec![put("k", "v")]).await;
        let mut alarms = backend.alarms().await.expect("alarms");
        alarms.sort();
        assert_eq!(alarms, vec![(a, 10), (b, 20)]);
    }
}
