//! Assembling parties into a server: the builder, the router, listening and shutdown.

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

pub(crate) use party_type::PartyType;
use party_type::Typed;

use crate::alarms::AlarmClock;
use crate::room::{Rooms, Services};
use crate::storage::{Backend, BackendError, MemoryBackend, SqliteBackend};
use crate::{Env, Limits, Party};

/// The environment variable that overrides the host [`Server::run`] binds to.
pub const HOST_VAR: &str = "PARTYKIT_HOST";
/// The environment variable that overrides the port [`Server::run`] binds to.
pub const PORT_VAR: &str = "PARTYKIT_PORT";
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
        }
    }

    /// Adds party `P`, served at `/parties/<P::NAME>/<room>` (and `/party/<room>` for
    /// `main`). Two parties with one name are refused when the server starts.
    #[must_use]
    pub fn party<P: Party>(mut self) -> Self {
        self.parties.push(Arc::new(Typed::<P>::new()));
        self
    }

    /// Sets a project variable, visible as `room.env()`. Any JSON value.
    #[must_use]
    pub fn var(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.vars.push((name.into(), value.into()));
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
        let env: Env = self.vars.into_iter().collect();
        let limits = Arc::new(self.limits.clone());
        let backend: Arc<dyn Backend> = match self.storage {
            StorageChoice::File(path) => {
                Arc::new(SqliteBackend::open(&path).map_err(ServerError::Storage)?)
            }
            StorageChoice::Backend(backend) => backend,
        };
        let (alarms, clock) = AlarmClock::new();
        let services = Arc::new(Services {
            env: env.clone(),
            limits: self.limits,
            backend: Arc::clone(&backend),
            alarms: alarms.clone(),
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
        let directories = parties
            .iter()
            .map(|(name, entry)| (*name, Arc::clone(&entry.rooms)))
            .collect();
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
        Ok(App {
            parties,
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
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateParty(name) => write!(
                f,
                "two parties are named `{name}`: give one another name with #[party(name = \"…\")]"
            ),
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
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bind(error) | Self::Serve(error) => Some(error),
            Self::Storage(error) => Some(error),
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
    pub(crate) env: Env,
    pub(crate) limits: Arc<Limits>,
    pub(crate) stopping: CancellationToken,
    pub(crate) sockets: TaskTracker,
}

impl App {
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
