//! Assembling parties into a server: the builder, the router, listening and shutdown.

mod assets;
mod body;
mod cors;
pub(crate) mod dispatch;
mod listener;
mod party_name;
mod party_type;
mod routing;
mod socket;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::time::Instant;

pub use cors::Cors;
use party_name::is_valid_party_name;
pub(crate) use party_type::PartyType;
use party_type::Typed;

use crate::alarms::AlarmClock;
use crate::cluster::{Cluster, ClusterConfig, ClusterConfigError};
use crate::cron::{CronError, Crons};
use crate::room::{LiveRooms, Services};
use crate::storage::{Backend, BackendError, MemoryBackend, PostgresBackend, SqliteBackend};
use crate::tasks::{StopOnDrop, Tasks};
use crate::{Cron, CronLobby, Env, Limits, Party};

/// The environment variable that overrides the host [`Server::run`] binds to.
pub const HOST_VAR: &str = "PARTYKIT_HOST";
/// The environment variable that overrides the port [`Server::run`] binds to.
pub const PORT_VAR: &str = "PARTYKIT_PORT";
/// The environment variable that turns on the `/__scheduled__` trigger with this token
/// when [`Server::scheduled_token`] is not set; read when the server is built.
pub const SCHEDULED_TOKEN_VAR: &str = "PARTYKIT_SCHEDULED_TOKEN";
/// The environment variable that turns on the inspection API (`/__partykit/`) with this
/// bearer token when [`Server::admin_token`] is not set; read when the server is built.
pub const ADMIN_TOKEN_VAR: &str = "PARTYKIT_ADMIN_TOKEN";
/// The default address: `127.0.0.1:1999`, PartyKit's dev port.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1999);

/// A server of one or more parties.
///
/// ```no_run
/// use partykit_runtime::{party, Server};
///
/// #[party]
/// #[derive(Default)]
/// struct Main;
///
/// #[party]
/// impl Main {}
///
/// #[tokio::main]
/// async fn main() -> Result<(), partykit_runtime::ServerError> {
///     // 127.0.0.1:1999 unless PARTYKIT_HOST / PARTYKIT_PORT say otherwise.
///     Server::new().party::<Main>().run().await
/// }
/// ```
///
/// To serve parties beside your own routes, merge [`Server::router`] into your axum app.
pub struct Server {
    parties: Vec<Arc<dyn PartyType>>,
    vars: Vec<(String, Value)>,
    limits: Limits,
    storage: StorageChoice,
    env_file: crate::env::EnvFile,
    assets: assets::Config,
    cors: Vec<(String, Cors)>,
    crons: Vec<(String, String)>,
    scheduled_token: Option<String>,
    cluster: Option<ClusterConfig>,
    /// Where `GET /metrics` is served, if anywhere.
    metrics_addr: Option<String>,
    /// The bearer token of the inspection API (`/__partykit/`); `None` turns it off.
    admin_token: Option<String>,
    /// What "now" is for alarms: the wall clock, or a test's.
    clock: crate::clock::Clock,
    /// Told when `serve` has built the server and accepts connections.
    #[cfg(feature = "testing")]
    started: Option<tokio::sync::oneshot::Sender<()>>,
}

enum StorageChoice {
    /// Nothing chosen: SQLite at [`DEFAULT_PATH`](crate::storage::DEFAULT_PATH), or
    /// PostgreSQL in cluster mode.
    Default,
    /// SQLite at this path.
    File(PathBuf),
    Backend(Arc<dyn Backend>),
}

impl Server {
    /// A server with no parties yet.
    pub fn new() -> Self {
        Self {
            parties: Vec::new(),
            vars: Vec::new(),
            limits: Limits::default(),
            storage: StorageChoice::Default,
            env_file: crate::env::EnvFile::Default,
            assets: assets::Config::default(),
            cors: Vec::new(),
            crons: Vec::new(),
            scheduled_token: None,
            cluster: None,
            metrics_addr: None,
            admin_token: None,
            clock: crate::clock::Clock::Wall,
            #[cfg(feature = "testing")]
            started: None,
        }
    }

    /// Prepares the server for [`testing::TestServer`](crate::testing::TestServer):
    /// no `.env` lookup, the test's clock, and the storage backend resolved here (in
    /// memory unless one was chosen), so the test can read what rooms persisted.
    #[cfg(feature = "testing")]
    pub(crate) async fn for_testing(
        mut self,
        clock: Arc<crate::clock::ManualClock>,
        started: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(Self, Arc<dyn Backend>), ServerError> {
        assert!(
            self.cluster.is_none(),
            "TestServer runs one server in-process: remove the .cluster(..) call"
        );
        if matches!(self.env_file, crate::env::EnvFile::Default) {
            self.env_file = crate::env::EnvFile::Off;
        }
        self.started = Some(started);
        self.clock = crate::clock::Clock::Manual(clock);
        let backend: Arc<dyn Backend> =
            match std::mem::replace(&mut self.storage, StorageChoice::Default) {
                StorageChoice::Default => Arc::new(MemoryBackend::new()),
                StorageChoice::Backend(backend) => backend,
                StorageChoice::File(path) => {
                    let open = move || SqliteBackend::open(&path).map_err(ServerError::Storage);
                    match tokio::task::spawn_blocking(open).await {
                        Ok(opened) => Arc::new(opened?),
                        Err(error) => std::panic::resume_unwind(error.into_panic()),
                    }
                }
            };
        self.storage = StorageChoice::Backend(Arc::clone(&backend));
        Ok((self, backend))
    }

    /// Runs this server as one node of a cluster: N copies of the same server against
    /// one PostgreSQL database, which keeps room storage, alarms, room ownership and node
    /// membership. Any node accepts any client; each room is served by the one node that
    /// holds its lease, and a room whose node dies comes back on another within the lease
    /// TTL with every acknowledged write. See `docs/CLUSTER.md`.
    ///
    /// [`run`](Self::run) turns cluster mode on by itself when `PARTYKIT_CLUSTER_URL` is
    /// set (see [`ClusterConfig::from_env`]), so any server binary becomes a cluster node
    /// from the environment alone. Room storage is then PostgreSQL; choosing another
    /// storage ([`persist`](Self::persist), [`storage`](Self::storage),
    /// [`in_memory`](Self::in_memory)) makes the server refuse to start.
    ///
    /// ```no_run
    /// # use partykit_runtime::{party, ClusterConfig, Server};
    /// # #[party] #[derive(Default)] struct Main;
    /// # #[party] impl Main {}
    /// # async fn run() -> Result<(), partykit_runtime::ServerError> {
    /// let secret = std::env::var("CLUSTER_SECRET").expect("shared by every node");
    /// Server::new()
    ///     .party::<Main>()
    ///     .cluster(ClusterConfig::new("postgres://partykit@db/partykit", "10.0.0.7:2999", secret))
    ///     .listen("0.0.0.0:1999")
    ///     .await
    /// # }
    /// ```
    #[must_use]
    pub fn cluster(mut self, config: ClusterConfig) -> Self {
        self.cluster = Some(config);
        self
    }

    /// Declares a cron schedule: the main party's `on_cron` runs at every minute the
    /// five-field `expression` matches, in UTC (PartyKit's `crons` config). An invalid
    /// expression makes the server refuse to start with [`ServerError::InvalidCron`].
    /// With a [`scheduled_token`](Self::scheduled_token), `GET /__scheduled__?cron=<name>`
    /// runs it at once.
    ///
    /// ```no_run
    /// use partykit_runtime::{party, Cron, CronLobby, Server};
    ///
    /// #[party]
    /// #[derive(Default)]
    /// struct Main;
    ///
    /// #[party]
    /// impl Main {
    ///     async fn on_cron(cron: Cron, _lobby: &CronLobby) {
    ///         println!("{} ran at {:?}", cron.name(), cron.scheduled_time());
    ///     }
    /// }
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), partykit_runtime::ServerError> {
    ///     Server::new()
    ///         .party::<Main>()
    ///         .cron("hourly-cleanup", "0 * * * *")
    ///         .cron("weekday-report", "30 9 * * MON-FRI")
    ///         .run()
    ///         .await
    /// }
    /// ```
    #[must_use]
    pub fn cron(mut self, name: impl Into<String>, expression: impl Into<String>) -> Self {
        self.crons.push((name.into(), expression.into()));
        self
    }

    /// Turns on the `/__scheduled__` trigger, PartyKit's way of running a cron schedule at
    /// once: a request to `/__scheduled__?cron=<name>` (any method) that carries
    /// `Authorization: Bearer <token>` runs the main party's `on_cron` for the schedule
    /// `name` declared with [`cron`](Self::cron), and answers 200 `ran cron <name>:
    /// <expression>`. Without the token, or with another one, it answers 401; a name no
    /// [`cron`](Self::cron) declared answers 404.
    ///
    /// Off by default, because anyone who can reach the server could otherwise run
    /// `on_cron` at will: then `/__scheduled__` is an ordinary path (assets, `on_fetch`,
    /// 404). Without this call, the token is read from the environment variable
    /// `PARTYKIT_SCHEDULED_TOKEN` ([`SCHEDULED_TOKEN_VAR`]) when the server is built; an
    /// empty token leaves the trigger off.
    ///
    /// ```no_run
    /// # use partykit_runtime::{party, Cron, Server};
    /// # #[party] #[derive(Default)] struct Main;
    /// # #[party] impl Main { fn on_cron(_cron: Cron) {} }
    /// # async fn run() -> Result<(), partykit_runtime::ServerError> {
    /// // curl -H "Authorization: Bearer $TOKEN" 'http://127.0.0.1:1999/__scheduled__?cron=nightly'
    /// let token = std::env::var("MY_CRON_TOKEN").expect("set MY_CRON_TOKEN");
    /// Server::new()
    ///     .party::<Main>()
    ///     .cron("nightly", "0 3 * * *")
    ///     .scheduled_token(token)
    ///     .run()
    ///     .await
    /// # }
    /// ```
    #[must_use]
    pub fn scheduled_token(mut self, token: impl Into<String>) -> Self {
        self.scheduled_token = Some(token.into());
        self
    }

    /// Serves the server's metrics in Prometheus' text format at `GET /metrics` on a
    /// listener of their own at `addr` (`host:port`), apart from the public one so that
    /// they are never exposed with it by accident. Without this call,
    /// `PARTYKIT_METRICS_ADDR` ([`METRICS_ADDR_VAR`](crate::METRICS_ADDR_VAR)) turns it on;
    /// with neither, the metrics are still counted (the inspection API's statistics read
    /// them) but not served. `docs/OPERATIONS.md` lists every metric.
    ///
    /// ```no_run
    /// # use partykit_runtime::{party, Server};
    /// # #[party] #[derive(Default)] struct Main;
    /// # #[party] impl Main {}
    /// # async fn run() -> Result<(), partykit_runtime::ServerError> {
    /// // Scraped by Prometheus at http://10.0.0.7:9464/metrics.
    /// Server::new().party::<Main>().metrics_addr("10.0.0.7:9464").run().await
    /// # }
    /// ```
    #[must_use]
    pub fn metrics_addr(mut self, addr: impl Into<String>) -> Self {
        self.metrics_addr = Some(addr.into());
        self
    }

    /// Turns on the inspection API and the dashboard under `/__partykit/` on the public
    /// listener, for callers with `Authorization: Bearer <token>` (compared in constant
    /// time). Without this call, `PARTYKIT_ADMIN_TOKEN`
    /// ([`ADMIN_TOKEN_VAR`](crate::ADMIN_TOKEN_VAR)) sets the token; with neither, the API
    /// is off and answers 404. `GET /__partykit/health` needs no token and is always on.
    ///
    /// ```no_run
    /// # use partykit_runtime::{party, Server};
    /// # #[party] #[derive(Default)] struct Main;
    /// # #[party] impl Main {}
    /// # async fn run() -> Result<(), partykit_runtime::ServerError> {
    /// let token = std::env::var("ADMIN_TOKEN").expect("a long random secret");
    /// Server::new().party::<Main>().admin_token(token).run().await
    /// # }
    /// ```
    #[must_use]
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// Adds party `P`, served at `/parties/<P::NAME>/<room>` (and `/party/<room>` for
    /// `main`). Two parties with one name are refused when the server starts.
    #[must_use]
    pub fn party<P: Party>(mut self) -> Self {
        self.parties.push(Arc::new(Typed::<P>::new()));
        self
    }

    /// Sets a project variable, visible as `room.env()` and `lobby.env()`. Any JSON
    /// value.
    ///
    /// Variables also come from the `.env` file ([`env_file`](Self::env_file)) and from
    /// `PARTYKIT_VAR_<NAME>` process variables; a `var` wins over both, as PartyKit's
    /// `--var` flag won over `.env`. For a default that the environment may override,
    /// read it with a fallback instead: `env.get("X").unwrap_or(&default)`. See [`Env`].
    ///
    /// ```no_run
    /// use partykit_runtime::{party, Room, Server};
    ///
    /// #[party]
    /// struct Main {
    ///     room: Room,
    /// }
    ///
    /// #[party]
    /// impl Main {
    ///     fn new(room: Room) -> Self {
    ///         // `.env` has `MAX_PLAYERS=8`: a JSON number.
    ///         let max = room.env().get("MAX_PLAYERS").and_then(|v| v.as_u64());
    ///         let region = room.env().get_str("REGION"); // from `var` below
    ///         println!("{max:?} {region:?}");
    ///         Main { room }
    ///     }
    /// }
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), partykit_runtime::ServerError> {
    ///     Server::new().party::<Main>().var("REGION", "eu").run().await
    /// }
    /// ```
    #[must_use]
    pub fn var(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.vars.push((name.into(), value.into()));
        self
    }

    /// Reads project variables from `path` instead of `.env` in the current directory.
    /// A missing file is not an error (a warning is logged); a malformed line makes the
    /// server refuse to start with [`ServerError::EnvFile`], naming the file and line.
    ///
    /// The format is dotenv's: `NAME=value` lines, `export NAME=value` too, `#` comments
    /// and blank lines; `"double"` quotes (with `\n`, `\t`, `\"`, `\\` escapes) or
    /// `'single'` quotes (literal) make a string; a bare value is JSON if it is JSON, else
    /// a string, with a trailing ` # comment` removed. See [`Env`] for how variables
    /// combine.
    ///
    /// ```text
    /// # .env
    /// API_URL=https://api.example.com   # a string
    /// MAX_PLAYERS=8                     # a number
    /// FEATURES={"chat": true}           # an object
    /// VERSION="1.0"                     # a string, quoted
    /// ```
    #[must_use]
    pub fn env_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.env_file = crate::env::EnvFile::Chosen(path.into());
        self
    }

    /// Reads no `.env` file (`PARTYKIT_VAR_*` process variables and [`var`](Self::var)
    /// still apply).
    #[must_use]
    pub fn no_env_file(mut self) -> Self {
        self.env_file = crate::env::EnvFile::Off;
        self
    }

    /// Replaces the limits (frame size, queues, idle timeout, …).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Keeps rooms' storage in an SQLite database at `path` (created if missing) instead
    /// of the default `.partykit/state.sqlite3`.
    #[must_use]
    pub fn persist(mut self, path: impl Into<PathBuf>) -> Self {
        self.storage = StorageChoice::File(path.into());
        self
    }

    /// Keeps rooms' storage in memory only: it is gone when the process ends
    /// (`persist: false` in PartyKit). For tests and throwaway servers.
    #[must_use]
    pub fn in_memory(self) -> Self {
        self.storage(MemoryBackend::new())
    }

    /// Keeps rooms' storage in `backend`.
    #[must_use]
    pub fn storage(mut self, backend: impl Backend) -> Self {
        self.storage = StorageChoice::Backend(Arc::new(backend));
        self
    }

    /// The server as an [`axum::Router`], to merge into an existing app or to serve
    /// yourself. It answers party paths and, as a fallback, every other path (`on_fetch`,
    /// `on_socket`, 404): merge it into an app that has no fallback of its own.
    ///
    /// Sockets it accepts close with 1001 only when shut down through
    /// [`serve`](Self::serve), [`listen`](Self::listen) or [`run`](Self::run). When the
    /// router and every connection it serves are dropped, its rooms exit once idle and
    /// its background work (alarms, cron) stops; storage is closed when the last room
    /// has gone. The request body limits (size, read timeout, buffered-body budget) hold
    /// in the router itself; the connection limits (header read and keep-alive timeouts,
    /// head size, connection cap) are the accept loop's, so whoever serves the router
    /// sets its own.
    ///
    /// Cluster mode needs the server's own listeners (the internal one beside the public
    /// one): with [`cluster`](Self::cluster) set this refuses with
    /// [`ServerError::ClusterRouter`]; use [`serve`](Self::serve).
    pub async fn router(self) -> Result<axum::Router, ServerError> {
        if self.cluster.is_some() {
            return Err(ServerError::ClusterRouter);
        }
        Ok(self.build(Tasks::new()).await?.router())
    }

    /// Binds to `PARTYKIT_HOST`:`PARTYKIT_PORT` (default `127.0.0.1:1999`) and serves
    /// until SIGINT or SIGTERM. With `PARTYKIT_CLUSTER_URL` set (and no
    /// [`cluster`](Self::cluster) given in code), the server runs as a cluster node
    /// configured by [`ClusterConfig::from_env`]; a missing or invalid cluster variable
    /// refuses to start with [`ServerError::Cluster`] naming it.
    ///
    /// Unless the program has set a global `tracing` subscriber, `run` first installs
    /// [`logging`](crate::logging) (`PARTYKIT_LOG`, `PARTYKIT_LOG_FORMAT`); an invalid
    /// value refuses to start with [`ServerError::Logging`] naming the variable.
    pub async fn run(mut self) -> Result<(), ServerError> {
        // Held until the server has stopped: its last lines are written before `run`
        // returns.
        let _logs = crate::logging::init_unless_set().map_err(ServerError::Logging)?;
        let addr = addr_from_env()?;
        if self.cluster.is_none() {
            self.cluster = ClusterConfig::from_env().map_err(ServerError::Cluster)?;
        }
        self.listen(addr).await
    }

    /// Binds to `addr` and serves until SIGINT or SIGTERM. An address that cannot be
    /// bound (another server has the port) is [`ServerError::Bind`], naming it.
    pub async fn listen(self, addr: impl ToSocketAddrs + fmt::Display) -> Result<(), ServerError> {
        let listener = bind(&addr, PORT_VAR).await?;
        self.serve(listener, shutdown_signal()).await
    }

    /// Serves on `listener` until `shutdown` completes, then shuts down in order: stops
    /// accepting, closes every socket with 1001, lets HTTP requests in flight finish
    /// (their connections told to close), lets each room run `on_close` for its sockets
    /// and commit what it wrote, closes the storage backend, and returns. Every task the
    /// server started has ended by then. The whole shutdown takes at most
    /// [`Limits::shutdown_grace`]; what is still running then is stopped.
    ///
    /// Connections get the HTTP limits of [`Limits`]: header read, keep-alive and body
    /// timeouts, the request head and body sizes, the buffered-body budget and the
    /// connection cap. Running out of file descriptors pauses accepting instead of
    /// failing.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let grace = self.limits.shutdown_grace;
        // In cluster mode, other nodes send the events of this node's rooms to its
        // internal listener; it shuts down with the public one. Bound before the node
        // joins, so that no node advertises an address it cannot serve.
        let internal = match &self.cluster {
            Some(config) => {
                config.validate().map_err(ServerError::Cluster)?;
                Some(bind(&config.node_addr, crate::cluster::NODE_ADDR_VAR).await?)
            }
            None => None,
        };
        let metrics_addr = self
            .metrics_addr
            .clone()
            .or_else(|| std::env::var(crate::METRICS_ADDR_VAR).ok())
            .filter(|addr| !addr.is_empty());
        let metrics_listener = match &metrics_addr {
            Some(addr) => Some(bind(addr, crate::METRICS_ADDR_VAR).await?),
            None => None,
        };
        let tasks = Tasks::new();
        let app = Arc::new(self.build(tasks.clone()).await?);
        let backend = Arc::clone(&app.backend);
        let metrics = metrics_listener.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "metrics listening at /metrics");
            }
            (listener, crate::metrics::router(Arc::clone(&app.metrics)))
        });
        let internal = internal.map(|internal| {
            if let Some(cluster) = &app.cluster {
                tracing::info!(addr = cluster.node_addr(), "internal listener listening");
            }
            (internal, crate::cluster::internal::router(Arc::clone(&app)))
        });
        let names: Vec<&str> = app.parties.keys().copied().collect();
        match listener.local_addr() {
            Ok(addr) => tracing::info!(%addr, parties = ?names, "partykit server listening"),
            Err(_) => tracing::info!(parties = ?names, "partykit server listening"),
        }
        let limits = Arc::clone(&app.limits);
        // Held until shutdown has run its phases: the listeners' routers go when they
        // stop accepting, and the last `App` dropped would cancel every phase at once
        // (its stop-on-drop guard), draining rooms whose sockets are still joining.
        let serving = Arc::clone(&app);
        let unhealthy = app.unhealthy.clone();
        let server_metrics = Arc::clone(&app.metrics);
        let public = listener::accept(
            listener,
            dispatch::router(app),
            &limits,
            &server_metrics,
            &tasks,
        );
        let accepting = async {
            let internal = async {
                match internal {
                    None => Ok(()),
                    Some((internal, router)) => {
                        listener::accept(internal, router, &limits, &server_metrics, &tasks).await
                    }
                }
            };
            let metrics = async {
                match metrics {
                    None => Ok(()),
                    Some((listener, router)) => {
                        listener::accept(listener, router, &limits, &server_metrics, &tasks).await
                    }
                }
            };
            tokio::try_join!(public, internal, metrics).map(|_| ())
        };
        let mut accepting = std::pin::pin!(accepting);
        let accepted = tokio::select! {
            result = accepting.as_mut() => result,
            () = shutdown => {
                let drain = limits.drain_delay;
                if !drain.is_zero() {
                    tracing::info!("shutting down: health checks answer 503; serving on for {drain:?}");
                    unhealthy.cancel();
                    let early = tokio::select! {
                        result = accepting.as_mut() => Some(result),
                        () = tokio::time::sleep(drain) => None,
                    };
                    if let Some(result) = early {
                        tasks.stopping().cancel();
                        return finish(result, &tasks, grace, &serving, &backend).await;
                    }
                }
                tracing::info!("shutting down: closing sockets");
                tasks.stopping().cancel();
                accepting.await
            }
        };
        finish(accepted, &tasks, grace, &serving, &backend).await
    }

    /// Assembles the server: opens what it reads from disk, registers the parties and
    /// starts the background work. Every task it starts belongs to `tasks`.
    async fn build(self, tasks: Tasks) -> Result<App, ServerError> {
        tokio::runtime::Handle::try_current().map_err(|_| ServerError::NoRuntime)?;
        let crons = Arc::new(Crons::parse(self.crons).map_err(ServerError::InvalidCron)?);
        if let Some(config) = &self.cluster {
            config.validate().map_err(ServerError::Cluster)?;
        }
        let (storage, cluster_pool) = match (&self.cluster, self.storage) {
            (None, storage) => (storage, None),
            (Some(config), StorageChoice::Default) => {
                // A node paused inside a commit must not hold its lease rows' locks
                // past the point where another node should take its rooms over.
                let postgres = PostgresBackend::builder(&config.url)
                    .idle_transaction_timeout(config.lease_ttl / 2)
                    .connect()
                    .await
                    .map_err(ServerError::Storage)?;
                let pool = postgres.pool().clone();
                (StorageChoice::Backend(Arc::new(postgres)), Some(pool))
            }
            (Some(_), _) => return Err(ServerError::ClusterStorage),
        };
        let opened = open_resources(self.env_file, self.vars, self.assets, storage).await?;
        let (alarms, clock) = AlarmClock::new(self.clock.clone());
        let names: Vec<&'static str> = self.parties.iter().map(|party| party.name()).collect();
        let metrics = Arc::new(crate::metrics::Metrics::new(&names));
        let cluster = match (&self.cluster, cluster_pool) {
            (Some(config), Some(pool)) => {
                let cluster = Arc::new(Cluster::new(
                    config,
                    pool,
                    alarms.clone(),
                    Arc::clone(&metrics),
                ));
                cluster.join().await.map_err(ServerError::Storage)?;
                Some(cluster)
            }
            _ => None,
        };
        let directory = Arc::new(crate::parties::Directory::default());
        let services = Arc::new(Services {
            env: opened.env.clone(),
            limits: self.limits.clone(),
            backend: Arc::clone(&opened.backend),
            alarms,
            clock: self.clock.clone(),
            parties: Arc::downgrade(&directory),
            room_slots: crate::room::RoomSlots::new(&self.limits),
            tasks: tasks.clone(),
            cluster: cluster.clone(),
            metrics: Arc::clone(&metrics),
        });
        let parties = register_parties(self.parties, &services)?;
        let cors = cors::policies(self.cors, &parties)?;
        let rooms: HashMap<&'static str, Arc<LiveRooms>> = parties
            .iter()
            .map(|(name, entry)| (*name, Arc::clone(&entry.rooms)))
            .collect();
        directory.fill(rooms.clone());
        let stopping = tasks.stopping().clone();
        // In a cluster the stored alarms are every node's: this node's clock learns those
        // of the rooms it takes, and the sweeper finds those nobody holds.
        let stored = cluster.is_none().then(|| Arc::clone(&opened.backend));
        tasks.spawn(clock.run(rooms, stored, stopping));
        if let Some(cluster) = &cluster {
            cluster.start(parties.keys().copied().collect(), &tasks);
        }
        spawn_crons(
            &tasks,
            &crons,
            &parties,
            &opened.env,
            &directory,
            cluster.as_ref(),
        );
        // The listener (bound by the caller) accepts from here on.
        #[cfg(feature = "testing")]
        if let Some(started) = self.started {
            let _ = started.send(());
        }
        Ok(App {
            parties,
            scheduled_token: self
                .scheduled_token
                .or_else(|| std::env::var(SCHEDULED_TOKEN_VAR).ok())
                .filter(|token| !token.is_empty()),
            crons,
            assets: opened.assets,
            cors,
            directory,
            env: opened.env,
            bodies: body::BodyBudget::new(&self.limits),
            limits: Arc::new(self.limits),
            backend: opened.backend,
            admin_token: self
                .admin_token
                .or_else(|| std::env::var(ADMIN_TOKEN_VAR).ok())
                .filter(|token| !token.is_empty()),
            metrics,
            unhealthy: tokio_util::sync::CancellationToken::new(),
            cluster,
            _stop_on_drop: tasks.stop_on_drop(),
            tasks,
        })
    }
}

/// The phases after the listeners stopped: drains connections, rooms and commits, hands
/// the cluster's rooms off, closes the storage backend.
async fn finish(
    accepted: std::io::Result<()>,
    tasks: &Tasks,
    grace: std::time::Duration,
    serving: &Arc<App>,
    backend: &Arc<dyn Backend>,
) -> Result<(), ServerError> {
    // A listener that failed still has connections to drain.
    if !tasks.shut_down(Instant::now() + grace).await {
        tracing::warn!("shutdown took longer than {grace:?}: what was left was stopped");
    }
    // Every room has stopped (or was stopped): hand the rooms off at once rather than
    // after the lease TTL.
    if let Some(cluster) = &serving.cluster {
        cluster.leave().await;
    }
    backend.close().await;
    accepted.map_err(ServerError::Serve)
}

/// What the server reads from disk, read off the async workers.
struct Opened {
    env: Env,
    assets: Option<assets::Assets>,
    backend: Arc<dyn Backend>,
}

async fn open_resources(
    env_file: crate::env::EnvFile,
    vars: Vec<(String, Value)>,
    assets: assets::Config,
    storage: StorageChoice,
) -> Result<Opened, ServerError> {
    let open = move || {
        let env = crate::env::load(&env_file, vars)?;
        let assets = assets::Assets::open(assets)?;
        let backend: Arc<dyn Backend> = match storage {
            // Created by the first write: a server that stores nothing leaves no
            // `.partykit/` behind.
            StorageChoice::Default => Arc::new(
                crate::storage::SqliteOnFirstWrite::new(crate::storage::DEFAULT_PATH)
                    .map_err(ServerError::Storage)?,
            ),
            StorageChoice::File(path) => {
                Arc::new(SqliteBackend::open(&path).map_err(ServerError::Storage)?)
            }
            StorageChoice::Backend(backend) => backend,
        };
        Ok(Opened {
            env,
            assets,
            backend,
        })
    };
    match tokio::task::spawn_blocking(open).await {
        Ok(opened) => opened,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Gives each party its rooms; refuses invalid and duplicate names.
fn register_parties(
    parties: Vec<Arc<dyn PartyType>>,
    services: &Arc<Services>,
) -> Result<HashMap<&'static str, PartyEntry>, ServerError> {
    let mut registered = HashMap::new();
    for party in parties {
        let name = party.name();
        if !is_valid_party_name(name) {
            return Err(ServerError::InvalidPartyName(name));
        }
        let rooms = Arc::new(LiveRooms::new(Arc::clone(&party), Arc::clone(services)));
        if registered
            .insert(name, PartyEntry { party, rooms })
            .is_some()
        {
            return Err(ServerError::DuplicateParty(name));
        }
    }
    for (name, entry) in &registered {
        let handlers = entry.party.handlers();
        if *name != "main" && (handlers.on_fetch || handlers.on_socket || handlers.on_cron) {
            tracing::warn!(
                party = name,
                "only the main party's on_fetch, on_socket and on_cron are used; this party's are ignored"
            );
        }
    }
    Ok(registered)
}

/// Runs the main party's `on_cron` on the declared schedules until shutdown.
fn spawn_crons(
    tasks: &Tasks,
    crons: &Arc<Crons>,
    parties: &HashMap<&'static str, PartyEntry>,
    env: &Env,
    directory: &Arc<crate::parties::Directory>,
    cluster: Option<&Arc<Cluster>>,
) {
    let main = parties
        .get("main")
        .filter(|main| main.party.handlers().on_cron)
        .map(|entry| (Arc::clone(&entry.party), Arc::clone(entry.rooms.metrics())));
    let Some((main, metrics)) = main else {
        if !crons.is_empty() {
            tracing::warn!(
                "cron schedules are declared but the main party has no on_cron: they will not run"
            );
        }
        return;
    };
    if crons.is_empty() {
        return;
    }
    let crons = Arc::clone(crons);
    let lobby = CronLobby {
        env: env.clone(),
        parties: crate::parties::Parties::new(Arc::clone(directory), None),
    };
    let runs = tasks.clone();
    let stopping = tasks.stopping().clone();
    let cluster = cluster.cloned();
    tasks.spawn(async move {
        let schedule = crons.run(|name, cron, scheduled_time| {
            let (main, lobby) = (Arc::clone(&main), lobby.clone());
            let (cluster, metrics) = (cluster.clone(), Arc::clone(&metrics));
            runs.spawn(async move {
                // In a cluster, one node runs each tick: the one whose claim lands.
                if let Some(cluster) = cluster
                    && !cluster.claim_cron_tick(&name, scheduled_time).await
                {
                    return;
                }
                let cron = Cron {
                    name,
                    cron,
                    scheduled_time,
                };
                let hook = main.cron(cron, &lobby);
                if let Err(error) = metrics.time(crate::metrics::Handler::OnCron, hook).await {
                    tracing::warn!(%error, "on_cron failed");
                }
            });
        });
        stopping.run_until_cancelled(schedule).await;
    });
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.parties.iter().map(|party| party.name()).collect();
        f.debug_struct("Server")
            .field("parties", &names)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Why a server could not start or stopped with an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// Two parties have the same name.
    DuplicateParty(&'static str),
    /// A party's name does not match `^[a-z0-9_-]+$`.
    InvalidPartyName(&'static str),
    /// A cron expression given to [`Server::cron`] does not parse.
    InvalidCron(CronError),
    /// `PARTYKIT_HOST` / `PARTYKIT_PORT` do not form an address.
    InvalidAddress(String),
    /// The address could not be bound: `addr`, which the variable `variable` chooses.
    Bind {
        /// The address.
        addr: String,
        /// The variable that chooses another (`PARTYKIT_PORT`, `PARTYKIT_NODE_ADDR`).
        variable: &'static str,
        /// Why.
        error: std::io::Error,
    },
    /// Serving failed.
    Serve(std::io::Error),
    /// The storage backend could not be opened.
    Storage(BackendError),
    /// The server was built outside a Tokio runtime.
    NoRuntime,
    /// [`Server::run`] could not set up logging: `PARTYKIT_LOG_FORMAT` or the filter in
    /// `PARTYKIT_LOG` (or `RUST_LOG`) is invalid; the error names the variable.
    Logging(crate::logging::LoggingError),
    /// A cluster setting ([`Server::cluster`], or the `PARTYKIT_CLUSTER_*` environment
    /// variables) is missing or invalid; the error names the variable.
    Cluster(ClusterConfigError),
    /// Cluster mode keeps room storage in its PostgreSQL database, but another storage
    /// was chosen.
    ClusterStorage,
    /// [`Server::router`] was called in cluster mode, which needs the server's own
    /// listeners.
    ClusterRouter,
    /// A line of the project variables file ([`Server::env_file`], `.env` by default)
    /// is malformed.
    EnvFile {
        /// The file.
        path: PathBuf,
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The project variables file exists but cannot be read.
    ReadEnvFile {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The directory of [`Server::serve_dir`] is missing, unreadable or not a directory.
    Assets {
        /// The directory, as given.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A [`Server::cors`] setting names no party of the server, or has an invalid header.
    Cors {
        /// The party name given.
        party: String,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateParty(name) => write!(
                f,
                "two parties are named `{name}`: give one another name with #[party(name = \"…\")]"
            ),
            Self::InvalidCron(error) => write!(f, "{error}"),
            Self::InvalidPartyName(name) => write!(
                f,
                "party name `{name}` is invalid: use lowercase letters, digits, `_` and `-`"
            ),
            Self::InvalidAddress(message) => f.write_str(message),
            Self::Bind {
                addr,
                variable,
                error,
            } => {
                write!(f, "cannot listen on {addr}: {error}")?;
                match error.kind() {
                    std::io::ErrorKind::AddrInUse => write!(
                        f,
                        "; another program (perhaps another server) has that port: stop it, \
                         or choose another address with {variable} (e.g. {variable}=2000)"
                    ),
                    std::io::ErrorKind::PermissionDenied => write!(
                        f,
                        "; ports below 1024 need privileges: choose another with {variable}"
                    ),
                    _ => Ok(()),
                }
            }
            Self::Serve(error) => write!(f, "the server failed: {error}"),
            Self::Storage(error) => write!(f, "cannot open storage: {error}"),
            Self::Cluster(error) => write!(f, "cannot join the cluster: {error}"),
            Self::Logging(error) => write!(f, "cannot set up logging: {error}"),
            Self::ClusterStorage => f.write_str(
                "cluster mode keeps room storage in the cluster's PostgreSQL database: remove the .persist(..), .storage(..) or .in_memory() call",
            ),
            Self::ClusterRouter => f.write_str(
                "cluster mode serves its internal listener itself: use Server::serve, listen or run instead of Server::router",
            ),
            Self::NoRuntime => f.write_str(
                "the server must be built inside a Tokio runtime (e.g. in `#[tokio::main]`)",
            ),
            Self::EnvFile {
                path,
                line,
                message,
            } => write!(
                f,
                "malformed project variables file {}, line {line}: {message}",
                path.display()
            ),
            Self::ReadEnvFile { path, error } => write!(
                f,
                "cannot read project variables from {}: {error}",
                path.display()
            ),
            Self::Assets { path, error } => write!(
                f,
                "cannot serve static assets from {}: {error}",
                path.display()
            ),
            Self::Cors { party, message } => {
                write!(f, "invalid CORS setting for party `{party}`: {message}")
            }
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bind { error, .. } | Self::Serve(error) => Some(error),
            Self::Storage(error) => Some(error),
            Self::Cluster(error) => Some(error),
            Self::Logging(error) => Some(error),
            Self::ReadEnvFile { error, .. } | Self::Assets { error, .. } => Some(error),
            _ => None,
        }
    }
}

pub(crate) struct PartyEntry {
    pub(crate) party: Arc<dyn PartyType>,
    pub(crate) rooms: Arc<LiveRooms>,
}

pub(crate) struct App {
    pub(crate) parties: HashMap<&'static str, PartyEntry>,
    pub(crate) crons: Arc<Crons>,
    /// The bearer token `/__scheduled__` requires; `None` turns the trigger off.
    pub(crate) scheduled_token: Option<String>,
    /// The static assets of `serve_dir`, if any.
    pub(crate) assets: Option<assets::Assets>,
    /// The parties with CORS on.
    pub(crate) cors: HashMap<&'static str, cors::Policy>,
    /// What lobbies hand to hooks as `parties()`.
    pub(crate) directory: Arc<crate::parties::Directory>,
    pub(crate) env: Env,
    pub(crate) limits: Arc<Limits>,
    /// The server-wide budget of buffered request bodies.
    pub(crate) bodies: body::BodyBudget,
    pub(crate) backend: Arc<dyn Backend>,
    /// The inspection API's bearer token; `None` turns the API off.
    pub(crate) admin_token: Option<String>,
    /// Cancelled when the shutdown signal came: health checks answer 503 from then on.
    pub(crate) unhealthy: tokio_util::sync::CancellationToken,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// This node's place in the cluster, in cluster mode.
    pub(crate) cluster: Option<Arc<Cluster>>,
    pub(crate) tasks: Tasks,
    /// A server that is dropped rather than shut down still stops its background work.
    _stop_on_drop: StopOnDrop,
}

impl App {
    /// The parties as hooks see them: no room of theirs waits on the calls.
    pub(crate) fn parties(&self) -> crate::parties::Parties {
        crate::parties::Parties::new(Arc::clone(&self.directory), None)
    }

    fn router(self) -> axum::Router {
        dispatch::router(Arc::new(self))
    }
}

/// Binds `addr`, or says which address failed and which variable picks another.
pub(crate) async fn bind(
    addr: &(impl ToSocketAddrs + fmt::Display),
    variable: &'static str,
) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| ServerError::Bind {
            addr: addr.to_string(),
            variable,
            error,
        })
}

/// The address [`Server::run`] binds: `PARTYKIT_HOST` (default `127.0.0.1`) and
/// `PARTYKIT_PORT` (default `1999`).
pub fn addr_from_env() -> Result<SocketAddr, ServerError> {
    let host = std::env::var(HOST_VAR).ok();
    let port = std::env::var(PORT_VAR).ok();
    let ip = match host.as_deref() {
        None | Some("") => DEFAULT_ADDR.ip(),
        Some("localhost") => DEFAULT_ADDR.ip(),
        Some(host) => host.parse().map_err(|_| {
            ServerError::InvalidAddress(format!(
                "{HOST_VAR}={host:?} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"
            ))
        })?,
    };
    let port = match port.as_deref() {
        None | Some("") => DEFAULT_ADDR.port(),
        Some(port) => port.parse().map_err(|_| {
            ServerError::InvalidAddress(format!(
                "{PORT_VAR}={port:?} is not a port number (0-65535)"
            ))
        })?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM: the shutdown signal [`Server::listen`] and
/// [`Server::run`] use, for [`Server::serve`] on a listener of your own.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_port_names_the_address_and_how_to_choose_another() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = taken.local_addr().expect("its address").to_string();
        let error = Server::new()
            .in_memory()
            .no_env_file()
            .listen(addr.as_str())
            .await
            .expect_err("the port is taken");
        let message = error.to_string();
        assert!(matches!(error, ServerError::Bind { .. }), "{message}");
        assert!(
            message.starts_with(&format!("cannot listen on {addr}: ")),
            "{message}"
        );
        assert!(message.contains("PARTYKIT_PORT=2000"), "{message}");
    }
}
