//! Rooms' storage in PostgreSQL: one database shared by every node of a cluster, or by a
//! single server on a managed PostgreSQL.
//!
//! # Layout
//!
//! [`PostgresBackend::connect`] brings the schema to the current version with versioned
//! migrations, in one transaction that holds an advisory lock (`pg_advisory_xact_lock`),
//! so nodes starting at once migrate once. `partykit_schema (version int)` records the
//! version; a database with a newer version than this build knows is refused. The tables:
//!
//! | table | columns | what |
//! |---|---|---|
//! | `partykit_kv` | `party text, room text, key bytea, value bytea`, primary key `(party, room, key)` | every room's keys and values |
//! | `partykit_alarms` | `party text, room text, at bigint`, primary key `(party, room)`, index on `at` | each room's pending alarm, ms since the Unix epoch |
//! | `partykit_room_leases` | `party text, room text, node_id text, epoch bigint, expires_at timestamptz`, primary key `(party, room)`, index on `node_id` | cluster mode: which node owns a room, and its fencing epoch |
//! | `partykit_nodes` | `id text` (primary key), `internal_addr text, started_at timestamptz, heartbeat_at timestamptz` | cluster mode: node membership |
//! | `partykit_cron_ticks` | `name text, tick bigint, node_id text`, primary key `(name, tick)` | cluster mode: which node ran a cron tick |
//!
//! Keys are stored as their UTF-8 bytes in `bytea`, which PostgreSQL orders byte by byte,
//! as Durable Objects order keys, and which holds any key (PostgreSQL `text` cannot hold
//! NUL). Party names and room ids are `text`: a room id with a NUL character cannot be
//! stored, and its commits and loads fail with an error saying so.
//!
//! # Group commit
//!
//! [`commit`](Backend::commit) queues the commit at once, on one of a few writer *lanes*
//! (4 by default), chosen by a hash of the party and room: one room's commits always take
//! the same lane, in call order, while the lanes write in parallel on connections of
//! their own. A lane takes everything queued on it (up to 1,024 commits or 65,536
//! mutations) and writes it in one transaction:
//!
//! 1. `BEGIN`, and, for commits made in cluster mode ([`RoomCommit::lease`] set), one
//!    `SELECT … FROM partykit_room_leases … FOR KEY SHARE` of their rooms' leases. A node
//!    that takes a room over locks its lease row `FOR UPDATE` first, which waits for this
//!    lock: the takeover cannot commit until this transaction has ended, so the new owner
//!    loads every write committed under the old epoch. The owner's own renewals (`UPDATE`
//!    of `expires_at` only) do not conflict with it, so they never wait behind commits. A
//!    commit whose room's lease has another epoch (or no lease row) fails
//!    [`fenced`](BackendError::fenced) and is not written.
//! 2. Each other commit inside its own savepoint, reduced first to its net effect (a
//!    `DeleteAll`, then one final value or deletion per key, then the last alarm change)
//!    and written with array parameters, so a commit is at most three statements whatever
//!    its size. A commit that fails is rolled back to its savepoint alone; the rest of the
//!    batch goes on.
//! 3. `COMMIT`; then every commit of the batch resolves.
//!
//! The statements are prepared once per connection and pipelined: a batch costs three
//! round trips to the database (two without leases), however many commits it holds. The
//! lane queues are not bounded here: callers bound them by awaiting their commits (the
//! server's committers do).
//!
//! # Durability
//!
//! A commit resolves `Ok` once PostgreSQL reported its transaction committed. With
//! [`Durability::Full`] (the default) that is with `synchronous_commit` as the server is
//! configured (on, unless changed): the commit is flushed to the server's disk (and to
//! synchronous standbys, if any). With [`Durability::Normal`] or [`Durability::Off`] the
//! writer's transactions run with `SET LOCAL synchronous_commit = off`: a crash of the
//! database server may lose the latest commits (the database stays consistent); a crash
//! of this process loses nothing that resolved.
//!
//! # Errors
//!
//! - [`BackendError::unavailable`]: no connection could be had in time (the pool waits,
//!   connects and checks connections for at most 5 s each), the connection closed or
//!   failed (I/O), the server is shutting down, or a commit, load or listing did not finish
//!   within 10 s. A commit reported unavailable may or may not have been written; it is
//!   reported failed, which the server treats as not written (it drops the output waiting
//!   for it and reloads the room).
//! - [`BackendError::fenced`]: the room's lease has moved on (cluster mode).
//! - [`BackendError::new`]: any other database error (a NUL in a room id, a constraint,
//!   permissions, a bad password).
//!
//! The pool reconnects by itself once the database is back: nothing needs rebuilding.
//!
//! # Limits
//!
//! - No TLS: connections are made with `NoTls`, so the database must be reached over
//!   loopback or a private network you trust. A URL that asks for `sslmode=require`
//!   fails to connect.
//! - At most [`pool_size`](PostgresBuilder::pool_size) connections (16 by default), shared
//!   by the writer lanes (one each while writing), loads, and cluster mode.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, Transaction,
};
use futures_util::future::{join, join_all};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::backend::{
    Backend, BackendError, BoxFuture, Durability, Mutation, RoomCommit, RoomKey, RoomSnapshot,
};

/// Connections in the pool unless told otherwise.
const DEFAULT_POOL_SIZE: usize = 16;

/// Writer lanes unless told otherwise.
const DEFAULT_LANES: usize = 4;

/// How long a transaction of ours may wait idle for its client before the database ends
/// it; see [`PostgresBuilder::idle_transaction_timeout`].
const DEFAULT_IDLE_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many commits go into one transaction; the rest wait for the next one.
const MAX_BATCH_COMMITS: usize = 1024;

/// A batch stops taking more commits once it holds this many mutations, so that one
/// transaction (and the memory it holds) stays bounded. A single larger commit is still
/// written, alone.
const MAX_BATCH_MUTATIONS: usize = 65_536;

/// How long the pool waits for a free connection, for a new connection, and for the
/// check of an idle one.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a batch's transaction, a load, a listing of alarms or the migrations may
/// take before they are reported unavailable.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// The advisory lock key that serializes migrations ("partykit" in ASCII).
const MIGRATION_LOCK: i64 = 0x7061_7274_796b_6974;

/// Schema migrations: `MIGRATIONS[v]` takes a database from schema version `v` to `v + 1`.
/// The current version is `MIGRATIONS.len()`. Append, never edit: databases in the wild
/// were made by the earlier entries.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE partykit_kv (
        party text NOT NULL,
        room  text NOT NULL,
        key   bytea NOT NULL,
        value bytea NOT NULL,
        PRIMARY KEY (party, room, key)
    );
    CREATE TABLE partykit_alarms (
        party text NOT NULL,
        room  text NOT NULL,
        at    bigint NOT NULL,
        PRIMARY KEY (party, room)
    );
    CREATE INDEX partykit_alarms_at ON partykit_alarms (at);
    CREATE TABLE partykit_room_leases (
        party      text NOT NULL,
        room       text NOT NULL,
        node_id    text,
        epoch      bigint NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (party, room)
    );
    CREATE INDEX partykit_room_leases_node_id ON partykit_room_leases (node_id);
    CREATE TABLE partykit_nodes (
        id            text PRIMARY KEY,
        internal_addr text NOT NULL,
        started_at    timestamptz NOT NULL DEFAULT now(),
        heartbeat_at  timestamptz NOT NULL
    );
    CREATE TABLE partykit_cron_ticks (
        name    text NOT NULL,
        tick    bigint NOT NULL,
        node_id text NOT NULL,
        PRIMARY KEY (name, tick)
    );
"];

const PUTS: &str = "INSERT INTO partykit_kv (party, room, key, value)
    SELECT $1, $2, k, v FROM unnest($3::bytea[], $4::bytea[]) AS t (k, v)
    ON CONFLICT (party, room, key) DO UPDATE SET value = excluded.value";
const DELETES: &str =
    "DELETE FROM partykit_kv WHERE party = $1 AND room = $2 AND key = ANY($3::bytea[])";
const DELETE_ALL: &str = "DELETE FROM partykit_kv WHERE party = $1 AND room = $2";
const SET_ALARM: &str = "INSERT INTO partykit_alarms (party, room, at) VALUES ($1, $2, $3)
    ON CONFLICT (party, room) DO UPDATE SET at = excluded.at";
const CLEAR_ALARM: &str = "DELETE FROM partykit_alarms WHERE party = $1 AND room = $2";
const LEASES: &str = "SELECT party, room, epoch FROM partykit_room_leases
    WHERE (party, room) IN (SELECT p, r FROM unnest($1::text[], $2::text[]) AS t (p, r))
    FOR KEY SHARE";
/// One statement, so both parts come from the same snapshot: whole commits only.
const LOAD: &str = "SELECT key, value, NULL::bigint FROM partykit_kv
        WHERE party = $1 AND room = $2
    UNION ALL
    SELECT NULL, NULL, at FROM partykit_alarms WHERE party = $1 AND room = $2";
const ALL_ALARMS: &str = "SELECT party, room, at FROM partykit_alarms";

/// Keeps every room's storage in a PostgreSQL database, writing the commits of many rooms
/// together in one transaction (group commit), each in a savepoint of its own.
///
/// - **Schema**: tables `partykit_kv` (keys as `bytea`, ordered by bytes) and
///   `partykit_alarms`, plus cluster mode's `partykit_room_leases`, `partykit_nodes` and
///   `partykit_cron_ticks`; versioned migrations run at [`connect`](Self::connect),
///   once even when several nodes start together. A database migrated by a newer build is
///   refused.
/// - **Writers**: commits are queued at once on one of a few writer lanes (4 by default)
///   by room, so one room's commits apply in call order while lanes write in parallel;
///   a lane writes everything queued on it (up to 1,024 commits) in one transaction.
/// - **Durability**: [`Durability::Full`] (the default) keeps the server's
///   `synchronous_commit` (on unless configured otherwise): a resolved commit is on the
///   database server's disk. `Normal` and `Off` turn it off for the writer's
///   transactions: a crash of the database server may lose the latest commits.
/// - **Errors**: [`BackendError::is_unavailable`] when no connection can be had within
///   5 s, the connection fails, or an operation takes over 10 s (a commit reported so may
///   or may not have been written); [`BackendError::is_fenced`] when the room's lease
///   moved on (cluster mode); a plain error otherwise (e.g. a room id with a NUL
///   character, which PostgreSQL text cannot hold). The pool reconnects by itself when
///   the database is back.
/// - **Limits**: no TLS (`NoTls`): reach the database over loopback or a private network
///   you trust. At most 16 connections by default
///   ([`PostgresBuilder::pool_size`]).
///
/// ```no_run
/// use partykit_runtime::Server;
/// use partykit_runtime::storage::PostgresBackend;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let url = "postgres://partykit@127.0.0.1:5432/partykit";
/// let server = Server::new().storage(PostgresBackend::connect(url).await?);
/// # let _ = server;
/// # Ok(())
/// # }
/// ```
///
/// # Shutdown
///
/// [`close`](Backend::close) writes every commit queued before it, ends the writer lanes
/// and closes the pool; commits and reads after it fail. Dropping the backend without
/// `close` ends the lanes at once: commits still queued then fail (none is half-written).
pub struct PostgresBackend {
    shared: Arc<Shared>,
    /// One queue per writer lane; a room's lane is `lane_of(room)`.
    lanes: Vec<mpsc::UnboundedSender<Request>>,
    /// The lane tasks, until `close` joins them or `drop` aborts them.
    tasks: Mutex<Option<Vec<JoinHandle<()>>>>,
}

/// What the lanes share.
struct Shared {
    pool: Pool,
    /// The URL with its password hidden, for messages.
    url: String,
    durability: Durability,
    /// Transactions the lanes have committed: with a count of commits, tells how well
    /// commits are grouped.
    transactions: AtomicU64,
}

/// What a writer lane is asked to do.
enum Request {
    Commit(PendingCommit),
    /// Write the commits queued before this, then exit.
    Close,
}

struct PendingCommit {
    commit: RoomCommit,
    done: oneshot::Sender<Result<(), BackendError>>,
}

/// Options of a [`PostgresBackend`], from [`PostgresBackend::builder`].
#[derive(Clone)]
pub struct PostgresBuilder {
    url: String,
    pool_size: usize,
    lanes: usize,
    durability: Durability,
    idle_transaction_timeout: Duration,
}

impl fmt::Debug for PostgresBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBuilder")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("lanes", &self.lanes)
            .field("durability", &self.durability)
            .field("idle_transaction_timeout", &self.idle_transaction_timeout)
            .finish()
    }
}

impl PostgresBuilder {
    /// The most connections the pool opens (16 by default). Each writer lane holds one
    /// while it writes; loads (and cluster mode) use the rest. At least one more than
    /// the number of [`lanes`](Self::lanes) is sensible.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How many writer lanes write in parallel, each one transaction at a time (4 by
    /// default). One room always takes the same lane.
    pub fn lanes(mut self, lanes: usize) -> Self {
        self.lanes = lanes;
        self
    }

    /// What a resolved commit survives ([`Durability::Full`] by default): `Full` keeps
    /// the server's `synchronous_commit` (on, unless configured otherwise); `Normal` and
    /// `Off` turn it off for the writer's transactions.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long the database lets one of this backend's transactions sit idle, waiting
    /// for its client, before it ends the session and rolls the transaction back (5 s by
    /// default; PostgreSQL's `idle_in_transaction_session_timeout`, set on every pooled
    /// connection).
    ///
    /// A writer holds row locks (in cluster mode, its rooms' lease rows) between the
    /// round trips of a transaction. A process that is paused there (a stop signal, a
    /// long pause of the machine, a partition) would otherwise keep those locks until it
    /// resumes, and no other node could take its rooms over. Its commits then fail,
    /// unacknowledged. Cluster mode sets half the lease TTL.
    pub fn idle_transaction_timeout(mut self, timeout: Duration) -> Self {
        self.idle_transaction_timeout = timeout;
        self
    }

    /// Connects: parses the URL, builds the pool, applies the migrations and starts the
    /// writer lanes. Needs a Tokio runtime.
    ///
    /// # Errors
    ///
    /// If the URL is not a PostgreSQL connection string, the pool size or lane count is
    /// zero, the database cannot be reached ([`is_unavailable`](BackendError::is_unavailable)),
    /// or its schema cannot be migrated or is newer than this build knows. The message
    /// names the URL, without its password.
    pub async fn connect(self) -> Result<PostgresBackend, BackendError> {
        let url = redact(&self.url);
        let mut config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|error| BackendError::new(format!("invalid PostgreSQL URL {url}: {error}")))?;
        if self.pool_size == 0 || self.lanes == 0 {
            return Err(BackendError::new(format!(
                "PostgreSQL backend for {url}: the pool size and the lane count must be at \
                 least 1 (got {} and {})",
                self.pool_size, self.lanes
            )));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("partykit");
        }
        let idle = format!(
            "-c idle_in_transaction_session_timeout={}",
            self.idle_transaction_timeout.as_millis().max(1)
        );
        let options = match config.get_options() {
            Some(given) if !given.is_empty() => format!("{given} {idle}"),
            _ => idle,
        };
        config.options(&options);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A closed connection is noticed without a round trip; any other fault
                // shows on use and is reported then.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|error| {
                BackendError::new(format!("PostgreSQL pool for {url} failed: {error}"))
            })?;

        match tokio::time::timeout(OPERATION_TIMEOUT, migrate(&pool)).await {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => {
                pool.close();
                return Err(failure.into_error(&format_args!("PostgreSQL database {url}")));
            }
            Err(_) => {
                pool.close();
                return Err(BackendError::unavailable(format!(
                    "PostgreSQL database {url}: migrating the schema took longer than \
                     {OPERATION_TIMEOUT:?}"
                )));
            }
        }

        let shared = Arc::new(Shared {
            pool,
            url,
            durability: self.durability,
            transactions: AtomicU64::new(0),
        });
        let (lanes, tasks) = (0..self.lanes)
            .map(|_| {
                let (queue, requests) = mpsc::unbounded_channel();
                (queue, tokio::spawn(run_lane(shared.clone(), requests)))
            })
            .unzip();
        Ok(PostgresBackend {
            shared,
            lanes,
            tasks: Mutex::new(Some(tasks)),
        })
    }
}

impl PostgresBackend {
    /// Connects to the database at `url` (a `postgres://user:password@host:port/db` URL or
    /// a `host=… user=…` connection string) with the default options: 16 connections,
    /// 4 writer lanes, [`Durability::Full`]. See [`PostgresBuilder::connect`].
    ///
    /// # Errors
    ///
    /// As for [`PostgresBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        Self::builder(url).connect().await
    }

    /// Options for a backend on the database at `url`; [`connect`](PostgresBuilder::connect)
    /// when set.
    pub fn builder(url: &str) -> PostgresBuilder {
        PostgresBuilder {
            url: url.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            lanes: DEFAULT_LANES,
            durability: Durability::Full,
            idle_transaction_timeout: DEFAULT_IDLE_TRANSACTION_TIMEOUT,
        }
    }

    /// The connection pool, for cluster mode's own statements (leases, nodes, sweeps).
    pub(crate) fn pool(&self) -> &Pool {
        &self.shared.pool
    }

    /// The durability the backend was built with.
    pub fn durability(&self) -> Durability {
        self.shared.durability
    }

    /// How many transactions the writer lanes have committed so far (each holds a batch
    /// of commits): with a count of commits, tells how well commits are being grouped.
    pub fn transactions(&self) -> u64 {
        self.shared.transactions.load(Ordering::Relaxed)
    }

    /// Writes every commit queued so far, ends the writer lanes and closes the pool.
    /// Later commits and reads fail. A second call returns at once.
    pub async fn close(&self) {
        let Some(tasks) = lock(&self.tasks).take() else {
            return;
        };
        for lane in &self.lanes {
            // Err: that lane is gone already (it panicked); joining tells.
            let _ = lane.send(Request::Close);
        }
        for task in tasks {
            if let Err(error) = task.await {
                tracing::error!(url = %self.shared.url, %error, "a PostgreSQL writer lane failed");
            }
        }
        self.shared.pool.close();
    }

    fn lane_of(&self, room: &RoomKey) -> usize {
        // DefaultHasher::new has fixed keys: the same room takes the same lane for the
        // backend's whole life.
        let mut hasher = DefaultHasher::new();
        room.hash(&mut hasher);
        (hasher.finish() % self.lanes.len() as u64) as usize
    }

    fn closed_error(&self) -> BackendError {
        BackendError::new(format!(
            "PostgreSQL backend for {} is closed",
            self.shared.url
        ))
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        let tasks = self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for task in tasks.into_iter().flatten() {
            // A lane stopped mid-transaction drops its connection instead of returning
            // it to the pool, so the database rolls the transaction back.
            task.abort();
        }
        self.shared.pool.close();
    }
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("url", &self.shared.url)
            .field("durability", &self.shared.durability)
            .field("lanes", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

impl Backend for PostgresBackend {
    fn load(&self, room: &RoomKey) -> BoxFuture<'_, Result<RoomSnapshot, BackendError>> {
        let room = room.clone();
        Box::pin(async move {
            check_text(&room)?;
            let shared = &*self.shared;
            bounded(&format!("loading room {room}"), async {
                let client = shared.pool.get().await.map_err(pool_error)?;
                let statement = client.prepare_cached(LOAD).await.map_err(db_error)?;
                let party: &str = &room.party;
                let id: &str = &room.room;
                let rows = client
                    .query(&statement, &[&party, &id])
                    .await
                    .map_err(db_error)?;
                let mut snapshot = RoomSnapshot::default();
                for row in rows {
                    let key: Option<Vec<u8>> = row.try_get(0).map_err(db_error)?;
                    let value: Option<Vec<u8>> = row.try_get(1).map_err(db_error)?;
                    let at: Option<i64> = row.try_get(2).map_err(db_error)?;
                    match (key, value) {
                        (Some(key), Some(value)) => {
                            let key = String::from_utf8(key)
                                .map_err(|_| Failure::failed("a stored key is not UTF-8"))?;
                            snapshot.entries.push((key, Bytes::from(value)));
                        }
                        _ => snapshot.alarm = at,
                    }
                }
                Ok(snapshot)
            })
            .await
            .map_err(|failure| {
                failure.into_error(&format_args!(
                    "PostgreSQL load of room {room} from {}",
                    shared.url
                ))
            })
        })
    }

    fn commit(&self, commit: RoomCommit) -> BoxFuture<'_, Result<(), BackendError>> {
        // Queued now rather than when first polled: the lane's order is then the call
        // order, and the commit goes ahead even if the future is dropped.
        let lane = self.lane_of(&commit.room);
        let (done, outcome) = oneshot::channel();
        let queued = self.lanes[lane]
            .send(Request::Commit(PendingCommit { commit, done }))
            .is_ok();
        Box::pin(async move {
            if !queued {
                return Err(self.closed_error());
            }
            // A dropped sender means the lane ended without writing this commit.
            outcome.await.unwrap_or_else(|_| Err(self.closed_error()))
        })
    }

    fn alarms(&self) -> BoxFuture<'_, Result<Vec<(RoomKey, i64)>, BackendError>> {
        Box::pin(async move {
            let shared = &*self.shared;
            bounded("listing alarms", async {
                let client = shared.pool.get().await.map_err(pool_error)?;
                let statement = client.prepare_cached(ALL_ALARMS).await.map_err(db_error)?;
                let rows = client.query(&statement, &[]).await.map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        let party: String = row.try_get(0).map_err(db_error)?;
                        let room: String = row.try_get(1).map_err(db_error)?;
                        let at: i64 = row.try_get(2).map_err(db_error)?;
                        Ok((RoomKey::new(party, room), at))
                    })
                    .collect()
            })
            .await
            .map_err(|failure| {
                failure.into_error(&format_args!("PostgreSQL alarms from {}", shared.url))
            })
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(PostgresBackend::close(self))
    }
}

// Nothing is left half-done under this lock, so a poisoned one is still good to use.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `operation`, reporting it unavailable if it takes longer than
/// [`OPERATION_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    operation: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(OPERATION_TIMEOUT, operation)
        .await
        .unwrap_or_else(|_| {
            Err(Failure::unavailable(format!(
                "{what} took longer than {OPERATION_TIMEOUT:?}"
            )))
        })
}

/// A failure on the way to a [`BackendError`]: whether it is the database being
/// unreachable, and what happened.
#[derive(Debug)]
struct Failure {
    unavailable: bool,
    message: String,
}

impl Failure {
    fn unavailable(message: impl fmt::Display) -> Self {
        Self {
            unavailable: true,
            message: message.to_string(),
        }
    }

    fn failed(message: impl fmt::Display) -> Self {
        Self {
            unavailable: false,
            message: message.to_string(),
        }
    }

    /// The backend error, its message prefixed with `what`.
    fn into_error(self, what: &dyn fmt::Display) -> BackendError {
        let message = format!("{what}: {}", self.message);
        if self.unavailable {
            BackendError::unavailable(message)
        } else {
            BackendError::new(message)
        }
    }
}

/// A database error: `unavailable` if the connection is the problem (closed, I/O,
/// timeouts, the server shutting down or refusing connections), a plain error otherwise.
fn db_error(error: tokio_postgres::Error) -> Failure {
    let unavailable = match error.as_db_error() {
        // Not an error the server reported: the connection failed (I/O, closed, timed
        // out, unexpected message). The parameters this backend sends always encode.
        None => true,
        Some(db) => {
            let code = db.code().code();
            // Class 08: connection exception; 57P01..57P03: the server is shutting down
            // or starting; 53300: too many connections.
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }
    };
    // tokio-postgres' own message is only the kind of error ("db error", "error
    // connecting to server"); the detail is in its source.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    Failure {
        unavailable,
        message,
    }
}

fn pool_error(error: PoolError) -> Failure {
    match error {
        PoolError::Timeout(kind) => Failure::unavailable(format!(
            "no PostgreSQL connection could be had within {POOL_TIMEOUT:?} ({kind:?} timed out)"
        )),
        PoolError::Backend(error) => db_error(error),
        PoolError::Closed => Failure::failed("the backend is closed"),
        other => Failure::unavailable(other),
    }
}

/// PostgreSQL `text` cannot hold NUL, so a room named with one cannot be stored.
fn check_text(room: &RoomKey) -> Result<(), BackendError> {
    if room.party.contains('\0') || room.room.contains('\0') {
        return Err(BackendError::new(format!(
            "room {:?} of party {:?} cannot be stored in PostgreSQL: its name contains a NUL \
             character, which PostgreSQL text cannot hold",
            room.room, room.party
        )));
    }
    Ok(())
}

/// `url` with its password replaced by `***`, in both the URL and the `key=value` forms.
fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let (scheme, rest) = url.split_at(scheme_end + 3);
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rfind('@') {
            Some(at) => {
                let (user_info, hosts) = authority.split_at(at);
                match user_info.find(':') {
                    Some(colon) => format!("{}:***{hosts}", &user_info[..colon]),
                    None => authority.to_owned(),
                }
            }
            None => authority.to_owned(),
        };
        // `?password=` may also carry one.
        let tail = tail
            .split('&')
            .map(|part| match part.find("password=") {
                Some(at) if at == 0 || part[..at].ends_with('?') => {
                    format!("{}password=***", &part[..at])
                }
                _ => part.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        format!("{scheme}{authority}{tail}")
    } else {
        url.split_whitespace()
            .map(|part| {
                if part.starts_with("password=") {
                    "password=***".to_owned()
                } else {
                    part.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Brings the schema to the current version, in one transaction holding the migration
/// lock.
async fn migrate(pool: &Pool) -> Result<(), Failure> {
    let current = MIGRATIONS.len() as i32;
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS partykit_schema (version int NOT NULL)")
        .await
        .map_err(db_error)?;
    let version: Option<i32> = tx
        .query_one("SELECT max(version) FROM partykit_schema", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db_error)?;
    let version = version.unwrap_or(0);
    if version > current {
        return Err(Failure::failed(format!(
            "its schema version is {version} but this build knows versions up to {current}: \
             it was migrated by a newer partykit-rs"
        )));
    }
    let Ok(from) = usize::try_from(version) else {
        return Err(Failure::failed(format!(
            "its schema version {version} is not one partykit-rs writes"
        )));
    };
    if from == MIGRATIONS.len() {
        // Nothing to do; the transaction ends (and the lock is released) on drop.
        return tx.commit().await.map_err(db_error);
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(from) {
        tx.batch_execute(migration).await.map_err(|error| {
            let failure = db_error(error);
            Failure {
                message: format!(
                    "migrating the schema from version {version}: {}",
                    failure.message
                ),
                ..failure
            }
        })?;
    }
    migrate_version(&tx, current).await?;
    tx.commit().await.map_err(db_error)
}

async fn migrate_version(tx: &Transaction<'_>, version: i32) -> Result<(), Failure> {
    tx.execute("DELETE FROM partykit_schema", &[])
        .await
        .map_err(db_error)?;
    tx.execute(
        "INSERT INTO partykit_schema (version) VALUES ($1)",
        &[&version],
    )
    .await
    .map_err(db_error)?;
    Ok(())
}

/// A writer lane: takes batches of commits off its queue and writes each in one
/// transaction, until told to close or the backend is gone.
async fn run_lane(shared: Arc<Shared>, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut batch = Vec::new();
    while let Some(first) = requests.recv().await {
        let mut close = false;
        match first {
            Request::Commit(pending) => batch.push(pending),
            Request::Close => close = true,
        }
        let mut mutations = batch.first().map_or(0, |p| p.commit.mutations.len());
        // Take whatever else is already queued, without waiting for more.
        while !close && batch.len() < MAX_BATCH_COMMITS && mutations < MAX_BATCH_MUTATIONS {
            match requests.try_recv() {
                Ok(Request::Commit(pending)) => {
                    mutations += pending.commit.mutations.len();
                    batch.push(pending);
                }
                Ok(Request::Close) => close = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            write_batch(&shared, &mut batch).await;
        }
        if close {
            return;
        }
    }
}

/// Writes `batch` in one transaction and tells each commit's caller how it went, leaving
/// `batch` empty.
async fn write_batch(shared: &Shared, batch: &mut Vec<PendingCommit>) {
    let commits: Vec<&RoomCommit> = batch.iter().map(|p| &p.commit).collect();
    let outcomes =
        match tokio::time::timeout(OPERATION_TIMEOUT, write_transaction(shared, &commits)).await {
            Ok(Ok(outcomes)) => outcomes,
            Ok(Err(failure)) => {
                let error =
                    failure.into_error(&format_args!("PostgreSQL commit to {}", shared.url));
                tracing::error!(commits = batch.len(), %error, "PostgreSQL batch failed");
                vec![Err(error); batch.len()]
            }
            Err(_) => {
                let error = BackendError::unavailable(format!(
                    "PostgreSQL commit to {} took longer than {OPERATION_TIMEOUT:?}; it is \
                 reported failed",
                    shared.url
                ));
                tracing::error!(commits = batch.len(), %error, "PostgreSQL batch timed out");
                vec![Err(error); batch.len()]
            }
        };
    for (pending, outcome) in batch.drain(..).zip(outcomes) {
        // Err: the caller stopped waiting; the outcome stands regardless.
        let _ = pending.done.send(outcome);
    }
}

/// A pooled connection that goes back to the pool only if no transaction was left open
/// on it: dropped mid-transaction (an error, a timeout, an aborted lane), it is closed
/// instead, and the database rolls the transaction back.
struct PooledConnection {
    client: Option<Object>,
    in_transaction: bool,
}

impl PooledConnection {
    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("the client is taken only on drop")
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        if self.in_transaction
            && let Some(client) = self.client.take()
        {
            drop(Object::take(client));
        }
    }
}

/// The statements a lane writes with, prepared once per connection.
struct Statements {
    puts: tokio_postgres::Statement,
    deletes: tokio_postgres::Statement,
    delete_all: tokio_postgres::Statement,
    set_alarm: tokio_postgres::Statement,
    clear_alarm: tokio_postgres::Statement,
    leases: tokio_postgres::Statement,
}

impl Statements {
    async fn prepare(client: &Object) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            puts: client.prepare_cached(PUTS).await?,
            deletes: client.prepare_cached(DELETES).await?,
            delete_all: client.prepare_cached(DELETE_ALL).await?,
            set_alarm: client.prepare_cached(SET_ALARM).await?,
            clear_alarm: client.prepare_cached(CLEAR_ALARM).await?,
            leases: client.prepare_cached(LEASES).await?,
        })
    }
}

/// One commit reduced to its net effect.
struct NetEffect<'a> {
    party: &'a str,
    room: &'a str,
    /// Remove every key first (the commit had a `DeleteAll`).
    delete_all: bool,
    /// Keys deleted after the last `DeleteAll` (none if there was one: nothing is left to
    /// delete).
    deletes: Vec<&'a [u8]>,
    put_keys: Vec<&'a [u8]>,
    put_values: Vec<&'a [u8]>,
    /// The last alarm change, if any.
    alarm: Option<Option<i64>>,
}

impl<'a> NetEffect<'a> {
    fn of(commit: &'a RoomCommit) -> Self {
        let mutations = &commit.mutations;
        let after_delete_all = mutations
            .iter()
            .rposition(|m| matches!(m, Mutation::DeleteAll))
            .map(|at| at + 1);
        let mut last: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
        for mutation in &mutations[after_delete_all.unwrap_or(0)..] {
            match mutation {
                Mutation::Put(key, value) => {
                    last.insert(key.as_bytes(), Some(value.as_ref()));
                }
                Mutation::Delete(key) => {
                    last.insert(key.as_bytes(), None);
                }
                Mutation::DeleteAll | Mutation::SetAlarm(_) => {}
            }
        }
        let alarm = mutations.iter().rev().find_map(|m| match m {
            Mutation::SetAlarm(at) => Some(*at),
            _ => None,
        });
        let delete_all = after_delete_all.is_some();
        let mut net = NetEffect {
            party: &commit.room.party,
            room: &commit.room.room,
            delete_all,
            deletes: Vec::new(),
            put_keys: Vec::new(),
            put_values: Vec::new(),
            alarm,
        };
        for (key, value) in last {
            match value {
                Some(value) => {
                    net.put_keys.push(key);
                    net.put_values.push(value);
                }
                None if !delete_all => net.deletes.push(key),
                None => {}
            }
        }
        net
    }
}

type StatementFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'a>>;

/// The outcome of a commit that is not settled yet.
enum Outcome {
    /// Written in the open transaction; settled by its `COMMIT`.
    Written,
    /// Failed on its own (fenced, NUL in a name, a statement error).
    Failed(BackendError),
}

/// Runs one transaction over `commits`: each commit in a savepoint, rolled back alone if
/// it fails. `Err` if the transaction as a whole failed (nothing written).
async fn write_transaction(
    shared: &Shared,
    commits: &[&RoomCommit],
) -> Result<Vec<Result<(), BackendError>>, Failure> {
    let mut outcomes: Vec<Option<Outcome>> = commits
        .iter()
        .map(|commit| check_text(&commit.room).err().map(Outcome::Failed))
        .collect();

    let mut conn = PooledConnection {
        client: Some(shared.pool.get().await.map_err(pool_error)?),
        in_transaction: false,
    };
    let statements = Statements::prepare(conn.client()).await.map_err(db_error)?;
    conn.in_transaction = true;
    let client = conn.client();

    // Round trip 1: BEGIN, and the leases of the commits made in cluster mode.
    let begin = match shared.durability {
        Durability::Full => "BEGIN",
        Durability::Normal | Durability::Off => "BEGIN; SET LOCAL synchronous_commit = off",
    };
    let leased: Vec<usize> = (0..commits.len())
        .filter(|&i| outcomes[i].is_none() && commits[i].lease.is_some())
        .collect();
    // Without leases to check first, BEGIN goes out with the first round of commits.
    let mut begin_with_commits = None;
    if leased.is_empty() {
        begin_with_commits = Some(begin);
    } else {
        let parties: Vec<&str> = leased.iter().map(|&i| &*commits[i].room.party).collect();
        let rooms: Vec<&str> = leased.iter().map(|&i| &*commits[i].room.room).collect();
        // Both are sent before either answer is awaited (one round trip): the futures
        // send their query when first polled, and `join` polls them in order.
        let (began, leases) = join(
            client.batch_execute(begin),
            client.query(&statements.leases, &[&parties, &rooms]),
        )
        .await;
        began.map_err(db_error)?;
        let mut epochs: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let rows = leases.map_err(db_error)?;
        for row in &rows {
            let party: &str = row.try_get(0).map_err(db_error)?;
            let room: &str = row.try_get(1).map_err(db_error)?;
            let epoch: i64 = row.try_get(2).map_err(db_error)?;
            epochs.insert((party, room), epoch);
        }
        for &i in &leased {
            let room = &commits[i].room;
            let held = commits[i].lease.and_then(|epoch| i64::try_from(epoch).ok());
            let current = epochs.get(&(&*room.party, &*room.room)).copied();
            if held.is_none() || held != current {
                outcomes[i] = Some(Outcome::Failed(BackendError::fenced(format!(
                    "commit of room {room} refused: it holds lease epoch {}, but the room's \
                     lease is {}",
                    commits[i].lease.unwrap_or_default(),
                    current.map_or_else(|| "gone".to_owned(), |e| format!("at epoch {e}"))
                ))));
            }
        }
    }

    // Round trip 2 (again after a commit that fails): every remaining commit in its own
    // savepoint. After a failure the transaction refuses every later statement until
    // rolled back to the failed commit's savepoint, which is then the innermost one.
    let nets: Vec<Option<NetEffect<'_>>> = commits
        .iter()
        .zip(&outcomes)
        .map(|(commit, outcome)| outcome.is_none().then(|| NetEffect::of(commit)))
        .collect();
    let mut next = 0;
    while next < commits.len() {
        // Each statement with the commit it belongs to; `None` for BEGIN.
        let mut pipeline: Vec<(Option<usize>, StatementFuture<'_>)> = Vec::new();
        if let Some(begin) = begin_with_commits.take() {
            pipeline.push((None, Box::pin(client.batch_execute(begin))));
        }
        for (i, net) in nets.iter().enumerate().skip(next) {
            let Some(net) = net else { continue };
            pipeline.push((
                Some(i),
                Box::pin(client.batch_execute("SAVEPOINT room_commit")),
            ));
            for statement in commit_statements(client, &statements, net) {
                pipeline.push((Some(i), statement));
            }
            pipeline.push((
                Some(i),
                Box::pin(client.batch_execute("RELEASE SAVEPOINT room_commit")),
            ));
        }
        let (indices, futures): (Vec<Option<usize>>, Vec<StatementFuture<'_>>) =
            pipeline.into_iter().unzip();
        let results = join_all(futures).await;
        next = commits.len();
        for (i, result) in indices.into_iter().zip(results) {
            let error = match result {
                Ok(()) => {
                    if let Some(i) = i {
                        outcomes[i].get_or_insert(Outcome::Written);
                    }
                    continue;
                }
                Err(error) => error,
            };
            let failure = db_error(error);
            // BEGIN fails only when the connection does, and every statement after it
            // with it: nothing was written.
            let Some(i) = i else {
                return Err(failure);
            };
            if failure.unavailable {
                return Err(failure);
            }
            tracing::warn!(room = %commits[i].room, error = %failure.message, "PostgreSQL commit failed");
            outcomes[i] = Some(Outcome::Failed(failure.into_error(&format_args!(
                "PostgreSQL commit of room {} to {}",
                commits[i].room, shared.url
            ))));
            client
                .batch_execute("ROLLBACK TO SAVEPOINT room_commit; RELEASE SAVEPOINT room_commit")
                .await
                .map_err(db_error)?;
            next = i + 1;
            break;
        }
    }

    // The last round trip.
    client.batch_execute("COMMIT").await.map_err(db_error)?;
    conn.in_transaction = false;
    // Counted before the commits are answered, so that whoever sees an answer also sees
    // the transaction counted.
    shared.transactions.fetch_add(1, Ordering::Relaxed);
    Ok(outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Some(Outcome::Failed(error)) => Err(error),
            Some(Outcome::Written) | None => Ok(()),
        })
        .collect())
}

/// The statements that write `net`, in order, ready to be pipelined.
fn commit_statements<'a>(
    client: &'a Object,
    statements: &'a Statements,
    net: &'a NetEffect<'a>,
) -> Vec<StatementFuture<'a>> {
    let mut futures: Vec<StatementFuture<'a>> = Vec::new();
    let mut execute = |statement: &'a tokio_postgres::Statement,
                       params: Vec<&'a (dyn ToSql + Sync)>| {
        futures.push(Box::pin(async move {
            client.execute(statement, &params).await.map(drop)
        }));
    };
    if net.delete_all {
        execute(&statements.delete_all, vec![&net.party, &net.room]);
    }
    if !net.deletes.is_empty() {
        execute(
            &statements.deletes,
            vec![&net.party, &net.room, &net.deletes],
        );
    }
    if !net.put_keys.is_empty() {
        execute(
            &statements.puts,
            vec![&net.party, &net.room, &net.put_keys, &net.put_values],
        );
    }
    match &net.alarm {
        Some(Some(at)) => execute(&statements.set_alarm, vec![&net.party, &net.room, at]),
        Some(None) => execute(&statements.clear_alarm, vec![&net.party, &net.room]),
        None => {}
    }
    futures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(
            redact("postgres://user:secret@db:5432/app?sslmode=disable"),
            "postgres://user:***@db:5432/app?sslmode=disable"
        );
        assert_eq!(
            redact("postgresql://user@db/app"),
            "postgresql://user@db/app"
        );
        assert_eq!(
            redact("postgres://db/app?user=u&password=secret"),
            "postgres://db/app?user=u&password=***"
        );
        assert_eq!(
            redact("host=db user=u password=secret dbname=app"),
            "host=db user=u password=*** dbname=app"
        );
    }

    #[test]
    fn net_effect_keeps_the_last_change_per_key() {
        let commit = RoomCommit::new(
            RoomKey::new("p", "r"),
            vec![
                Mutation::Put("a".into(), Bytes::from_static(b"1")),
                Mutation::SetAlarm(Some(5)),
                Mutation::DeleteAll,
                Mutation::Put("b".into(), Bytes::from_static(b"1")),
                Mutation::Delete("b".into()),
                Mutation::Put("c".into(), Bytes::from_static(b"1")),
                Mutation::Put("c".into(), Bytes::from_static(b"2")),
            ],
        );
        let net = NetEffect::of(&commit);
        assert!(net.delete_all);
        assert!(net.deletes.is_empty());
        assert_eq!(net.put_keys, vec![b"c".as_slice()]);
        assert_eq!(net.put_values, vec![b"2".as_slice()]);
        assert_eq!(net.alarm, Some(Some(5)));

        let commit = RoomCommit::new(
            RoomKey::new("p", "r"),
            vec![
                Mutation::Put("a".into(), Bytes::from_static(b"1")),
                Mutation::Delete("a".into()),
                Mutation::Delete("z".into()),
                Mutation::SetAlarm(Some(5)),
                Mutation::SetAlarm(None),
            ],
        );
        let net = NetEffect::of(&commit);
        assert!(!net.delete_all);
        assert_eq!(net.deletes, vec![b"a".as_slice(), b"z".as_slice()]);
        assert!(net.put_keys.is_empty());
        assert_eq!(net.alarm, Some(None));
    }
}
