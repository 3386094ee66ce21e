//! A cluster node for the multi-process cluster tests (tests/tests/cluster.rs), configured
//! by the environment alone, as [`Server::run`] reads it: `PARTYKIT_CLUSTER_URL`,
//! `PARTYKIT_NODE_ADDR`, `PARTYKIT_CLUSTER_SECRET`, `PARTYKIT_LEASE_TTL_MS`, and
//! `PARTYKIT_HOST`/`PARTYKIT_PORT` for the public listener. It binds the public listener
//! itself (rather than through `run`) only to print `listening on <addr>` on stdout once
//! it is bound, as `party-server` does; `CLUSTER_NODE_CRON=1` declares a cron schedule
//! running every minute.
//!
//! Parties:
//! - `main`: a durable counter. `POST` increments it and answers the new value, `GET`
//!   answers it, `GET …/node` answers this node's `PARTYKIT_NODE_ADDR`. A socket gets the
//!   value on connect; `inc` increments and broadcasts the new value (held until it is
//!   durable), any other text is broadcast as it is. `on_cron` records each run in the
//!   `ticks` party, room `<tick seconds>@<node addr>`, one key per run.
//! - `alarm`: `POST ?in=<ms>` sets the room's alarm; `on_alarm` stores `fired` (count + 1)
//!   and the address of the node it ran on; `GET` answers `{"fired": n, "node": addr}`.
//! - `caller`: `GET ?to=<room>` calls that room of `caller` at `/called?from=<self>` and
//!   answers what it answered (status included). A room whose id starts with `back`
//!   calls its caller back there, which closes a cycle (508); others answer
//!   `<id> on <node addr>`.
//! - `ticks`: written by `on_cron` only.
//! - `yjs`: a Yjs document (`content`) for the `y-partykit` provider; `GET` answers the
//!   text.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use partykit_runtime::yjs::yrs::{GetString, Transact};
use partykit_runtime::yjs::{Persistence, YDoc, YjsOptions};
use partykit_runtime::{
    ClusterConfig, Connection, Cron, CronLobby, Error, IntoResponse, Json, Message, Method,
    NODE_ADDR_VAR, Request, Response, Result, Room, Server, StatusCode, addr_from_env, party,
    shutdown_signal,
};
use tokio::net::TcpListener;

/// This node's internal address, as the other nodes know it.
fn node_addr() -> &'static str {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| std::env::var(NODE_ADDR_VAR).unwrap_or_default())
}

fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

fn empty_request(method: Method) -> Result<Request> {
    Request::builder().method(method).body("")
}

// ---------------------------------------------------------------------------------------
// main: the counter

const COUNT: &str = "count";

#[party(name = "main")]
struct Counter {
    room: Room,
    count: u64,
}

#[party]
impl Counter {
    fn new(room: Room) -> Self {
        Counter { room, count: 0 }
    }

    async fn on_start(&mut self) -> Result<()> {
        self.count = self.room.storage().get(COUNT).await?.unwrap_or(0);
        Ok(())
    }

    fn on_connect(&mut self, conn: &Connection) -> Result<()> {
        conn.send(self.count.to_string())?;
        Ok(())
    }

    async fn on_message(&mut self, message: Message) -> Result<()> {
        match message.as_text() {
            Some("inc") => {
                self.increment().await?;
            }
            Some(text) => self.room.broadcast(text.to_owned(), &[]),
            None => {}
        }
        Ok(())
    }

    async fn on_request(&mut self, request: Request) -> Result<String> {
        let prefix = format!("/parties/main/{}", self.room.id());
        let rest = request.path().strip_prefix(&prefix).unwrap_or_default();
        match (request.method().clone(), rest) {
            (Method::GET, "/node") => Ok(node_addr().to_owned()),
            (Method::GET, "" | "/") => Ok(self.count.to_string()),
            (Method::POST, "" | "/") => Ok(self.increment().await?.to_string()),
            _ => Err(Error::with_status(
                StatusCode::NOT_FOUND,
                "GET or POST the room; GET /node names the node",
            )),
        }
    }

    async fn on_cron(cron: Cron, lobby: &CronLobby) -> Result<()> {
        let tick = cron
            .scheduled_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let ticks = lobby
            .parties()
            .get("ticks")
            .ok_or_else(|| Error::msg("no ticks party"))?;
        let response = ticks
            .get(&format!("{tick}@{}", node_addr()))
            .fetch("", empty_request(Method::POST)?)
            .await?;
        if !response.status().is_success() {
            return Err(Error::msg(format!(
                "recording tick {tick} answered {}",
                response.status()
            )));
        }
        Ok(())
    }
}

impl Counter {
    async fn increment(&mut self) -> Result<u64> {
        self.count += 1;
        self.room.storage().put(COUNT, &self.count).await?;
        // Held by the output gate until the put is durable.
        self.room.broadcast(self.count.to_string(), &[]);
        Ok(self.count)
    }
}

// ---------------------------------------------------------------------------------------
// ticks: one key per cron run

#[party(name = "ticks")]
struct Ticks {
    room: Room,
}

#[party]
impl Ticks {
    fn new(room: Room) -> Self {
        Ticks { room }
    }

    async fn on_request(&mut self) -> Result<&'static str> {
        // A key per run (not a count): two runs of one tick on this node show as two.
        let key = format!("run:{}", unique_suffix());
        self.room.storage().put(&key, &now_ms()).await?;
        Ok("recorded")
    }
}

/// A key unique enough for one process: the time in nanoseconds and a counter.
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!("{nanos}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------
// alarm

#[party(name = "alarm")]
struct Alarm {
    room: Room,
}

#[party]
impl Alarm {
    fn new(room: Room) -> Self {
        Alarm { room }
    }

    async fn on_request(&mut self, request: Request) -> Result<Json<serde_json::Value>> {
        let storage = self.room.storage();
        match *request.method() {
            Method::POST => {
                let delay: u64 = request
                    .query("in")
                    .and_then(|ms| ms.parse().ok())
                    .ok_or_else(|| {
                        Error::with_status(StatusCode::BAD_REQUEST, "add ?in=<milliseconds>")
                    })?;
                let at = UNIX_EPOCH + Duration::from_millis(now_ms() + delay);
                storage.set_alarm(at).await?;
                Ok(Json(
                    serde_json::json!({ "set": true, "node": node_addr() }),
                ))
            }
            Method::GET => {
                let fired: u64 = storage.get("fired").await?.unwrap_or(0);
                let node: Option<String> = storage.get("node").await?;
                Ok(Json(serde_json::json!({ "fired": fired, "node": node })))
            }
            _ => Err(Error::with_status(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST ?in=<ms> sets the alarm; GET reads what fired",
            )),
        }
    }

    async fn on_alarm(&mut self) -> Result<()> {
        let storage = self.room.storage();
        let fired: u64 = storage.get("fired").await?.unwrap_or(0);
        storage.put("fired", &(fired + 1)).await?;
        storage.put("node", node_addr()).await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// caller: room-to-room calls

#[party(name = "caller")]
struct Caller {
    room: Room,
}

#[party]
impl Caller {
    fn new(room: Room) -> Self {
        Caller { room }
    }

    async fn on_request(&mut self, request: Request) -> Result<Response> {
        let callers = self
            .room
            .context()
            .parties()
            .get("caller")
            .ok_or_else(|| Error::msg("no caller party"))?;
        if let Some(to) = request.query("to") {
            let path = format!("/called?from={}", self.room.id());
            return callers
                .get(&to)
                .fetch(&path, empty_request(Method::GET)?)
                .await
                .map(Response::from);
        }
        if self.room.id().starts_with("back")
            && let Some(from) = request.query("from")
        {
            let path = format!("/called?from={}", self.room.id());
            return callers
                .get(&from)
                .fetch(&path, empty_request(Method::GET)?)
                .await
                .map(Response::from);
        }
        Ok(format!("{} on {}", self.room.id(), node_addr()).into_response())
    }
}

// ---------------------------------------------------------------------------------------
// yjs

#[party(name = "yjs")]
struct Document {
    doc: YDoc,
}

#[party]
impl Document {
    fn new(room: Room) -> Self {
        let doc = YDoc::new(&room, YjsOptions::new().persist(Persistence::Snapshot));
        Document { doc }
    }

    async fn on_connect(&mut self, conn: &Connection) -> Result<()> {
        self.doc.on_connect(conn).await
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        self.doc.on_message(message, sender).await
    }

    async fn on_close(&mut self, conn: &Connection) -> Result<()> {
        self.doc.on_close(conn).await
    }

    async fn on_request(&mut self) -> Result<String> {
        self.doc.load().await?;
        let doc = self.doc.doc();
        Ok(doc
            .get_or_insert_text("content")
            .get_string(&doc.transact()))
    }
}

#[tokio::main]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let fail = |what: &dyn std::fmt::Display| -> ! {
        eprintln!("cluster-node: {what}");
        std::process::exit(1);
    };
    let addr = addr_from_env().unwrap_or_else(|error| fail(&error));
    let mut server = Server::new()
        .no_env_file()
        .party::<Counter>()
        .party::<Ticks>()
        .party::<Alarm>()
        .party::<Caller>()
        .party::<Document>();
    // What `Server::run` does with the environment.
    match ClusterConfig::from_env() {
        Ok(Some(config)) => server = server.cluster(config),
        Ok(None) => fail(&"PARTYKIT_CLUSTER_URL is not set: this binary is a cluster node"),
        Err(error) => fail(&error),
    }
    if std::env::var("CLUSTER_NODE_CRON").is_ok_and(|on| on == "1") {
        server = server.cron("every-minute", "* * * * *");
    }
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|error| fail(&format!("cannot bind {addr}: {error}")));
    let addr = listener.local_addr().unwrap_or_else(|error| fail(&error));
    println!("listening on {addr}");
    std::io::stdout().flush().expect("flush stdout");
    if let Err(error) = server.serve(listener, shutdown_signal()).await {
        fail(&error);
    }
}
