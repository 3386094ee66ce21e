//! Task ownership, shutdown and back-pressure: `serve` returns only when every socket
//! closed, every room ran `on_close` and committed it, and the backend closed; a server
//! that is gone frees its rooms and backend; a slow backend slows its room instead of
//! growing memory, and output held for it counts toward each connection's limit; a call
//! between rooms through full mailboxes cannot deadlock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use partykit_runtime::storage::{
    Backend, BackendError, BoxFuture, MemoryBackend, RoomCommit, RoomKey, RoomSnapshot,
};
use partykit_runtime::{
    Connection, Error, Limits, Message, Party, Request, Response, Result, Room, Server, StatusCode,
};
use partykit_tests::{TempDir, TestServer, within};
use tokio::sync::Semaphore;

// ---------------------------------------------------------------------------------------
// Shutdown runs every on_close, and what they wrote is durable.

/// Writes `closed/<connection id>` in `on_close`; GET lists the room's keys.
struct Recorder {
    room: Room,
}

impl Party for Recorder {
    fn new(room: Room) -> Self {
        Recorder { room }
    }

    async fn on_close(&mut self, connection: &Connection) -> Result<()> {
        let key = format!("closed/{}", connection.id());
        self.room.storage().put(&key, &true).await
    }

    async fn on_request(&mut self, _request: Request) -> Result<Response> {
        let keys: Vec<String> = self
            .room
            .storage()
            .list::<bool>(Default::default())
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        Ok(partykit_runtime::Json(keys).into_response())
    }
}

use partykit_runtime::IntoResponse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_runs_every_on_close_and_their_writes_survive_a_restart() {
    let dir = TempDir::new("shutdown-on-close");
    let database = dir.database();
    let mut server = TestServer::start(
        Server::new()
            .no_env_file()
            .persist(&database)
            .party::<Recorder>(),
    )
    .await;
    let mut sockets = Vec::new();
    for (room, id) in [("a", "one"), ("a", "two"), ("b", "three"), ("c", "four")] {
        sockets.push(
            server
                .connect(&format!("/parties/main/{room}?_pk={id}"))
                .await,
        );
    }
    server.trigger_shutdown();
    for socket in &mut sockets {
        let (code, reason) = socket.closed().await;
        assert_eq!(code, 1001, "{reason}");
    }
    server.stopped().await.expect("serve returned an error");

    // The same file, a new server: every on_close's write is there.
    let server = TestServer::start(
        Server::new()
            .no_env_file()
            .persist(&database)
            .party::<Recorder>(),
    )
    .await;
    for (room, expected) in [
        ("a", vec!["closed/one", "closed/two"]),
        ("b", vec!["closed/three"]),
        ("c", vec!["closed/four"]),
    ] {
        let response = server.get(&format!("/parties/main/{room}")).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json(), serde_json::json!(expected), "room {room}");
    }
}

// ---------------------------------------------------------------------------------------
// A server that is gone frees its rooms and its backend.

/// Every live `Tracked` value: the test holds `Weak`s to see them freed.
static ALIVE: Mutex<Vec<Weak<()>>> = Mutex::new(Vec::new());

fn track() -> Arc<()> {
    let marker = Arc::new(());
    ALIVE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::downgrade(&marker));
    marker
}

/// A backend that is alive as long as its marker.
struct TrackedBackend {
    inner: MemoryBackend,
    _alive: Arc<()>,
}

impl Backend for TrackedBackend {
    fn load(
        &self,
        room: &RoomKey,
    ) -> BoxFuture<'_, std::result::Result<RoomSnapshot, BackendError>> {
        self.inner.load(room)
    }

    fn commit(&self, commit: RoomCommit) -> BoxFuture<'_, std::result::Result<(), BackendError>> {
        self.inner.commit(commit)
    }

    fn alarms(&self) -> BoxFuture<'_, std::result::Result<Vec<(RoomKey, i64)>, BackendError>> {
        self.inner.alarms()
    }
}

/// A party whose rooms are alive as long as their markers.
struct Tracked {
    room: Room,
    _alive: Arc<()>,
}

impl Party for Tracked {
    const NAME: &'static str = "tracked";

    fn new(room: Room) -> Self {
        Tracked {
            room,
            _alive: track(),
        }
    }

    async fn on_request(&mut self, _request: Request) -> Result<Response> {
        // Storage, alarms and a call to another room: every service a room holds.
        self.room.storage().put("seen", &true).await?;
        self.room
            .storage()
            .set_alarm(std::time::SystemTime::now() + Duration::from_secs(3600))
            .await?;
        if self.room.id() == "caller" {
            let other = self.room.context().parties().get("tracked").expect("party");
            other
                .get("callee")
                .fetch("", Request::builder().body("")?)
                .await?;
        }
        Ok("ok".into_response())
    }
}

fn all_freed() -> bool {
    ALIVE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .all(|weak| weak.upgrade().is_none())
}

fn live_markers() -> usize {
    ALIVE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|weak| weak.upgrade().is_some())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stopped_frees_its_rooms_and_backend() {
    let backend = TrackedBackend {
        inner: MemoryBackend::new(),
        _alive: track(),
    };
    let mut server = TestServer::start(
        Server::new()
            .no_env_file()
            .storage(backend)
            .party::<Tracked>(),
    )
    .await;
    let mut socket = server.connect("/parties/tracked/with-socket").await;
    for room in ["caller", "plain"] {
        let response = server.get(&format!("/parties/tracked/{room}")).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    // The backend, and the rooms caller, callee, plain and with-socket.
    assert_eq!(live_markers(), 5);
    server.trigger_shutdown();
    assert_eq!(socket.closed().await.0, 1001);
    server.stopped().await.expect("serve returned an error");
    // `serve` returned: nothing of the server is left.
    assert!(all_freed(), "{} values outlived the server", live_markers());
}

// ---------------------------------------------------------------------------------------
// A slow backend slows its room down.

/// Counts the messages it handled; each one writes to storage.
struct Writer {
    room: Room,
}

static HANDLED: AtomicUsize = AtomicUsize::new(0);

/// A server of `P` whose commits each wait for a permit of the returned semaphore: none
/// at first, so nothing becomes durable until the test adds permits.
async fn on_a_stuck_disk<P: Party>(limits: Limits) -> (TestServer, Arc<Semaphore>) {
    let backend = MemoryBackend::new();
    let disk = Arc::new(Semaphore::new(0));
    let permits = Arc::clone(&disk);
    backend.set_commit_hook(Arc::new(move |_commit| {
        let permits = Arc::clone(&permits);
        Box::pin(async move {
            permits.acquire().await.expect("semaphore").forget();
            Ok(())
        })
    }));
    let server = Server::new()
        .no_env_file()
        .storage(backend)
        .limits(limits)
        .party::<P>();
    (TestServer::start(server).await, disk)
}

impl Party for Writer {
    const NAME: &'static str = "writer";

    fn new(room: Room) -> Self {
        Writer { room }
    }

    async fn on_message(&mut self, message: Message, _sender: &Connection) -> Result<()> {
        let Message::Text(text) = message else {
            return Ok(());
        };
        self.room.storage().put(&format!("m/{text}"), &true).await?;
        HANDLED.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_whose_commits_are_slow_stops_taking_events_until_they_finish() {
    const SENT: usize = 2_000;
    let limits = Limits {
        room_mailbox: 4,
        ..Limits::default()
    };
    let (server, disk) = on_a_stuck_disk::<Writer>(limits).await;
    let mut socket = server.connect("/parties/writer/slow").await;
    for n in 0..SENT {
        socket.send_text(n.to_string()).await;
    }
    // The first commit is stuck in the backend: the room handles a few events, then
    // waits for room in its committer's queue, its mailbox fills and the socket's task
    // stops reading. Give every message time to arrive if nothing held it back.
    let quiet = async {
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = HANDLED.load(Ordering::SeqCst);
            if now == last {
                return now;
            }
            last = now;
        }
    };
    let handled_while_stuck = within("the room to stop taking events", quiet).await;
    assert!(
        handled_while_stuck < 100,
        "the room handled {handled_while_stuck} of {SENT} messages while no commit finished"
    );
    // The disk catches up: every message is handled.
    disk.add_permits(Semaphore::MAX_PERMITS / 2);
    within("every message to be handled", async {
        while HANDLED.load(Ordering::SeqCst) < SENT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(socket);
}

/// Every message writes, then broadcasts a 64 KiB frame to everyone but its sender: held
/// until the write is durable. (Not to the sender, so that the sender's own share of held
/// output never closes the socket the test keeps sending on.)
struct Shouter {
    room: Room,
}

impl Party for Shouter {
    const NAME: &'static str = "shouter";

    fn new(room: Room) -> Self {
        Shouter { room }
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        let Message::Text(text) = message else {
            return Ok(());
        };
        self.room.storage().put(&format!("m/{text}"), &true).await?;
        self.room.broadcast("x".repeat(64 * 1024), &[sender.id()]);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_held_for_a_slow_commit_counts_toward_the_connections_limit() {
    let limits = Limits {
        max_outbound_buffer: 256 * 1024,
        ..Limits::default()
    };
    let (server, disk) = on_a_stuck_disk::<Shouter>(limits).await;
    let mut listener = server.connect("/parties/shouter/held").await;
    let mut sender = server.connect("/parties/shouter/held").await;
    // Nothing is durable, so every broadcast is held: after four the listener's share of
    // held output is over 256 KiB, and it is closed as a peer too far behind would be.
    for n in 0..8 {
        sender.send_text(n.to_string()).await;
    }
    let (code, reason) = listener.closed().await;
    assert_eq!(code, 1008, "{reason}");
    drop(disk);
}

// ---------------------------------------------------------------------------------------
// A cycle of rooms through full mailboxes fails with 508 instead of hanging.

/// Calls refused because they would have closed a cycle of waits.
static REFUSED: AtomicUsize = AtomicUsize::new(0);

/// `a`'s request floods `b` through a stub socket; `b` answers each message by calling
/// back into `a`, which is busy: `b` waits for `a` while `a` waits for room in `b`'s
/// mailbox. Whichever of the two waits second closes the cycle and is refused.
struct Loop {
    room: Room,
}

fn refused(error: &Error) -> bool {
    let cycle = error.status() == StatusCode::LOOP_DETECTED;
    if cycle {
        REFUSED.fetch_add(1, Ordering::SeqCst);
    }
    cycle
}

impl Party for Loop {
    const NAME: &'static str = "loop";

    fn new(room: Room) -> Self {
        Loop { room }
    }

    async fn on_request(&mut self, _request: Request) -> Result<Response> {
        let parties = self.room.context().parties().get("loop").expect("party");
        let socket = parties.get("b").socket("").await?;
        for n in 0..200 {
            if let Err(error) = socket.send(format!("{n}")).await {
                assert!(refused(&error), "unexpected error: {error}");
            }
        }
        Ok("sent".into_response())
    }

    async fn on_message(&mut self, _message: Message, _sender: &Connection) -> Result<()> {
        let parties = self.room.context().parties().get("loop").expect("party");
        let request = Request::builder().uri("/").body("")?;
        if let Err(error) = parties.get("a").fetch("", request).await {
            assert!(refused(&error), "unexpected error: {error}");
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_waiting_for_each_other_through_a_full_mailbox_are_refused_not_deadlocked() {
    let limits = Limits {
        room_mailbox: 1,
        ..Limits::default()
    };
    let server = TestServer::start(
        Server::new()
            .no_env_file()
            .in_memory()
            .limits(limits)
            .party::<Loop>(),
    )
    .await;
    // Without the wait-for edge on a stub send, `a` and `b` would wait for each other
    // forever and this request would time out.
    let response = server.get("/parties/loop/a").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(REFUSED.load(Ordering::SeqCst) > 0, "no wait closed a cycle");
}
