//! Real server processes for the tests that need one (SIGKILL, SIGTERM, restarts), and
//! the temporary directories their databases live in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::within;

/// A fresh directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory whose name starts with `partykit-<name>`.
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "partykit-{name}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` in the directory (creating its parent directories);
    /// returns the file's path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|error| panic!("cannot create {}: {error}", parent.display()));
        }
        std::fs::write(&path, contents)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        path
    }

    /// `state.sqlite3` in the directory.
    pub fn database(&self) -> PathBuf {
        self.0.join("state.sqlite3")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `party-server` child process (tests/src/bin/party-server.rs). Killed (SIGKILL) if
/// dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    // Kept open so that the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl ServerProcess {
    /// Starts `<exe> <example> <database>` (pass `env!("CARGO_BIN_EXE_party-server")`:
    /// only integration tests know it) and waits for the address it prints.
    pub async fn start(exe: &str, example: &str, database: &Path) -> Self {
        Self::spawn(Command::new(exe), example, database).await
    }

    /// Like [`start`](Self::start), with the process's file descriptor limit
    /// (`RLIMIT_NOFILE`, soft and hard) set to `nofile` by util-linux's `prlimit`, which
    /// then runs the server in its own place (same process id).
    pub async fn start_with_fd_limit(
        exe: &str,
        example: &str,
        database: &Path,
        nofile: u32,
    ) -> Self {
        let mut command = Command::new("prlimit");
        command.arg(format!("--nofile={nofile}:{nofile}")).arg(exe);
        Self::spawn(command, example, database).await
    }

    async fn spawn(mut command: Command, example: &str, database: &Path) -> Self {
        let mut child = command
            .arg(example)
            .arg(database)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start party-server");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        within(
            "party-server to print its address",
            stdout.read_line(&mut line),
        )
        .await
        .expect("cannot read party-server's stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("party-server printed {line:?}, not its address"))
            .parse()
            .unwrap_or_else(|error| panic!("bad address in {line:?}: {error}"));
        Self {
            child,
            addr,
            _stdout: stdout,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// How many file descriptors the server has open (from `/proc/<pid>/fd`).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("cannot list the server's descriptors")
            .count()
    }

    /// SIGKILL: no shutdown, no last writes. Waits until the process is gone and checks
    /// that it died of the signal.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("cannot send SIGKILL");
        let status = within("the killed server to exit", self.child.wait())
            .await
            .expect("cannot wait for the server");
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "the server did not die of SIGKILL: {status:?}"
            );
        }
        #[cfg(not(unix))]
        let _ = status;
    }

    /// SIGTERM: a graceful shutdown; the server must exit 0.
    pub async fn terminate(mut self) {
        let pid = self.child.id().expect("the server is running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let status = within("the server to shut down", self.child.wait())
            .await
            .expect("cannot wait for the server");
        assert!(
            status.success(),
            "the server exited with {status} on SIGTERM"
        );
    }
}
