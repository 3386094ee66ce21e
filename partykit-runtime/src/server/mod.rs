//! Assembling parties into a server: the builder, the router, listening and shutdown.

mod assets;
mod cors;
mod dispatch;
mod party_type;
mod routing;
mod socket;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use cors::Cors;
pub(crate) use party_type::PartyType;
use party_type::Typed;

use crate::alarms::AlarmClock;
use crate::cron::{CronError, Crons};
use crate::room::{Rooms, Services};
use crate::storage::{Backend, BackendError, MemoryBackend, SqliteBackend};
use crate::{Cron, CronLobby, Env, Limits, Party};

/// The environment variable that overrides the host [`Server::run`] binds to.
pub const HOST_VAR: &str = "PARTYKIT_HOST";
/// The environment variable that overrides the port [`Server::run`] binds to.
pub const PORT_VAR: &str = "PARTYKIT_PORT";
/// The environment variable that turns on the `/__scheduled__` trigger with this token
/// when [`Server::scheduled_token`] is not set; read when the server is built.
pub const SCHEDULED_TOKEN_VAR: &str = "PARTYKIT_SCHEDULED_TOKEN";
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
}

enum StorageChoice {
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
            storage: StorageChoice::File(PathBuf::from(crate::storage::DEFAULT_PATH)),
            env_file: crate::env::EnvFile::Default,
            assets: assets::Config::default(),
            cors: Vec::new(),
            crons: Vec::new(),
            scheduled_token: None,
        }
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
    /// [`serve`](Self::serve), [`listen`](Self::listen) or [`run`](Self::run).
    pub fn router(self) -> Result<axum::Router, ServerError> {
        Ok(self
            .build(CancellationToken::new(), TaskTracker::new())?
            .router())
    }

    /// Binds to `PARTYKIT_HOST`:`PARTYKIT_PORT` (default `127.0.0.1:1999`) and serves
    /// until SIGINT or SIGTERM.
    pub async fn run(self) -> Result<(), ServerError> {
        let addr = addr_from_env()?;
        self.listen(addr).await
    }

    /// Binds to `addr` and serves until SIGINT or SIGTERM.
    pub async fn listen(self, addr: impl ToSocketAddrs) -> Result<(), ServerError> {
        let listener = TcpListener::bind(addr).await.map_err(ServerError::Bind)?;
        self.serve(listener, shutdown_signal()).await
    }

    /// Serves on `listener` until `shutdown` completes; then stops accepting, closes
    /// every socket with 1001 and waits (up to [`Limits::shutdown_grace`]) for the close
    /// frames to go out.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let stopping = CancellationToken::new();
        let sockets = TaskTracker::new();
        let grace = self.limits.shutdown_grace;
        let app = self.build(stopping.clone(), sockets.clone())?;
        let names: Vec<&str> = app.parties.keys().copied().collect();
        match listener.local_addr() {
            Ok(addr) => tracing::info!(%addr, parties = ?names, "partykit server listening"),
            Err(_) => tracing::info!(parties = ?names, "partykit server listening"),
        }
        let router = app.router();
        let signal = stopping.clone();
        // Real-time traffic: a frame must not wait for Nagle's algorithm to batch it.
        let listener = listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: closing sockets with 1001");
                signal.cancel();
            })
            .await
            .map_err(ServerError::Serve)?;
        stopping.cancel();
        sockets.close();
        if tokio::time::timeout(grace, sockets.wait()).await.is_err() {
            tracing::warn!("some sockets did not close within {grace:?}");
        }
        Ok(())
    }

    fn build(self, stopping: CancellationToken, sockets: TaskTracker) -> Result<App, ServerError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ServerError::NoRuntime)?;
        let env = crate::env::load(&self.env_file, self.vars)?;
        let crons = Arc::new(Crons::parse(self.crons).map_err(ServerError::InvalidCron)?);
        let assets = assets::Assets::open(self.assets)?;
        let limits = Arc::new(self.limits.clone());
        let backend: Arc<dyn Backend> = match self.storage {
            StorageChoice::File(path) => {
                Arc::new(SqliteBackend::open(&path).map_err(ServerError::Storage)?)
            }
            StorageChoice::Backend(backend) => backend,
        };
        let (alarms, clock) = AlarmClock::new();
        let directory = Arc::new(crate::parties::Directory::default());
        let services = Arc::new(Services {
            env: env.clone(),
            limits: self.limits.clone(),
            backend: Arc::clone(&backend),
            alarms: alarms.clone(),
            parties: Arc::clone(&directory),
            room_slots: crate::room::RoomSlots::new(&self.limits),
        });
        let mut parties = HashMap::new();
        for party in self.parties {
            let name = party.name();
            if !is_valid_party_name(name) {
                return Err(ServerError::InvalidPartyName(name));
            }
            let rooms = Arc::new(Rooms::new(Arc::clone(&party), Arc::clone(&services)));
            if parties.insert(name, PartyEntry { party, rooms }).is_some() {
                return Err(ServerError::DuplicateParty(name));
            }
        }
        let cors = cors::policies(self.cors, &parties)?;
        let directories: HashMap<&'static str, Arc<Rooms>> = parties
            .iter()
            .map(|(name, entry)| (*name, Arc::clone(&entry.rooms)))
            .collect();
        directory.fill(directories.clone());
        runtime.spawn(clock.run(directories));
        // Alarms stored before a restart: those due meanwhile fire at once.
        runtime.spawn(async move {
            match backend.alarms().await {
                Ok(stored) => {
                    for (room, time) in stored {
                        alarms.set(room, Some(time));
                    }
                }
                Err(error) => tracing::error!(%error, "cannot load stored alarms"),
            }
        });
        for (name, entry) in &parties {
            let handlers = entry.party.handlers();
            if *name != "main" && (handlers.on_fetch || handlers.on_socket || handlers.on_cron) {
                tracing::warn!(
                    party = name,
                    "only the main party's on_fetch, on_socket and on_cron are used; this party's are ignored"
                );
            }
        }
        let main_crons = parties
            .get("main")
            .map(|entry| entry.party.clone())
            .filter(|main| main.handlers().on_cron);
        match main_crons {
            Some(main) if !crons.is_empty() => {
                let crons = Arc::clone(&crons);
                let lobby = CronLobby {
                    env: env.clone(),
                    parties: crate::parties::Parties::new(Arc::clone(&directory), None),
                };
                runtime.spawn(async move {
                    crons
                        .run(|name, cron, scheduled_time| {
                            let (main, lobby) = (Arc::clone(&main), lobby.clone());
                            tokio::spawn(async move {
                                let cron = Cron {
                                    name,
                                    cron,
                                    scheduled_time,
                                };
                                if let Err(error) = main.cron(cron, &lobby).await {
                                    tracing::warn!(%error, "on_cron failed");
                                }
                            });
                        })
                        .await;
                });
            }
            None if !crons.is_empty() => tracing::warn!(
                "cron schedules are declared but the main party has no on_cron: they will not run"
            ),
            _ => {}
        }
        Ok(App {
            parties,
            scheduled_token: self
                .scheduled_token
                .or_else(|| std::env::var(SCHEDULED_TOKEN_VAR).ok())
                .filter(|token| !token.is_empty()),
            crons,
            assets,
            cors,
            directory,
            env,
            limits,
            stopping,
            sockets,
        })
    }
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
    /// The address could not be bound.
    Bind(std::io::Error),
    /// Serving failed.
    Serve(std::io::Error),
    /// The storage backend could not be opened.
    Storage(BackendError),
    /// The server was built outside a Tokio runtime.
    NoRuntime,
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
            Self::Bind(error) => write!(f, "cannot bind the server's address: {error}"),
            Self::Serve(error) => write!(f, "the server failed: {error}"),
            Self::Storage(error) => write!(f, "cannot open storage: {error}"),
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
            Self::Bind(error) | Self::Serve(error) => Some(error),
            Self::Storage(error) => Some(error),
            Self::ReadEnvFile { error, .. } | Self::Assets { error, .. } => Some(error),
            _ => None,
        }
    }
}

pub(crate) struct PartyEntry {
    pub(crate) party: Arc<dyn PartyType>,
    pub(crate) rooms: Arc<Rooms>,
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
    pub(crate) stopping: CancellationToken,
    pub(crate) sockets: TaskTracker,
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

fn is_valid_party_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
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
