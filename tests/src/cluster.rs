//! A cluster of real node processes against one PostgreSQL database, for the cluster
//! tests: [`TestCluster`] starts N copies of the `cluster-node` binary
//! (tests/src/bin/cluster-node.rs), each with a public and an internal listener on free
//! loopback ports, one secret and a short lease TTL, and drives them with signals.
//!
//! Every wait is bounded; every process is killed when the cluster is dropped.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};

use crate::{HttpResponse, TestDatabase};

/// The lease TTL the nodes run with: short, so that failover tests are quick.
pub const LEASE_TTL: Duration = Duration::from_millis(2000);

/// The secret every node of a test cluster shares.
pub const SECRET: &str = "partykit-test-cluster-secret-0123456789";

/// The header that carries the cluster secret on the internal listener.
pub const SECRET_HEADER: &str = "x-partykit-cluster-secret";

/// The longest a node may take to start (bind, migrate, join) or to exit on SIGTERM.
pub const NODE_WAIT: Duration = Duration::from_secs(30);

/// The longest one request may take before the test calls it a hang.
pub const REQUEST_WAIT: Duration = Duration::from_secs(15);

/// N node processes of one cluster.
#[derive(Debug)]
pub struct TestCluster {
    exe: String,
    url: String,
    env: Vec<(String, String)>,
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    public: SocketAddr,
    internal: SocketAddr,
    process: Option<NodeProcess>,
    logs: Logs,
}

#[derive(Debug)]
struct NodeProcess {
    child: Child,
    // Kept open so that the node never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

/// What a node wrote on stderr (its log), every life of it.
type Logs = Arc<Mutex<Vec<String>>>;

impl TestCluster {
    /// Starts `n` nodes of `exe` (pass `env!("CARGO_BIN_EXE_cluster-node")`) against
    /// `database`, one after the other, each ready (joined the cluster) when this
    /// returns.
    pub async fn start(exe: &str, database: &TestDatabase, n: usize) -> Self {
        Self::start_with(exe, database, n, &[]).await
    }

    /// Like [`start`](Self::start), with extra environment variables for every node.
    pub async fn start_with(
        exe: &str,
        database: &TestDatabase,
        n: usize,
        env: &[(&str, &str)],
    ) -> Self {
        let mut cluster = Self {
            exe: exe.to_owned(),
            url: database.url.clone(),
            env: env
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            nodes: Vec::with_capacity(n),
        };
        for _ in 0..n {
            cluster.nodes.push(Node {
                public: free_port(),
                internal: free_port(),
                process: None,
                logs: Logs::default(),
            });
        }
        for i in 0..n {
            cluster.spawn(i).await;
        }
        cluster
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s public address (the same across restarts).
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].public
    }

    /// Node `i`'s internal address, as `PARTYKIT_NODE_ADDR` gives it.
    pub fn internal_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].internal
    }

    /// The lines node `i` has logged so far (all its lives) that contain `needle`.
    pub fn logged(&self, i: usize, needle: &str) -> Vec<String> {
        self.nodes[i]
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|line| line.contains(needle))
            .cloned()
            .collect()
    }

    /// Whether node `i` has a process (it may be stopped by SIGSTOP).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].process.is_some()
    }

    /// Starts node `i`. Its ports were free when picked, but another test's process may
    /// take one before the node binds it: a node that exits before it has joined is
    /// started again on other free ports, a few times.
    async fn spawn(&mut self, i: usize) {
        const ATTEMPTS: usize = 4;
        let mut failures = Vec::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                self.nodes[i].public = free_port();
                self.nodes[i].internal = free_port();
            }
            match self.try_spawn(i).await {
                Ok(()) => return,
                Err(why) => {
                    eprintln!("node {i} did not start (attempt {}): {why}", attempt + 1);
                    failures.push(why);
                }
            }
        }
        panic!("node {i} did not start in {ATTEMPTS} attempts: {failures:?}");
    }

    async fn try_spawn(&mut self, i: usize) -> Result<(), String> {
        assert!(self.nodes[i].process.is_none(), "node {i} is running");
        let since = self.database_now().await;
        let node = &self.nodes[i];
        let mut child = Command::new(&self.exe)
            .env("PARTYKIT_CLUSTER_URL", &self.url)
            .env("PARTYKIT_NODE_ADDR", node.internal.to_string())
            .env("PARTYKIT_CLUSTER_SECRET", SECRET)
            .env("PARTYKIT_LEASE_TTL_MS", LEASE_TTL.as_millis().to_string())
            .env("PARTYKIT_HOST", "127.0.0.1")
            .env("PARTYKIT_PORT", node.public.port().to_string())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,partykit_runtime=info".into()),
            )
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.exe));
        // The log, kept for the test and shown (captured by the test harness) with the
        // node's number; the task ends when the process does.
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::clone(&node.logs);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[node {i}] {line}");
                logs.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let read = tokio::time::timeout(NODE_WAIT, stdout.read_line(&mut line)).await;
        let expected = format!("listening on {}", node.public);
        if !matches!(read, Ok(Ok(_))) || line.trim() != expected {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(format!("printed {line:?} ({read:?}), not {expected:?}"));
        }
        // Ready once it has joined: after that, building the server takes no I/O.
        let internal = node.internal.to_string();
        let deadline = Instant::now() + NODE_WAIT;
        loop {
            let joined = match self.database().await {
                Ok(client) => client
                    .query_opt(
                        "SELECT 1 FROM partykit_nodes WHERE internal_addr = $1 AND started_at >= $2",
                        &[&internal, &since],
                    )
                    .await
                    .ok()
                    .flatten()
                    .is_some(),
                Err(_) => false,
            };
            if joined {
                self.nodes[i].process = Some(NodeProcess {
                    child,
                    _stdout: stdout,
                });
                return Ok(());
            }
            // Its internal listener could not bind, say: it exits.
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status} before joining the cluster"));
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(format!("did not join the cluster within {NODE_WAIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL node `i` and waits until it is gone.
    pub async fn kill(&mut self, i: usize) {
        let mut process = self.nodes[i].process.take().expect("the node is running");
        process.child.start_kill().expect("cannot send SIGKILL");
        let status = tokio::time::timeout(NODE_WAIT, process.child.wait())
            .await
            .unwrap_or_else(|_| panic!("node {i} did not die of SIGKILL"))
            .expect("cannot wait for the node");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "node {i} exited with {status:?}");
    }

    /// SIGSTOP node `i`: it keeps its sockets and stops doing anything.
    pub fn stop(&self, i: usize) {
        self.signal(i, "STOP");
    }

    /// SIGCONT node `i` after [`stop`](Self::stop).
    pub fn cont(&self, i: usize) {
        self.signal(i, "CONT");
    }

    /// SIGTERM node `i` and waits (bounded) until it exits; it must exit 0.
    pub async fn terminate(&mut self, i: usize) {
        self.signal(i, "TERM");
        let mut process = self.nodes[i].process.take().expect("the node is running");
        let status = tokio::time::timeout(NODE_WAIT, process.child.wait())
            .await
            .unwrap_or_else(|_| panic!("node {i} did not exit within {NODE_WAIT:?} of SIGTERM"))
            .expect("cannot wait for the node");
        assert!(status.success(), "node {i} exited with {status} on SIGTERM");
    }

    /// Starts node `i` again (after [`kill`](Self::kill) or
    /// [`terminate`](Self::terminate)) on the same addresses; returns once it has joined.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i).await;
    }

    /// The process id of node `i`, if it is running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i]
            .process
            .as_ref()
            .and_then(|process| process.child.id())
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self
            .pid(i)
            .unwrap_or_else(|| panic!("node {i} is not running"))
            .to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// The node that holds a live lease on the room, if any: from `partykit_room_leases`
    /// joined with `partykit_nodes`, by internal address. `None` also when the database
    /// cannot be reached.
    pub async fn owner_of(&self, party: &str, room: &str) -> Option<usize> {
        let client = self.database().await.ok()?;
        let row = client
            .query_opt(
                "SELECT n.internal_addr FROM partykit_room_leases l
                 JOIN partykit_nodes n ON n.id = l.node_id
                 WHERE l.party = $1 AND l.room = $2 AND l.expires_at > now()",
                &[&party, &room],
            )
            .await
            .ok()??;
        let addr: String = row.get(0);
        self.nodes
            .iter()
            .position(|node| node.internal.to_string() == addr)
    }

    /// Polls [`owner_of`](Self::owner_of) until some node holds the room (bounded).
    pub async fn wait_owner(&self, party: &str, room: &str) -> usize {
        poll(
            &format!("a node to hold {party}/{room}"),
            NODE_WAIT,
            &mut || self.owner_of(party, room),
        )
        .await
    }

    /// A fresh connection to the cluster's database (the tests stop it sometimes).
    pub async fn database(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            // Err: the server went away; the client's calls say so.
            let _ = connection.await;
        });
        Ok(client)
    }

    async fn database_now(&self) -> std::time::SystemTime {
        let client = self
            .database()
            .await
            .expect("cannot reach the test database");
        client
            .query_one("SELECT now()", &[])
            .await
            .expect("SELECT now()")
            .get(0)
    }

    /// One request without a body to node `i`'s public listener: the response, or why
    /// there was none (refused, reset, hung); see [`try_http`].
    pub async fn http(&self, i: usize, method: &str, path: &str) -> Result<HttpResponse, String> {
        try_http(self.addr(i), method, path, &[], b"").await
    }
}

/// Polls `probe` every 20 ms until it gives `Some`; fails the test after `bound`.
pub async fn poll<T, F>(what: &str, bound: Duration, probe: &mut impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {bound:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free port on 127.0.0.1 (bound and released: another process could take it in
/// between, which the node's bind would then report).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("no free port on 127.0.0.1")
}

/// Sends one HTTP/1.1 request (`Connection: close`) on a fresh connection and reads the
/// response. Unlike [`crate::http`], a refused connection, a reset or a malformed answer
/// is an `Err` rather than a failed test (nodes die in these tests), and a request that
/// takes longer than [`REQUEST_WAIT`] is an `Err` saying it hung.
pub async fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|error| format!("connect: {error}"))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream
            .write_all(&request)
            .await
            .map_err(|error| format!("write: {error}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|error| format!("read: {error}"))?;
        parse_response(&raw)
    };
    match tokio::time::timeout(REQUEST_WAIT, exchange).await {
        Ok(result) => result.map_err(|error| format!("{method} {path} on {addr}: {error}")),
        Err(_) => Err(format!(
            "{method} {path} on {addr}: HUNG (no answer within {REQUEST_WAIT:?})"
        )),
    }
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let Some(end) = raw.windows(4).position(|window| window == b"\r\n\r\n") else {
        return Err(format!(
            "the connection ended inside the head: {:?}",
            String::from_utf8_lossy(raw)
        ));
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    response.body = if response
        .header("transfer-encoding")
        .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad content-length {length:?}"))?;
        if rest.len() < length {
            return Err(format!(
                "the body ended after {} of {length} bytes",
                rest.len()
            ));
        }
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(response)
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("the chunked body ended early")?;
        let size_line = String::from_utf8_lossy(&rest[..line_end]);
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_line:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("the chunked body ended early".to_owned());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
