//! LiveRooms' storage in one SQLite database file: the embedded, durable default.
//!
//! # Layout
//!
//! One file holds every party's and room's storage (default [`DEFAULT_PATH`]), in WAL
//! mode, with two tables:
//!
//! - `kv (party TEXT, room TEXT, key BLOB, value BLOB)`, primary key `(party, room, key)`,
//!   `WITHOUT ROWID` so rows are stored in key order. Keys are stored as their UTF-8
//!   bytes in a BLOB, which SQLite compares with `memcmp`: the table's order is UTF-8
//!   byte order, as Durable Objects order keys.
//! - `alarms (party TEXT, room TEXT, at INTEGER)`, primary key `(party, room)`: each
//!   room's pending alarm in ms since the Unix epoch.
//!
//! `PRAGMA user_version` holds the schema version; opening a file migrates it forward
//! from any older version and refuses one written by a newer build.
//!
//! # Threads
//!
//! - One writer thread owns the only write connection. [`commit`](Backend::commit) queues
//!   the commit on a channel at once (so the channel order is the call order); the writer
//!   takes the first queued commit, then everything else queued behind it (up to 4,096
//!   commits or 65,536 mutations), and writes the whole batch, of any number of rooms, in
//!   one transaction: one disk sync for many commits (group commit). Each commit runs
//!   inside its own savepoint, so a commit that fails is rolled back alone and the rest of
//!   the batch still commits. If the transaction itself fails, every commit of the batch
//!   fails. The queue is unbounded: callers bound it by awaiting their commits.
//! - Reads ([`load`](Backend::load), [`alarms`](Backend::alarms)) run on Tokio's blocking
//!   threads, on read-only connections from a small pool; WAL lets them read beside the
//!   writer, each in one read transaction so it sees whole commits only.
//!
//! # Durability
//!
//! A commit resolves `Ok` once its transaction committed with `PRAGMA synchronous` set by
//! [`Durability`]: `Full` (the default) syncs the WAL on every commit, so a resolved commit
//! survives a power loss; `Normal` syncs only at checkpoints, so it survives a crash of the
//! process but a power loss may roll the latest commits back (the file stays consistent);
//! `Off` never syncs, so a power loss may also corrupt the file. Every level survives a
//! crash of the process, since a committed transaction is in the OS's file cache.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::types::Type;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::backend::{
    Backend, BackendError, BoxFuture, Durability, Mutation, RoomCommit, RoomKey, RoomSnapshot,
};

/// Where the database lives unless told otherwise, relative to the working directory
/// (beside `partykit dev`'s own `.partykit/state`).
pub const DEFAULT_PATH: &str = ".partykit/state.sqlite3";

/// At most this many commits go into one transaction; the rest wait for the next one.
const MAX_BATCH_COMMITS: usize = 4096;

/// A batch stops taking more commits once it holds this many mutations, so that one
/// transaction (and the memory it holds) stays bounded. A single larger commit is still
/// written, alone.
const MAX_BATCH_MUTATIONS: usize = 65_536;

/// Schema migrations: `MIGRATIONS[v]` takes a database from schema version `v` to `v + 1`.
/// The current version is `MIGRATIONS.len()`. Append, never edit: files in the wild were
/// made by the earlier entries.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE kv (
        party TEXT NOT NULL,
        room  TEXT NOT NULL,
        key   BLOB NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (party, room, key)
    ) WITHOUT ROWID;
    CREATE TABLE alarms (
        party TEXT NOT NULL,
        room  TEXT NOT NULL,
        at    INTEGER NOT NULL,
        PRIMARY KEY (party, room)
    ) WITHOUT ROWID;
"];

/// How long a connection waits for a lock held by another connection (a checkpoint, or
/// another process opening the file) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections kept open between reads; more are opened while reads overlap.
const MAX_IDLE_READERS: usize = 4;

const PUT: &str = "INSERT INTO kv (party, room, key, value) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (party, room, key) DO UPDATE SET value = excluded.value";
const DELETE: &str = "DELETE FROM kv WHERE party = ?1 AND room = ?2 AND key = ?3";
const DELETE_ALL: &str = "DELETE FROM kv WHERE party = ?1 AND room = ?2";
const SET_ALARM: &str = "INSERT INTO alarms (party, room, at) VALUES (?1, ?2, ?3)
    ON CONFLICT (party, room) DO UPDATE SET at = excluded.at";
const CLEAR_ALARM: &str = "DELETE FROM alarms WHERE party = ?1 AND room = ?2";
const LOAD_ENTRIES: &str = "SELECT key, value FROM kv WHERE party = ?1 AND room = ?2";
const LOAD_ALARM: &str = "SELECT at FROM alarms WHERE party = ?1 AND room = ?2";
const ALL_ALARMS: &str = "SELECT party, room, at FROM alarms";

/// Keeps every room's storage in one SQLite database file, durably, writing the commits
/// of many rooms together (see [`Durability`] for what each setting survives).
///
/// Open it with [`open`](Self::open) (blocking: call it at startup, or from
/// [`tokio::task::spawn_blocking`]). Reads need a Tokio runtime.
///
/// # Shutdown
///
/// [`close`](Self::close) waits for every commit queued before it to be written, then
/// closes the database; commits and reads after it fail. Dropping the backend does the
/// same, blocking the dropping thread until the queued commits are written (usually a
/// few milliseconds); in async code prefer `close().await` first.
pub struct SqliteBackend {
    path: PathBuf,
    durability: Durability,
    requests: mpsc::Sender<Request>,
    /// The writer thread, until it is joined by `close` or `drop`.
    writer: Mutex<Option<thread::JoinHandle<()>>>,
    readers: Arc<Readers>,
    /// Transactions the writer has committed: with the commit count, tells how well
    /// commits are grouped.
    transactions: Arc<AtomicU64>,
}

/// What the writer thread is asked to do.
enum Request {
    Commit(PendingCommit),
    /// Finish the commits queued before this, close the connection, answer, exit.
    Close(oneshot::Sender<()>),
}

struct PendingCommit {
    commit: RoomCommit,
    done: oneshot::Sender<Result<(), BackendError>>,
}

impl SqliteBackend {
    /// Opens (creating it and its parent directories if needed) the database at `path`,
    /// with [`Durability::Full`].
    ///
    /// # Errors
    ///
    /// If the directory cannot be created, the file cannot be opened as a SQLite database
    /// in WAL mode, or its schema is newer than this build knows. The message names the
    /// path.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BackendError> {
        Self::open_with_durability(path, Durability::Full)
    }

    /// Like [`open`](Self::open), with the given durability (see
    /// [`Durability`]).
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub fn open_with_durability(
        path: impl AsRef<Path>,
        durability: Durability,
    ) -> Result<Self, BackendError> {
        let path = path.as_ref().to_path_buf();
        let failed = |error: &dyn fmt::Display| {
            BackendError::new(format!(
                "cannot open SQLite database {}: {error}",
                path.display()
            ))
        };

        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|error| {
                failed(&format_args!("cannot create {}: {error}", parent.display()))
            })?;
        }
        let writer = open_writer(&path, durability).map_err(|error| failed(&error))?;
        // One reader now, so that a file readers cannot open fails here, not on first load.
        let reader = open_reader(&path)
            .map_err(|error| failed(&format_args!("read connection: {error}")))?;

        let (requests, queue) = mpsc::channel();
        let transactions = Arc::new(AtomicU64::new(0));
        let writer = {
            let path = path.clone();
            let transactions = transactions.clone();
            thread::Builder::new()
                .name("partykit-sqlite-writer".into())
                .spawn(move || run_writer(writer, queue, &path, &transactions))
                .map_err(|error| failed(&format_args!("cannot start the writer thread: {error}")))?
        };
        Ok(Self {
            readers: Arc::new(Readers {
                path: path.clone(),
                idle: Mutex::new(Some(vec![reader])),
            }),
            path,
            durability,
            requests,
            writer: Mutex::new(Some(writer)),
            transactions,
        })
    }

    /// The database file's path, as given to [`open`](Self::open).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability the database was opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// How many transactions the writer has run so far (each holds a batch of commits):
    /// with a count of commits, tells how well commits are being grouped.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Writes every commit queued so far, closes the database, and waits for the writer
    /// thread to exit. Later commits and reads fail; dropping the backend afterwards does
    /// nothing more. A second call returns at once.
    pub async fn close(&self) {
        self.readers.close();
        let Some(writer) = lock(&self.writer).take() else {
            return;
        };
        let (done, closed) = oneshot::channel();
        if self.requests.send(Request::Close(done)).is_ok() {
            // Err: the writer is already gone (it panicked); joining tells.
            let _ = closed.await;
        }
        // The writer has answered and is returning, so this join is short.
        let joined = tokio::task::spawn_blocking(move || writer.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!(path = %self.path.display(), "the SQLite writer thread panicked");
        }
    }

    fn closed_error(&self) -> BackendError {
        BackendError::new(format!(
            "SQLite database {} is closed (or its writer thread failed)",
            self.path.display()
        ))
    }
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        self.readers.close();
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            let (done, _) = oneshot::channel();
            let _ = self.requests.send(Request::Close(done));
            // Waits for the commits queued before the drop: they were promised.
            if writer.join().is_err() {
                tracing::error!(path = %self.path.display(), "the SQLite writer thread panicked");
            }
        }
    }
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl Backend for SqliteBackend {
    fn load(&self, room: &RoomKey) -> BoxFuture<'_, Result<RoomSnapshot, BackendError>> {
        let room = room.clone();
        self.read(move |conn| load_room(conn, &room))
    }

    fn commit(&self, commit: RoomCommit) -> BoxFuture<'_, Result<(), BackendError>> {
        // Queued now rather than when first polled: the queue's order is then the call
        // order, and the commit goes ahead even if the future is dropped.
        let (done, outcome) = oneshot::channel();
        let queued = self
            .requests
            .send(Request::Commit(PendingCommit { commit, done }))
            .is_ok();
        Box::pin(async move {
            if !queued {
                return Err(self.closed_error());
            }
            // A dropped sender means the writer exited without writing this commit.
            outcome.await.unwrap_or_else(|_| Err(self.closed_error()))
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(SqliteBackend::close(self))
    }

    fn alarms(&self) -> BoxFuture<'_, Result<Vec<(RoomKey, i64)>, BackendError>> {
        self.read(all_alarms)
    }
}

impl SqliteBackend {
    /// Runs `read` on a pooled read connection on a blocking thread.
    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, BackendError>> {
        let readers = self.readers.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || readers.with_connection(read))
                .await
                .unwrap_or_else(|error| {
                    Err(BackendError::new(format!(
                        "SQLite read of {} failed: {error}",
                        self.path.display()
                    )))
                })
        })
    }
}

/// Read-only connections, reused between reads; `None` once closed.
struct Readers {
    path: PathBuf,
    idle: Mutex<Option<Vec<Connection>>>,
}

impl Readers {
    fn with_connection<T>(
        &self,
        read: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, BackendError> {
        let error = |error: rusqlite::Error| {
            BackendError::new(format!(
                "SQLite read of {} failed: {error}",
                self.path.display()
            ))
        };
        let idle = lock(&self.idle).as_mut().map(Vec::pop);
        let mut conn = match idle {
            None => {
                return Err(BackendError::new(format!(
                    "SQLite database {} is closed",
                    self.path.display()
                )));
            }
            Some(Some(conn)) => conn,
            Some(None) => open_reader(&self.path).map_err(error)?,
        };
        let result = read(&mut conn).map_err(error);
        if let Some(idle) = lock(&self.idle).as_mut()
            && idle.len() < MAX_IDLE_READERS
        {
            idle.push(conn);
        }
        result
    }

    fn close(&self) {
        lock(&self.idle).take();
    }
}

// Nothing is left half-done under these locks, so a poisoned one is still good to use.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Opens the write connection: WAL, the durability's `synchronous`, schema migrated.
fn open_writer(path: &Path, durability: Durability) -> Result<Connection, String> {
    let mut conn = Connection::open(path).map_err(|e| e.to_string())?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| e.to_string())?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "cannot switch to WAL mode (journal mode stays {mode})"
        ));
    }
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
        Durability::Off => "OFF",
    };
    // On macOS a plain fsync does not flush the drive's cache; F_FULLFSYNC does. These
    // pragmas are ignored on other systems.
    let full_fsync = durability == Durability::Full;
    conn.pragma_update(None, "synchronous", synchronous)
        .and_then(|()| conn.pragma_update(None, "fullfsync", full_fsync))
        .and_then(|()| conn.pragma_update(None, "checkpoint_fullfsync", full_fsync))
        .map_err(|e| e.to_string())?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Brings the schema to the current version, in one transaction.
fn migrate(conn: &mut Connection) -> Result<(), String> {
    let current = MIGRATIONS.len() as i64;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| e.to_string())?;
    if version > current {
        return Err(format!(
            "its schema version is {version} but this build knows versions up to {current}: \
             it was written by a newer partykit-rs"
        ));
    }
    let Ok(version) = usize::try_from(version) else {
        return Err(format!(
            "its schema version {version} is not one partykit-rs writes"
        ));
    };
    for (from, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(migration)
            .map_err(|e| format!("migrating the schema from version {from}: {e}"))?;
    }
    tx.pragma_update(None, "user_version", current)
        .and_then(|()| tx.commit())
        .map_err(|e| e.to_string())
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// The writer thread: takes batches of commits off the queue and writes each in one
/// transaction, until told to close or the backend is gone.
fn run_writer(
    conn: Connection,
    queue: mpsc::Receiver<Request>,
    path: &Path,
    transactions: &AtomicU64,
) {
    let mut batch = Vec::new();
    // Blocks for the first request of each batch; Err once the backend is gone.
    while let Ok(first) = queue.recv() {
        let mut close = None;
        match first {
            Request::Commit(pending) => batch.push(pending),
            Request::Close(done) => close = Some(done),
        }
        let mut mutations = batch.first().map_or(0, |p| p.commit.mutations.len());
        // Take whatever else is already queued, without waiting for more.
        while close.is_none() && batch.len() < MAX_BATCH_COMMITS && mutations < MAX_BATCH_MUTATIONS
        {
            match queue.try_recv() {
                Ok(Request::Commit(pending)) => {
                    mutations += pending.commit.mutations.len();
                    batch.push(pending);
                }
                Ok(Request::Close(done)) => close = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            // Counted before the commits are answered, so that whoever sees an answer
            // also sees the transaction counted.
            transactions.fetch_add(1, Ordering::Relaxed);
            write_batch(&conn, &mut batch, path);
        }
        if let Some(done) = close {
            // Move the WAL into the database file, so that what is left on disk is one
            // self-contained file.
            if let Err(error) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                tracing::warn!(path = %path.display(), %error, "checkpointing SQLite database");
            }
            if let Err((_, error)) = conn.close() {
                tracing::warn!(path = %path.display(), %error, "closing SQLite database");
            }
            let _ = done.send(());
            return;
        }
    }
}

/// Writes `batch` in one transaction and tells each commit's caller how it went,
/// leaving `batch` empty.
fn write_batch(conn: &Connection, batch: &mut Vec<PendingCommit>, path: &Path) {
    let outcomes = match write_transaction(conn, batch, path) {
        Ok(outcomes) => outcomes,
        Err(error) => {
            // Nothing of the batch is written; leave no transaction open for the next.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            let error = BackendError::new(format!(
                "SQLite commit to {} failed: {error}",
                path.display()
            ));
            tracing::error!(commits = batch.len(), %error, "SQLite batch failed");
            vec![Err(error); batch.len()]
        }
    };
    for (pending, outcome) in batch.drain(..).zip(outcomes) {
        // Err: the caller stopped waiting; the commit stands regardless.
        let _ = pending.done.send(outcome);
    }
}

/// Runs one transaction over `batch`: each commit in a savepoint, rolled back alone if it
/// fails. `Err` if the transaction as a whole failed (nothing written).
fn write_transaction(
    conn: &Connection,
    batch: &[PendingCommit],
    path: &Path,
) -> rusqlite::Result<Vec<Result<(), BackendError>>> {
    run(conn, "BEGIN IMMEDIATE")?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for pending in batch {
        run(conn, "SAVEPOINT room_commit")?;
        match apply_commit(conn, &pending.commit) {
            Ok(()) => {
                run(conn, "RELEASE room_commit")?;
                outcomes.push(Ok(()));
            }
            // After some errors (I/O, disk full, out of memory) SQLite has already rolled
            // the whole transaction back, and the batch's earlier commits with it.
            Err(error) if conn.is_autocommit() => return Err(error),
            Err(error) => {
                run(conn, "ROLLBACK TO room_commit")?;
                run(conn, "RELEASE room_commit")?;
                tracing::warn!(room = %pending.commit.room, %error, "SQLite commit failed");
                outcomes.push(Err(BackendError::new(format!(
                    "SQLite commit of room {} to {} failed: {error}",
                    pending.commit.room,
                    path.display()
                ))));
            }
        }
    }
    run(conn, "COMMIT")?;
    Ok(outcomes)
}

/// Runs a parameterless statement through the statement cache.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn apply_commit(conn: &Connection, commit: &RoomCommit) -> rusqlite::Result<()> {
    let party: &str = &commit.room.party;
    let room: &str = &commit.room.room;
    for mutation in &commit.mutations {
        match mutation {
            Mutation::Put(key, value) => {
                conn.prepare_cached(PUT)?.execute(params![
                    party,
                    room,
                    key.as_bytes(),
                    value.as_ref()
                ])?;
            }
            Mutation::Delete(key) => {
                conn.prepare_cached(DELETE)?
                    .execute(params![party, room, key.as_bytes()])?;
            }
            Mutation::DeleteAll => {
                conn.prepare_cached(DELETE_ALL)?
                    .execute(params![party, room])?;
            }
            Mutation::SetAlarm(Some(at)) => {
                conn.prepare_cached(SET_ALARM)?
                    .execute(params![party, room, at])?;
            }
            Mutation::SetAlarm(None) => {
                conn.prepare_cached(CLEAR_ALARM)?
                    .execute(params![party, room])?;
            }
        }
    }
    Ok(())
}

/// Reads a room's keys and alarm in one read transaction, so both come from the same
/// committed state.
fn load_room(conn: &mut Connection, room: &RoomKey) -> rusqlite::Result<RoomSnapshot> {
    let tx = conn.transaction()?;
    let party: &str = &room.party;
    let id: &str = &room.room;
    let entries = tx
        .prepare_cached(LOAD_ENTRIES)?
        .query_map(params![party, id], |row| {
            let key = String::from_utf8(row.get(0)?)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, Type::Blob, e.into()))?;
            let value: Vec<u8> = row.get(1)?;
            Ok((key, Bytes::from(value)))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let alarm = tx
        .prepare_cached(LOAD_ALARM)?
        .query_map(params![party, id], |row| row.get(0))?
        .next()
        .transpose()?;
    tx.commit()?;
    Ok(RoomSnapshot { entries, alarm })
}

fn all_alarms(conn: &mut Connection) -> rusqlite::Result<Vec<(RoomKey, i64)>> {
    conn.prepare_cached(ALL_ALARMS)?
        .query_map([], |row| {
            let party: String = row.get(0)?;
            let room: String = row.get(1)?;
            Ok((RoomKey::new(party, room), row.get(2)?))
        })?
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Instant;

    use super::super::backend::conformance;
    use super::*;

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let base = std::env::var_os("PARTYKIT_TEST_DIR")
                .map_or_else(std::env::temp_dir, PathBuf::from);
            let dir = base.join(format!(
                "partykit-sqlite-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        fn db(&self) -> PathBuf {
            self.0.join("nested/dir/state.sqlite3")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    use crate::storage::backend::conformance::{put, room_commit as commit};

    /// Runs a conformance check against a fresh database.
    macro_rules! conformance_test {
        ($name:ident) => {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let dir = TempDir::new();
                let backend = Arc::new(SqliteBackend::open(dir.db()).unwrap());
                conformance::$name(backend.clone()).await;
                backend.close().await;
            }
        };
    }

    conformance_test!(round_trips);
    conformance_test!(commit_applies_in_order_and_rooms_are_separate);
    conformance_test!(unicode_keys_round_trip);
    conformance_test!(commits_of_a_room_apply_in_call_order);
    conformance_test!(loads_see_whole_commits);
    conformance_test!(many_rooms_concurrently);
    conformance_test!(alarms_lists_pending_alarms);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_survives_close_and_reopen() {
        let dir = TempDir::new();
        let room = RoomKey::new("main", "persistent");
        let other = RoomKey::new("other", "\u{10FFFF}");
        let backend = SqliteBackend::open(dir.db()).unwrap();
        backend
            .commit(commit(
                &room,
                vec![
                    put("a", "1"),
                    put("\u{10FFFF}", "max"),
                    Mutation::SetAlarm(Some(42)),
                ],
            ))
            .await
            .unwrap();
        backend
            .commit(commit(&other, vec![put("k", "v")]))
            .await
            .unwrap();
        backend.close().await;
        assert!(backend.load(&room).await.is_err(), "closed backend reads");
        assert!(
            backend.commit(commit(&room, vec![])).await.is_err(),
            "closed backend commits"
        );
        drop(backend);

        let backend = SqliteBackend::open(dir.db()).unwrap();
        let mut snapshot = backend.load(&room).await.unwrap();
        snapshot.entries.sort();
        assert_eq!(
            snapshot,
            RoomSnapshot {
                entries: vec![
                    ("a".into(), Bytes::from("1")),
                    ("\u{10FFFF}".into(), Bytes::from("max")),
                ],
                alarm: Some(42),
            }
        );
        assert_eq!(backend.load(&other).await.unwrap().entries.len(), 1);
        assert_eq!(backend.alarms().await.unwrap(), vec![(room, 42)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_writes_queued_commits() {
        let dir = TempDir::new();
        let room = RoomKey::new("main", "dropped");
        let backend = SqliteBackend::open_with_durability(dir.db(), Durability::Normal).unwrap();
        // Queued, never awaited: dropping the backend must still write them all.
        for i in 0..200 {
            drop(backend.commit(commit(&room, vec![put(&format!("k{i}"), "v")])));
        }
        drop(backend);

        let backend = SqliteBackend::open(dir.db()).unwrap();
        assert_eq!(backend.load(&room).await.unwrap().entries.len(), 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_durability_opens_and_writes() {
        for durability in [Durability::Full, Durability::Normal, Durability::Off] {
            let dir = TempDir::new();
            let backend = SqliteBackend::open_with_durability(dir.db(), durability).unwrap();
            assert_eq!(backend.durability(), durability);
            let room = RoomKey::new("main", "r");
            backend
                .commit(commit(&room, vec![put("k", "v")]))
                .await
                .unwrap();
            assert_eq!(backend.load(&room).await.unwrap().entries.len(), 1);
        }
    }

    /// Many commits queued while the writer is busy go into one transaction, and one of
    /// them failing (a trigger rejects its key) rolls back that commit only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_commit_does_not_fail_its_batch() {
        let dir = TempDir::new();
        let backend = SqliteBackend::open(dir.db()).unwrap();
        let blocker = Connection::open(dir.db()).unwrap();
        blocker
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON kv WHEN NEW.key = CAST('poison' AS BLOB)
                 BEGIN SELECT RAISE(ABORT, 'poisoned key'); END;",
            )
            .unwrap();

        // Hold the database's write lock so the writer stalls in its first batch while
        // the test's commits queue up behind it.
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let first = backend.commit(commit(&RoomKey::new("main", "first"), vec![put("k", "v")]));
        tokio::time::sleep(Duration::from_millis(100)).await;

        let rooms: Vec<_> = (0..50)
            .map(|i| RoomKey::new("main", format!("room-{i}")))
            .collect();
        let pending: Vec<_> = rooms
            .iter()
            .enumerate()
            .map(|(i, room)| {
                let mut mutations = vec![put("a", "1"), Mutation::SetAlarm(Some(i as i64))];
                if i == 25 {
                    mutations.push(put("poison", "x"));
                }
                mutations.push(put("b", "1"));
                backend.commit(commit(room, mutations))
            })
            .collect();
        blocker.execute_batch("COMMIT").unwrap();

        first.await.unwrap();
        let mut outcomes = Vec::new();
        for outcome in pending {
            outcomes.push(outcome.await);
        }
        // Normally the stalled first commit alone, then one transaction for all 50 queued
        // behind it; however the 51 split, the failing commit shared its transaction.
        assert!(
            backend.transactions() <= 2,
            "{} transactions",
            backend.transactions()
        );

        for (i, (room, outcome)) in rooms.iter().zip(outcomes).enumerate() {
            let snapshot = backend.load(room).await.unwrap();
            if i == 25 {
                let error = outcome.unwrap_err().to_string();
                assert!(error.contains("poisoned key"), "{error}");
                assert!(error.contains("main/room-25"), "{error}");
                assert_eq!(snapshot, RoomSnapshot::default(), "rolled back whole");
            } else {
                outcome.unwrap();
                assert_eq!(snapshot.entries.len(), 2, "room {i}");
                assert_eq!(snapshot.alarm, Some(i as i64));
            }
        }
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = TempDir::new();
        drop(SqliteBackend::open(dir.db()).unwrap());
        let conn = Connection::open(dir.db()).unwrap();
        conn.pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
            .unwrap();
        drop(conn);
        let error = SqliteBackend::open(dir.db()).unwrap_err().to_string();
        assert!(error.contains("newer partykit-rs"), "{error}");
        assert!(error.contains(&dir.db().display().to_string()), "{error}");
    }

    #[test]
    fn an_older_schema_is_migrated() {
        let dir = TempDir::new();
        fs::create_dir_all(dir.db().parent().unwrap()).unwrap();
        // An empty file is schema version 0.
        drop(Connection::open(dir.db()).unwrap());
        drop(SqliteBackend::open(dir.db()).unwrap());
        let conn = Connection::open(dir.db()).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn open_errors_name_the_path() {
        let dir = TempDir::new();
        let file = dir.0.join("a-file");
        fs::write(&file, "not a directory").unwrap();
        let path = file.join("state.sqlite3");
        let error = SqliteBackend::open(&path).unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");

        let garbage = dir.0.join("garbage.sqlite3");
        fs::write(&garbage, vec![b'x'; 8192]).unwrap();
        let error = SqliteBackend::open(&garbage).unwrap_err().to_string();
        assert!(error.contains(&garbage.display().to_string()), "{error}");
    }

    #[test]
    fn keys_are_ordered_by_utf8_bytes_in_the_table() {
        let dir = TempDir::new();
        let room = RoomKey::new("main", "order");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let keys = ["\u{10FFFF}", "\u{FFFF}", "é", "z", "Z", "a", "", "\u{0}"];
        runtime.block_on(async {
            let backend = SqliteBackend::open(dir.db()).unwrap();
            let mutations = keys.iter().map(|k| put(k, "")).collect();
            backend.commit(commit(&room, mutations)).await.unwrap();
        });
        let conn = Connection::open(dir.db()).unwrap();
        let stored: Vec<Vec<u8>> = conn
            .prepare("SELECT key FROM kv WHERE party = 'main' AND room = 'order' ORDER BY key")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let mut expected: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        expected.sort();
        assert_eq!(stored, expected);
    }

    /// Prints durable commits per second (not a pass/fail check). Run with
    /// `cargo test -p partykit-runtime --release -- --ignored --nocapture measure_`;
    /// set `PARTYKIT_TEST_DIR` to measure another disk than the temp dir's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement, prints figures"]
    async fn measure_durable_commits_per_second() {
        const SEQUENTIAL: usize = 1000;
        const ROOMS: usize = 100;
        const PER_ROOM: usize = 100;
        let value = Bytes::from(vec![7u8; 100]);

        let dir = TempDir::new();
        let backend = Arc::new(SqliteBackend::open(dir.db()).unwrap());
        println!("database: {}", backend.path().display());

        let room = RoomKey::new("main", "sequential");
        let start = Instant::now();
        for i in 0..SEQUENTIAL {
            let mutations = vec![Mutation::Put(format!("k{i}"), value.clone())];
            backend.commit(commit(&room, mutations)).await.unwrap();
        }
        let elapsed = start.elapsed();
        println!(
            "1 room, sequential, Full: {:.0} commits/s ({SEQUENTIAL} in {elapsed:.2?})",
            SEQUENTIAL as f64 / elapsed.as_secs_f64()
        );

        let transactions_before = backend.transactions();
        let start = Instant::now();
        let tasks: Vec<_> = (0..ROOMS)
            .map(|r| {
                let backend = backend.clone();
                let value = value.clone();
                tokio::spawn(async move {
                    let room = RoomKey::new("main", format!("room-{r}"));
                    for i in 0..PER_ROOM {
                        let mutations = vec![Mutation::Put(format!("k{i}"), value.clone())];
                        backend.commit(commit(&room, mutations)).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = start.elapsed();
        let transactions = backend.transactions() - transactions_before;
        let commits = ROOMS * PER_ROOM;
        println!(
            "{ROOMS} rooms, concurrent, Full: {:.0} commits/s ({commits} in {elapsed:.2?}, \
             {transactions} transactions, {:.1} commits each)",
            commits as f64 / elapsed.as_secs_f64(),
            commits as f64 / transactions as f64
        );
        backend.close().await;

        // Baseline: plain rusqlite, WAL + synchronous=FULL, one transaction per put.
        let path = dir.0.join("baseline.sqlite3");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.execute_batch("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID")
            .unwrap();
        let start = Instant::now();
        for i in 0..SEQUENTIAL {
            let tx = conn.transaction().unwrap();
            tx.prepare_cached("INSERT OR REPLACE INTO kv VALUES (?1, ?2)")
                .unwrap()
                .execute(params![format!("k{i}"), value.as_ref()])
                .unwrap();
            tx.commit().unwrap();
        }
        let elapsed = start.elapsed();
        println!(
            "baseline rusqlite, one transaction per put, FULL: {:.0} commits/s \
             ({SEQUENTIAL} in {elapsed:.2?})",
            SEQUENTIAL as f64 / elapsed.as_secs_f64()
        );
    }
}
