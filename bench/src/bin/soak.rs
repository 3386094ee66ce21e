//! `cargo run --release -p bench --bin soak`: minutes of churn plus hostile clients
//! against one server process, printing the server's resident memory and open file
//! descriptors over time and, at the end, whether normal clients were served throughout.
//! `soak --help` lists the options; the "Limits and hostile clients" section of
//! `docs/OPERATIONS.md` describes what it measures and holds the latest figures.
//!
//! The server is this binary re-run as `soak serve …` (the `chat` example's party on
//! `partykit_runtime::Server`, storage in a temporary directory), or any binary that
//! serves the `chat` example on `PARTYKIT_PORT` (`--server target/release/chat`), so
//! that two builds can be compared. Against it, all at once and until the duration is
//! up:
//!
//! - churn: clients connect to one of many rooms (and to fresh rooms, which are created
//!   and later evicted), chat a little and leave;
//! - a probe: a normal client's `GET` on a fresh connection, several times a second; its
//!   latency and whether it was answered are the run's verdict;
//! - slowloris clients trickling a request head one byte at a time;
//! - body holders declaring a 16 MiB body and sending all of it but the last byte;
//! - head holders sending an unfinished 371 KiB head and holding it;
//! - floods: WebSocket clients sending as fast as the server takes it (bounded to a
//!   rate), and a keep-alive HTTP client sending `GET`s back to back;
//! - slow readers: sockets in the flooded rooms that never read.
//!
//! Every client loop stops at the deadline; every wait is bounded; only 127.0.0.1.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bench::{load, measure, servers};
use futures_util::{SinkExt, StreamExt};
use partykit_examples::chat::Chat;
use partykit_runtime::{Limits, Server};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_util::sync::CancellationToken;

const USAGE: &str = "\
usage: soak [options]
  Churn plus hostile clients against one server process; prints the server's RSS
  and open descriptors over time, then a summary and one JSON line.

options:
  --duration S        how long to run, in seconds (default 180)
  --quick             a seconds-long smoke run: 4 s, few clients, short server limits
  --report-every S    seconds between samples (default 10; 1 with --quick)
  --server PATH       run PATH (serving the chat example on PARTYKIT_PORT) instead of
                      this binary's own `soak serve`
  --nofile N          run the server with its file descriptor limit at N (prlimit)
  --churners N        churning clients (default 40)
  --rooms N           rooms they share (default 200)
  --slowloris N       slowloris clients (default 200)
  --body-holders N    clients holding 16 MiB - 1 of a 16 MiB body (default 16)
  --head-holders N    clients holding a 371 KiB unfinished head (default 200)
  --flooders N        WebSocket flooders (default 4), each with 4 slow readers
  -h, --help          this text

  soak serve [--header-timeout-ms N] [--keep-alive-ms N] [--body-timeout-ms N]
             [--room-idle-ms N]
                      (internal) serve the chat party on 127.0.0.1:0";

/// The body holders' declared length: the default limit, 16 MiB.
const BODY_LENGTH: usize = 16 * 1024 * 1024;
/// The head holders' unfinished head.
const HEAD_LENGTH: usize = 371 * 1024;
/// The longest a probe waits for its answer before it counts as not served.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for anything before giving up on that connection.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Options {
    duration: Duration,
    quick: bool,
    report_every: Duration,
    server: Option<PathBuf>,
    nofile: Option<u32>,
    churners: usize,
    rooms: usize,
    slowloris: usize,
    body_holders: usize,
    head_holders: usize,
    flooders: usize,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            duration: Duration::from_secs(180),
            quick: false,
            report_every: Duration::from_secs(10),
            server: None,
            nofile: None,
            churners: 40,
            rooms: 200,
            slowloris: 200,
            body_holders: 16,
            head_holders: 200,
            flooders: 4,
        };
        let mut report_every = None;
        let mut duration = None;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .ok_or_else(|| format!("{name} needs a value"))
                    .and_then(|value| {
                        value
                            .parse::<u64>()
                            .map_err(|_| format!("{name}: not a number: {value}"))
                    })
            };
            match arg.as_str() {
                "--duration" => duration = Some(Duration::from_secs(value("--duration")?)),
                "--report-every" => {
                    report_every = Some(Duration::from_secs(value("--report-every")?.max(1)));
                }
                "--quick" => {
                    options.quick = true;
                    options.churners = 8;
                    options.rooms = 10;
                    options.slowloris = 10;
                    options.body_holders = 4;
                    options.head_holders = 10;
                    options.flooders = 1;
                }
                "--server" => {
                    let path = args.next().ok_or("--server needs a path")?;
                    options.server = Some(PathBuf::from(path));
                }
                "--nofile" => options.nofile = Some(value("--nofile")? as u32),
                "--churners" => options.churners = value("--churners")? as usize,
                "--rooms" => options.rooms = (value("--rooms")? as usize).max(1),
                "--slowloris" => options.slowloris = value("--slowloris")? as usize,
                "--body-holders" => options.body_holders = value("--body-holders")? as usize,
                "--head-holders" => options.head_holders = value("--head-holders")? as usize,
                "--flooders" => options.flooders = value("--flooders")? as usize,
                other => return Err(format!("unknown option {other}\n\n{USAGE}")),
            }
        }
        let (default_duration, default_report) = if options.quick {
            (Duration::from_secs(4), Duration::from_secs(1))
        } else {
            (Duration::from_secs(180), Duration::from_secs(10))
        };
        options.duration = duration.unwrap_or(default_duration);
        options.report_every = report_every.unwrap_or(default_report);
        Ok(options)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some("serve") {
        serve(&args[1..]);
    }
    let options = match Options::parse(&args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("soak: {error}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server side

/// `soak serve`: the chat party, storage in the working directory, until standard
/// input closes.
fn serve(args: &[String]) -> ! {
    let mut limits = Limits::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let millis = args
            .next()
            .and_then(|value| value.parse::<u64>().ok())
            .map(Duration::from_millis);
        let Some(millis) = millis else {
            eprintln!("soak serve: {arg} needs a number of milliseconds");
            std::process::exit(2);
        };
        match arg.as_str() {
            "--header-timeout-ms" => limits.header_read_timeout = millis,
            "--keep-alive-ms" => limits.keep_alive_timeout = millis,
            "--body-timeout-ms" => limits.body_read_timeout = millis,
            "--room-idle-ms" => limits.room_idle_timeout = millis,
            other => {
                eprintln!("soak serve: unknown option {other}");
                std::process::exit(2);
            }
        }
    }
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Runtime::new().expect("cannot build the server's runtime");
    let result = runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        Server::new()
            .persist("soak.db")
            .no_env_file()
            .limits(limits)
            .party::<Chat>()
            .serve(listener, std::future::pending())
            .await
            .map_err(std::io::Error::other)
    });
    match result {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("soak serve: {error}");
            std::process::exit(1);
        }
    }
}

/// The server process under test, stopped when dropped.
struct Target {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Target {
    fn start(options: &Options) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("soak-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let own = std::env::current_exe().map_err(|error| format!("own path: {error}"))?;
        let exe = options.server.clone().unwrap_or(own);
        let mut command = match options.nofile {
            Some(nofile) => {
                let mut command = Command::new("prlimit");
                command.arg(format!("--nofile={nofile}:{nofile}")).arg(&exe);
                command
            }
            None => Command::new(&exe),
        };
        command.current_dir(&dir);
        let (child, addr) = match &options.server {
            None => {
                command.arg("serve");
                if options.quick {
                    // Short limits, so that a seconds-long run sees every cut-off.
                    command.args(["--header-timeout-ms", "500", "--keep-alive-ms", "1000"]);
                    command.args(["--body-timeout-ms", "1000", "--room-idle-ms", "500"]);
                }
                servers::spawn_listening(&mut command, &exe, "soak")?
            }
            Some(_) => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|listener| listener.local_addr())
                    .map_err(|error| format!("cannot find a free port: {error}"))?
                    .port();
                let child = command
                    .env("PARTYKIT_HOST", "127.0.0.1")
                    .env("PARTYKIT_PORT", port.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .map_err(|error| format!("cannot start {}: {error}", exe.display()))?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                // It prints nothing we can wait on: poll until it accepts (bounded).
                for _ in 0..200 {
                    if std::net::TcpStream::connect(addr).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
                (child, addr)
            }
        };
        Ok(Self { child, addr, dir })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // An external server does not watch its standard input: ask it to stop.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        servers::stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn open_fds(pid: u32) -> Result<usize, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .map_err(|error| format!("/proc/{pid}/fd: {error}"))
}

// ---------------------------------------------------------------------------------------
// What the clients saw

#[derive(Debug, Default)]
struct Stats {
    probes_ok: AtomicU64,
    probes_failed: AtomicU64,
    /// Probe latencies, in microseconds, since the last sample.
    window: Mutex<Vec<u64>>,
    /// Every probe latency, for the summary.
    all: Mutex<Vec<u64>>,
    churn_sessions: AtomicU64,
    churn_failed: AtomicU64,
    churn_messages: AtomicU64,
    slowloris_open: AtomicU64,
    slowloris_cut: AtomicU64,
    /// How long each slowloris connection lasted before it was cut, in milliseconds.
    slowloris_lifetimes: Mutex<Vec<u64>>,
    body_open: AtomicU64,
    /// The answers body holders got, or "closed"/"held" (the deadline came first).
    body_answers: Mutex<BTreeMap<String, u64>>,
    head_open: AtomicU64,
    head_answers: Mutex<BTreeMap<String, u64>>,
    flood_sent: AtomicU64,
    http_flood: AtomicU64,
    slow_readers_cut: AtomicU64,
    slow_readers: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stats {
    fn answer(map: &Mutex<BTreeMap<String, u64>>, what: impl Into<String>) {
        *lock(map).entry(what.into()).or_default() += 1;
    }
}

// ---------------------------------------------------------------------------------------
// The run

fn run(options: &Options) -> Result<bool, String> {
    let target = Target::start(options)?;
    let pid = target.pid();
    let addr = target.addr;
    println!(
        "soak: {} for {:?} against {} (pid {pid}, {addr}){}",
        if options.quick { "quick run" } else { "run" },
        options.duration,
        options
            .server
            .as_deref()
            .map_or("soak serve".to_owned(), |path| path.display().to_string()),
        options
            .nofile
            .map_or(String::new(), |nofile| format!(", nofile {nofile}"))
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot build the clients' runtime: {error}"))?;
    let rss_start = measure::rss_bytes(pid)?;
    let fds_start = open_fds(pid)?;
    let summary = runtime.block_on(async {
        let time_to_413 = terabyte_body(addr).await;
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let mut clients = JoinSet::new();
        spawn_clients(&mut clients, options, addr, &stats, &stop);
        let started = Instant::now();
        let deadline = started + options.duration;
        let mut rss_peak = rss_start;
        let mut fds_peak = fds_start;
        let mut rss_samples = Vec::new();
        println!(
            "{:>5}  {:>8}  {:>5}  {:>11}  {:>8}  {:>8}  {:>7}  {:>13}  {:>9}  {:>9}",
            "t", "RSS", "fds", "probes", "p99", "max", "churn", "slowloris", "bodies", "heads"
        );
        println!(
            "{:>4}s  {:>6.1}MB  {:>5}",
            0,
            mib(rss_start),
            fds_start
        );
        while Instant::now() < deadline {
            let next = (Instant::now() + options.report_every).min(deadline);
            tokio::time::sleep_until(next.into()).await;
            let rss = measure::rss_bytes(pid).unwrap_or(0);
            let fds = open_fds(pid).unwrap_or(0);
            rss_peak = rss_peak.max(rss);
            fds_peak = fds_peak.max(fds);
            rss_samples.push(json!({"t": started.elapsed().as_secs_f64(), "rss": rss, "fds": fds}));
            let mut window = std::mem::take(&mut *lock(&stats.window));
            window.sort_unstable();
            println!(
                "{:>4}s  {:>6.1}MB  {:>5}  {:>5}/{:<5}  {:>6.1}ms  {:>6.1}ms  {:>7}  {:>5} {:>3}cut  {:>4}open  {:>4}open",
                started.elapsed().as_secs(),
                mib(rss),
                fds,
                stats.probes_ok.load(Ordering::Relaxed),
                stats.probes_failed.load(Ordering::Relaxed),
                ms(measure::percentile(&window, 99.0)),
                ms(window.last().copied().unwrap_or(0)),
                stats.churn_sessions.load(Ordering::Relaxed),
                stats.slowloris_open.load(Ordering::Relaxed),
                stats.slowloris_cut.load(Ordering::Relaxed),
                stats.body_open.load(Ordering::Relaxed),
                stats.head_open.load(Ordering::Relaxed),
            );
        }
        stop.cancel();
        // Every client stops at the deadline; this bounds the stragglers.
        let drained = tokio::time::timeout(CLIENT_TIMEOUT + Duration::from_secs(5), async {
            while clients.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            clients.abort_all();
        }
        let rss_end = measure::rss_bytes(pid).unwrap_or(0);
        let fds_end = open_fds(pid).unwrap_or(0);
        Summary {
            stats,
            time_to_413,
            rss_start,
            rss_peak,
            rss_end,
            fds_start,
            fds_peak,
            fds_end,
            rss_samples,
        }
    });
    drop(target);
    Ok(summary.print(options))
}

struct Summary {
    stats: Arc<Stats>,
    time_to_413: Result<Duration, String>,
    rss_start: u64,
    rss_peak: u64,
    rss_end: u64,
    fds_start: usize,
    fds_peak: usize,
    fds_end: usize,
    rss_samples: Vec<serde_json::Value>,
}

impl Summary {
    /// Prints the summary and the JSON line; whether normal clients were served
    /// throughout.
    fn print(&self, options: &Options) -> bool {
        let stats = &self.stats;
        let mut all = lock(&stats.all).clone();
        all.sort_unstable();
        let ok = stats.probes_ok.load(Ordering::Relaxed);
        let failed = stats.probes_failed.load(Ordering::Relaxed);
        let served = ok > 0 && failed == 0;
        let mut lifetimes = lock(&stats.slowloris_lifetimes).clone();
        lifetimes.sort_unstable();
        let body_answers = lock(&stats.body_answers).clone();
        let head_answers = lock(&stats.head_answers).clone();
        println!();
        println!(
            "RSS: {:.1} MB at start, {:.1} MB peak, {:.1} MB at the end; fds {} / {} / {}",
            mib(self.rss_start),
            mib(self.rss_peak),
            mib(self.rss_end),
            self.fds_start,
            self.fds_peak,
            self.fds_end
        );
        match &self.time_to_413 {
            Ok(time) => println!("1 TB Content-Length: 413 after {:.1} ms", ms_f(*time)),
            Err(outcome) => println!("1 TB Content-Length: {outcome}"),
        }
        println!(
            "normal clients: {ok} served, {failed} not served within {PROBE_TIMEOUT:?}; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(measure::percentile(&all, 50.0)),
            ms(measure::percentile(&all, 99.0)),
            ms(all.last().copied().unwrap_or(0)),
        );
        println!(
            "churn: {} sessions ({} failed), {} messages received",
            stats.churn_sessions.load(Ordering::Relaxed),
            stats.churn_failed.load(Ordering::Relaxed),
            stats.churn_messages.load(Ordering::Relaxed),
        );
        println!(
            "slowloris: {} cut off, after median {:.1} s (max {:.1} s)",
            stats.slowloris_cut.load(Ordering::Relaxed),
            secs(measure::percentile(&lifetimes, 50.0)),
            secs(lifetimes.last().copied().unwrap_or(0)),
        );
        println!("body holders: {body_answers:?}; head holders: {head_answers:?}");
        println!(
            "floods: {} WebSocket messages, {} HTTP requests; slow readers: {} of {} cut off",
            stats.flood_sent.load(Ordering::Relaxed),
            stats.http_flood.load(Ordering::Relaxed),
            stats.slow_readers_cut.load(Ordering::Relaxed),
            stats.slow_readers.load(Ordering::Relaxed),
        );
        println!(
            "normal clients were {}served throughout",
            if served { "" } else { "NOT " }
        );
        let line = json!({
            "duration_s": options.duration.as_secs_f64(),
            "quick": options.quick,
            "server": options.server.as_deref().map(Path::to_string_lossy),
            "nofile": options.nofile,
            "rss_start": self.rss_start,
            "rss_peak": self.rss_peak,
            "rss_end": self.rss_end,
            "fds_start": self.fds_start,
            "fds_peak": self.fds_peak,
            "fds_end": self.fds_end,
            "time_to_413_ms": self.time_to_413.as_ref().ok().map(|time| ms_f(*time)),
            "probes_ok": ok,
            "probes_failed": failed,
            "probe_p50_us": measure::percentile(&all, 50.0),
            "probe_p99_us": measure::percentile(&all, 99.0),
            "probe_max_us": all.last().copied().unwrap_or(0),
            "served_throughout": served,
            "churn_sessions": stats.churn_sessions.load(Ordering::Relaxed),
            "churn_failed": stats.churn_failed.load(Ordering::Relaxed),
            "slowloris_cut": stats.slowloris_cut.load(Ordering::Relaxed),
            "slowloris_cut_median_ms": measure::percentile(&lifetimes, 50.0),
            "body_answers": body_answers,
            "head_answers": head_answers,
            "flood_sent": stats.flood_sent.load(Ordering::Relaxed),
            "http_flood": stats.http_flood.load(Ordering::Relaxed),
            "slow_readers_cut": stats.slow_readers_cut.load(Ordering::Relaxed),
            "samples": self.rss_samples,
        });
        println!("{line}");
        served
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn ms_f(time: Duration) -> f64 {
    time.as_secs_f64() * 1000.0
}

fn secs(millis: u64) -> f64 {
    millis as f64 / 1000.0
}

fn spawn_clients(
    clients: &mut JoinSet<()>,
    options: &Options,
    addr: SocketAddr,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
) {
    let pace = if options.quick {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    };
    clients.spawn(probe(addr, Arc::clone(stats), stop.clone(), options.quick));
    for index in 0..options.churners {
        clients.spawn(churn(
            addr,
            index,
            options.rooms,
            Arc::clone(stats),
            stop.clone(),
        ));
    }
    for _ in 0..options.slowloris {
        clients.spawn(slowloris(addr, pace, Arc::clone(stats), stop.clone()));
    }
    for _ in 0..options.body_holders {
        clients.spawn(hold_body(addr, pace, Arc::clone(stats), stop.clone()));
    }
    for _ in 0..options.head_holders {
        clients.spawn(hold_head(addr, pace, Arc::clone(stats), stop.clone()));
    }
    for index in 0..options.flooders {
        let room = format!("flood-{index}");
        for _ in 0..4 {
            clients.spawn(slow_reader(
                addr,
                room.clone(),
                Arc::clone(stats),
                stop.clone(),
            ));
        }
        clients.spawn(flood(addr, room, Arc::clone(stats), stop.clone()));
    }
    if options.flooders > 0 {
        clients.spawn(http_flood(addr, Arc::clone(stats), stop.clone()));
    }
}

/// A tiny deterministic generator, so runs are repeatable.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below.max(1) as u64) as usize
    }
}

/// How long until the 1 TB `Content-Length` of a body never sent is answered 413, or
/// what happened instead.
async fn terabyte_body(addr: SocketAddr) -> Result<Duration, String> {
    // First a normal request, so that the figure is not the server's start-up.
    let warm_up = tokio::time::timeout(PROBE_TIMEOUT, async {
        load::HttpClient::connect(addr)
            .await?
            .get("/parties/main/warm-up")
            .await
    })
    .await;
    if !matches!(warm_up, Ok(Ok((200, _)))) {
        return Err(format!(
            "the server did not answer a first GET: {warm_up:?}"
        ));
    }
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|error| format!("connect: {error}"))?;
    stream
        .write_all(
            b"POST /parties/main/tb HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n\r\n",
        )
        .await
        .map_err(|error| format!("write: {error}"))?;
    let mut head = [0u8; 12];
    match tokio::time::timeout(PROBE_TIMEOUT, stream.read_exact(&mut head)).await {
        Ok(Ok(_)) if head.starts_with(b"HTTP/1.1 413") => Ok(started.elapsed()),
        Ok(Ok(_)) => Err(format!("answered {:?}", String::from_utf8_lossy(&head))),
        Ok(Err(error)) => Err(format!("connection ended: {error}")),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// The normal client: `GET` on a fresh connection, several times a second.
async fn probe(addr: SocketAddr, stats: Arc<Stats>, stop: CancellationToken, quick: bool) {
    let every = Duration::from_millis(if quick { 100 } else { 250 });
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
            let mut client = load::HttpClient::connect(addr).await?;
            client.get("/parties/main/probe").await
        })
        .await;
        match answer {
            Ok(Ok((200, _))) => {
                let micros = started.elapsed().as_micros() as u64;
                stats.probes_ok.fetch_add(1, Ordering::Relaxed);
                lock(&stats.window).push(micros);
                lock(&stats.all).push(micros);
            }
            _ => {
                stats.probes_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A client that joins a room, chats a little and leaves, over and over; one session in
/// five goes to a fresh room, which the server creates and later evicts.
async fn churn(
    addr: SocketAddr,
    index: usize,
    rooms: usize,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
    let mut fresh = 0u64;
    while !stop.is_cancelled() {
        let room = if random.next(5) == 0 {
            fresh += 1;
            format!("fresh-{index}-{fresh}")
        } else {
            load::room_name(random.next(rooms))
        };
        let session = tokio::time::timeout(CLIENT_TIMEOUT, async {
            let mut socket = load::connect(addr, &room).await?;
            for message in 0..5 {
                socket
                    .send(Frame::text(format!("hello {message} from {index}")))
                    .await
                    .map_err(|error| error.to_string())?;
                // Reads what the others said meanwhile, for a moment.
                let wait = Duration::from_millis(20 + random.next(80) as u64);
                let until = tokio::time::Instant::now() + wait;
                while let Ok(Some(Ok(_))) = tokio::time::timeout_at(until, socket.next()).await {
                    stats.churn_messages.fetch_add(1, Ordering::Relaxed);
                }
            }
            socket
                .close(None)
                .await
                .map_err(|error| error.to_string())?;
            Ok::<(), String>(())
        })
        .await;
        match session {
            Ok(Ok(())) => stats.churn_sessions.fetch_add(1, Ordering::Relaxed),
            _ => stats.churn_failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Reads until the peer ends the connection or the run stops; what the peer answered,
/// if anything ("closed" without an answer), or `None` if the run stopped first.
async fn answer_or_close(stream: &mut TcpStream, stop: &CancellationToken) -> Option<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            read = stream.read(&mut chunk) => match read {
                Ok(n) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
                _ => {
                    let status = String::from_utf8_lossy(&buffer)
                        .split(' ')
                        .nth(1)
                        .map(str::to_owned);
                    return Some(status.unwrap_or_else(|| "closed".to_owned()));
                }
            }
        }
    }
}

/// A slowloris client: a request head, one byte per `pace`, reconnecting when cut off.
async fn slowloris(addr: SocketAddr, pace: Duration, stats: Arc<Stats>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let Ok(stream) = TcpStream::connect(addr).await else {
            // Refused or out of descriptors: wait a little before trying again.
            pause(&stop, pace).await;
            continue;
        };
        let opened = Instant::now();
        stats.slowloris_open.fetch_add(1, Ordering::Relaxed);
        let (mut reader, mut writer) = stream.into_split();
        let head = b"GET /parties/main/slow HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        let trickle = async {
            for index in 0.. {
                let byte = head.get(index).copied().unwrap_or(b'a');
                if writer.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(pace).await;
            }
        };
        let mut sink = [0u8; 256];
        let cut = tokio::select! {
            () = stop.cancelled() => false,
            () = trickle => true,
            _ = reader.read(&mut sink) => true,
        };
        stats.slowloris_open.fetch_sub(1, Ordering::Relaxed);
        if cut {
            stats.slowloris_cut.fetch_add(1, Ordering::Relaxed);
            lock(&stats.slowloris_lifetimes).push(opened.elapsed().as_millis() as u64);
        }
    }
}

/// A client declaring a 16 MiB body (the default limit), sending all of it but the last
/// byte, then holding it.
async fn hold_body(addr: SocketAddr, pace: Duration, stats: Arc<Stats>, stop: CancellationToken) {
    let chunk = vec![b'b'; 64 * 1024];
    while !stop.is_cancelled() {
        let Ok(stream) = TcpStream::connect(addr).await else {
            pause(&stop, pace).await;
            continue;
        };
        stats.body_open.fetch_add(1, Ordering::Relaxed);
        let (mut reader, mut writer) = stream.into_split();
        let head = format!(
            "POST /parties/main/body HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY_LENGTH}\r\n\r\n"
        );
        let send = async {
            let sent: std::io::Result<()> = async {
                writer.write_all(head.as_bytes()).await?;
                let mut sent = 0;
                while sent < BODY_LENGTH - 1 {
                    let n = chunk.len().min(BODY_LENGTH - 1 - sent);
                    writer.write_all(&chunk[..n]).await?;
                    sent += n;
                }
                Ok(())
            }
            .await;
            // Then nothing: the last byte never comes. A failed write means the server
            // answered and closed: the reader tells which answer.
            drop(sent);
            std::future::pending::<()>().await
        };
        let mut stream_reader = ReadHalfAnswer(&mut reader);
        let answer = tokio::select! {
            () = send => None,
            answer = stream_reader.answer(&stop) => answer,
        };
        stats.body_open.fetch_sub(1, Ordering::Relaxed);
        let Some(answer) = answer else { return };
        Stats::answer(&stats.body_answers, answer);
        pause(&stop, pace).await;
    }
}

/// A client sending an unfinished 371 KiB head, then holding it.
async fn hold_head(addr: SocketAddr, pace: Duration, stats: Arc<Stats>, stop: CancellationToken) {
    let filler = vec![b'h'; 16 * 1024];
    while !stop.is_cancelled() {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            pause(&stop, pace).await;
            continue;
        };
        stats.head_open.fetch_add(1, Ordering::Relaxed);
        let sent = async {
            stream
                .write_all(b"GET /parties/main/head HTTP/1.1\r\nHost: x\r\nX-Big: ")
                .await?;
            let mut written = 0;
            while written < HEAD_LENGTH {
                let n = filler.len().min(HEAD_LENGTH - written);
                stream.write_all(&filler[..n]).await?;
                written += n;
            }
            std::io::Result::Ok(())
        }
        .await;
        let answer = match sent {
            // The server may answer (431) and close while the head is still going out.
            Err(_) => Some(
                answer_or_close(&mut stream, &stop)
                    .await
                    .unwrap_or_else(|| "closed".to_owned()),
            ),
            Ok(()) => answer_or_close(&mut stream, &stop).await,
        };
        stats.head_open.fetch_sub(1, Ordering::Relaxed);
        let Some(answer) = answer else { return };
        Stats::answer(&stats.head_answers, answer);
        pause(&stop, pace).await;
    }
}

/// The reading half of a body holder: the status of the answer, "closed" without one,
/// `None` if the run stopped first.
struct ReadHalfAnswer<'a>(&'a mut tokio::net::tcp::OwnedReadHalf);

impl ReadHalfAnswer<'_> {
    async fn answer(&mut self, stop: &CancellationToken) -> Option<String> {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            tokio::select! {
                () = stop.cancelled() => return None,
                read = self.0.read(&mut chunk) => match read {
                    Ok(n) if n > 0 => {
                        buffer.extend_from_slice(&chunk[..n]);
                        if let Some(status) = String::from_utf8_lossy(&buffer)
                            .strip_prefix("HTTP/1.1 ")
                            .and_then(|rest| rest.get(..3))
                        {
                            return Some(status.to_owned());
                        }
                    }
                    _ => return Some("closed".to_owned()),
                }
            }
        }
    }
}

/// A WebSocket client sending 1 KiB messages into `room`, at most 1,000 a second.
async fn flood(addr: SocketAddr, room: String, stats: Arc<Stats>, stop: CancellationToken) {
    let Ok(mut socket) = load::connect(addr, &room).await else {
        return;
    };
    let message = Frame::binary(vec![b'f'; 1024]);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        for _ in 0..10 {
            if socket.feed(message.clone()).await.is_err() {
                return;
            }
        }
        if socket.flush().await.is_err() {
            return;
        }
        stats.flood_sent.fetch_add(10, Ordering::Relaxed);
        // Drain what the room sends back (nothing: the sender is excluded), without
        // waiting.
        while let Some(Some(Ok(_))) = futures_util::FutureExt::now_or_never(socket.next()) {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
}

/// A socket in a flooded room that never reads, with a small receive buffer: the server
/// should close it once its outbound queue is full, instead of buffering for it.
async fn slow_reader(addr: SocketAddr, room: String, stats: Arc<Stats>, stop: CancellationToken) {
    let connected = async {
        let socket = TcpSocket::new_v4().map_err(|error| error.to_string())?;
        socket
            .set_recv_buffer_size(4096)
            .map_err(|error| error.to_string())?;
        let stream = socket
            .connect(addr)
            .await
            .map_err(|error| error.to_string())?;
        let url = format!("ws://{addr}/parties/main/{room}");
        tokio_tungstenite::client_async(url.as_str(), stream)
            .await
            .map(|(socket, _)| socket)
            .map_err(|error| error.to_string())
    };
    let Ok(Ok(socket)) = tokio::time::timeout(CLIENT_TIMEOUT, connected).await else {
        return;
    };
    stats.slow_readers.fetch_add(1, Ordering::Relaxed);
    stop.cancelled().await;
    // Now read: a socket the server gave up on ends (after what was in flight).
    let mut raw = socket.into_inner();
    let mut sink = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while matches!(raw.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    if ended.is_ok() {
        stats.slow_readers_cut.fetch_add(1, Ordering::Relaxed);
    }
}

/// A keep-alive HTTP client sending `GET`s back to back (each waits for its answer).
async fn http_flood(addr: SocketAddr, stats: Arc<Stats>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let Ok(mut client) = load::HttpClient::connect(addr).await else {
            pause(&stop, Duration::from_millis(100)).await;
            continue;
        };
        loop {
            let answer = tokio::select! {
                () = stop.cancelled() => return,
                answer = tokio::time::timeout(CLIENT_TIMEOUT, client.get("/parties/main/flood")) => answer,
            };
            match answer {
                Ok(Ok(_)) => stats.http_flood.fetch_add(1, Ordering::Relaxed),
                _ => break,
            };
        }
    }
}

async fn pause(stop: &CancellationToken, wait: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(wait) => {}
    }
}
