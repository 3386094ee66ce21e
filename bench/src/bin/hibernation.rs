//! `cargo run --release -p bench --bin hibernation`: what hibernation saves in memory
//! with many idle rooms. `hibernation --help` lists the options; the "Storage and
//! hibernation" section of `docs/PERFORMANCE.md` describes the method and holds the latest
//! figures.
//!
//! For each variant, a server process (this binary, re-run as `hibernation serve …`)
//! serves one party whose value holds some per-room memory (a 64 KiB `Vec` by default,
//! standing for a realistic room's in-memory state); one variant is
//! `#[party(hibernate)]`, the other is not, both with `Limits::hibernate_after` of 1 s.
//! The bench opens one idle socket to each of 1,000 rooms, waits until the rooms have
//! idled past `hibernate_after`, and reads the server's `VmRSS` from `/proc`.
//!
//! The rooms arrive twice over, each time on fresh servers: all at once (`burst`), and
//! in waves spaced past `hibernate_after` (`10 waves`). After a burst every value was
//! alive at once, and the allocator keeps the freed memory for reuse (glibc does not give
//! back chunks in the middle of its heap), so RSS does not fall even though no value is
//! alive; in waves, each wave reuses what the previous one freed. A `GET /live` hook
//! counts the values alive, so the figures say whether rooms really hibernated.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bench::load::{self, HttpClient};
use bench::{measure, servers};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use partykit_runtime::{
    Connection, Error, IntoResponse, Limits, Message, Request, Response, Room, Server, party,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as Frame;

const USAGE: &str = "\
usage: hibernation [options]
  The server's resident memory with many idle rooms, with and without
  #[party(hibernate)]. Prints a Markdown table, then one JSON line.

options:
  --rooms N              rooms, one idle socket each (default 1000)
  --state-kib N          memory each room's value holds, in KiB (default 64)
  --hibernate-after-ms N Limits::hibernate_after (default 1000)
  --idle-ms N            how long the sockets idle before RSS is read (default 3000;
                         at least hibernate-after + 500)
  --waves N              also run a staggered arrival: the rooms connect in N waves,
                         hibernate-after + 250 ms apart (default 10; 1 skips it)
  -h, --help             this text

  hibernation serve <hibernate|awake> <state bytes> <hibernate-after ms>
                         (internal) serve one variant on 127.0.0.1:0";

/// How many handshakes are in flight at once.
const CONNECT_CONCURRENCY: usize = 64;

// ---------------------------------------------------------------------------------------
// The server side: two parties with the same handlers, one hibernating

/// The room values alive in this process.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The bytes each room's value holds.
static STATE_BYTES: AtomicUsize = AtomicUsize::new(64 * 1024);

/// A room's in-memory state: a buffer of `STATE_BYTES`, written so that its pages are
/// resident, counted in `LIVE` while it exists.
#[derive(Debug)]
struct RoomState {
    _bytes: Vec<u8>,
}

impl RoomState {
    fn new(room: &Room) -> Self {
        LIVE.fetch_add(1, Ordering::Relaxed);
        let fill = room.id().bytes().fold(1u8, u8::wrapping_add) | 1;
        RoomState {
            _bytes: vec![fill; STATE_BYTES.load(Ordering::Relaxed)],
        }
    }
}

impl Drop for RoomState {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /live`: how many room values are alive.
fn live(request: &Request) -> Option<Response> {
    (request.path() == "/live").then(|| LIVE.load(Ordering::Relaxed).to_string().into_response())
}

/// Any message is answered with `pong`, waking a hibernated room.
fn pong(sender: &Connection) -> Result<(), Error> {
    sender.send("pong")?;
    Ok(())
}

#[party(hibernate)]
struct Sleeper {
    _state: RoomState,
}

#[party]
impl Sleeper {
    fn new(room: Room) -> Self {
        Sleeper {
            _state: RoomState::new(&room),
        }
    }

    fn on_connect(&mut self, connection: &Connection) -> Result<(), Error> {
        connection.send("welcome")?;
        Ok(())
    }

    fn on_message(&mut self, _message: Message, sender: &Connection) -> Result<(), Error> {
        pong(sender)
    }

    fn on_fetch(request: Request) -> Option<Response> {
        live(&request)
    }
}

#[party]
struct Awake {
    _state: RoomState,
}

#[party]
impl Awake {
    fn new(room: Room) -> Self {
        Awake {
            _state: RoomState::new(&room),
        }
    }

    fn on_connect(&mut self, connection: &Connection) -> Result<(), Error> {
        connection.send("welcome")?;
        Ok(())
    }

    fn on_message(&mut self, _message: Message, sender: &Connection) -> Result<(), Error> {
        pong(sender)
    }

    fn on_fetch(request: Request) -> Option<Response> {
        live(&request)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Awake,
    Hibernate,
}

impl Variant {
    const ALL: [Variant; 2] = [Variant::Awake, Variant::Hibernate];

    fn name(self) -> &'static str {
        match self {
            Self::Awake => "awake",
            Self::Hibernate => "hibernate",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|variant| variant.name() == name)
    }

    fn title(self) -> &'static str {
        match self {
            Self::Awake => "#[party]",
            Self::Hibernate => "#[party(hibernate)]",
        }
    }
}

/// The child's side: serves `variant` until standard input closes. As `bench serve`
/// does: a multi-thread runtime with one worker, in-memory storage.
fn serve(variant: Variant, state_bytes: usize, hibernate_after: Duration) -> ! {
    // The parent closes our stdin (or dies): stop at once, there is nothing to flush.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    STATE_BYTES.store(state_bytes, Ordering::Relaxed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("cannot build the server's runtime");
    let result = runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        let limits = Limits {
            hibernate_after,
            ..Limits::default()
        };
        let server = Server::new().in_memory().no_env_file().limits(limits);
        let server = match variant {
            Variant::Awake => server.party::<Awake>(),
            Variant::Hibernate => server.party::<Sleeper>(),
        };
        let serving = server.serve(listener, std::future::pending());
        tokio::spawn(serving)
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)
    });
    match result {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("hibernation serve {}: {error}", variant.name());
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The parent's side

/// A running server process, ended when dropped (its standard input closes).
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(exe: &Path, variant: Variant, options: &Options) -> Result<Self, String> {
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .arg(variant.name())
            .arg(options.state_bytes.to_string())
            .arg(options.hibernate_after.as_millis().to_string());
        let (child, addr) = servers::spawn_listening(&mut command, exe, variant.name())?;
        Ok(Self { child, addr })
    }

    fn rss(&self) -> Result<u64, String> {
        measure::rss_bytes(self.child.id())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        servers::stop(&mut self.child);
    }
}

#[derive(Debug, Clone)]
struct Options {
    rooms: usize,
    state_bytes: usize,
    hibernate_after: Duration,
    idle: Duration,
    waves: usize,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        rooms: 1000,
        state_bytes: 64 * 1024,
        hibernate_after: Duration::from_secs(1),
        idle: Duration::from_secs(3),
        waves: 10,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--rooms" => options.rooms = number(&value("--rooms")?)?,
            "--state-kib" => options.state_bytes = number::<usize>(&value("--state-kib")?)? * 1024,
            "--hibernate-after-ms" => {
                options.hibernate_after =
                    Duration::from_millis(number(&value("--hibernate-after-ms")?)?);
            }
            "--idle-ms" => options.idle = Duration::from_millis(number(&value("--idle-ms")?)?),
            "--waves" => options.waves = number(&value("--waves")?)?,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if options.rooms == 0 || options.waves == 0 || options.waves > options.rooms {
        return Err("--rooms and --waves must be positive, and waves at most rooms".to_owned());
    }
    options.idle = options
        .idle
        .max(options.hibernate_after + Duration::from_millis(500));
    Ok(options)
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

/// How the rooms arrive: all at once, or in waves spaced past `hibernate_after`, so that
/// a hibernating server has only one wave's values alive at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Arrival {
    waves: usize,
}

impl Arrival {
    fn name(self) -> String {
        match self.waves {
            1 => "burst".to_owned(),
            waves => format!("{waves} waves"),
        }
    }
}

/// What one variant's server looked like.
#[derive(Debug, Clone)]
struct Outcome {
    variant: Variant,
    /// RSS once listening, before any socket.
    start: u64,
    /// The highest RSS seen right after a wave connected.
    connected: u64,
    /// RSS after the sockets idled past `hibernate_after`.
    idle: u64,
    /// Room values alive when `idle` was read.
    live_idle: usize,
    /// Room values alive after one room was sent a message (it must answer).
    live_after_wake: usize,
}

impl Outcome {
    fn per_room_idle(&self, rooms: usize) -> f64 {
        self.idle.saturating_sub(self.start) as f64 / rooms as f64
    }
}

fn measure_variant(
    exe: &Path,
    variant: Variant,
    arrival: Arrival,
    options: &Options,
) -> Result<Outcome, String> {
    let server = ServerProcess::start(exe, variant, options)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot build the client runtime: {error}"))?;
    runtime.block_on(async {
        let addr = server.addr;
        let mut http = HttpClient::connect(addr).await?;
        // One request first, so that the HTTP path's one-time allocations are in `start`.
        live_count(&mut http).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = server.rss()?;

        let mut sockets: Vec<load::Socket> = Vec::with_capacity(options.rooms);
        let mut connected = 0;
        let gap = options.hibernate_after + Duration::from_millis(250);
        for wave in 0..arrival.waves {
            if wave > 0 {
                tokio::time::sleep(gap).await;
            }
            let rooms =
                wave * options.rooms / arrival.waves..(wave + 1) * options.rooms / arrival.waves;
            let joined: Vec<load::Socket> = futures_util::stream::iter(rooms)
                .map(|room| async move {
                    let mut socket = load::connect(addr, &load::room_name(room)).await?;
                    load::expect_text(&mut socket, "welcome", Duration::from_secs(30)).await?;
                    Ok::<_, String>(socket)
                })
                .buffered(CONNECT_CONCURRENCY)
                .try_collect()
                .await?;
            sockets.extend(joined);
            connected = connected.max(server.rss()?);
        }

        // Idle. The sockets are not read meanwhile: nothing is sent to them.
        tokio::time::sleep(options.idle).await;
        let live_idle = live_count(&mut http).await?;
        let idle = server.rss()?;

        // A hibernated room still answers on its socket, rebuilding its value.
        let socket = sockets.first_mut().ok_or("no socket")?;
        socket
            .send(Frame::text("ping"))
            .await
            .map_err(|error| format!("send: {error}"))?;
        load::expect_text(socket, "pong", Duration::from_secs(30)).await?;
        let live_after_wake = live_count(&mut http).await?;
        drop(sockets);
        Ok(Outcome {
            variant,
            start,
            connected,
            idle,
            live_idle,
            live_after_wake,
        })
    })
}

async fn live_count(http: &mut HttpClient) -> Result<usize, String> {
    let (status, body) = http.get("/live").await?;
    let text = String::from_utf8_lossy(&body);
    if status != 200 {
        return Err(format!("GET /live answered {status}: {text}"));
    }
    number(&text)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    match args.peek().map(String::as_str) {
        Some("serve") => {
            let mut words = args.skip(1);
            let variant = words.next().as_deref().and_then(Variant::from_name);
            let bytes = words.next().and_then(|text| text.parse().ok());
            let millis = words.next().and_then(|text| text.parse().ok());
            match (variant, bytes, millis) {
                (Some(variant), Some(bytes), Some(millis)) => {
                    serve(variant, bytes, Duration::from_millis(millis))
                }
                _ => {
                    eprintln!(
                        "usage: hibernation serve <hibernate|awake> <state bytes> <hibernate-after ms>"
                    );
                    return ExitCode::from(2);
                }
            }
        }
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let options = match parse(args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("{error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("cannot find this executable: {error}");
            return ExitCode::FAILURE;
        }
    };
    let machine = measure::Machine::read();
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_else(|_| "none".to_owned());
    let heading = format!(
        "partykit-rs hibernation benchmark, {}: {} rooms x 1 idle socket, {} KiB of state \
         per room value, hibernate_after {} ms, RSS read after {} ms idle\n\
         machine: {}; CPUs {}; {}; Linux {}; {}\n\
         server: one process per variant and arrival, Tokio multi-thread runtime with 1 \
         worker, in-memory storage, the system allocator (GLIBC_TUNABLES: {tunables})\n",
        machine.date,
        options.rooms,
        options.state_bytes / 1024,
        options.hibernate_after.as_millis(),
        options.idle.as_millis(),
        machine.cpu_model,
        machine.online_cpus,
        machine.memory,
        machine.kernel,
        machine.rustc,
    );
    eprint!("{heading}");

    let mut arrivals = vec![Arrival { waves: 1 }];
    if options.waves > 1 {
        arrivals.push(Arrival {
            waves: options.waves,
        });
    }
    let mut pairs = Vec::new();
    for &arrival in &arrivals {
        let mut outcomes = Vec::new();
        for variant in Variant::ALL {
            match measure_variant(&exe, variant, arrival, &options) {
                Ok(outcome) => {
                    eprintln!("{} {}: {outcome:?}", arrival.name(), variant.name());
                    outcomes.push(outcome);
                }
                Err(error) => {
                    eprintln!("{} {} failed: {error}", arrival.name(), variant.name());
                    return ExitCode::FAILURE;
                }
            }
        }
        let [awake, hibernate] = <[Outcome; 2]>::try_from(outcomes).expect("both variants ran");
        pairs.push((arrival, awake, hibernate));
    }

    let rooms = options.rooms;
    println!("{heading}");
    println!(
        "| arrival | variant | RSS at start (MiB) | highest RSS after connecting (MiB) \
         | RSS after idling (MiB) | RSS per idle room (KiB) | room values alive when idle |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (arrival, awake, hibernate) in &pairs {
        for outcome in [awake, hibernate] {
            println!(
                "| {} | `{}` | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
                arrival.name(),
                outcome.variant.title(),
                mib(outcome.start),
                mib(outcome.connected),
                mib(outcome.idle),
                outcome.per_room_idle(rooms) / 1024.0,
                outcome.live_idle,
            );
        }
    }
    println!();
    for (arrival, awake, hibernate) in &pairs {
        let saved = awake.per_room_idle(rooms) - hibernate.per_room_idle(rooms);
        println!(
            "{}: hibernation saves {:.1} KiB per idle room ({:.1} MiB for {rooms} rooms; each \
             value holds {} KiB)",
            arrival.name(),
            saved / 1024.0,
            saved * rooms as f64 / (1024.0 * 1024.0),
            options.state_bytes / 1024
        );
    }
    println!();
    let variant_json = |outcome: &Outcome| {
        json!({
            "rss_start_bytes": outcome.start,
            "rss_connected_max_bytes": outcome.connected,
            "rss_idle_bytes": outcome.idle,
            "rss_per_idle_room_bytes": outcome.per_room_idle(rooms),
            "live_values_idle": outcome.live_idle,
            "live_values_after_wake": outcome.live_after_wake,
        })
    };
    for (arrival, awake, hibernate) in &pairs {
        println!(
            "{}",
            json!({
                "bench": "hibernation",
                "arrival": arrival.name(),
                "waves": arrival.waves,
                "rooms": rooms,
                "state_bytes": options.state_bytes,
                "hibernate_after_ms": options.hibernate_after.as_millis() as u64,
                "idle_ms": options.idle.as_millis() as u64,
                "glibc_tunables": tunables,
                "awake": variant_json(awake),
                "hibernate": variant_json(hibernate),
                "saved_per_room_bytes": awake.per_room_idle(rooms) - hibernate.per_room_idle(rooms),
                "machine": machine,
            })
        );
    }
    let mut ok = true;
    for (arrival, awake, hibernate) in &pairs {
        // Hibernated: no value alive when idle, and the woken room's only.
        if hibernate.live_idle != 0 || hibernate.live_after_wake != 1 {
            eprintln!(
                "{}: {} room values alive after idling and {} after one wake; want 0 and 1",
                arrival.name(),
                hibernate.live_idle,
                hibernate.live_after_wake
            );
            ok = false;
        }
        if awake.live_idle != rooms || awake.live_after_wake != rooms {
            eprintln!(
                "{}: the awake server has {} and {} room values alive; want {rooms}",
                arrival.name(),
                awake.live_idle,
                awake.live_after_wake
            );
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
