//! `bench callgrind`: user-space instructions per delivery, counted by
//! `valgrind --tool=callgrind`, for partykit-rs and the reference. Counts, not seconds:
//! they do not move with the machine's load, so a change of a few percent shows.
//!
//! Each server runs under callgrind (`bench serve <kind>`). The clients connect, then
//! the counters are zeroed (`callgrind_control --zero`), then a fixed workload runs in
//! lock-step: one message in flight in the whole run, each delivered to every other
//! client of its room before the next is sent. That is the fixed-rate scenarios' regime
//! (every message is fanned out on its own, nothing batches), made deterministic. Then
//! the server is stopped and the instructions it executed since the zeroing (every
//! thread, kernel excluded) are read from callgrind's output and divided by the number
//! of deliveries.
//!
//! With `PARTYKIT_METRICS_ADDR` set, partykit's server (which inherits the environment)
//! serves its metrics there, and the run scrapes them once, halfway through the counted
//! messages: the count then includes a scrape, as for a server that Prometheus watches.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use partykit_runtime::METRICS_ADDR_VAR;
use tokio_tungstenite::tungstenite::Message;

use crate::load::{self, Socket};
use crate::servers::{self, ServerKind};

/// Set (to anything) to keep callgrind's output file of each run, for `callgrind_annotate`.
pub const KEEP_VAR: &str = "BENCH_CALLGRIND_KEEP";

/// One workload: `rooms` rooms of `clients` clients; `messages` messages per room, each
/// sent by the room's first client and delivered to the others.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub name: &'static str,
    pub rooms: usize,
    pub clients: usize,
    pub messages: usize,
}

impl Shape {
    pub fn deliveries(&self) -> u64 {
        (self.rooms * self.messages * (self.clients - 1)) as u64
    }
}

/// The default shapes: the fixed-rate scenarios' rooms (`fanout-fixed`: 1 room × 100
/// clients; `rooms-fixed`: 100 rooms × 10 clients), with 20,000 and 18,000 deliveries.
pub fn default_shapes() -> Vec<Shape> {
    vec![
        Shape {
            name: "fanout",
            rooms: 1,
            clients: 100,
            messages: 200,
        },
        Shape {
            name: "rooms",
            rooms: 100,
            clients: 10,
            messages: 20,
        },
    ]
}

/// What one server executed for one shape.
#[derive(Debug, Clone, Copy)]
pub struct Count {
    pub kind: ServerKind,
    pub shape: Shape,
    pub instructions: u64,
}

impl Count {
    pub fn per_delivery(&self) -> f64 {
        self.instructions as f64 / self.shape.deliveries() as f64
    }
}

/// Runs `shape` against `kind` (from the bench executable `exe`) under callgrind.
pub fn measure(exe: &Path, kind: ServerKind, shape: Shape) -> Result<Count, String> {
    let out = std::env::temp_dir().join(format!(
        "bench-callgrind-{}-{}-{}.out",
        std::process::id(),
        kind,
        shape.name
    ));
    let mut command = Command::new("valgrind");
    command
        .args(["--tool=callgrind", "--quiet"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .args(["serve", kind.name()]);
    let (mut child, addr) = servers::spawn_listening(&mut command, exe, &kind.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot build a runtime: {error}"))?;
    let pid = child.id();
    let result = runtime.block_on(async {
        let mut sockets = load::connect_all(addr, shape.rooms, shape.clients).await?;
        // Every client is registered by its room before the count starts: a first round
        // trip per room, uncounted.
        lock_step(&mut sockets, shape, 1).await?;
        zero(pid)?;
        let half = shape.messages / 2;
        lock_step(&mut sockets, shape, half).await?;
        if let Some(metrics) = metrics_addr(kind)? {
            scrape(metrics).await?;
        }
        lock_step(&mut sockets, shape, shape.messages - half).await?;
        Ok::<_, String>(sockets)
    });
    // Stop the server while the clients are connected: it exits at once, writing the
    // counts, and no disconnect work is counted.
    servers::stop(&mut child);
    drop(result?);
    let instructions = read_total(&out);
    if std::env::var_os(KEEP_VAR).is_some() {
        eprintln!(
            "  callgrind output kept: {} (callgrind_annotate reads it)",
            out.display()
        );
    } else {
        let _ = std::fs::remove_file(&out);
    }
    Ok(Count {
        kind,
        shape,
        instructions: instructions?,
    })
}

/// `messages` rounds: in each, every room's first client sends one message, and each
/// other client of the room receives it before the next room's message goes out.
async fn lock_step(sockets: &mut [Socket], shape: Shape, messages: usize) -> Result<(), String> {
    let text = "x".repeat(64);
    for _ in 0..messages {
        for room in sockets.chunks_mut(shape.clients) {
            let (sender, receivers) = room.split_first_mut().expect("a room has clients");
            sender
                .send(Message::text(text.clone()))
                .await
                .map_err(|error| format!("send: {error}"))?;
            for receiver in receivers {
                receive(receiver).await?;
            }
        }
    }
    Ok(())
}

async fn receive(socket: &mut Socket) -> Result<(), String> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .map_err(|_| "no delivery within 60 s".to_owned())?;
        match next {
            Some(Ok(Message::Text(_) | Message::Binary(_))) => return Ok(()),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(format!("receive: {error}")),
            None => return Err("the socket ended".to_owned()),
        }
    }
}

/// Where partykit's server serves its metrics: `PARTYKIT_METRICS_ADDR`, if set. The
/// reference server has none.
fn metrics_addr(kind: ServerKind) -> Result<Option<SocketAddr>, String> {
    let Some(addr) = std::env::var_os(METRICS_ADDR_VAR).filter(|_| kind == ServerKind::Partykit)
    else {
        return Ok(None);
    };
    let addr = addr.to_string_lossy();
    addr.parse()
        .map(Some)
        .map_err(|_| format!("{METRICS_ADDR_VAR}={addr:?} is not an IP address and port"))
}

/// `GET /metrics`, which must answer 200.
async fn scrape(addr: SocketAddr) -> Result<(), String> {
    let (status, body) = load::HttpClient::connect(addr)
        .await?
        .get("/metrics")
        .await?;
    if status != 200 {
        return Err(format!("GET http://{addr}/metrics answered {status}"));
    }
    eprintln!("  scraped http://{addr}/metrics: {} bytes", body.len());
    Ok(())
}

fn zero(pid: u32) -> Result<(), String> {
    let status = Command::new("callgrind_control")
        .arg("--zero")
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|error| format!("cannot run callgrind_control: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("callgrind_control --zero {pid} failed: {status}"))
    }
}

/// The `totals:` (or `summary:`) line's instruction count, summed over every file
/// callgrind wrote for the run (one per dump).
fn read_total(out: &Path) -> Result<u64, String> {
    let mut files: Vec<PathBuf> = vec![out.to_path_buf()];
    let dir = out.parent().unwrap_or(Path::new("."));
    let stem = out
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != stem && name.starts_with(&stem) {
                files.push(entry.path());
            }
        }
    }
    let mut total = 0;
    let mut found = false;
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let line = text
            .lines()
            .find(|line| line.starts_with("totals:"))
            .or_else(|| text.lines().find(|line| line.starts_with("summary:")));
        if let Some(count) = line
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|count| count.parse::<u64>().ok())
        {
            total += count;
            found = true;
        }
        if file.as_path() != out {
            let _ = std::fs::remove_file(file);
        }
    }
    if found {
        Ok(total)
    } else {
        Err(format!("no instruction count in {}", out.display()))
    }
}

/// The table `bench callgrind` prints.
pub fn table(counts: &[Count]) -> String {
    let mut out = String::from(
        "| shape | deliveries | partykit Ir/delivery | reference Ir/delivery | ratio |\n|---|---:|---:|---:|---:|\n",
    );
    for shape in counts
        .iter()
        .map(|count| count.shape.name)
        .collect::<Vec<_>>()
        .iter()
    {
        let of = |kind| {
            counts
                .iter()
                .find(|count| count.shape.name == *shape && count.kind == kind)
        };
        if let (Some(ours), Some(reference)) = (of(ServerKind::Partykit), of(ServerKind::Reference))
        {
            if out.contains(&format!("| {shape} |")) {
                continue;
            }
            out.push_str(&format!(
                "| {shape} | {} | {:.0} | {:.0} | {:.3} |\n",
                ours.shape.deliveries(),
                ours.per_delivery(),
                reference.per_delivery(),
                ours.per_delivery() / reference.per_delivery()
            ));
        }
    }
    out
}
