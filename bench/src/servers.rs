//! The servers under test, each in a process of its own so that its CPU time and memory
//! can be read from `/proc` and it can be pinned to a core.
//!
//! The bench binary runs itself as `bench serve <partykit|reference>`: the child binds
//! `127.0.0.1:0`, prints `listening on <addr>`, and serves until its standard input
//! closes (so it never outlives the bench) or it is killed. Both servers run on the same
//! Tokio configuration: a multi-thread runtime with one worker, which is what
//! `#[tokio::main]` gives a one-core machine; the server future itself is spawned onto
//! that worker.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use partykit_examples::chat::Chat;
use partykit_runtime::Server;
use tokio::net::TcpListener;

use crate::measure;

/// The environment variable naming a command to run each server under (profiling).
pub const WRAPPER_VAR: &str = "BENCH_SERVER_WRAPPER";

/// Which server a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// `partykit_examples::chat::Chat` on `partykit_runtime::Server`, in-memory storage.
    Partykit,
    /// [`crate::reference`]: the same room semantics on plain axum.
    Reference,
}

impl ServerKind {
    pub const ALL: [ServerKind; 2] = [ServerKind::Partykit, ServerKind::Reference];

    pub fn name(self) -> &'static str {
        match self {
            Self::Partykit => "partykit",
            Self::Reference => "reference",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The child's side: serves `kind` until standard input closes. Never returns.
pub fn serve(kind: ServerKind) -> ! {
    // The parent closes our stdin (or dies): stop at once, there is nothing to flush.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("cannot build the server's runtime");
    let result = runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        let serving = async move {
            match kind {
                ServerKind::Partykit => Server::new()
                    .in_memory()
                    .party::<Chat>()
                    .serve(listener, std::future::pending())
                    .await
                    .map_err(std::io::Error::other),
                ServerKind::Reference => crate::reference::serve(listener).await,
            }
        };
        tokio::spawn(serving).await.map_err(std::io::Error::other)?
    });
    match result {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("bench serve {kind}: {error}");
            std::process::exit(1);
        }
    }
}

/// The parent's side: a running server process, killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    kind: ServerKind,
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `bench serve <kind>` from executable `exe`, pinned to `core` if given, and
    /// waits until it listens.
    ///
    /// `BENCH_SERVER_WRAPPER`, if set, is a command (split on spaces) to run the server
    /// under, for profiling: `valgrind --tool=massif`, say. Its figures are then the
    /// wrapper's too.
    pub fn start(exe: &Path, kind: ServerKind, core: Option<usize>) -> Result<Self, String> {
        let mut words: Vec<String> = Vec::new();
        if let Some(core) = core {
            words.extend([
                "taskset".to_owned(),
                "--cpu-list".to_owned(),
                core.to_string(),
            ]);
        }
        if let Ok(wrapper) = std::env::var(WRAPPER_VAR) {
            words.extend(wrapper.split_whitespace().map(str::to_owned));
        }
        let mut command = match words.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        command.args(["serve", kind.name()]);
        let (child, addr) = spawn_listening(&mut command, exe, &kind.to_string())?;
        Ok(Self { kind, child, addr })
    }

    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_bytes(&self) -> Result<u64, String> {
        measure::rss_bytes(self.pid())
    }

    pub fn cpu_time(&self) -> Result<Duration, String> {
        measure::cpu_time(self.pid())
    }
}

impl Drop for ServerProcess {
    /// Closes the server's standard input, which ends it (letting a profiling wrapper
    /// write its output); kills it if it is still there after a few seconds.
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Spawns `command` (a server of ours; `exe` names it in errors) with stdin and stdout
/// piped, and reads the `listening on <addr>` line it prints once it accepts connections.
pub fn spawn_listening(
    command: &mut Command,
    exe: &Path,
    what: &str,
) -> Result<(Child, SocketAddr), String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", exe.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok());
    match addr {
        Some(addr) => Ok((child, addr)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "the {what} server did not start (read {read:?}: {line:?})"
            ))
        }
    }
}

/// Ends a server started by [`spawn_listening`]: closes its standard input, which ends
/// it (letting a profiling wrapper write its output), and kills it if it is still there
/// after a few seconds.
pub fn stop(child: &mut Child) {
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}
