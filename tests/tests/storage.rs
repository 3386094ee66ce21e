//! Durable room storage (the Durable Objects key-value API) and alarms, in process: the storage
//! API's edge cases driven through a room's handlers over HTTP, the output gate (with a
//! memory backend whose commits the test holds and releases), failed commits, and alarms
//! (firing, cold starts, retries with backoff).
//!
//! The test party runs a list of storage commands sent as the JSON body of an HTTP
//! request, all inside one `on_request`, and answers one JSON result per command (an
//! error is `{"error": "…"}`), so each test reads like a script.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use partykit_runtime::storage::{
    Backend, BackendError, BoxFuture, ListOptions, MemoryBackend, Mutation, RoomCommit, RoomKey,
};
use partykit_runtime::{
    Connection, ConnectionContext, Error, IntoResponse, Json, Limits, Message, Party, Request,
    Response, Result, Room, Server,
};
use partykit_tests::{HttpResponse, Probe, TestServer, Ws, init_tracing, record, recorded, within};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The party's name: not `main`, so that `on_alarm` seeing it proves something.
const PARTY: &str = "store";

// ---------------------------------------------------------------------------------------
// The test party

/// One storage command, as the request body spells it (`{"op": "put", …}`).
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Command {
    Get {
        key: String,
    },
    GetBytes {
        key: String,
    },
    GetMany {
        keys: Vec<String>,
    },
    Put {
        key: String,
        value: Value,
    },
    PutBytes {
        key: String,
        bytes: Vec<u8>,
    },
    PutUnconfirmed {
        key: String,
        value: Value,
    },
    PutMany {
        entries: Vec<(String, Value)>,
    },
    Delete {
        key: String,
    },
    DeleteMany {
        keys: Vec<String>,
    },
    DeleteAll,
    List(ListArgs),
    ListBytes(ListArgs),
    Transaction {
        ops: Vec<TxnCommand>,
        /// Whether an op's error ends the transaction body with that error (`?`).
        #[serde(default)]
        strict: bool,
    },
    Sync,
    /// Sets the alarm `in_ms` from now (negative: in the past).
    SetAlarm {
        in_ms: i64,
    },
    GetAlarm,
    DeleteAlarm,
    Broadcast {
        text: String,
    },
}

/// A command inside a transaction.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum TxnCommand {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: Value,
    },
    PutBytes {
        key: String,
        bytes: Vec<u8>,
    },
    Delete {
        key: String,
    },
    DeleteAll,
    List(ListArgs),
    Rollback,
    /// Ends the transaction body with an error.
    Fail,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    start: Option<String>,
    start_after: Option<String>,
    end: Option<String>,
    prefix: Option<String>,
    reverse: Option<bool>,
    limit: Option<usize>,
}

impl ListArgs {
    fn options(self) -> ListOptions {
        let mut options = ListOptions::new();
        if let Some(start) = self.start {
            options = options.start(start);
        }
        if let Some(after) = self.start_after {
            options = options.start_after(after);
        }
        if let Some(end) = self.end {
            options = options.end(end);
        }
        if let Some(prefix) = self.prefix {
            options = options.prefix(prefix);
        }
        if let Some(reverse) = self.reverse {
            options = options.reverse(reverse);
        }
        if let Some(limit) = self.limit {
            options = options.limit(limit);
        }
        options
    }
}

fn error_value(error: &Error) -> Value {
    json!({ "error": error.to_string() })
}

fn pairs(entries: impl IntoIterator<Item = (String, Value)>) -> Value {
    Value::Array(
        entries
            .into_iter()
            .map(|(key, value)| json!([key, value]))
            .collect(),
    )
}

fn millis(time: SystemTime) -> i64 {
    i64::try_from(
        time.duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("ms fit i64")
}

fn in_ms(offset: i64) -> SystemTime {
    let now = SystemTime::now();
    if offset >= 0 {
        now + Duration::from_millis(offset.unsigned_abs())
    } else {
        now - Duration::from_millis(offset.unsigned_abs())
    }
}

/// When the test binary started: `on_alarm` records its attempts' times relative to it.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Records its lifecycle into the test's probe and runs storage commands. The room id's
/// prefix chooses how `on_alarm` behaves:
///
/// - `reset…`: the first run sets a new alarm (in the past) and reports `get_alarm` again;
/// - `fail…`: every run fails; `panic…`: every run panics; `flaky…`: the first two runs
///   fail, the third succeeds. Each run records `attempt <id> <µs>` first.
struct Store {
    room: Room,
}

impl Store {
    fn record(&self, event: impl std::fmt::Display) {
        record(self.room.env(), format!("{event} {}", self.room.id()));
    }

    async fn run(&self, commands: Vec<Command>) -> Result<Vec<Value>> {
        let storage = self.room.storage();
        let mut results = Vec::new();
        for command in commands {
            let result: Result<Value> = match command {
                Command::Get { key } => storage.get::<Value>(&key).await.map(|v| json!(v)),
                Command::GetBytes { key } => storage
                    .get_bytes(&key)
                    .await
                    .map(|bytes| json!(bytes.map(|b| b.to_vec()))),
                Command::GetMany { keys } => {
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    storage.get_many::<Value>(&keys).await.map(pairs)
                }
                Command::Put { key, value } => {
                    storage.put(&key, &value).await.map(|()| json!("ok"))
                }
                Command::PutBytes { key, bytes } => {
                    storage.put_bytes(&key, bytes).await.map(|()| json!("ok"))
                }
                Command::PutUnconfirmed { key, value } => storage
                    .allow_unconfirmed()
                    .put(&key, &value)
                    .await
                    .map(|()| json!("ok")),
                Command::PutMany { entries } => {
                    storage.put_many(entries).await.map(|()| json!("ok"))
                }
                Command::Delete { key } => storage.delete(&key).await.map(|existed| json!(existed)),
                Command::DeleteMany { keys } => {
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    storage.delete_many(&keys).await.map(|n| json!(n))
                }
                Command::DeleteAll => storage.delete_all().await.map(|()| json!("ok")),
                Command::List(args) => storage.list::<Value>(args.options()).await.map(pairs),
                Command::ListBytes(args) => storage.list_bytes(args.options()).await.map(|list| {
                    Value::Array(
                        list.into_iter()
                            .map(|(key, bytes)| json!([key, bytes.to_vec()]))
                            .collect(),
                    )
                }),
                Command::Transaction { ops, strict } => Ok(
                    match storage
                        .transaction(|txn| run_transaction(txn, ops, strict))
                        .await
                    {
                        Ok(results) => json!({ "ok": results }),
                        Err(error) => error_value(&error),
                    },
                ),
                Command::Sync => {
                    let result = storage.sync().await;
                    self.record("synced");
                    result.map(|()| json!("ok"))
                }
                Command::SetAlarm { in_ms: offset } => {
                    storage.set_alarm(in_ms(offset)).await.map(|()| json!("ok"))
                }
                Command::GetAlarm => storage
                    .get_alarm()
                    .await
                    .map(|alarm| json!(alarm.map(millis))),
                Command::DeleteAlarm => storage.delete_alarm().await.map(|()| json!("ok")),
                Command::Broadcast { text } => {
                    self.room.broadcast(text, &[]);
                    Ok(json!("ok"))
                }
            };
            results.push(result.unwrap_or_else(|error| error_value(&error)));
        }
        Ok(results)
    }
}

fn run_transaction(
    txn: &mut partykit_runtime::storage::Transaction<'_>,
    ops: Vec<TxnCommand>,
    strict: bool,
) -> Result<Vec<Value>> {
    let mut results = Vec::new();
    for op in ops {
        let result: Result<Value> = match op {
            TxnCommand::Get { key } => txn.get::<Value>(&key).map(|v| json!(v)),
            TxnCommand::Put { key, value } => txn.put(&key, &value).map(|()| json!("ok")),
            TxnCommand::PutBytes { key, bytes } => txn.put_bytes(&key, bytes).map(|()| json!("ok")),
            TxnCommand::Delete { key } => txn.delete(&key).map(|existed| json!(existed)),
            TxnCommand::DeleteAll => txn.delete_all().map(|()| json!("ok")),
            TxnCommand::List(args) => txn.list::<Value>(args.options()).map(pairs),
            TxnCommand::Rollback => {
                txn.rollback();
                Ok(json!("rolled back"))
            }
            TxnCommand::Fail => return Err(Error::msg("transaction failed on purpose")),
        };
        match result {
            Ok(value) => results.push(value),
            Err(error) if strict => return Err(error),
            Err(error) => results.push(error_value(&error)),
        }
    }
    Ok(results)
}

impl Party for Store {
    const NAME: &'static str = PARTY;

    fn new(room: Room) -> Self {
        let store = Store { room };
        store.record("new");
        store
    }

    async fn on_start(&mut self) -> Result<()> {
        self.record("start");
        Ok(())
    }

    async fn on_connect(
        &mut self,
        connection: &Connection,
        _ctx: &ConnectionContext,
    ) -> Result<()> {
        // Tells the client that it is among the room's connections.
        connection.send("hello")?;
        Ok(())
    }

    async fn on_message(&mut self, message: Message, _sender: &Connection) -> Result<()> {
        let commands: Vec<Command> = message.json()?;
        self.run(commands).await?;
        Ok(())
    }

    async fn on_request(&mut self, request: Request) -> Result<Response> {
        let commands: Vec<Command> = request.json()?;
        Ok(Json(self.run(commands).await?).into_response())
    }

    async fn on_alarm(&mut self) -> Result<()> {
        let id = self.room.id().to_owned();
        record(
            self.room.env(),
            format!("attempt {id} {}", EPOCH.elapsed().as_micros()),
        );
        record(
            self.room.env(),
            format!("alarm {} {}", self.room.name(), self.room.id()),
        );
        let storage = self.room.storage();
        let seen = storage.get_alarm().await?;
        self.record(format!(
            "alarm-sees {}",
            if seen.is_some() { "some" } else { "none" }
        ));
        let value: Option<Value> = storage.get("boot-value").await?;
        if let Some(value) = value {
            self.record(format!("alarm-reads {value}"));
        }
        let runs = recorded(self.room.env(), &format!("alarm {} {id}", self.room.name()));
        if id.starts_with("reset") && runs == 1 {
            storage.set_alarm(in_ms(-1)).await?;
            let seen = storage.get_alarm().await?;
            self.record(format!(
                "alarm-sees {}",
                if seen.is_some() { "some" } else { "none" }
            ));
        }
        if id.starts_with("fail") || (id.starts_with("flaky") && runs <= 2) {
            return Err(Error::msg("on_alarm failed on purpose"));
        }
        if id.starts_with("panic") {
            panic!("on_alarm panicked on purpose");
        }
        self.record("alarm-done");
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.record("drop");
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn server(probe: &Probe) -> Server {
    init_tracing();
    probe.server().party::<Store>()
}

fn path(room: &str) -> String {
    format!("/parties/{PARTY}/{room}")
}

/// Runs `commands` in one request to `room`; fails unless it answers 200.
async fn run(server: &TestServer, room: &str, commands: Value) -> Vec<Value> {
    let response = post(server, room, &commands).await;
    assert_eq!(
        response.status,
        200,
        "{commands} in {room} answered {}: {}",
        response.status,
        response.text()
    );
    match response.json() {
        Value::Array(results) => results,
        other => panic!("expected an array of results, got {other}"),
    }
}

async fn post(server: &TestServer, room: &str, commands: &Value) -> HttpResponse {
    server
        .http("POST", &path(room), &[], commands.to_string().as_bytes())
        .await
}

/// `POST`s on its own task, so that the test can watch it being held.
fn spawn_post(server: &TestServer, room: &str, commands: Value) -> JoinHandle<HttpResponse> {
    let addr = server.addr();
    let path = path(room);
    tokio::spawn(async move {
        partykit_tests::http(addr, "POST", &path, &[], commands.to_string().as_bytes()).await
    })
}

fn is_error(result: &Value) -> bool {
    result.get("error").is_some()
}

#[track_caller]
fn assert_error(result: &Value, contains: &str) {
    let message = result
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("expected an error containing {contains:?}, got {result}"));
    assert!(
        message.contains(contains),
        "expected an error containing {contains:?}, got {message:?}"
    );
}

/// The keys of a `list` result.
fn keys(result: &Value) -> Vec<String> {
    result
        .as_array()
        .unwrap_or_else(|| panic!("expected a list, got {result}"))
        .iter()
        .map(|pair| pair[0].as_str().expect("a key").to_owned())
        .collect()
}

/// How long a test watches for something that must not happen.
const QUIET: Duration = Duration::from_millis(200);

/// Fails if `ws` receives anything within [`QUIET`].
async fn assert_quiet(ws: &mut Ws, what: &str) {
    println!("expecting silence: {what}");
    ws.expect_silence(QUIET).await;
}

/// A commit held by a [`Valve`]: the test decides when, and whether, it applies.
struct HeldCommit {
    commit: RoomCommit,
    release: oneshot::Sender<std::result::Result<(), BackendError>>,
}

impl HeldCommit {
    fn pass(self) {
        let _ = self.release.send(Ok(()));
    }

    fn fail(self, message: &str) {
        let _ = self.release.send(Err(BackendError::new(message)));
    }

    fn puts(&self, key: &str) -> bool {
        self.commit
            .mutations
            .iter()
            .any(|mutation| matches!(mutation, Mutation::Put(own, _) if own == key))
    }
}

/// Holds every commit of a [`MemoryBackend`] until the test releases it.
struct Valve {
    commits: mpsc::UnboundedReceiver<HeldCommit>,
}

impl Valve {
    fn install(backend: &MemoryBackend) -> Self {
        let (sender, commits) = mpsc::unbounded_channel();
        backend.set_commit_hook(Arc::new(
            move |commit: &RoomCommit| -> BoxFuture<'static, std::result::Result<(), BackendError>> {
            let (release, released) = oneshot::channel();
            let _ = sender.send(HeldCommit {
                commit: commit.clone(),
                release,
            });
            // A commit the test dropped unreleased applies.
            Box::pin(async move { released.await.unwrap_or(Ok(())) })
        }));
        Self { commits }
    }

    /// The next commit to reach the backend, held.
    async fn next(&mut self) -> HeldCommit {
        within("a commit to reach the backend", self.commits.recv())
            .await
            .expect("the commit hook is gone")
    }

    /// Lets the next commit through.
    async fn pass_next(&mut self) {
        self.next().await.pass();
    }
}

async fn stored(backend: &MemoryBackend, room: &str) -> Vec<(String, Bytes)> {
    let mut entries = backend
        .load(&RoomKey::new(PARTY, room))
        .await
        .expect("load")
        .entries;
    entries.sort();
    entries
}

// ---------------------------------------------------------------------------------------
// The API

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_put_delete_single_and_batch() {
    let probe = Probe::new();
    let server = TestServer::start(server(&probe)).await;
    let results = run(
        &server,
        "crud",
        json!([
            {"op": "get", "key": "a"},
            {"op": "put", "key": "a", "value": {"n": 1}},
            {"op": "get", "key": "a"},
            {"op": "put", "key": "a", "value": [1, "two", null]},
            {"op": "get", "key": "a"},
            {"op": "put_many", "entries": [["b", 2], ["c", "three"], ["d", true]]},
            {"op": "get_many", "keys": ["d", "missing", "a", "b", "also-missing"]},
            {"op": "get_many", "keys": []},
            {"op": "delete", "key": "b"},
            {"op": "delete", "key": "b"},
            {"op": "delete_many", "keys": ["c", "missing", "d"]},
            {"op": "list"},
        ]),
    )
    .await;
    assert_eq!(results[0], Value::Null, "a missing key reads as nothing");
    assert_eq!(results[2], json!({"n": 1}));
    assert_eq!(results[4], json!([1, "two", null]), "put overwrites");
    assert_eq!(
        results[6],
        json!([["a", [1, "two", null]], ["b", 2], ["d", true]]),
        "get_many returns only the keys that exist, by key"
    );
    assert_eq!(results[7], json!([]));
    assert_eq!(results[8], json!(true), "delete says the key existed");
    assert_eq!(results[9], json!(false), "a second delete finds nothing");
    assert_eq!(
        results[10],
        json!(2),
        "delete_many counts the keys that existed"
    );
    assert_eq!(keys(&results[11]), ["a"]);

    // A later request (same live room) and the stored state agree.
    let results = run(
        &server,
        "crud",
        json!([{"op": "get", "key": "a"}, {"op": "get", "key": "b"}]),
    )
    .await;
    assert_eq!(results, [json!([1, "two", null]), Value::Null]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_the_handlers_own_writes_at_once() {
    // Commits take a while, and reads within the handler do not wait for them.
    let backend = Arc::new(MemoryBackend::with_commit_delay(Duration::from_millis(20)));
    let probe = Probe::new();
    let server = TestServer::start(server(&probe).storage(Arc::clone(&backend))).await;
    let results = run(
        &server,
        "own-writes",
        json!([
            {"op": "put", "key": "k", "value": 1},
            {"op": "get", "key": "k"},
            {"op": "put", "key": "k", "value": 2},
            {"op": "list"},
            {"op": "delete", "key": "k"},
            {"op": "get", "key": "k"},
            {"op": "put_many", "entries": [["x", 1], ["y", 2]]},
            {"op": "get_many", "keys": ["x", "y"]},
            {"op": "delete_all"},
            {"op": "list"},
            {"op": "put", "key": "z", "value": 26},
            {"op": "get", "key": "z"},
        ]),
    )
    .await;
    assert_eq!(results[1], json!(1));
    assert_eq!(results[3], json!([["k", 2]]));
    assert_eq!(results[4], json!(true));
    assert_eq!(results[5], Value::Null);
    assert_eq!(results[7], json!([["x", 1], ["y", 2]]));
    assert_eq!(results[9], json!([]));
    assert_eq!(results[11], json!(26));
    // The response left after the commit, which applied everything in order.
    assert_eq!(
        stored(&backend, "own-writes").await,
        [("z".to_owned(), Bytes::from("26"))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_options_and_their_combinations() {
    let probe = Probe::new();
    let server = TestServer::start(server(&probe)).await;
    let all = ["a", "b", "ba", "bb", "c", "d"];
    let entries: Vec<Value> = all.iter().map(|key| json!([key, key])).collect();
    run(
        &server,
        "list",
        json!([{"op": "put_many", "entries": entries}]),
    )
    .await;

    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), all.to_vec()),
        (json!({"start": "b"}), vec!["b", "ba", "bb", "c", "d"]),
        (json!({"start": "bab"}), vec!["bb", "c", "d"]),
        (json!({"start_after": "b"}), vec!["ba", "bb", "c", "d"]),
        (
            json!({"start_after": "a0"}),
            vec!["b", "ba", "bb", "c", "d"],
        ),
        (json!({"end": "c"}), vec!["a", "b", "ba", "bb"]),
        (json!({"end": "bb0"}), vec!["a", "b", "ba", "bb"]),
        (json!({"prefix": "b"}), vec!["b", "ba", "bb"]),
        (json!({"prefix": "ba"}), vec!["ba"]),
        (json!({"prefix": "z"}), vec![]),
        (json!({"prefix": ""}), all.to_vec()),
        (
            json!({"reverse": true}),
            vec!["d", "c", "bb", "ba", "b", "a"],
        ),
        (json!({"reverse": false}), all.to_vec()),
        (json!({"limit": 2}), vec!["a", "b"]),
        (json!({"limit": 0}), vec![]),
        (json!({"limit": 100}), all.to_vec()),
        // Combinations.
        (json!({"start": "b", "end": "c"}), vec!["b", "ba", "bb"]),
        (json!({"start_after": "b", "end": "c"}), vec!["ba", "bb"]),
        // reverse walks the same range from its end: it does not swap start and end.
        (
            json!({"start": "b", "end": "c", "reverse": true}),
            vec!["bb", "ba", "b"],
        ),
        (json!({"start": "c", "end": "b", "reverse": true}), vec![]),
        (
            json!({"start": "b", "reverse": true, "limit": 2}),
            vec!["d", "c"],
        ),
        (
            json!({"end": "c", "reverse": true, "limit": 2}),
            vec!["bb", "ba"],
        ),
        (json!({"reverse": true, "limit": 2}), vec!["d", "c"]),
        (json!({"start": "b", "limit": 2}), vec!["b", "ba"]),
        (json!({"start_after": "b", "limit": 1}), vec!["ba"]),
        (json!({"prefix": "b", "start": "a"}), vec!["b", "ba", "bb"]),
        (json!({"prefix": "b", "start": "ba"}), vec!["ba", "bb"]),
        (json!({"prefix": "b", "start_after": "b"}), vec!["ba", "bb"]),
        (json!({"prefix": "b", "start": "c"}), vec![]),
        (json!({"prefix": "b", "end": "bb"}), vec!["b", "ba"]),
        (json!({"prefix": "b", "end": "a"}), vec![]),
        (
            json!({"prefix": "b", "reverse": true}),
            vec!["bb", "ba", "b"],
        ),
        (
            json!({"prefix": "b", "reverse": true, "limit": 2}),
            vec!["bb", "ba"],
        ),
        (json!({"prefix": "b", "limit": 2}), vec!["b", "ba"]),
        (
            json!({"prefix": "b", "start_after": "b", "end": "bb", "reverse": true, "limit": 5}),
            vec!["ba"],
        ),
        // Empty and inverted ranges.
        (json!({"start": "b", "end": "b"}), vec![]),
        (json!({"start_after": "b", "end": "b"}), vec![]),
        (json!({"start": "c", "end": "b"}), vec![]),
        (json!({"start_after": "d"}), vec![]),
    ];
    let commands: Vec<Value> = cases
        .iter()
        .map(|(args, _)| {
            let mut command = args.clone();
            command["op"] = json!("list");
            command
        })
        .collect();
    let results = run(&server, "list", Value::Array(commands)).await;
    for ((args, expected), result) in cases.iter().zip(&results) {
        assert_eq!(keys(result), *expected, "list {args}");
        for pair in result.as_array().expect("a list") {
            assert_eq!(pair[0], pair[1], "list {args} returns each key's value");
        }
    }

    let results = run(
        &server,
        "list",
        json!([{"op": "list", "start": "a", "start_after": "a"}]),
    )
    .await;
    assert_error(&results[0], "cannot be used together");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_order_by_utf8_bytes_and_prefixes_ending_in_the_highest_code_point_work() {
    let probe = Probe::new();
    let server = TestServer::start(server(&probe)).await;
    // U+10FFFF is F4 8F BF BF: a prefix ending in it has no successor by incrementing its
    // last byte, so a naive prefix bound would miss or overshoot.
    let top = '\u{10FFFF}';
    let keys_in_order = [
        "p".to_owned(),
        "p\u{7F}".to_owned(),
        "pé".to_owned(),
        "p\u{FFFF}".to_owned(),
        format!("p{top}"),
        format!("p{top}a"),
        format!("p{top}\u{FFFF}"),
        format!("p{top}{top}"),
        format!("p{top}{top}{top}"),
        "q".to_owned(),
        format!("{top}"),
        format!("{top}{top}"),
    ];
    let entries: Vec<Value> = keys_in_order
        .iter()
        .rev()
        .map(|key| json!([key, 1]))
        .collect();
    let high = format!("p{top}");
    let results = run(
        &server,
        "utf8",
        json!([
            {"op": "put_many", "entries": entries},
            {"op": "list"},
            {"op": "list", "prefix": high},
            {"op": "list", "prefix": high, "reverse": true},
            {"op": "list", "prefix": high, "limit": 2},
            {"op": "list", "prefix": high, "reverse": true, "limit": 2},
            {"op": "list", "prefix": format!("p{top}{top}")},
            {"op": "list", "prefix": format!("{top}")},
            {"op": "list", "prefix": format!("{top}"), "reverse": true},
            {"op": "list", "prefix": high, "start_after": high},
            {"op": "list", "prefix": high, "end": format!("p{top}{top}")},
            {"op": "list", "start": high},
        ]),
    )
    .await;
    assert_eq!(
        keys(&results[1]),
        keys_in_order,
        "keys are in UTF-8 byte order"
    );
    let under_high: Vec<String> = keys_in_order[4..9].to_vec();
    assert_eq!(keys(&results[2]), under_high);
    let mut reversed = under_high.clone();
    reversed.reverse();
    assert_eq!(keys(&results[3]), reversed);
    assert_eq!(keys(&results[4]), under_high[..2]);
    assert_eq!(keys(&results[5]), reversed[..2]);
    assert_eq!(keys(&results[6]), keys_in_order[7..9]);
    assert_eq!(keys(&results[7]), keys_in_order[10..12]);
    assert_eq!(keys(&results[8]), [format!("{top}{top}"), format!("{top}")]);
    assert_eq!(keys(&results[9]), under_high[1..]);
    assert_eq!(keys(&results[10]), under_high[..3]);
    assert_eq!(keys(&results[11]), keys_in_order[4..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_up_to_2048_bytes_are_accepted_and_longer_ones_refused() {
    let backend = Arc::new(MemoryBackend::new());
    let probe = Probe::new();
    let server = TestServer::start(server(&probe).storage(Arc::clone(&backend))).await;
    // Counted in bytes, not characters: é is two bytes.
    let longest = "é".repeat(1024);
    let too_long = format!("{longest}a");
    assert_eq!((longest.len(), too_long.len()), (2048, 2049));

    let results = run(
        &server,
        "keys",
        json!([
            {"op": "put", "key": longest, "value": 1},
            {"op": "get", "key": longest},
            {"op": "get_many", "keys": [longest]},
            {"op": "list", "prefix": longest},
            {"op": "put", "key": too_long, "value": 1},
            {"op": "put_bytes", "key": too_long, "bytes": [1]},
            {"op": "put_many", "entries": [["fine", 1], [too_long, 1]]},
            {"op": "get", "key": too_long},
            {"op": "get_many", "keys": ["fine", too_long]},
            {"op": "delete", "key": too_long},
            {"op": "delete_many", "keys": [longest, too_long]},
            {"op": "transaction", "ops": [{"op": "put", "key": too_long, "value": 1}]},
            {"op": "list"},
        ]),
    )
    .await;
    assert_eq!(results[0], json!("ok"));
    assert_eq!(results[1], json!(1));
    assert_eq!(results[2], json!([[longest, 1]]));
    assert_eq!(keys(&results[3]), std::slice::from_ref(&longest));
    for (index, what) in [
        (4, "put"),
        (5, "put_bytes"),
        (6, "put_many"),
        (7, "get"),
        (8, "get_many"),
        (9, "delete"),
        (10, "delete_many"),
    ] {
        assert_error(&results[index], "2049 bytes");
        assert!(is_error(&results[index]), "{what} of a 2,049-byte key");
    }
    assert_error(&results[11]["ok"][0], "2049 bytes");
    assert_eq!(
        keys(&results[12]),
        std::slice::from_ref(&longest),
        "nothing of a refused batch was written, and the refused delete_many deleted nothing"
    );
    drop(server);
    assert_eq!(
        stored(&backend, "keys").await,
        [(longest, Bytes::from("1"))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_at_the_size_limit_are_accepted_and_larger_ones_refused() {
    let backend = Arc::new(MemoryBackend::new());
    let probe = Probe::new();
    let limits = Limits {
        max_value_size: 64,
        ..Limits::default()
    };
    let server =
        TestServer::start(server(&probe).limits(limits).storage(Arc::clone(&backend))).await;
    // A JSON string of n characters is n + 2 bytes.
    let fits = "x".repeat(62);
    let too_big = "x".repeat(63);
    let results = run(
        &server,
        "values",
        json!([
            {"op": "put_bytes", "key": "bytes-64", "bytes": vec![7u8; 64]},
            {"op": "put_bytes", "key": "bytes-65", "bytes": vec![7u8; 65]},
            {"op": "put", "key": "json-64", "value": fits},
            {"op": "put", "key": "json-65", "value": too_big},
            {"op": "put_many", "entries": [["many-ok", 1], ["many-big", too_big]]},
            {"op": "transaction", "ops": [
                {"op": "put", "key": "txn-ok", "value": 1},
                {"op": "put_bytes", "key": "txn-big", "bytes": vec![7u8; 65]},
            ]},
            {"op": "transaction", "strict": true, "ops": [
                {"op": "put", "key": "strict-ok", "value": 1},
                {"op": "put", "key": "strict-big", "value": too_big},
            ]},
            {"op": "list_bytes"},
        ]),
    )
    .await;
    assert_eq!(results[0], json!("ok"));
    assert_error(&results[1], "65 bytes");
    assert_eq!(results[2], json!("ok"));
    assert_error(&results[3], "65 bytes");
    assert_error(&results[4], "65 bytes");
    assert_eq!(results[5]["ok"][0], json!("ok"));
    assert_error(&results[5]["ok"][1], "65 bytes");
    assert_error(&results[6], "65 bytes");
    assert_eq!(
        keys(&results[7]),
        ["bytes-64", "json-64", "txn-ok"],
        "refused values, the rest of a refused put_many, and a transaction that failed wrote nothing"
    );
    drop(server);
    let stored_keys: Vec<String> = stored(&backend, "values")
        .await
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(stored_keys, ["bytes-64", "json-64", "txn-ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_128_keys_are_accepted_and_129_refused_without_effect() {
    let probe = Probe::new();
    let server = TestServer::start(server(&probe)).await;
    let names =
        |n: usize, tag: &str| -> Vec<String> { (0..n).map(|i| format!("{tag}{i:03}")).collect() };
    let entries =
        |keys: &[String]| -> Vec<Value> { keys.iter().map(|key| json!([key, 1])).collect() };
    let ok128 = names(128, "k");
    let over129 = names(129, "o");

    let results = run(
        &server,
        "batches",
        json!([
            {"op": "put_many", "entries": entries(&over129)},
            {"op": "list"},
            {"op": "put_many", "entries": entries(&ok128)},
            {"op": "get_many", "keys": ok128},
            {"op": "get_many", "keys": names(129, "k")},
            {"op": "delete_many", "keys": names(129, "k")},
            {"op": "list"},
            {"op": "delete_many", "keys": ok128},
            {"op": "list"},
        ]),
    )
    .await;
    assert_error(&results[0], "129 keys");
    assert_eq!(
        keys(&results[1]),
        Vec::<String>::new(),
        "a refused put_many writes nothing"
    );
    assert_eq!(results[2], json!("ok"));
    assert_eq!(results[3].as_array().map(Vec::len), Some(128));
    assert_error(&results[4], "129 keys");
    assert_error(&results[5], "129 keys");
    assert_eq!(
        keys(&results[6]),
        ok128,
        "a refused delete_many deletes nothing"
    );
    assert_eq!(results[7], json!(128));
    assert_eq!(keys(&results[8]), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_all_removes_every_key_but_not_the_alarm() {
    let backend = Arc::new(MemoryBackend::new());
    let probe = Probe::new();
    let server = TestServer::start(server(&probe).storage(Arc::clone(&backend))).await;
    let results = run(
        &server,
        "wipe",
        json!([
            {"op": "put_many", "entries": [["a", 1], ["b", 2], ["c", 3]]},
            {"op": "set_alarm", "in_ms": 3_600_000},
            {"op": "delete_all"},
            {"op": "list"},
            {"op": "get", "key": "a"},
            {"op": "get_alarm"},
            {"op": "put", "key": "after", "value": 1},
        ]),
    )
    .await;
    assert_eq!(keys(&results[3]), Vec::<String>::new());
    assert_eq!(results[4], Value::Null);
    assert!(results[5].is_i64(), "the alarm stays: {}", results[5]);
    let results = run(
        &server,
        "wipe",
        json!([{"op": "delete_all"}, {"op": "delete_all"}, {"op": "list"}]),
    )
    .await;
    assert_eq!(
        keys(&results[2]),
        Vec::<String>::new(),
        "delete_all twice is fine"
    );
    drop(server);
    let snapshot = backend
        .load(&RoomKey::new(PARTY, "wipe"))
        .await
        .expect("load");
    assert!(snapshot.entries.is_empty(), "{snapshot:?}");
    assert!(snapshot.alarm.is_some(), "delete_all kept the stored alarm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_roll_back_and_fail_atomically() {
    let backend = Arc::new(MemoryBackend::new());
    let probe = Probe::new();
    let server = TestServer::start(server(&probe).storage(Arc::clone(&backend))).await;
    run(
        &server,
        "txn",
        json!([{"op": "put_many", "entries": [["a", 1], ["c", 3]]}]),
    )
    .await;

    // Commit: reads see the transaction's own writes; everything applies.
    let results = run(
        &server,
        "txn",
        json!([
            {"op": "transaction", "ops": [
                {"op": "get", "key": "a"},
                {"op": "put", "key": "a", "value": 2},
                {"op": "put", "key": "b", "value": 20},
                {"op": "get", "key": "a"},
                {"op": "delete", "key": "c"},
                {"op": "delete", "key": "c"},
                {"op": "get", "key": "c"},
                {"op": "list"},
            ]},
            {"op": "list"},
        ]),
    )
    .await;
    assert_eq!(
        results[0],
        json!({"ok": [1, "ok", "ok", 2, true, false, null, [["a", 2], ["b", 20]]]})
    );
    assert_eq!(
        results[1],
        json!([["a", 2], ["b", 20]]),
        "the committed transaction applied"
    );

    // Rollback: nothing applies, and the transaction refuses any further use.
    let results = run(
        &server,
        "txn",
        json!([
            {"op": "transaction", "ops": [
                {"op": "put", "key": "a", "value": 99},
                {"op": "delete", "key": "b"},
                {"op": "delete_all"},
                {"op": "put", "key": "z", "value": 26},
                {"op": "rollback"},
                {"op": "get", "key": "a"},
                {"op": "put", "key": "a", "value": 100},
                {"op": "delete", "key": "b"},
                {"op": "list"},
                {"op": "delete_all"},
            ]},
            {"op": "list"},
        ]),
    )
    .await;
    let ops = results[0]["ok"]
        .as_array()
        .expect("the body returned Ok after the rollback");
    assert_eq!(ops[4], json!("rolled back"));
    for after in &ops[5..] {
        assert_error(after, "rolled back");
    }
    assert_eq!(
        results[1],
        json!([["a", 2], ["b", 20]]),
        "a rolled-back transaction applied nothing"
    );

    // An error inside: nothing applies, the error reaches the caller.
    let results = run(
        &server,
        "txn",
        json!([
            {"op": "transaction", "ops": [
                {"op": "put", "key": "a", "value": 99},
                {"op": "delete_all"},
                {"op": "put", "key": "y", "value": 25},
                {"op": "fail"},
                {"op": "put", "key": "never", "value": 0},
            ]},
            {"op": "list"},
        ]),
    )
    .await;
    assert_error(&results[0], "failed on purpose");
    assert_eq!(
        results[1],
        json!([["a", 2], ["b", 20]]),
        "a failed transaction applied nothing"
    );

    // delete_all inside a transaction, then writes on top of it.
    let results = run(
        &server,
        "txn",
        json!([
            {"op": "transaction", "ops": [
                {"op": "delete_all"},
                {"op": "get", "key": "a"},
                {"op": "put", "key": "n", "value": 14},
                {"op": "list"},
            ]},
            {"op": "list"},
        ]),
    )
    .await;
    assert_eq!(results[0], json!({"ok": ["ok", null, "ok", [["n", 14]]]}));
    assert_eq!(results[1], json!([["n", 14]]));
    drop(server);
    assert_eq!(
        stored(&backend, "txn").await,
        [("n".to_owned(), Bytes::from("14"))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bytes_round_trip() {
    let backend = Arc::new(MemoryBackend::new());
    let probe = Probe::new();
    let server = TestServer::start(server(&probe).storage(Arc::clone(&backend))).await;
    let raw = vec![0u8, 255, 128, 10, 0, 7];
    let results = run(
        &server,
        "bytes",
        json!([
            {"op": "put_bytes", "key": "raw", "bytes": raw},
            {"op": "put_bytes", "key": "empty", "bytes": []},
            {"op": "put_bytes", "key": "json", "bytes": b"{\"a\":1}".to_vec()},
            {"op": "put", "key": "typed", "value": "hi"},
            {"op": "get_bytes", "key": "raw"},
            {"op": "get_bytes", "key": "empty"},
            {"op": "get_bytes", "key": "typed"},
            {"op": "get_bytes", "key": "missing"},
            {"op": "get", "key": "json"},
            {"op": "get", "key": "raw"},
            {"op": "list_bytes", "prefix": "raw"},
            {"op": "list", "prefix": "raw"},
            {"op": "transaction", "ops": [{"op": "put_bytes", "key": "txn-raw", "bytes": [1, 2, 255]}]},
        ]),
    )
    .await;
    assert_eq!(results[4], json!(raw));
    assert_eq!(results[5], json!([]));
    assert_eq!(results[6], json!(b"\"hi\"".to_vec()), "put stores JSON");
    assert_eq!(results[7], Value::Null);
    assert_eq!(
        results[8],
        json!({"a": 1}),
        "bytes that are JSON read back with get"
    );
    assert_error(&results[9], "does not decode");
    assert_eq!(results[10], json!([["raw", raw]]));
    assert_error(&results[11], "does not decode");
    drop(server);
    let stored = stored(&backend, "bytes").await;
    assert!(
        stored.contains(&("raw".to_owned(), Bytes::from(raw.clone()))),
        "{stored:?}"
    );
    assert!(
        stored.contains(&("txn-raw".to_owned(), Bytes::from_static(&[1, 2, 255]))),
        "{stored:?}"
    );
    assert!(
        stored.contains(&("empty".to_owned(), Bytes::new())),
        "{stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_outlive_the_room_in_the_backend() {
    let backend = Arc::new(MemoryBackend::new());
    let probe = Probe::new();
    let limits = Limits {
        room_idle_timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let server =
        TestServer::start(server(&probe).limits(limits).storage(Arc::clone(&backend))).await;
    run(
        &server,
        "evicted",
        json!([{"op": "put", "key": "kept", "value": {"n": 1}}, {"op": "put_bytes", "key": "raw", "bytes": [255]}]),
    )
    .await;
    probe.wait_for("drop evicted", 1).await;
    let results = run(
        &server,
        "evicted",
        json!([{"op": "get", "key": "kept"}, {"op": "get_bytes", "key": "raw"}, {"op": "list_bytes"}]),
    )
    .await;
    assert_eq!(results[0], json!({"n": 1}));
    assert_eq!(results[1], json!([255]));
    assert_eq!(results[2].as_array().map(Vec::len), Some(2));
    assert_eq!(
        probe.count("new evicted"),
        2,
        "the room was rebuilt after eviction"
    );
    assert_eq!(probe.count("start evicted"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_waits_until_the_writes_are_durable() {
    let backend = Arc::new(MemoryBackend::new());
    let mut valve = Valve::install(&backend);
    let probe = Probe::new();
    let server = TestServer::start(server(&probe).storage(Arc::clone(&backend))).await;

    let request = spawn_post(
        &server,
        "sync",
        json!([{"op": "put", "key": "a", "value": 1}, {"op": "sync"}, {"op": "get", "key": "a"}]),
    );
    let held = valve.next().await;
    assert!(held.puts("a"), "{:?}", held.commit);
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        probe.count("synced sync"),
        0,
        "sync returned before the commit was durable"
    );
    assert!(stored(&backend, "sync").await.is_empty());
    held.pass();
    let response = within("the request after sync", request)
        .await
        .expect("request task");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!(["ok", "ok", 1]));
    assert_eq!(
        stored(&backend, "sync").await,
        [("a".to_owned(), Bytes::from("1"))]
    );

    // Nothing pending: sync returns at once.
    let results = run(&server, "sync", json!([{"op": "sync"}, {"op": "sync"}])).await;
    assert_eq!(results, [json!("ok"), json!("ok")]);

    // A failed commit: sync says so.
    let request = spawn_post(
        &server,
        "sync",
        json!([{"op": "put", "key": "b", "value": 2}, {"op": "sync"}]),
    );
    valve.next().await.fail("disk on fire");
    let response = within("the request after a failed sync", request)
        .await
        .expect("request task");
    // The handler learnt of the failure from sync, and answered after it.
    assert_eq!(response.status, 200, "{}", response.text());
    let results = response.json();
    assert_eq!(results[0], json!("ok"));
    assert_error(&results[1], "commit failed");
    assert_eq!(
        probe.count("synced sync"),
        4,
        "sync returned after the failure"
    );
    let results = run(&server, "sync", json!([{"op": "list"}])).await;
    assert_eq!(
        results[0],
        json!([["a", 1]]),
        "the failed write is gone after the reset"
    );
}

// ---------------------------------------------------------------------------------------
// The output gate

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_follows_a_write_waits_until_it_is_durable() {
    let backend = Arc::new(MemoryBackend::new());
    let mut valve = Valve::install(&backend);
    let probe = Probe::new();
    let server = TestServer::start(server(&probe).storage(Arc::clone(&backend))).await;
    let mut ws = server.connect(&path("gate")).await;
    assert_eq!(ws.recv_text().await, "hello");

    let request = spawn_post(
        &server,
        "gate",
        json!([
            {"op": "broadcast", "text": "before the write"},
            {"op": "put", "key": "k", "value": "v"},
            {"op": "broadcast", "text": "after the write"},
        ]),
    );
    // Sent before the write: out at once, while the commit is still held.
    assert_eq!(ws.recv_text().await, "before the write");
    let held = valve.next().await;
    assert!(held.puts("k"), "{:?}", held.commit);
    assert_quiet(&mut ws, "the commit is not durable yet").await;
    assert!(
        !request.is_finished(),
        "the HTTP response left before its write was durable"
    );

    // A request that only reads sees the write (the room's own cache), but its answer
    // tells of the write, so it waits too, behind the first one.
    let reader = spawn_post(&server, "gate", json!([{"op": "get", "key": "k"}]));
    tokio::time::sleep(QUIET).await;
    assert!(
        !reader.is_finished(),
        "a read of a non-durable write was answered"
    );
    assert!(!request.is_finished());
    assert!(stored(&backend, "gate").await.is_empty());

    held.pass();
    assert_eq!(ws.recv_text().await, "after the write");
    let response = within("the held response", request)
        .await
        .expect("request task");
    assert_eq!(response.status, 200, "{}", response.text());
    let read = within("the held read", reader).await.expect("reader task");
    assert_eq!(read.json(), json!(["v"]));
    assert_eq!(
        stored(&backend, "gate").await,
        [("k".to_owned(), Bytes::from("\"v\""))]
    );

    // The same over a socket: a message handler's write holds its broadcast.
    ws.send_text(
        json!([
            {"op": "put", "key": "k2", "value": 2},
            {"op": "broadcast", "text": "socket write"},
        ])
        .to_string(),
    )
    .await;
    let held = valve.next().await;
    assert!(held.puts("k2"));
    assert_quiet(&mut ws, "the socket's write is not durable yet").await;
    held.pass();
    assert_eq!(ws.recv_text().await, "socket write");

    // With nothing pending, output is not held.
    let results = run(
        &server,
        "gate",
        json!([{"op": "broadcast", "text": "free"}]),
    )
    .await;
    assert_eq!(results, [json!("ok")]);
    assert_eq!(ws.recv_text().await, "free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_writes_do_not_hold_output() {
    let backend = Arc::new(MemoryBackend::new());
    let mut valve = Valve::install(&backend);
    let probe = Probe::new();
    let server = TestServer::start(server(&probe).storage(Arc::clone(&backend))).await;
    let mut ws = server.connect(&path("unconfirmed")).await;
    assert_eq!(ws.recv_text().await, "hello");

    let request = spawn_post(
        &server,
        "unconfirmed",
        json!([
            {"op": "put_unconfirmed", "key": "u", "value": 1},
            {"op": "broadcast", "text": "not held"},
            {"op": "get", "key": "u"},
        ]),
    );
    let held = valve.next().await;
    assert!(held.puts("u"), "{:?}", held.commit);
    // Both go out while the commit is still held.
    assert_eq!(ws.recv_text().await, "not held");
    let response = within("the response after an unconfirmed write", request)
        .await
        .expect("request task");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!(["ok", "ok", 1]));
    assert!(
        stored(&backend, "unconfirmed").await.is_empty(),
        "the commit is still held"
    );
    held.pass();

    // The unconfirmed write was committed all the same: `sync` waits for the commit
    // just released (a request alone could be answered before it has applied).
    let results = run(
        &server,
        "unconfirmed",
        json!([{"op": "sync"}, {"op": "get", "key": "u"}]),
    )
    .await;
    assert_eq!(results, [json!("ok"), json!(1)]);
    assert_eq!(
        stored(&backend, "unconfirmed").await,
        [("u".to_owned(), Bytes::from("1"))]
    );

    // A confirmed write in the same handler still holds what follows it.
    let request = spawn_post(
        &server,
        "unconfirmed",
        json!([
            {"op": "put_unconfirmed", "key": "u", "value": 2},
            {"op": "broadcast", "text": "first"},
            {"op": "put", "key": "c", "value": 3},
            {"op": "broadcast", "text": "second"},
        ]),
    );
    assert_eq!(ws.recv_text().await, "first");
    let held = valve.next().await;
    assert_quiet(&mut ws, "a confirmed write is pending").await;
    assert!(!request.is_finished());
    held.pass();
    assert_eq!(ws.recv_text().await, "second");
    let response = within("the held response", request)
        .await
        .expect("request task");
    assert_eq!(response.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_drops_held_output_and_resets_the_room() {
    let backend = Arc::new(MemoryBackend::new());
    let mut valve = Valve::install(&backend);
    let probe = Probe::new();
    let server = TestServer::start(server(&probe).storage(Arc::clone(&backend))).await;

    let setup = spawn_post(
        &server,
        "broken",
        json!([{"op": "put", "key": "x", "value": 1}]),
    );
    valve.pass_next().await;
    assert_eq!(within("the setup", setup).await.expect("setup").status, 200);
    let mut ws = server.connect(&path("broken")).await;
    assert_eq!(ws.recv_text().await, "hello");
    assert_eq!(
        (probe.count("new broken"), probe.count("start broken")),
        (1, 1)
    );

    let request = spawn_post(
        &server,
        "broken",
        json!([
            {"op": "put", "key": "x", "value": 2},
            {"op": "put", "key": "y", "value": 2},
            {"op": "broadcast", "text": "about the failed write"},
        ]),
    );
    let held = valve.next().await;
    assert!(held.puts("x") && held.puts("y"), "{:?}", held.commit);
    held.fail("disk on fire");
    let response = within("the held response", request)
        .await
        .expect("request task");
    assert_eq!(
        response.status,
        500,
        "the held response becomes a 500: {}",
        response.text()
    );

    // The next event sees the durable state, in a rebuilt room; the broadcast about the
    // failed write never arrives: the next message is the one sent after the reset.
    let results = run(
        &server,
        "broken",
        json!([
            {"op": "get", "key": "x"},
            {"op": "get", "key": "y"},
            {"op": "broadcast", "text": "after the reset"},
        ]),
    )
    .await;
    assert_eq!(results[0], json!(1), "the failed write is gone");
    assert_eq!(results[1], Value::Null, "the failed write is gone");
    assert_eq!(ws.recv_text().await, "after the reset");
    assert_eq!(
        (probe.count("new broken"), probe.count("start broken")),
        (2, 2),
        "the room was rebuilt: {:?}",
        probe.events()
    );
    assert_eq!(probe.count("drop broken"), 1, "the old value was dropped");

    // And it works normally again.
    let request = spawn_post(
        &server,
        "broken",
        json!([{"op": "put", "key": "x", "value": 3}]),
    );
    valve.pass_next().await;
    assert_eq!(
        within("a later write", request)
            .await
            .expect("request")
            .status,
        200
    );
    assert_eq!(
        stored(&backend, "broken").await,
        [("x".to_owned(), Bytes::from("3"))]
    );
    assert_quiet(&mut ws, "the dropped broadcast must never arrive").await;
}

// ---------------------------------------------------------------------------------------
// Alarms

/// The µs times `attempt <room> <µs>` recorded.
fn attempts(probe: &Probe, room: &str) -> Vec<u128> {
    let prefix = format!("attempt {room} ");
    probe
        .events()
        .iter()
        .filter_map(|event| event.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

/// The events of one room, without the room id.
fn events_of(probe: &Probe, room: &str) -> Vec<String> {
    let suffix = format!(" {room}");
    probe
        .events()
        .iter()
        .filter(|event| !event.starts_with("attempt "))
        .filter_map(|event| event.strip_suffix(&suffix).map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_in_the_past_fires_and_sees_the_room() {
    let probe = Probe::new();
    let server = TestServer::start(server(&probe)).await;
    let results = run(
        &server,
        "ring",
        json!([{"op": "set_alarm", "in_ms": -1000}, {"op": "get_alarm"}]),
    )
    .await;
    assert!(
        results[1].is_i64(),
        "get_alarm before it fires: {}",
        results[1]
    );
    probe.wait_for("alarm-done ring", 1).await;
    assert_eq!(
        events_of(&probe, "ring"),
        [
            "new",
            "start",
            &format!("alarm {PARTY}"),
            "alarm-sees none",
            "alarm-done"
        ],
        "on_alarm saw the room's id and party name, and no pending alarm"
    );
    let results = run(&server, "ring", json!([{"op": "get_alarm"}])).await;
    assert_eq!(results[0], Value::Null, "the alarm is cleared once it ran");

    // An alarm set a little in the future fires too.
    run(&server, "ring", json!([{"op": "set_alarm", "in_ms": 100}])).await;
    probe.wait_for("alarm-done ring", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_alarm_inside_on_alarm_shows_only_a_new_alarm() {
    let probe = Probe::new();
    let server = TestServer::start(server(&probe)).await;
    run(&server, "reset", json!([{"op": "set_alarm", "in_ms": -1}])).await;
    // The first run sets another alarm (in the past), which fires again.
    probe.wait_for("alarm-done reset", 2).await;
    let alarm = format!("alarm {PARTY}");
    assert_eq!(
        events_of(&probe, "reset"),
        [
            "new",
            "start",
            &alarm,
            "alarm-sees none",
            "alarm-sees some",
            "alarm-done",
            &alarm,
            "alarm-sees none",
            "alarm-done",
        ]
    );
    let results = run(&server, "reset", json!([{"op": "get_alarm"}])).await;
    assert_eq!(results[0], Value::Null);
    // An hour on the test clock: nothing else is due.
    assert_eq!(
        server.kit().advance(Duration::from_secs(3600)).await,
        0,
        "no third run"
    );
    assert_eq!(probe.count("alarm-done reset"), 2, "no third run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_alarm_cancels_it() {
    let probe = Probe::new();
    let server = TestServer::start(server(&probe)).await;
    run(
        &server,
        "cancel",
        json!([{"op": "set_alarm", "in_ms": 150}]),
    )
    .await;
    let results = run(
        &server,
        "cancel",
        json!([{"op": "delete_alarm"}, {"op": "get_alarm"}]),
    )
    .await;
    assert_eq!(results[1], Value::Null);
    // Set and deleted in one event: never fires either.
    run(
        &server,
        "cancel-same",
        json!([{"op": "set_alarm", "in_ms": -1}, {"op": "delete_alarm"}]),
    )
    .await;
    // Well past when it was due, on the test clock: nothing fires.
    assert_eq!(server.kit().advance(Duration::from_secs(60)).await, 0);
    assert_eq!(
        probe.count(&format!("alarm {PARTY} cancel")),
        0,
        "{:?}",
        probe.events()
    );
    assert_eq!(probe.count(&format!("alarm {PARTY} cancel-same")), 0);

    // Replacing an alarm: only the new time fires, once.
    run(
        &server,
        "cancel",
        json!([{"op": "set_alarm", "in_ms": 3_600_000}, {"op": "set_alarm", "in_ms": -1}]),
    )
    .await;
    probe.wait_for("alarm-done cancel", 1).await;
    // The replaced time (an hour away) does not fire either.
    assert_eq!(server.kit().advance(Duration::from_secs(7200)).await, 0);
    assert_eq!(probe.count("alarm-done cancel"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_starts_an_evicted_room_first() {
    let probe = Probe::new();
    let limits = Limits {
        room_idle_timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let server = TestServer::start(server(&probe).limits(limits)).await;
    // Due well after the room is evicted (it idles out after 50 ms).
    run(
        &server,
        "cold",
        json!([{"op": "put", "key": "boot-value", "value": "kept"}, {"op": "set_alarm", "in_ms": 1000}]),
    )
    .await;
    probe.wait_for("drop cold", 1).await;
    assert_eq!(
        probe.count(&format!("alarm {PARTY} cold")),
        0,
        "the alarm fired before the room was evicted; the test needs it later"
    );
    probe.wait_for("alarm-done cold", 1).await;
    assert_eq!(
        events_of(&probe, "cold"),
        [
            "new",
            "start",
            "drop",
            "new",
            "start",
            &format!("alarm {PARTY}"),
            "alarm-sees none",
            "alarm-reads \"kept\"",
            "alarm-done",
        ],
        "new and on_start ran before on_alarm in the cold room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_stored_before_the_server_started_fires_in_a_cold_room() {
    let backend = Arc::new(MemoryBackend::new());
    let past = millis(SystemTime::now()) - 5_000;
    backend
        .commit(RoomCommit::new(
            RoomKey::new(PARTY, "boot"),
            vec![
                Mutation::Put("boot-value".into(), Bytes::from("\"stored\"")),
                Mutation::SetAlarm(Some(past)),
            ],
        ))
        .await
        .expect("commit");
    let probe = Probe::new();
    let _server = TestServer::start(server(&probe).storage(Arc::clone(&backend))).await;
    probe.wait_for("alarm-done boot", 1).await;
    assert_eq!(
        events_of(&probe, "boot"),
        [
            "new",
            "start",
            &format!("alarm {PARTY}"),
            "alarm-sees none",
            "alarm-reads \"stored\"",
            "alarm-done",
        ]
    );
    // Cleared durably once it ran.
    within("the alarm to be cleared", async {
        while backend
            .load(&RoomKey::new(PARTY, "boot"))
            .await
            .expect("load")
            .alarm
            .is_some()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn retry_limits() -> Limits {
    Limits {
        alarm_retry_base: Duration::from_millis(50),
        alarm_max_retries: 3,
        ..Limits::default()
    }
}

/// Checks that a failing alarm ran once plus 3 retries, with growing gaps, and was then
/// dropped.
async fn assert_retried_then_dropped(probe: &Probe, server: &TestServer, room: &str) {
    probe
        .wait_until(&format!("4 attempts of {room}'s alarm"), |_| {
            attempts(probe, room).len() >= 4
        })
        .await;
    // After the last retry the alarm is gone: no further attempt is pending.
    let results = run(server, room, json!([{"op": "get_alarm"}])).await;
    assert_eq!(
        results[0],
        Value::Null,
        "the alarm is dropped after the last retry"
    );
    // The next retry would have come 400 ms after the last.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let times = attempts(probe, room);
    assert_eq!(
        times.len(),
        4,
        "one run and 3 retries, then no more: {times:?}"
    );
    // Exponential backoff from 50 ms: retry n waits at least 50 ms * 2^(n-1). Timers fire
    // late on a busy machine but never early, so lower bounds are exact to check.
    let gaps: Vec<u128> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
    for (n, gap) in gaps.iter().enumerate() {
        let at_least = 50_000u128 << n;
        assert!(
            *gap + 1_000 >= at_least,
            "retry {} came {gap} µs after the previous attempt; backoff requires at least {at_least} µs: {gaps:?}",
            n + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_alarm_is_retried_with_backoff_then_dropped() {
    let probe = Probe::new();
    let server = TestServer::start(server(&probe).limits(retry_limits())).await;
    run(&server, "fail", json!([{"op": "set_alarm", "in_ms": -1}])).await;
    assert_retried_then_dropped(&probe, &server, "fail").await;
    assert_eq!(probe.count("alarm-done fail"), 0);
    assert_eq!(
        probe.count("new fail"),
        1,
        "a failing on_alarm keeps the room's value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_alarm_is_retried_too() {
    let probe = Probe::new();
    let server = TestServer::start(server(&probe).limits(retry_limits())).await;
    run(&server, "panic", json!([{"op": "set_alarm", "in_ms": -1}])).await;
    assert_retried_then_dropped(&probe, &server, "panic").await;
    // Each panic dropped the value; each retry (and the final GET) rebuilt it.
    assert_eq!(
        probe.count("new panic"),
        5,
        "{:?}",
        events_of(&probe, "panic")
    );
    assert_eq!(probe.count("drop panic"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_that_fails_then_succeeds_stops_retrying() {
    let probe = Probe::new();
    let server = TestServer::start(server(&probe).limits(retry_limits())).await;
    run(&server, "flaky", json!([{"op": "set_alarm", "in_ms": -1}])).await;
    probe.wait_for("alarm-done flaky", 1).await;
    let results = run(&server, "flaky", json!([{"op": "get_alarm"}])).await;
    assert_eq!(results[0], Value::Null);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        attempts(&probe, "flaky").len(),
        3,
        "two failures, then success"
    );
    assert_eq!(probe.count("alarm-done flaky"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_retries_are_counted_even_when_the_room_idles_between_them() {
    let probe = Probe::new();
    // The room idles out between retries (as with the defaults: 30 s idle, and the fifth
    // retry comes 32 s after the fourth); the retries must still stop after 3.
    let limits = Limits {
        room_idle_timeout: Duration::from_millis(10),
        ..retry_limits()
    };
    let server = TestServer::start(server(&probe).limits(limits)).await;
    run(
        &server,
        "fail-idle",
        json!([{"op": "set_alarm", "in_ms": -1}]),
    )
    .await;
    assert_retried_then_dropped(&probe, &server, "fail-idle").await;
    // Once the retries are over, nothing keeps the idle room in memory.
    probe.wait_for("drop fail-idle", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_or_deleted_alarm_retry_does_not_keep_the_room_live() {
    let probe = Probe::new();
    let limits = Limits {
        room_idle_timeout: Duration::from_millis(10),
        // Far enough off that the test replaces the retry before it comes.
        alarm_retry_base: Duration::from_secs(3600),
        alarm_max_retries: 3,
        ..Limits::default()
    };
    let server = TestServer::start(server(&probe).limits(limits)).await;
    for (room, change) in [
        (
            "fail-replaced",
            json!({"op": "set_alarm", "in_ms": 7_200_000}),
        ),
        ("fail-deleted", json!({"op": "delete_alarm"})),
    ] {
        run(&server, room, json!([{"op": "set_alarm", "in_ms": -1}])).await;
        probe
            .wait_until(&format!("the first attempt of {room}'s alarm"), |_| {
                attempts(&probe, room).len() == 1
            })
            .await;
        let results = run(&server, room, json!([{"op": "get_alarm"}, change])).await;
        assert!(results[0].is_i64(), "a retry is pending: {}", results[0]);
        probe.wait_for(&format!("drop {room}"), 1).await;
    }
}
