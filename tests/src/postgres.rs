//! A throw-away PostgreSQL server for the tests, and a fresh database on it per test.
//!
//! [`TestPostgres::database`] starts one server per test process (the first test to ask
//! runs `initdb` and `pg_ctl start`; the others reuse it) and creates a database of its
//! own for each caller, so tests are isolated. With `PARTYKIT_TEST_DATABASE_URL` set
//! (a `postgres://` URL of a server the tests may create databases on), that server is
//! used instead.
//!
//! Without PostgreSQL (no `initdb`/`pg_ctl` on `PATH` or under `/usr/lib/postgresql/*/bin`)
//! the tests are skipped with a message, except under `CI=true`, where they fail.
//!
//! The server runs on `127.0.0.1` on a free port, from a temporary directory, as the
//! `postgres` user when the tests run as root (initdb refuses root), with `fsync` on. A
//! watchdog process stops it and removes its directory once the test process exits, or
//! once a server of a test's own ([`TestPostgres::own_database`]) is dropped: no server
//! outlives `cargo test`.

use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable naming an existing server to use instead of starting one.
pub const DATABASE_URL_VAR: &str = "PARTYKIT_TEST_DATABASE_URL";

/// A PostgreSQL server started for the tests.
#[derive(Debug)]
pub struct TestPostgres {
    bin: PathBuf,
    /// The temporary directory: data directory, socket and log.
    root: PathBuf,
    port: u16,
    /// Whether to run the server's binaries as the `postgres` user (we are root).
    as_postgres: bool,
    /// The watchdog's stdin: closing it (on drop, or when the process exits) makes the
    /// watchdog stop the server and remove `root`.
    watchdog: Mutex<Option<ChildStdin>>,
}

/// A fresh, empty database for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL, for `PostgresBackend::connect` or `tokio_postgres::connect`.
    pub url: String,
    /// The server it lives on; `None` for a `PARTYKIT_TEST_DATABASE_URL` server.
    server: Option<Arc<TestPostgres>>,
}

/// Why a server could not be had, or `Ok` with the shared one.
static SHARED: OnceLock<Result<Arc<TestPostgres>, String>> = OnceLock::new();

impl TestPostgres {
    /// A fresh database on the shared server of this test process (started on first
    /// use), or on the `PARTYKIT_TEST_DATABASE_URL` server. `None` (after printing
    /// `skipped: <why>`) if PostgreSQL is not installed, outside CI.
    ///
    /// # Panics
    ///
    /// Under `CI=true` if PostgreSQL is missing or does not start; if the database cannot
    /// be created.
    pub async fn database() -> Option<TestDatabase> {
        if let Ok(url) = std::env::var(DATABASE_URL_VAR) {
            return Some(TestDatabase {
                url: create_database(&url).await,
                server: None,
            });
        }
        let shared = tokio::task::spawn_blocking(|| SHARED.get_or_init(|| start().map(Arc::new)))
            .await
            .expect("starting PostgreSQL");
        match shared {
            Ok(server) => Some(server.clone().new_database().await),
            Err(why) => skip(why),
        }
    }

    /// A fresh database on a server of its own, stopped and removed once the
    /// [`TestDatabase`] is dropped: for tests that [`stop`](TestDatabase::stop) the
    /// server, which would disturb the tests sharing [`database`](Self::database)'s.
    /// `None` (after printing why) where [`database`](Self::database) gives `None`, and
    /// with `PARTYKIT_TEST_DATABASE_URL` set, since that server cannot be stopped.
    ///
    /// # Panics
    ///
    /// As for [`database`](Self::database).
    pub async fn own_database() -> Option<TestDatabase> {
        if std::env::var_os(DATABASE_URL_VAR).is_some() {
            return skip(&format!(
                "{DATABASE_URL_VAR} is set, and this test stops its server"
            ));
        }
        let server = tokio::task::spawn_blocking(start)
            .await
            .expect("starting PostgreSQL");
        match server {
            Ok(server) => Some(Arc::new(server).new_database().await),
            Err(why) => skip(&why),
        }
    }

    /// The URL of database `name` on this server.
    fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    async fn new_database(self: Arc<Self>) -> TestDatabase {
        let name = create_database(&self.url("postgres")).await;
        TestDatabase {
            url: name,
            server: Some(self),
        }
    }

    /// `pg_ctl stop -m fast`, waiting until the server is down.
    async fn stop(self: Arc<Self>) -> Result<(), String> {
        tokio::task::spawn_blocking(move || self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "30"]))
            .await
            .map_err(|error| error.to_string())?
    }

    /// `pg_ctl start` on the same port and data directory, waiting until it accepts
    /// connections.
    async fn start(self: Arc<Self>) -> Result<(), String> {
        tokio::task::spawn_blocking(move || self.start_server())
            .await
            .map_err(|error| error.to_string())?
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn start_server(&self) -> Result<(), String> {
        let log = self.root.join("log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200",
            self.port,
            self.root.display()
        );
        let log_arg = log.display().to_string();
        self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log_arg, "-o", &options])
            .map_err(|error| {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(20).collect();
                let mut message = error;
                for line in tail.into_iter().rev() {
                    let _ = write!(message, "\n  log: {line}");
                }
                message
            })
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let data = self.data().display().to_string();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        run(&self.bin.join("pg_ctl"), &all, self.as_postgres)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // The watchdog sees end of input, stops the server and removes the directory.
        self.watchdog
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

impl TestDatabase {
    /// Stops the server this database lives on (`pg_ctl stop -m fast`), for tests of an
    /// outage. Use a database from [`TestPostgres::own_database`]: stopping the shared
    /// server disturbs the other tests of the process.
    ///
    /// # Panics
    ///
    /// If the server does not stop, or is not one the tests started.
    pub async fn stop(&self) {
        let server = self.server();
        server
            .stop()
            .await
            .unwrap_or_else(|error| panic!("stopping PostgreSQL: {error}"));
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port and data.
    ///
    /// # Panics
    ///
    /// If the server does not start, or is not one the tests started.
    pub async fn start(&self) {
        let server = self.server();
        server
            .start()
            .await
            .unwrap_or_else(|error| panic!("starting PostgreSQL: {error}"));
    }

    /// A client connected to this database, for the test's own SQL; its connection runs
    /// on a task of the current runtime.
    ///
    /// # Panics
    ///
    /// If it cannot connect.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    fn server(&self) -> Arc<TestPostgres> {
        self.server.clone().unwrap_or_else(|| {
            panic!("{DATABASE_URL_VAR} is set: the tests cannot stop or start that server")
        })
    }
}

/// Prints why the test is skipped and returns `None`; under `CI=true`, panics instead.
fn skip<T>(why: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("PostgreSQL is needed under CI=true: {why}");
    }
    println!("skipped: {why}");
    None
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {url}: {error}"));
    tokio::spawn(async move {
        // Err: the server went away; the client's calls say so.
        let _ = connection.await;
    });
    client
}

/// Creates a database with a fresh name on the server of `url`; returns its URL.
async fn create_database(url: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "t_{:016x}_{}",
        RandomState::new().hash_one((std::process::id(), SystemTime::now())),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let client = connect(url).await;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|error| panic!("CREATE DATABASE {name}: {error}"));
    with_database(url, &name)
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        panic!("{DATABASE_URL_VAR} must be a postgres:// URL");
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest
        .find(['/', '?'])
        .map_or(url.len(), |at| scheme_end + 3 + at);
    let query = url[authority_end..]
        .find('?')
        .map_or("", |at| &url[authority_end + at..]);
    format!("{}/{name}{query}", &url[..authority_end])
}

/// Initializes and starts a server in a new temporary directory.
fn start() -> Result<TestPostgres, String> {
    let bin = find_binaries()?;
    let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let root = std::env::temp_dir().join(format!(
        "partykit-pg-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    if as_postgres {
        run(
            Path::new("chown"),
            &["postgres:", &root.display().to_string()],
            false,
        )?;
    }
    let watchdog = watchdog(&bin, &root, as_postgres)?;
    let mut server = TestPostgres {
        bin,
        root,
        port: 0,
        as_postgres,
        watchdog: Mutex::new(Some(watchdog)),
    };
    let data = server.data().display().to_string();
    // --no-sync: the initial files need no fsync, the directory is thrown away; the
    // server itself runs with fsync on.
    run(
        &server.bin.join("initdb"),
        &[
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        as_postgres,
    )?;
    // The port is free when picked, but something else may take it before the server
    // binds it: then try another.
    let mut attempt = 1;
    loop {
        server.port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?
            .port();
        match server.start_server() {
            Err(error) if attempt < 3 && error.contains("already in use") => attempt += 1,
            result => return result.map(|()| server),
        }
    }
}

/// A process that waits for end of input on its stdin, then stops the server in `root`
/// (if running) and removes `root`. Its own process group, so a Ctrl-C of the tests does
/// not stop it before it has cleaned up.
fn watchdog(bin: &Path, root: &Path, as_postgres: bool) -> Result<ChildStdin, String> {
    let pg_ctl = bin.join("pg_ctl");
    let data = root.join("data");
    let as_user = if as_postgres {
        "runuser -u postgres -- "
    } else {
        ""
    };
    let script = format!(
        "cat >/dev/null
         {as_user}'{pg_ctl}' -D '{data}' stop -m fast -w -t 30 >/dev/null 2>&1 ||
           {{ pid=$(head -n 1 '{data}/postmaster.pid' 2>/dev/null) && kill -KILL \"$pid\"; }} 2>/dev/null
         rm -rf '{root}'",
        pg_ctl = pg_ctl.display(),
        data = data.display(),
        root = root.display(),
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the PostgreSQL watchdog (sh): {e}"))?;
    // Nothing is ever written to it: what counts is end of input.
    child
        .stdin
        .take()
        .ok_or_else(|| "the watchdog has no stdin".to_owned())
}

/// `initdb`'s directory: on `PATH`, or the newest `/usr/lib/postgresql/*/bin` (where
/// Debian's packages put it).
fn find_binaries() -> Result<PathBuf, String> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(dir) = on_path.into_iter().find(|dir| has_both(dir)) {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL is not installed: no initdb and pg_ctl on PATH or under \
         /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)"
            .to_owned()
    })
}

/// Runs `program` (as the `postgres` user if `as_postgres`), failing with its output.
fn run(program: &Path, args: &[&str], as_postgres: bool) -> Result<(), String> {
    let mut command = if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    };
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} {} failed ({}): {}{}",
        program.display(),
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}
