//! `cargo run --release -p bench --bin storage`: durable puts per second through the
//! whole runtime, against plain rusqlite committing one put per transaction on the same
//! disk. `storage --help` lists the options; the "Storage and hibernation" section of
//! `docs/PERFORMANCE.md` describes the method and holds the latest figures.
//!
//! Each scenario starts an in-process server on `127.0.0.1:0` whose party does one
//! `storage.put` per WebSocket message, on a fresh SQLite database (WAL, the default
//! `Durability::Full`), with the output gate on (nothing calls `allow_unconfirmed`). One
//! client per room sends its puts as fast as the socket takes them, then `sync`; the room
//! awaits `storage.sync()` and answers `done`, which the gate lets out only once every put
//! is durable. puts/s = all puts ÷ the time from the first put sent to the last `done`.
//! Afterwards the database is reopened and its rows counted: every put must be there.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bench::{load, measure};
use futures_util::{SinkExt, StreamExt};
use partykit_runtime::storage::{
    Backend, BackendError, BoxFuture, Durability, RoomCommit, RoomKey, RoomSnapshot, SqliteBackend,
};
use partykit_runtime::{Connection, Error, Message, Room, Server, party};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message as Frame;

const USAGE: &str = "\
usage: storage [options]
  Durable puts per second through partykit-rs (WebSocket -> room -> storage -> SQLite,
  Durability::Full, output gate on) against plain rusqlite with one transaction per put,
  on the same disk. Prints a Markdown table, then one JSON line per scenario.

options:
  --rooms A,B        the scenarios' room counts (default 1,100)
  --puts N           puts per scenario, split evenly over its rooms (default 400000)
  --reps N           runs per scenario; the table shows the median (default 3)
  --baseline-secs S  how long the rusqlite baseline runs (default 3)
  --value-bytes N    each stored value's size in bytes, as JSON (default 64)
  --flush-every N    a client flushes its socket after this many puts (default 64)
  --workers N        the server runtime's worker threads (default: the cores available)
  --dir PATH         where the databases go (default /var/tmp, else the temp dir)
  --durability D     full (default), normal or off: the runtime's SQLite durability, for
                     profiling (the baseline always syncs every commit)
  -h, --help         this text";

/// The target from the issue: 100 rooms reach this many durable puts per second.
const TARGET_ROOMS: usize = 100;
const TARGET_PUTS_PER_S: f64 = 100_000.0;

// ---------------------------------------------------------------------------------------
// The party under test

/// One `storage.put(<message>, VALUE)` per message; `sync` waits until every put is
/// durable and answers `done`.
#[party]
struct Writer {
    room: Room,
    value: String,
}

#[party]
impl Writer {
    fn new(room: Room) -> Self {
        let size = room
            .env()
            .get("VALUE_BYTES")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(64) as usize;
        // A JSON string: the quotes are two of its bytes.
        let value = "v".repeat(size.saturating_sub(2));
        Writer { room, value }
    }

    async fn on_connect(&mut self, connection: &Connection) -> Result<(), Error> {
        // Loads the room's storage now, so that the timed puts do not include the load.
        let _: Option<String> = self.room.storage().get("k0").await?;
        connection.send("ready")?;
        Ok(())
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<(), Error> {
        let storage = self.room.storage();
        match message.as_text() {
            Some("sync") => {
                storage.sync().await?;
                // Through the gate: out only once everything before it is durable.
                sender.send("done")?;
            }
            Some(key) => storage.put(key, &self.value).await?,
            None => return Err(Error::msg("binary message")),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// A backend that counts what reaches it

/// The SQLite backend, counting the room commits (what the committers hand over, after
/// merging) and the mutations in them.
struct Counting {
    sqlite: Arc<SqliteBackend>,
    commits: AtomicU64,
    mutations: AtomicU64,
}

impl Backend for Counting {
    fn load(&self, room: &RoomKey) -> BoxFuture<'_, Result<RoomSnapshot, BackendError>> {
        self.sqlite.load(room)
    }

    fn commit(&self, commit: RoomCommit) -> BoxFuture<'_, Result<(), BackendError>> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.mutations
            .fetch_add(commit.mutations.len() as u64, Ordering::Relaxed);
        self.sqlite.commit(commit)
    }

    fn alarms(&self) -> BoxFuture<'_, Result<Vec<(RoomKey, i64)>, BackendError>> {
        self.sqlite.alarms()
    }
}

// ---------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Options {
    rooms: Vec<usize>,
    puts: usize,
    reps: usize,
    baseline: Duration,
    value_bytes: usize,
    flush_every: usize,
    workers: usize,
    dir: PathBuf,
    durability: Durability,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        rooms: vec![1, TARGET_ROOMS],
        puts: 400_000,
        reps: 3,
        baseline: Duration::from_secs(3),
        value_bytes: 64,
        flush_every: 64,
        workers: std::thread::available_parallelism().map_or(2, usize::from),
        dir: default_dir(),
        durability: Durability::Full,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--rooms" => {
                options.rooms = value("--rooms")?
                    .split(',')
                    .map(number)
                    .collect::<Result<_, _>>()?;
            }
            "--puts" => options.puts = number(&value("--puts")?)?,
            "--reps" => options.reps = number(&value("--reps")?)?,
            "--baseline-secs" => {
                options.baseline = Duration::from_secs_f64(number(&value("--baseline-secs")?)?);
            }
            "--value-bytes" => options.value_bytes = number(&value("--value-bytes")?)?,
            "--flush-every" => options.flush_every = number(&value("--flush-every")?)?,
            "--workers" => options.workers = number(&value("--workers")?)?,
            "--dir" => options.dir = PathBuf::from(value("--dir")?),
            "--durability" => {
                options.durability = match value("--durability")?.as_str() {
                    "full" => Durability::Full,
                    "normal" => Durability::Normal,
                    "off" => Durability::Off,
                    other => return Err(format!("unknown durability {other:?}")),
                };
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if options.rooms.contains(&0) || options.reps == 0 || options.workers == 0 {
        return Err("room counts, --reps and --workers must be positive".to_owned());
    }
    if options.value_bytes < 2 || options.flush_every == 0 {
        return Err("--value-bytes must be at least 2 and --flush-every positive".to_owned());
    }
    if let Some(&rooms) = options.rooms.iter().find(|&&rooms| rooms > options.puts) {
        return Err(format!("{rooms} rooms need at least as many puts"));
    }
    Ok(options)
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

/// `/var/tmp` (on disk by convention, where `/tmp` may be a tmpfs), else the temp dir.
fn default_dir() -> PathBuf {
    let var_tmp = Path::new("/var/tmp");
    if var_tmp.is_dir() {
        var_tmp.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A fresh directory for this run's databases, removed on drop.
struct RunDir(PathBuf);

impl RunDir {
    fn create(base: &Path) -> Result<Self, String> {
        let dir = base.join(format!("partykit-bench-storage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// One run through the runtime

#[derive(Debug, Clone)]
struct Run {
    puts: u64,
    elapsed: Duration,
    transactions: u64,
    room_commits: u64,
    committed_puts: u64,
    /// Scheduler time per thread group over the timed part.
    cpu: BTreeMap<&'static str, Sched>,
}

/// What the backend and the threads had done at one moment.
struct Counters {
    room_commits: u64,
    committed_puts: u64,
    transactions: u64,
    threads: BTreeMap<&'static str, Sched>,
}

/// Seconds a group of threads spent on a core, and runnable but waiting for one.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct Sched {
    on_cpu: f64,
    waiting: f64,
}

impl Run {
    fn puts_per_s(&self) -> f64 {
        self.puts as f64 / self.elapsed.as_secs_f64()
    }
}

fn run_once(options: &Options, rooms: usize, db: &Path) -> Result<Run, String> {
    let per_room = options.puts / rooms;
    let sqlite = Arc::new(
        SqliteBackend::open_with_durability(db, options.durability)
            .map_err(|error| format!("cannot open the database: {error}"))?,
    );
    let backend = Arc::new(Counting {
        sqlite: Arc::clone(&sqlite),
        commits: AtomicU64::new(0),
        mutations: AtomicU64::new(0),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers)
        .thread_name("pk-server")
        .enable_all()
        .build()
        .map_err(|error| format!("cannot build the server's runtime: {error}"))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::new()
        .no_env_file()
        .var("VALUE_BYTES", options.value_bytes as u64)
        .storage(Arc::clone(&backend))
        .party::<Writer>();
    let (addr, serving) = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|error| format!("bind: {error}"))?;
        let addr = listener
            .local_addr()
            .map_err(|error| format!("local_addr: {error}"))?;
        let serving = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Ok::<_, String>((addr, serving))
    })?;

    // The load generator: a current-thread runtime on this thread.
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot build the load generator's runtime: {error}"))?;
    let outcome = clients.block_on(drive(addr, rooms, per_room, options.flush_every, || {
        Counters {
            room_commits: backend.commits.load(Ordering::Relaxed),
            committed_puts: backend.mutations.load(Ordering::Relaxed),
            transactions: sqlite.transactions(),
            threads: thread_cpu(),
        }
    }));

    let _ = stop.send(());
    runtime.block_on(async {
        let _ = serving.await;
        sqlite.close().await;
    });
    drop(runtime);
    let (elapsed, before, after) = outcome?;

    let stored = count_rows(db)?;
    let puts = (rooms * per_room) as u64;
    if stored != puts {
        return Err(format!("{puts} puts acknowledged but {stored} rows stored"));
    }
    let cpu = after
        .threads
        .iter()
        .map(|(group, after)| {
            let before = before.threads.get(group).copied().unwrap_or_default();
            let sched = Sched {
                on_cpu: after.on_cpu - before.on_cpu,
                waiting: after.waiting - before.waiting,
            };
            (*group, sched)
        })
        .collect();
    Ok(Run {
        puts,
        elapsed,
        room_commits: after.room_commits - before.room_commits,
        committed_puts: after.committed_puts - before.committed_puts,
        transactions: after.transactions - before.transactions,
        cpu,
    })
}

/// Connects one client per room, waits until every room is ready, then has every client
/// send its puts and `sync` and wait for `done`. Returns the time from the first put to
/// the last `done`, with `snapshot()` taken just before and just after.
async fn drive<S>(
    addr: SocketAddr,
    rooms: usize,
    per_room: usize,
    flush_every: usize,
    snapshot: impl Fn() -> S,
) -> Result<(Duration, S, S), String> {
    let mut sockets = Vec::with_capacity(rooms);
    for room in 0..rooms {
        let mut socket = load::connect(addr, &load::room_name(room)).await?;
        load::expect_text(&mut socket, "ready", Duration::from_secs(120)).await?;
        sockets.push(socket);
    }
    let before = snapshot();
    let start = Instant::now();
    let clients: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(client(socket, per_room, flush_every)))
        .collect();
    for client in clients {
        client
            .await
            .map_err(|error| format!("client task: {error}"))??;
    }
    let elapsed = start.elapsed();
    Ok((elapsed, before, snapshot()))
}

async fn client(socket: load::Socket, puts: usize, flush_every: usize) -> Result<(), String> {
    let (mut sink, mut stream) = socket.split();
    let failed = |error: tokio_tungstenite::tungstenite::Error| format!("send: {error}");
    for put in 0..puts {
        sink.feed(Frame::text(format!("k{put}")))
            .await
            .map_err(failed)?;
        if (put + 1) % flush_every == 0 {
            sink.flush().await.map_err(failed)?;
        }
    }
    sink.send(Frame::text("sync")).await.map_err(failed)?;
    load::expect_text(&mut stream, "done", Duration::from_secs(120)).await
}

/// Scheduler time so far of this process's threads, by group: the server's runtime, the
/// SQLite writer, the load generator (this thread), the rest. The first two fields of
/// `/proc/self/task/<tid>/schedstat` are a thread's time on a core and its time runnable
/// but waiting for one, in nanoseconds.
fn thread_cpu() -> BTreeMap<&'static str, Sched> {
    let mut groups = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return groups;
    };
    let main = std::process::id().to_string();
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(schedstat) = std::fs::read_to_string(path.join("schedstat")) else {
            continue;
        };
        let mut fields = schedstat
            .split_whitespace()
            .map(|field| field.parse::<u64>().unwrap_or(0) as f64 / 1e9);
        let (Some(on_cpu), Some(waiting)) = (fields.next(), fields.next()) else {
            continue;
        };
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let group = if task.file_name().to_string_lossy() == main {
            "load generator"
        } else if comm.starts_with("pk-server") {
            "server runtime"
        } else if comm.starts_with("partykit-sqlite") {
            "sqlite writer"
        } else {
            "other"
        };
        let sum: &mut Sched = groups.entry(group).or_default();
        sum.on_cpu += on_cpu;
        sum.waiting += waiting;
    }
    groups
}

fn count_rows(db: &Path) -> Result<u64, String> {
    let conn = rusqlite::Connection::open(db).map_err(|error| format!("reopen: {error}"))?;
    conn.query_row("SELECT count(*) FROM kv", [], |row| row.get::<_, i64>(0))
        .map(|rows| rows as u64)
        .map_err(|error| format!("count: {error}"))
}

// ---------------------------------------------------------------------------------------
// The baseline: plain rusqlite

#[derive(Debug, Clone, Copy)]
struct Baseline {
    puts: u64,
    elapsed: Duration,
}

impl Baseline {
    fn puts_per_s(&self) -> f64 {
        self.puts as f64 / self.elapsed.as_secs_f64()
    }
}

/// One transaction (and so one WAL sync) per put, WAL, `synchronous=FULL`, into a table
/// shaped like the runtime's, for `window`.
fn baseline(db: &Path, window: Duration, value_bytes: usize) -> Result<Baseline, String> {
    let sql = |error: rusqlite::Error| format!("baseline: {error}");
    let mut conn = rusqlite::Connection::open(db).map_err(sql)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql)?;
    conn.execute_batch(
        "CREATE TABLE kv (
            party TEXT NOT NULL, room TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
            PRIMARY KEY (party, room, key)
        ) WITHOUT ROWID",
    )
    .map_err(sql)?;
    let value = serde_json::to_vec(&"v".repeat(value_bytes.saturating_sub(2)))
        .map_err(|error| error.to_string())?;
    let start = Instant::now();
    let mut puts = 0u64;
    while start.elapsed() < window || puts == 0 {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        tx.prepare_cached(
            "INSERT INTO kv (party, room, key, value) VALUES ('main', 'r0', ?1, ?2)
             ON CONFLICT (party, room, key) DO UPDATE SET value = excluded.value",
        )
        .and_then(|mut put| put.execute(rusqlite::params![format!("k{puts}").as_bytes(), value]))
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        puts += 1;
    }
    let elapsed = start.elapsed();
    let stored = count_rows(db)?;
    if stored != puts {
        return Err(format!("baseline: {puts} puts but {stored} rows"));
    }
    Ok(Baseline { puts, elapsed })
}

// ---------------------------------------------------------------------------------------
// Report

struct ScenarioResult {
    rooms: usize,
    runs: Vec<Run>,
    errors: Vec<String>,
}

impl ScenarioResult {
    fn name(&self) -> String {
        match self.rooms {
            1 => "1 room".to_owned(),
            rooms => format!("{rooms} rooms"),
        }
    }

    /// The run with the median puts/s (the lower middle one for an even count).
    fn median(&self) -> Option<&Run> {
        let mut runs: Vec<&Run> = self.runs.iter().collect();
        runs.sort_by(|a, b| a.puts_per_s().total_cmp(&b.puts_per_s()));
        runs.get(runs.len().saturating_sub(1) / 2).copied()
    }
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        f64::NAN
    }
}

fn table(results: &[ScenarioResult], baseline: &Baseline) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | puts | our puts/s (median) | runs' puts/s | baseline puts/s | ratio \
         | SQLite transactions | puts per transaction | room commits | puts per room commit |\n",
    );
    out.push_str("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for result in results {
        let Some(run) = result.median() else {
            let _ = writeln!(
                out,
                "| {} | – | failed | – | {:.0} | – | – | – | – | – |",
                result.name(),
                baseline.puts_per_s()
            );
            continue;
        };
        let all: Vec<String> = result
            .runs
            .iter()
            .map(|run| format!("{:.0}", run.puts_per_s()))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {:.0} | {:.0} | {} | {:.1} | {} | {:.1} |",
            result.name(),
            run.puts,
            run.puts_per_s(),
            all.join(", "),
            baseline.puts_per_s(),
            ratio(run.puts_per_s(), baseline.puts_per_s()),
            run.transactions,
            ratio(run.puts as f64, run.transactions as f64),
            run.room_commits,
            ratio(run.committed_puts as f64, run.room_commits as f64),
        );
    }
    out.push_str(
        "\nThreads over the median run's timed part: seconds on a core (% of the wall time), \
         and seconds runnable but waiting for a core:\n\n",
    );
    for result in results {
        if let Some(run) = result.median() {
            let wall = run.elapsed.as_secs_f64();
            let parts: Vec<String> = run
                .cpu
                .iter()
                .filter(|(_, sched)| sched.on_cpu > 0.0)
                .map(|(group, sched)| {
                    format!(
                        "{group} {:.2} s ({:.0}%), waiting {:.2} s",
                        sched.on_cpu,
                        100.0 * sched.on_cpu / wall,
                        sched.waiting
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "- {} ({wall:.2} s): {}",
                result.name(),
                parts.join(", ")
            );
        }
    }
    for result in results {
        for error in &result.errors {
            let _ = writeln!(out, "- {}: run failed: {error}", result.name());
        }
    }
    out
}

fn json_line(result: &ScenarioResult, baseline: &Baseline, options: &Options) -> String {
    let run = result.median();
    json!({
        "bench": "storage",
        "scenario": result.name(),
        "rooms": result.rooms,
        "puts": run.map(|run| run.puts),
        "value_bytes": options.value_bytes,
        "durability": durability_name(options.durability),
        "output_gate": true,
        "reps": options.reps,
        "puts_per_s": run.map(Run::puts_per_s),
        "runs_puts_per_s": result.runs.iter().map(Run::puts_per_s).collect::<Vec<_>>(),
        "elapsed_s": run.map(|run| run.elapsed.as_secs_f64()),
        "baseline_puts_per_s": baseline.puts_per_s(),
        "ratio": run.map(|run| ratio(run.puts_per_s(), baseline.puts_per_s())),
        "sqlite_transactions": run.map(|run| run.transactions),
        "puts_per_transaction": run.map(|run| ratio(run.puts as f64, run.transactions as f64)),
        "room_commits": run.map(|run| run.room_commits),
        "puts_per_room_commit": run.map(|run| ratio(run.committed_puts as f64, run.room_commits as f64)),
        "threads_s": run.map(|run| run.cpu.clone()),
        "errors": result.errors,
    })
    .to_string()
}

fn durability_name(durability: Durability) -> &'static str {
    match durability {
        Durability::Full => "full",
        Durability::Normal => "normal",
        Durability::Off => "off",
    }
}

fn filesystem(dir: &Path) -> String {
    std::process::Command::new("df")
        .args(["--output=source,fstype"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| {
            text.lines()
                .nth(1)
                .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if matches!(args.peek().map(String::as_str), Some("-h" | "--help")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match parse(args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("{error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let dir = match RunDir::create(&options.dir) {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let machine = measure::Machine::read();
    let heading = format!(
        "partykit-rs storage benchmark, {}: durable puts, SQLite Durability::{:?} (WAL, \
         synchronous={}), output gate on; {}-byte values; {} run(s) per scenario, median\n\
         machine: {}; CPUs {}; {}; Linux {}; {}\n\
         databases in {} ({}); server: in-process, Tokio multi-thread runtime with {} \
         worker(s); load generator: current-thread runtime on the main thread\n\
         load average before the run: {}\n",
        machine.date,
        options.durability,
        durability_name(options.durability).to_uppercase(),
        options.value_bytes,
        options.reps,
        machine.cpu_model,
        machine.online_cpus,
        machine.memory,
        machine.kernel,
        machine.rustc,
        dir.0.display(),
        filesystem(&dir.0),
        options.workers,
        machine.load_average,
    );
    eprint!("{heading}");

    let baseline = match baseline(
        &dir.0.join("baseline.sqlite3"),
        options.baseline,
        options.value_bytes,
    ) {
        Ok(baseline) => baseline,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "baseline: {} puts in {:.2} s: {:.0} puts/s",
        baseline.puts,
        baseline.elapsed.as_secs_f64(),
        baseline.puts_per_s()
    );

    let mut results = Vec::new();
    let mut database = 0;
    for &rooms in &options.rooms {
        let mut result = ScenarioResult {
            rooms,
            runs: Vec::new(),
            errors: Vec::new(),
        };
        for rep in 1..=options.reps {
            database += 1;
            let db = dir.0.join(format!("run-{database}.sqlite3"));
            match run_once(&options, rooms, &db) {
                Ok(run) => {
                    eprintln!(
                        "{} run {rep}: {} puts in {:.2} s: {:.0} puts/s, {} transactions, \
                         {} room commits",
                        result.name(),
                        run.puts,
                        run.elapsed.as_secs_f64(),
                        run.puts_per_s(),
                        run.transactions,
                        run.room_commits
                    );
                    result.runs.push(run);
                }
                Err(error) => {
                    eprintln!("{} run {rep} failed: {error}", result.name());
                    result.errors.push(error);
                }
            }
            // Each run's database is only needed until its rows are counted.
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
        }
        results.push(result);
    }

    println!("{heading}");
    println!("{}", table(&results, &baseline));
    if let Some(result) = results.iter().find(|result| result.rooms == TARGET_ROOMS) {
        let verdict = match result.median() {
            Some(run) if run.puts_per_s() >= TARGET_PUTS_PER_S => "met",
            Some(_) => "NOT met",
            None => "n/a (no successful run)",
        };
        println!(
            "target: {TARGET_ROOMS} rooms >= {TARGET_PUTS_PER_S:.0} durable puts/s: {verdict}\n"
        );
    }
    let machine_line = json!({ "bench": "storage", "machine": machine, "dir": dir.0 });
    println!("{machine_line}");
    for result in &results {
        println!("{}", json_line(result, &baseline, &options));
    }
    if results.iter().any(|result| !result.errors.is_empty()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
