//! `cargo run --release -p bench --bin room_churn`: does the server's memory level off
//! when rooms come and go? `room_churn --help` lists the options; the "Room churn"
//! section of `docs/PERFORMANCE.md` describes the method and holds the latest figures.
//!
//! A server process (this binary, re-run as `room_churn serve …`) serves the `chat`
//! example's party with a short `Limits::room_idle_timeout`. Each cycle creates `--rooms`
//! new rooms with one HTTP `GET` each (fresh ids every cycle, as real churn has), reads
//! the server's `VmRSS`, waits until every room has been evicted, and reads it again.
//! `Limits::max_rooms` is set to the number of rooms, so that the next cycle being served
//! without a 503 shows that every room of the last one was evicted.
//!
//! The server inherits the environment, so glibc's tunables (`MALLOC_ARENA_MAX`,
//! `GLIBC_TUNABLES`) apply to it: comparing runs tells whether memory that does not come
//! back is held by the program or only by the allocator. `--pause-ms` leaves time after
//! the last cycle to inspect the server (its pid is printed), e.g. to call
//! `malloc_trim(0)` in it from a debugger.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use bench::load::HttpClient;
use bench::measure;
use partykit_examples::chat::Chat;
use partykit_runtime::{Limits, Server};
use tokio::net::TcpListener;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: room_churn [options]
  The server's resident memory over cycles of creating and evicting rooms.
  Prints one line per cycle, then one JSON line.

options:
  --rooms N      rooms created per cycle, one GET each (default 15000)
  --cycles N     cycles (default 6)
  --idle-ms N    Limits::room_idle_timeout (default 1000)
  --clients N    concurrent keep-alive HTTP clients (default 32)
  --id-bytes N   room id length, at least 16 (default 16)
  --pause-ms N   after the last cycle, wait N ms before stopping the server
  -h, --help     this text

  room_churn serve <idle ms> <max rooms>
                 (internal) serve the chat party on 127.0.0.1:0";

struct Options {
    rooms: usize,
    cycles: usize,
    idle_ms: u64,
    clients: usize,
    id_bytes: usize,
    pause_ms: u64,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        rooms: 15_000,
        cycles: 6,
        idle_ms: 1000,
        clients: 32,
        id_bytes: 16,
        pause_ms: 0,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|value| value.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--rooms" => options.rooms = number("--rooms")? as usize,
            "--cycles" => options.cycles = number("--cycles")? as usize,
            "--idle-ms" => options.idle_ms = number("--idle-ms")?,
            "--clients" => options.clients = number("--clients")?.max(1) as usize,
            "--id-bytes" => options.id_bytes = number("--id-bytes")?.max(16) as usize,
            "--pause-ms" => options.pause_ms = number("--pause-ms")?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(options)
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
    let options = match parse(&args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("{error}\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("cannot build the runtime");
    match runtime.block_on(run(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("room_churn: {error}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server side

/// Serves the chat party until standard input closes. Never returns.
fn serve(args: &[String]) -> ! {
    let number = |index: usize| -> u64 {
        args.get(index)
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("serve: argument {index} must be a number"))
    };
    let (idle_ms, max_rooms) = (number(0), number(1) as usize);
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    // The runtime `#[tokio::main]` builds, as the examples' binaries use.
    let runtime = tokio::runtime::Runtime::new().expect("cannot build the server's runtime");
    let result = runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        Server::new()
            .in_memory()
            .no_env_file()
            .party::<Chat>()
            .limits(Limits {
                room_idle_timeout: Duration::from_millis(idle_ms),
                max_rooms,
                ..Limits::default()
            })
            .serve(listener, std::future::pending())
            .await
            .map_err(std::io::Error::other)
    });
    if let Err(error) = result {
        eprintln!("room_churn serve: {error}");
    }
    std::process::exit(1)
}

// ---------------------------------------------------------------------------------------
// The driver

struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn spawn(options: &Options) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|error| error.to_string())?;
        let mut child = Command::new(exe)
            .args([
                "serve",
                &options.idle_ms.to_string(),
                &options.rooms.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start the server: {error}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|error| error.to_string())?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| format!("the server said {line:?}"))?;
        Ok(Self { child, addr })
    }

    fn rss_mib(&self) -> Result<f64, String> {
        Ok(measure::rss_bytes(self.child.id())? as f64 / (1024.0 * 1024.0))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// `rooms` GETs to fresh rooms of `cycle`, spread over `clients` keep-alive connections.
async fn create_rooms(addr: SocketAddr, options: &Options, cycle: usize) -> Result<(), String> {
    let mut tasks = Vec::new();
    for client in 0..options.clients {
        let (rooms, clients, id_bytes) = (options.rooms, options.clients, options.id_bytes);
        tasks.push(tokio::spawn(async move {
            let mut http = HttpClient::connect(addr).await?;
            for index in (client..rooms).step_by(clients) {
                let id = format!("c{cycle}-r{index}-");
                let id = format!("{id}{}", "x".repeat(id_bytes.saturating_sub(id.len())));
                let (status, body) = http.get(&format!("/parties/main/{id}")).await?;
                if status != 200 {
                    return Err(format!(
                        "GET {id} answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|error| error.to_string())??;
    }
    Ok(())
}

async fn run(options: &Options) -> Result<(), String> {
    let server = ServerProcess::spawn(options)?;
    let arena_max = std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "unset".to_owned());
    let allocator = if cfg!(feature = "mimalloc") {
        "mimalloc"
    } else {
        "system"
    };
    println!(
        "server pid {}: {} rooms per cycle, idle timeout {} ms, {}-byte ids, {allocator} allocator, MALLOC_ARENA_MAX={arena_max}",
        server.child.id(),
        options.rooms,
        options.idle_ms,
        options.id_bytes
    );
    let start_rss = server.rss_mib()?;
    println!("start: {start_rss:.1} MiB");
    let mut cycles = Vec::new();
    for cycle in 1..=options.cycles {
        let started = Instant::now();
        create_rooms(server.addr, options, cycle).await?;
        let created = started.elapsed();
        let full = server.rss_mib()?;
        // Each room is evicted the idle timeout after its last event; the margin covers
        // the actors' wake-ups on a busy machine.
        tokio::time::sleep(Duration::from_millis(options.idle_ms) + Duration::from_secs(2)).await;
        let evicted = server.rss_mib()?;
        println!(
            "cycle {cycle}: created in {:.1} s, {full:.1} MiB with the rooms live, {evicted:.1} MiB after eviction",
            created.as_secs_f64()
        );
        cycles
            .push(serde_json::json!({ "cycle": cycle, "live_mib": full, "evicted_mib": evicted }));
    }
    let summary = serde_json::json!({
        "rooms": options.rooms,
        "id_bytes": options.id_bytes,
        "allocator": allocator,
        "malloc_arena_max": arena_max,
        "start_mib": start_rss,
        "cycles": cycles,
    });
    println!("{summary}");
    if options.pause_ms > 0 {
        tokio::time::sleep(Duration::from_millis(options.pause_ms)).await;
        println!("after the pause: {:.1} MiB", server.rss_mib()?);
    }
    Ok(())
}
