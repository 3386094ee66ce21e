//! The server's metrics as a scraper sees them: a workload of sockets, messages, a
//! broadcast, storage, an alarm and HTTP requests moves the counters by exactly what it
//! did, no label names a room or a connection, and `promtool check metrics` accepts the
//! text. The metrics are served on a listener of their own, never on the public port.
//!
//! `promtool` (Debian's `prometheus` package, which `.ci/run` installs) is found at
//! `$PROMTOOL`, else on `PATH`. Without it the promtool check is skipped with a message,
//! unless `CI` is set (`CI=true`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use partykit_runtime::testing::TestSocket;
use partykit_runtime::{Connection, ConnectionContext, Message, Result, Room, Server, party};
use partykit_tests::{TestServer, http, init_tracing};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The party's name, as the `party` label carries it.
const PARTY: &str = "metered";
/// The room the workload runs in: no label value may contain it.
const ROOM: &str = "room-5c1e7d";
/// How far ahead the party sets its alarm; the test advances the clock past it.
const ALARM_IN: Duration = Duration::from_secs(60);

/// Greets each connection, and answers messages by what they say: `put` writes to
/// storage, `alarm` sets an alarm, `kick` closes the sender with 1008, anything else is
/// broadcast to every connection, the sender's included. Replies follow the writes, so
/// they leave once what was written is durable.
#[party(name = "metered")]
struct Metered {
    room: Room,
}

#[party]
impl Metered {
    fn new(room: Room) -> Self {
        Metered { room }
    }

    fn on_connect(&mut self, connection: &Connection, _ctx: &ConnectionContext) -> Result<()> {
        connection.send("hello")?;
        Ok(())
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        let storage = self.room.storage();
        match message.as_text() {
            Some("put") => {
                storage.put("greeting", "hello").await?;
                sender.send("stored")?;
            }
            Some("alarm") => {
                storage.set_alarm(self.room.now() + ALARM_IN).await?;
                sender.send("alarm set")?;
            }
            Some("kick") => sender.close(1008, "kicked")?,
            _ => self.room.broadcast(message, &[]),
        }
        Ok(())
    }

    fn on_request(&mut self) -> &'static str {
        "ok"
    }

    fn on_alarm(&mut self) {}
}

/// A loopback address with a free port, for the metrics listener: bound and released,
/// so that the server binds it again.
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
    listener.local_addr().expect("no local address")
}

/// A test server of the metered party with its metrics served at `metrics`.
async fn start(metrics: SocketAddr) -> TestServer {
    init_tracing();
    TestServer::start(
        Server::new()
            .party::<Metered>()
            .metrics_addr(metrics.to_string()),
    )
    .await
}

// ---------------------------------------------------------------------------------------
// The text format

/// One sample line: `name{label="value",…} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A scrape of `GET /metrics`: its text and its samples.
#[derive(Debug)]
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the text format (version 0.0.4); fails the test on a malformed line.
    fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("malformed sample {line:?}")))
            .collect();
        Scrape { text, samples }
    }

    /// The value of the sample `name` whose labels are exactly `labels` (in any order).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|sample| {
                sample.name == name
                    && sample.labels.len() == labels.len()
                    && labels.iter().all(|(key, value)| {
                        sample.labels.iter().any(|(k, v)| k == key && v == value)
                    })
            })
            .map(|sample| sample.value)
    }

    /// The party's sample `name`, with `labels` besides `party`; fails the test if it
    /// is missing.
    fn party(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut all = vec![("party", PARTY)];
        all.extend_from_slice(labels);
        self.value(name, &all)
            .unwrap_or_else(|| panic!("no {name}{all:?} in the scrape:\n{}", self.text))
    }

    /// Every sample of `name`, by the value of its label `key`, non-zero ones only.
    fn non_zero_by(&self, name: &str, key: &str) -> Vec<(String, f64)> {
        let mut found: Vec<(String, f64)> = self
            .samples
            .iter()
            .filter(|sample| sample.name == name && sample.value != 0.0)
            .filter_map(|sample| {
                let (_, value) = sample.labels.iter().find(|(k, _)| k == key)?;
                Some((value.clone(), sample.value))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"` (the text format escapes `\`, `"` and newlines in values).
fn parse_labels(mut text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (at, '"') => break at,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, other) => value.push(other),
            }
        };
        labels.push((key.to_owned(), value));
        text = &rest[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
    Some(labels)
}

async fn scrape(metrics: SocketAddr) -> Scrape {
    let response = http(metrics, "GET", "/metrics", &[], b"").await;
    assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
    );
    Scrape::parse(response.text())
}

// ---------------------------------------------------------------------------------------
// promtool

/// `$PROMTOOL`, else `promtool` on `PATH`.
fn promtool() -> Option<PathBuf> {
    partykit_tests::external_tool(
        "PROMTOOL",
        "promtool",
        "apt-get install prometheus, as .ci/run does",
    )
}

/// Runs `promtool check metrics` on `text` (its standard input); fails the test unless
/// it exits 0 without a word.
async fn promtool_check(promtool: &PathBuf, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", promtool.display()));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("cannot write to promtool");
    drop(stdin);
    let output = partykit_tests::within("promtool check metrics", child.wait_with_output())
        .await
        .expect("promtool did not run");
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "promtool check metrics: {}\n{complaints}",
        output.status
    );
}

// ---------------------------------------------------------------------------------------
// Tests

/// Receives the next message on `socket`, which must be `text`.
async fn expect(socket: &mut TestSocket, text: &str) {
    assert_eq!(socket.recv_text().await, text);
}

#[tokio::test]
async fn a_workload_moves_the_counters_by_what_it_did() {
    let metrics = free_addr();
    let server = start(metrics).await;
    let path = format!("/parties/{PARTY}/{ROOM}");

    // Three sockets, each greeted once it is the room's.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut socket = server.kit().socket(PARTY, ROOM).await;
        expect(&mut socket, "hello").await;
        sockets.push(socket);
    }
    let ids: Vec<String> = sockets
        .iter()
        .map(|socket| socket.id().expect("the kit's sockets have ids").to_owned())
        .collect();
    let [a, b, c] = &mut sockets[..] else {
        unreachable!("three sockets")
    };

    // Two broadcasts, each delivered to all three sockets.
    for text in ["shout 1", "shout 2"] {
        a.send(text).await;
        for socket in [&mut *a, &mut *b, &mut *c] {
            expect(socket, text).await;
        }
    }
    // A storage write, and an alarm that fires when the clock passes it.
    a.send("put").await;
    expect(a, "stored").await;
    a.send("alarm").await;
    expect(a, "alarm set").await;
    assert_eq!(server.kit().advance(ALARM_IN).await, 1, "one alarm fired");
    // One socket closed by the server, one by its client.
    b.send("kick").await;
    assert_eq!(b.closed().await, (1008, "kicked".to_owned()));
    assert_eq!(a.close(4000, "bye").await, (4000, "bye".to_owned()));
    // An HTTP request to the room. The room runs its events in order, so once it is
    // answered every earlier handler (the closed sockets' `on_close` too) has been counted.
    let response = server.get(&path).await;
    assert_eq!((response.status, response.text()), (200, "ok".to_owned()));

    let during = scrape(metrics).await;
    assert_eq!(during.party("partykit_connections", &[]), 1.0);
    assert_eq!(during.party("partykit_rooms", &[]), 1.0);
    assert_eq!(during.party("partykit_connections_opened_total", &[]), 3.0);

    // The last socket closes normally; what was written to it is counted by then (a
    // socket's counters move before its connection ends).
    assert_eq!(c.close(1000, "done").await, (1000, "done".to_owned()));
    let response = server.get(&path).await;
    assert_eq!(response.status, 200);
    let after = scrape(metrics).await;

    // In: "shout 1", "shout 2", "put", "alarm" from a, "kick" from b.
    let received = ["shout 1", "shout 2", "put", "alarm", "kick"];
    // Out: three greetings, two broadcasts to three sockets each, two replies.
    let sent = [vec!["hello"; 3], vec!["shout 1"; 3], vec!["shout 2"; 3]]
        .concat()
        .into_iter()
        .chain(["stored", "alarm set"])
        .collect::<Vec<_>>();
    let bytes = |messages: &[&str]| messages.iter().map(|m| m.len()).sum::<usize>() as f64;
    for (name, expected) in [
        ("partykit_messages_received_total", received.len() as f64),
        ("partykit_received_bytes_total", bytes(&received)),
        ("partykit_messages_sent_total", sent.len() as f64),
        ("partykit_sent_bytes_total", bytes(&sent)),
        ("partykit_connections", 0.0),
        ("partykit_connections_opened_total", 3.0),
        ("partykit_alarms_fired_total", 1.0),
        ("partykit_alarm_retries_total", 0.0),
        ("partykit_storage_commit_failures_total", 0.0),
    ] {
        assert_eq!(after.party(name, &[]), expected, "{name}");
    }
    assert_eq!(
        after.non_zero_by("partykit_connections_closed_total", "code"),
        [
            ("1000".to_owned(), 1.0),
            ("1008".to_owned(), 1.0),
            ("4xxx".to_owned(), 1.0)
        ],
    );
    // Each handler ran as often as the workload asked, and none failed.
    for (handler, runs) in [
        ("on_start", 1.0),
        ("connection_tags", 3.0),
        ("on_connect", 3.0),
        ("on_message", received.len() as f64),
        ("on_close", 3.0),
        ("on_error", 0.0),
        ("on_request", 2.0),
        ("on_alarm", 1.0),
        // The static hooks: the party's defaults forward, and are counted all the same.
        ("on_before_connect", 3.0),
        ("on_before_request", 2.0),
    ] {
        let labels = [("handler", handler)];
        assert_eq!(
            after.party("partykit_handler_duration_seconds_count", &labels),
            runs,
            "{handler}"
        );
        assert_eq!(after.party("partykit_handler_errors_total", &labels), 0.0);
        assert_eq!(after.party("partykit_handler_panics_total", &labels), 0.0);
    }
    let commits = after.party("partykit_storage_commit_duration_seconds_count", &[]);
    assert!(commits >= 1.0, "{commits} storage commits");
    // The three upgrades and the two requests; the scrapes are not the public listener's.
    assert_eq!(
        after.non_zero_by("partykit_http_requests_total", "code"),
        [("101".to_owned(), 3.0), ("200".to_owned(), 2.0)],
    );
    assert!(
        after
            .non_zero_by("partykit_refused_total", "reason")
            .is_empty(),
        "nothing refused"
    );

    // Labels are bounded by the server: none carries the room or a connection.
    for scrape in [&during, &after] {
        for sample in &scrape.samples {
            for (key, value) in &sample.labels {
                assert!(
                    ["party", "handler", "code", "reason", "kind", "le"].contains(&key.as_str()),
                    "unexpected label {key}={value:?} on {}",
                    sample.name
                );
                assert!(
                    !value.contains(ROOM) && !ids.iter().any(|id| value.contains(id.as_str())),
                    "{}'s label {key}={value:?} names the room or a connection",
                    sample.name
                );
            }
        }
    }

    if let Some(promtool) = promtool() {
        promtool_check(&promtool, &after.text).await;
    }
    server.stopped().await.expect("the server stopped cleanly");
}

#[tokio::test]
async fn the_metrics_are_only_on_their_own_listener_and_path() {
    let metrics = free_addr();
    let server = start(metrics).await;

    let public = server.get("/metrics").await;
    assert_eq!(public.status, 404, "GET /metrics on the public port");
    assert!(!public.text().contains("partykit_"), "{}", public.text());

    for path in ["/", "/metrics/", "/metricsx", "/parties/metered/room"] {
        let response = http(metrics, "GET", path, &[], b"").await;
        assert_eq!(response.status, 404, "GET {path} on the metrics listener");
        assert_eq!(
            response.text(),
            "Not found: the metrics are at GET /metrics"
        );
    }
    // The public listener's 404 was counted; the metrics listener's were not.
    let scrape = scrape(metrics).await;
    assert_eq!(
        scrape.non_zero_by("partykit_http_requests_total", "code"),
        [("404".to_owned(), 1.0)]
    );
    server.stopped().await.expect("the server stopped cleanly");
}
