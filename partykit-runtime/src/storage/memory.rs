//! LiveRooms' storage in memory: for tests, and for servers whose rooms need not outlive the
//! process.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::backend::{
    Backend, BackendError, BoxFuture, Mutation, RoomCommit, RoomKey, RoomSnapshot,
};

/// Runs before each commit of a [`MemoryBackend`] is applied and decides when and whether
/// it is: the commit is applied once the returned future resolves `Ok`, and fails with the
/// error (applying nothing) if it resolves `Err`. See [`MemoryBackend::set_commit_hook`].
pub type CommitHook =
    Arc<dyn Fn(&RoomCommit) -> BoxFuture<'static, Result<(), BackendError>> + Send + Sync>;

/// Keeps every room's storage in a map in memory; "durable" means "in this map", so
/// nothing survives the process.
///
/// A commit is applied at once, under one lock, so it is atomic and a later
/// [`load`](Backend::load) sees it. For tests, a [commit hook](Self::set_commit_hook) can
/// hold commits back or make them fail, to exercise what a room does while its writes are
/// not yet durable or when they fail.
///
/// ```
/// use bytes::Bytes;
/// use partykit_runtime::storage::{Backend, MemoryBackend, Mutation, RoomCommit, RoomKey};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = MemoryBackend::new();
/// let room = RoomKey::new("main", "lobby");
/// backend
///     .commit(RoomCommit::new(
///         room.clone(),
///         vec![
///             Mutation::Put("greeting".into(), Bytes::from("hello")),
///             Mutation::SetAlarm(Some(1_700_000_000_000)),
///         ],
///     ))
///     .await?;
///
/// let snapshot = backend.load(&room).await?;
/// assert_eq!(snapshot.entries, vec![("greeting".to_string(), Bytes::from("hello"))]);
/// assert_eq!(snapshot.alarm, Some(1_700_000_000_000));
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct MemoryBackend {
    // Shared with the tasks that apply commits held by a hook.
    state: Arc<Mutex<State>>,
}

/// A room's keys and its alarm (ms since the Unix epoch).
type RoomData = (BTreeMap<String, Bytes>, Option<i64>);

#[derive(Default)]
struct State {
    rooms: HashMap<RoomKey, RoomData>,
    hook: Option<CommitHook>,
    /// For each room with a commit still inside the hook: the newest such commit's ticket
    /// and a receiver that completes when it has been applied or has failed. The room's
    /// next commit waits on it, so commits held by the hook still apply in call order.
    in_flight: HashMap<RoomKey, (u64, oneshot::Receiver<()>)>,
    next_ticket: u64,
}

impl MemoryBackend {
    /// An empty backend without a commit hook.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty backend whose commits each take `delay` before they are applied and
    /// resolve, like a slow disk. Needs a Tokio runtime with its timer enabled.
    pub fn with_commit_delay(delay: Duration) -> Self {
        let backend = Self::new();
        backend.set_commit_hook(Arc::new(move |_commit| {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(())
            })
        }));
        backend
    }

    /// Runs `hook` before each later commit is applied: the commit is applied when the
    /// future it returns resolves `Ok`, and fails with its error (applying nothing) when
    /// it resolves `Err`. Replaces any earlier hook.
    ///
    /// Commits still apply in call order per room: a room's commit waits for the room's
    /// earlier commits, so holding one commit holds the room's later ones too, while other
    /// rooms go on. A failed commit does not stop the room's later commits.
    ///
    /// While a hook is set, each commit runs on a task spawned with [`tokio::spawn`], so
    /// [`commit`](Backend::commit) must be called inside a Tokio runtime.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use partykit_runtime::storage::{BackendError, MemoryBackend};
    ///
    /// let backend = MemoryBackend::new();
    /// // Every commit to a room called "broken" fails.
    /// backend.set_commit_hook(Arc::new(|commit| {
    ///     let broken = &*commit.room.room == "broken";
    ///     Box::pin(async move {
    ///         if broken { Err(BackendError::new("disk on fire")) } else { Ok(()) }
    ///     })
    /// }));
    /// ```
    pub fn set_commit_hook(&self, hook: CommitHook) {
        self.lock().hook = Some(hook);
    }

    /// Removes the commit hook: later commits apply at once again (after the room's
    /// commits still held by the old hook).
    pub fn clear_commit_hook(&self) {
        self.lock().hook = None;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

// A panic while the lock is held cannot leave a room half-updated (applying a mutation does
// not panic), so a poisoned lock's state is still good to use.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryBackend")
            .field("rooms", &state.rooms.len())
            .field("commit_hook", &state.hook.is_some())
            .finish()
    }
}

impl Backend for MemoryBackend {
    fn load(&self, room: &RoomKey) -> BoxFuture<'_, Result<RoomSnapshot, BackendError>> {
        // Copied now, so the snapshot holds exactly the commits applied before the call.
        let snapshot = match self.lock().rooms.get(room) {
            Some((entries, alarm)) => RoomSnapshot {
                entries: entries
                    .iter()
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
                alarm: *alarm,
            },
            None => RoomSnapshot::default(),
        };
        Box::pin(std::future::ready(Ok(snapshot)))
    }

    fn commit(&self, commit: RoomCommit) -> BoxFuture<'_, Result<(), BackendError>> {
        let mut state = self.lock();
        let hook = match state.hook.clone() {
            Some(hook) => hook,
            None if !state.in_flight.contains_key(&commit.room) => {
                // Nothing to wait for: apply now, under the lock, so the commit is whole
                // and in place before `commit` returns.
                apply(&mut state.rooms, commit);
                return Box::pin(std::future::ready(Ok(())));
            }
            // The hook was cleared while this room still has commits in it: queue behind
            // them, with an always-Ok hook so there is one queued path.
            None => Arc::new(allow),
        };
        self.commit_after_hook(state, hook, commit)
    }

    fn alarms(&self) -> BoxFuture<'_, Result<Vec<(RoomKey, i64)>, BackendError>> {
        let alarms = self
            .lock()
            .rooms
            .iter()
            .filter_map(|(room, (_, alarm))| alarm.map(|at| (room.clone(), at)))
            .collect();
        Box::pin(std::future::ready(Ok(alarms)))
    }
}

impl MemoryBackend {
    /// Queues `commit` behind its room's in-flight commits, then runs `hook` and applies
    /// the commit if the hook allows. Runs on a spawned task so the commit goes ahead even
    /// if the returned future is dropped.
    fn commit_after_hook(
        &self,
        mut state: MutexGuard<'_, State>,
        hook: CommitHook,
        commit: RoomCommit,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let (applied, applied_rx) = oneshot::channel::<()>();
        let previous = state
            .in_flight
            .insert(commit.room.clone(), (ticket, applied_rx));
        drop(state);

        let shared = self.state.clone();
        let task = tokio::spawn(async move {
            if let Some((_, previous)) = previous {
                // Err only means the earlier commit's task is gone: nothing to wait for.
                let _ = previous.await;
            }
            let result = hook(&commit).await;
            let mut state = lock(&shared);
            if state
                .in_flight
                .get(&commit.room)
                .is_some_and(|(newest, _)| *newest == ticket)
            {
                state.in_flight.remove(&commit.room);
            }
            if result.is_ok() {
                apply(&mut state.rooms, commit);
            }
            drop(state);
            // Lets the room's next commit go; also sent (as a drop) if this task panics.
            drop(applied);
            result
        });
        Box::pin(async move {
            task.await.unwrap_or_else(|error| {
                Err(BackendError::new(format!(
                    "memory backend: the commit's hook panicked: {error}"
                )))
            })
        })
    }
}

/// A hook that lets every commit through at once.
fn allow(_: &RoomCommit) -> BoxFuture<'static, Result<(), BackendError>> {
    Box::pin(std::future::ready(Ok(())))
}

/// Applies a commit's mutations in order to its room.
fn apply(rooms: &mut HashMap<RoomKey, RoomData>, commit: RoomCommit) {
    let (entries, alarm) = rooms.entry(commit.room).or_default();
    for mutation in commit.mutations {
        match mutation {
            Mutation::Put(key, value) => {
                entries.insert(key, value);
            }
            Mutation::Delete(key) => {
                entries.remove(&key);
            }
            Mutation::DeleteAll => entries.clear(),
            Mutation::SetAlarm(at) => *alarm = at,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Semaphore;

    use super::super::backend::conformance;
    use super::*;

    fn backend() -> Arc<dyn Backend> {
        Arc::new(MemoryBackend::new())
    }

    /// A backend whose hook holds every commit until the test adds a permit.
    fn held_backend() -> (Arc<MemoryBackend>, Arc<Semaphore>) {
        let backend = Arc::new(MemoryBackend::new());
        let gate = Arc::new(Semaphore::new(0));
        let hook_gate = gate.clone();
        backend.set_commit_hook(Arc::new(move |_| {
            let gate = hook_gate.clone();
            Box::pin(async move {
                gate.acquire().await.expect("gate open").forget();
                Ok(())
            })
        }));
        (backend, gate)
    }

    use crate::storage::backend::conformance::{put, room_commit as commit};

    #[tokio::test]
    async fn round_trips() {
        conformance::round_trips(backend()).await;
    }

    #[tokio::test]
    async fn commit_applies_in_order_and_rooms_are_separate() {
        conformance::commit_applies_in_order_and_rooms_are_separate(backend()).await;
    }

    #[tokio::test]
    async fn unicode_keys_round_trip() {
        conformance::unicode_keys_round_trip(backend()).await;
    }

    #[tokio::test]
    async fn commits_of_a_room_apply_in_call_order() {
        conformance::commits_of_a_room_apply_in_call_order(backend()).await;
    }

    #[tokio::test]
    async fn commits_of_a_room_apply_in_call_order_through_a_hook() {
        let backend = MemoryBackend::new();
        // Earlier commits are held longer, so only the per-room queue keeps the order.
        let remaining = Arc::new(AtomicUsize::new(20));
        backend.set_commit_hook(Arc::new(move |_| {
            let delay = remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.saturating_sub(1))
                })
                .unwrap_or(0) as u64;
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok(())
            })
        }));
        conformance::commits_of_a_room_apply_in_call_order(Arc::new(backend)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loads_see_whole_commits() {
        conformance::loads_see_whole_commits(backend()).await;
        conformance::loads_see_whole_commits(Arc::new(MemoryBackend::with_commit_delay(
            Duration::from_micros(50),
        )))
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_rooms_concurrently() {
        conformance::many_rooms_concurrently(backend()).await;
        conformance::many_rooms_concurrently(Arc::new(MemoryBackend::with_commit_delay(
            Duration::from_micros(10),
        )))
        .await;
    }

    #[tokio::test]
    async fn alarms_lists_pending_alarms() {
        conformance::alarms_lists_pending_alarms(backend()).await;
    }

    #[tokio::test]
    async fn a_held_commit_is_invisible_until_released_and_holds_its_room() {
        let (backend, gate) = held_backend();
        let room = RoomKey::new("main", "held");
        let other = RoomKey::new("main", "other");

        let first = backend.commit(commit(&room, vec![put("a", "1"), put("b", "1")]));
        let second = backend.commit(commit(&room, vec![put("a", "2")]));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(backend.load(&room).await.unwrap(), RoomSnapshot::default());

        // One permit: only the first commit goes through, and it goes through whole.
        gate.add_permits(1);
        first.await.unwrap();
        let mut entries = backend.load(&room).await.unwrap().entries;
        entries.sort();
        assert_eq!(
            entries,
            vec![
                ("a".into(), Bytes::from("1")),
                ("b".into(), Bytes::from("1"))
            ]
        );

        // Another room is not held behind this one's commits.
        backend.clear_commit_hook();
        backend
            .commit(commit(&other, vec![put("x", "")]))
            .await
            .unwrap();

        // With the hook cleared, a new commit of the held room still waits its turn.
        let third = backend.commit(commit(&room, vec![put("a", "3")]));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(backend.load(&room).await.unwrap().entries.len(), 2);
        assert!(
            backend
                .load(&room)
                .await
                .unwrap()
                .entries
                .contains(&("a".into(), Bytes::from("1")))
        );
        gate.add_permits(1);
        second.await.unwrap();
        third.await.unwrap();
        let snapshot = backend.load(&room).await.unwrap();
        assert!(snapshot.entries.contains(&("a".into(), Bytes::from("3"))));
    }

    #[tokio::test]
    async fn a_failed_commit_applies_nothing_and_later_commits_go_on() {
        let backend = MemoryBackend::new();
        backend.set_commit_hook(Arc::new(|commit| {
            let fail = commit.mutations.contains(&Mutation::Delete("fail".into()));
            Box::pin(async move {
                if fail {
                    Err(BackendError::new("injected failure"))
                } else {
                    Ok(())
                }
            })
        }));
        let room = RoomKey::new("main", "failing");
        backend
            .commit(commit(&room, vec![put("kept", "1")]))
            .await
            .unwrap();
        let error = backend
            .commit(commit(
                &room,
                vec![
                    put("kept", "2"),
                    put("lost", "1"),
                    Mutation::Delete("fail".into()),
                    Mutation::SetAlarm(Some(5)),
                ],
            ))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("injected failure"), "{error}");
        backend
            .commit(commit(&room, vec![put("after", "1")]))
            .await
            .unwrap();

        let mut snapshot = backend.load(&room).await.unwrap();
        snapshot.entries.sort();
        assert_eq!(
            snapshot,
            RoomSnapshot {
                entries: vec![
                    ("after".into(), Bytes::from("1")),
                    ("kept".into(), Bytes::from("1")),
                ],
                alarm: None,
            }
        );
    }

    #[tokio::test]
    async fn a_panicking_hook_fails_the_commit_and_releases_the_room() {
        let backend = MemoryBackend::new();
        let room = RoomKey::new("main", "panics");
        backend.set_commit_hook(Arc::new(|commit| {
            let panic = commit.mutations.contains(&Mutation::Delete("panic".into()));
            Box::pin(async move {
                assert!(!panic, "hook panics on purpose");
                Ok(())
            })
        }));
        let error = backend
            .commit(commit(&room, vec![Mutation::Delete("panic".into())]))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("panicked"), "{error}");
        backend
            .commit(commit(&room, vec![put("after", "1")]))
            .await
            .unwrap();
        assert_eq!(backend.load(&room).await.unwrap().entries.len(), 1);
    }
}
