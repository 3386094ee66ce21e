//! What `Server::run` logs, read from a real server's stdout (tests/src/bin/log-server.rs):
//! JSON lines with `PARTYKIT_LOG_FORMAT=json`, a handler's own lines inside its room's and
//! connection's spans, `PARTYKIT_LOG` (else `RUST_LOG`) filtering, and invalid values
//! refused before the server starts.

use std::net::SocketAddr;
use std::process::Stdio;

use partykit_tests::{RawWs, try_connect_to, within};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const SERVER: &str = env!("CARGO_BIN_EXE_log-server");

/// A `log-server` process with only the given variables (and the address it binds), its
/// stdout read line by line.
struct LogServer {
    _child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Every line read so far.
    lines: Vec<String>,
    addr: SocketAddr,
}

impl LogServer {
    async fn start(vars: &[(&str, &str)]) -> Self {
        let mut child = command(vars)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start log-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut server = Self {
            _child: child,
            stdout: BufReader::new(stdout).lines(),
            lines: Vec::new(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let listening = server.line_with("partykit server listening").await;
        server.addr = listening_addr(&listening);
        server
    }

    /// Reads stdout until a line contains `needle`, and returns that line.
    async fn line_with(&mut self, needle: &str) -> String {
        let stdout = &mut self.stdout;
        let lines = &mut self.lines;
        within(format!("a log line with {needle:?}"), async {
            loop {
                let line = stdout
                    .next_line()
                    .await
                    .expect("cannot read the server's stdout")
                    .unwrap_or_else(|| panic!("stdout ended before {needle:?}:\n{lines:#?}"));
                lines.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await
    }

    /// Connects as `id` to the room `lobby`, sends `hello` and waits for its echo: the
    /// room has logged `joined` and `received` by then.
    async fn chat(&self, id: &str) -> RawWs {
        let path = format!("/parties/logs/lobby?_pk={id}");
        let mut ws = try_connect_to(self.addr, &path, &[], None)
            .await
            .expect("cannot connect");
        assert_eq!(ws.recv_text().await, "welcome");
        ws.send_text("hello").await;
        assert_eq!(ws.recv_text().await, "hello");
        ws
    }
}

/// `log-server` with no variable but `vars` and an ephemeral port.
fn command(vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(SERVER);
    command
        .env_clear()
        .env("PARTYKIT_HOST", "127.0.0.1")
        .env("PARTYKIT_PORT", "0")
        .envs(vars.iter().copied())
        .stdin(Stdio::null());
    command
}

/// The address in the `partykit server listening` line, text or JSON.
fn listening_addr(line: &str) -> SocketAddr {
    let addr = match serde_json::from_str::<Value>(line) {
        Ok(object) => object["addr"].as_str().map(str::to_owned),
        Err(_) => line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("addr="))
            .map(str::to_owned),
    };
    addr.and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

#[tokio::test]
async fn json_lines_carry_the_party_the_room_and_the_connection() {
    let mut server = LogServer::start(&[
        ("PARTYKIT_LOG_FORMAT", "json"),
        ("PARTYKIT_LOG", "info"),
        // PARTYKIT_LOG comes first.
        ("RUST_LOG", "debug"),
    ])
    .await;
    let _ws = server.chat("alice").await;
    server.line_with(r#""message":"received""#).await;

    let objects: Vec<Value> = (server.lines.iter())
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not JSON ({error}): {line:?}"));
            assert!(value.is_object(), "not an object: {line:?}");
            value
        })
        .collect();
    let logged = |message: &str| {
        (objects.iter())
            .find(|object| object["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in {:#?}", server.lines))
    };
    let spans = json!([
        { "name": "room", "party": "logs", "room": "lobby" },
        { "name": "connection", "id": "alice" },
    ]);
    for message in ["joined", "received"] {
        let line = logged(message);
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["target"], "log_server", "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
        assert_eq!(line["span"], spans[1], "{line}");
        assert_eq!(line["spans"], spans, "{line}");
    }
    assert_eq!(logged("joined")["connections"], 1);
    assert_eq!(logged("received")["bytes"], 5);
    // The room logs `a debug line` before `received`, on the same stream.
    assert!(
        !server
            .lines
            .iter()
            .any(|line| line.contains("a debug line")),
        "PARTYKIT_LOG=info lets debug through: {:#?}",
        server.lines
    );
}

#[tokio::test]
async fn partykit_log_shows_debug_lines_in_text_with_the_spans() {
    let mut server = LogServer::start(&[("PARTYKIT_LOG", "info,log_server=debug")]).await;
    let _ws = server.chat("bob").await;
    let line = server.line_with("a debug line").await;
    assert!(
        line.ends_with(
            r#" DEBUG room{party="logs" room="lobby"}:connection{id="bob"}: log_server: a debug line"#
        ),
        "{line:?}"
    );
    let line = server.line_with("received").await;
    assert!(
        line.ends_with(
            r#" INFO room{party="logs" room="lobby"}:connection{id="bob"}: log_server: received bytes=5"#
        ),
        "{line:?}"
    );
    // Not a terminal: no colours.
    assert!(
        !server.lines.iter().any(|line| line.contains('\x1b')),
        "{:#?}",
        server.lines
    );
}

#[tokio::test]
async fn rust_log_filters_when_partykit_log_is_not_set() {
    let mut server = LogServer::start(&[("RUST_LOG", "info,log_server=debug")]).await;
    let _ws = server.chat("carol").await;
    server.line_with("a debug line").await;
    server.line_with("received").await;
}

#[tokio::test]
async fn a_subscriber_of_the_programs_own_is_kept() {
    let server = LogServer::start(&[
        ("LOG_SERVER_OWN_SUBSCRIBER", "1"),
        // Not read: the program's subscriber decides.
        ("PARTYKIT_LOG_FORMAT", "yaml"),
    ])
    .await;
    let listening = server.lines.last().expect("the line start read");
    assert!(
        listening
            .trim_start()
            .starts_with("INFO partykit_runtime::server: partykit server listening"),
        "not the program's own format (no timestamp): {listening:?}"
    );
}

#[tokio::test]
async fn invalid_log_variables_refuse_to_start() {
    let refusals = [
        (
            ("PARTYKIT_LOG_FORMAT", "yaml"),
            "log-server: cannot set up logging: PARTYKIT_LOG_FORMAT=\"yaml\" is not a log \
             format: use `text` (the default, one line per event) or `json` (one JSON object \
             per line)",
        ),
        (
            ("PARTYKIT_LOG", "info,log_server=loud"),
            "log-server: cannot set up logging: PARTYKIT_LOG=\"info,log_server=loud\" is not \
             a log filter (",
        ),
    ];
    for (var, expected) in refusals {
        let output = command(&[var]).output();
        let output = within(format!("log-server with {var:?} to exit"), output)
            .await
            .expect("cannot run log-server");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{var:?}: {stderr}");
        assert!(stderr.starts_with(expected), "{var:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{var:?} started a server");
    }
}
