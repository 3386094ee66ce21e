//! Hibernation (`#[party(hibernate)]`), over TCP: a hibernating party's value is dropped between
//! events while its sockets stay open, and rebuilt (`new`, then `on_start`) by the next
//! event; connections keep their tags and state, which is limited in size. Object-style
//! parties hibernate as PartyKit inferred.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use partykit_runtime::{
    Connection, ConnectionContext, Limits, Message, Party, Request, Result, Room, Server, party,
};
use partykit_tests::{Probe, TestServer, WAIT, init_tracing, record};
use serde_json::{Value, json};

/// How long a hibernating room waits for an event before dropping its value.
const HIBERNATE_AFTER: Duration = Duration::from_millis(100);

fn limits() -> Limits {
    Limits {
        hibernate_after: HIBERNATE_AFTER,
        ..Limits::default()
    }
}

// ---------------------------------------------------------------------------------------
// A hibernating party and its non-hibernating twin, with the same handlers

/// `?team=<tag>` becomes the connection's tag.
fn tags(ctx: &ConnectionContext) -> Vec<String> {
    ctx.request()
        .query("team")
        .map(|team| vec![team.into_owned()])
        .unwrap_or_default()
}

/// Keeps `?name=` as the connection's state and greets it.
fn connect(room: &Room, connection: &Connection, ctx: &ConnectionContext) -> Result<()> {
    let name = ctx.request().query("name").unwrap_or_default().into_owned();
    connection.set_state(&json!({ "name": name }))?;
    record(
        room.env(),
        format!("{} connect {}", room.name(), connection.id()),
    );
    connection.send(format!("welcome {}", connection.id()))?;
    Ok(())
}

/// `who <tag>`: the connections with that tag, their tags and state. `state <n>`: sets
/// the state to a string of `n` characters (`n + 2` bytes as JSON). `get-state`: the
/// state. `shout <text>`: broadcast to everyone. Anything else is echoed.
fn message(room: &Room, message: &Message, sender: &Connection) -> Result<()> {
    let text = message.as_text().unwrap_or_default();
    record(room.env(), format!("{} message {text}", room.name()));
    let reply = if let Some(tag) = text.strip_prefix("who ") {
        let connections: Vec<Value> = room
            .get_connections(Some(tag))
            .iter()
            .map(|connection| {
                Ok(json!({
                    "id": connection.id(),
                    "tags": connection.tags(),
                    "state": connection.state::<Value>()?,
                }))
            })
            .collect::<Result<_>>()?;
        Value::from(connections).to_string()
    } else if let Some(size) = text.strip_prefix("state ") {
        let size: usize = size.parse()?;
        match sender.set_state(&"x".repeat(size)) {
            Ok(()) => "state ok".to_owned(),
            Err(error) => format!("state error: {error}"),
        }
    } else if text == "get-state" {
        sender.state::<Value>()?.unwrap_or_default().to_string()
    } else if let Some(shout) = text.strip_prefix("shout ") {
        room.broadcast(shout, &[]);
        return Ok(());
    } else {
        format!("echo {text}")
    };
    sender.send(reply)?;
    Ok(())
}

/// Broadcasts the body to every connection.
fn request(room: &Room, request: &Request) -> Result<String> {
    let text = request.text()?;
    record(room.env(), format!("{} request {text}", room.name()));
    room.broadcast(text, &[]);
    Ok(format!("broadcast to {}", room.connection_count()))
}

#[party(name = "sleepy", hibernate)]
struct Sleepy {
    room: Room,
}

#[party]
impl Sleepy {
    fn new(room: Room) -> Self {
        record(room.env(), "sleepy new");
        Sleepy { room }
    }

    fn on_start(&mut self) {
        record(self.room.env(), "sleepy start");
    }

    fn connection_tags(
        &mut self,
        _connection: &Connection,
        ctx: &ConnectionContext,
    ) -> Vec<String> {
        tags(ctx)
    }

    fn on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext) -> Result<()> {
        connect(&self.room, connection, ctx)
    }

    fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        self::message(&self.room, &message, sender)
    }

    fn on_close(&mut self, connection: &Connection) {
        record(self.room.env(), format!("sleepy close {}", connection.id()));
    }

    fn on_request(&mut self, request: Request) -> Result<String> {
        self::request(&self.room, &request)
    }
}

impl Drop for Sleepy {
    fn drop(&mut self) {
        record(self.room.env(), "sleepy drop");
    }
}

#[party(name = "awake")]
struct Awake {
    room: Room,
}

#[party]
impl Awake {
    fn new(room: Room) -> Self {
        record(room.env(), "awake new");
        Awake { room }
    }

    fn on_start(&mut self) {
        record(self.room.env(), "awake start");
    }

    fn connection_tags(
        &mut self,
        _connection: &Connection,
        ctx: &ConnectionContext,
    ) -> Vec<String> {
        tags(ctx)
    }

    fn on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext) -> Result<()> {
        connect(&self.room, connection, ctx)
    }

    fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        self::message(&self.room, &message, sender)
    }

    fn on_request(&mut self, request: Request) -> Result<String> {
        self::request(&self.room, &request)
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        record(self.room.env(), "awake drop");
    }
}

async fn start(probe: &Probe, limits: Limits) -> TestServer {
    init_tracing();
    TestServer::start(
        probe
            .server()
            .no_env_file()
            .party::<Sleepy>()
            .party::<Awake>()
            .limits(limits),
    )
    .await
}

/// Nothing arrives on `ws` for a while, and it is not closed.
async fn assert_quiet_and_open(ws: &mut partykit_tests::Ws) {
    ws.expect_silence(Duration::from_millis(50)).await;
}

/// Waits until the sleepy room's value was dropped after everything else it did: it is
/// asleep now, and the next event must rebuild it.
async fn asleep(probe: &Probe) -> Vec<String> {
    probe
        .wait_until("the sleepy room to hibernate", |events| {
            events.last().is_some_and(|last| last == "sleepy drop")
        })
        .await
}

/// The events just before `event`'s last occurrence, to check what ran before it.
fn before_last(events: &[String], event: &str, count: usize) -> Vec<String> {
    let index = events
        .iter()
        .rposition(|own| own == event)
        .unwrap_or_else(|| panic!("{event:?} not recorded: {events:#?}"));
    events[index.saturating_sub(count)..=index].to_vec()
}

// ---------------------------------------------------------------------------------------
// Tests

const _: () = {
    assert!(<Sleepy as Party>::OPTIONS.hibernate);
    assert!(!<Awake as Party>::OPTIONS.hibernate);
};

#[tokio::test]
async fn an_idle_hibernating_room_drops_its_value_and_keeps_its_sockets() {
    let probe = Probe::new();
    let server = start(&probe, limits()).await;
    let mut alice = server
        .connect("/parties/sleepy/r?_pk=alice&team=red&name=Alice")
        .await;
    assert_eq!(alice.recv_text().await, "welcome alice");
    let mut bob = server
        .connect("/parties/sleepy/r?_pk=bob&team=blue&name=Bob")
        .await;
    assert_eq!(bob.recv_text().await, "welcome bob");

    // No events for `hibernate_after`: the value is dropped, with both sockets open.
    asleep(&probe).await;
    assert_quiet_and_open(&mut alice).await;
    assert_quiet_and_open(&mut bob).await;
    assert_eq!(probe.count("sleepy new"), probe.count("sleepy drop"));

    // An HTTP request wakes it (`new`, `on_start`, then the handler); both sockets get
    // its broadcast.
    let response = server.http("POST", "/parties/sleepy/r", &[], b"news").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "broadcast to 2")
    );
    assert_eq!(alice.recv_text().await, "news");
    assert_eq!(bob.recv_text().await, "news");
    let events = probe.events();
    assert_eq!(
        before_last(&events, "sleepy request news", 2),
        ["sleepy new", "sleepy start", "sleepy request news"]
    );

    // Asleep again; a message wakes it the same way, before `on_message` runs.
    asleep(&probe).await;
    bob.send_text("shout hey").await;
    assert_eq!(alice.recv_text().await, "hey");
    assert_eq!(bob.recv_text().await, "hey");
    let events = probe.events();
    assert_eq!(
        before_last(&events, "sleepy message shout hey", 2),
        ["sleepy new", "sleepy start", "sleepy message shout hey"]
    );

    // And a close: `on_close` runs on a rebuilt value.
    asleep(&probe).await;
    alice.close().await;
    let events = probe.wait_for("sleepy close alice", 1).await;
    assert_eq!(
        before_last(&events, "sleepy close alice", 2),
        ["sleepy new", "sleepy start", "sleepy close alice"]
    );
    assert_eq!(probe.count("sleepy connect alice"), 1);
    assert_eq!(probe.count("sleepy connect bob"), 1);
    assert_quiet_and_open(&mut bob).await;
}

#[tokio::test]
async fn connection_tags_and_state_survive_hibernation() {
    let probe = Probe::new();
    let server = start(&probe, limits()).await;
    let mut alice = server
        .connect("/parties/sleepy/r?_pk=alice&team=red&name=Alice")
        .await;
    alice.recv_text().await;
    let mut bob = server
        .connect("/parties/sleepy/r?_pk=bob&team=blue&name=Bob")
        .await;
    bob.recv_text().await;
    let mut carol = server
        .connect("/parties/sleepy/r?_pk=carol&team=red&name=Carol")
        .await;
    carol.recv_text().await;
    // State changed after `on_connect` survives too.
    assert_eq!(carol.ask("state 3").await, "state ok");

    let drops = asleep(&probe)
        .await
        .iter()
        .filter(|e| *e == "sleepy drop")
        .count();
    let red: Value = serde_json::from_str(&bob.ask("who red").await).unwrap();
    assert_eq!(
        red,
        json!([
            { "id": "alice", "tags": ["alice", "red"], "state": { "name": "Alice" } },
            { "id": "carol", "tags": ["carol", "red"], "state": "xxx" },
        ])
    );
    // It was asleep when asked.
    let events = probe.events();
    assert_eq!(
        before_last(&events, "sleepy message who red", 2),
        ["sleepy new", "sleepy start", "sleepy message who red"]
    );
    assert!(probe.count("sleepy new") > drops);

    asleep(&probe).await;
    let blue: Value = serde_json::from_str(&alice.ask("who blue").await).unwrap();
    assert_eq!(
        blue,
        json!([{ "id": "bob", "tags": ["bob", "blue"], "state": { "name": "Bob" } }])
    );
    assert_eq!(carol.ask("get-state").await, r#""xxx""#);
}

#[tokio::test]
async fn a_non_hibernating_room_keeps_its_value_while_sockets_are_open() {
    let probe = Probe::new();
    let server = start(&probe, limits()).await;
    let mut alice = server
        .connect("/parties/awake/r?_pk=alice&team=red&name=Alice")
        .await;
    assert_eq!(alice.recv_text().await, "welcome alice");
    tokio::time::sleep(HIBERNATE_AFTER * 4).await;
    assert_eq!(alice.ask("hello").await, "echo hello");
    assert_eq!(probe.count("awake new"), 1);
    assert_eq!(probe.count("awake start"), 1);
    assert_eq!(probe.count("awake drop"), 0);
}

#[tokio::test]
async fn set_state_is_limited_only_in_a_hibernating_party() {
    let probe = Probe::new();
    let server = start(&probe, limits()).await;
    let mut sleepy = server.connect("/parties/sleepy/r?_pk=s").await;
    sleepy.recv_text().await;
    // 2,046 characters are 2,048 bytes as a JSON string: the most allowed.
    assert_eq!(sleepy.ask("state 2046").await, "state ok");
    assert_eq!(
        sleepy.ask("state 2047").await,
        "state error: connection state is 2049 bytes serialized; a hibernating party allows 2048"
    );
    // The refused state did not replace the old one.
    assert_eq!(sleepy.ask("get-state").await.len(), 2048);

    let mut awake = server.connect("/parties/awake/r?_pk=a").await;
    awake.recv_text().await;
    assert_eq!(awake.ask("state 100000").await, "state ok");
    assert_eq!(awake.ask("get-state").await.len(), 100_002);
}

#[tokio::test]
async fn the_state_limit_follows_the_limits() {
    let probe = Probe::new();
    let server = start(
        &probe,
        Limits {
            max_hibernating_state: 64,
            ..limits()
        },
    )
    .await;
    let mut sleepy = server.connect("/parties/sleepy/r?_pk=s").await;
    sleepy.recv_text().await;
    assert_eq!(sleepy.ask("state 62").await, "state ok");
    assert!(
        sleepy
            .ask("state 63")
            .await
            .starts_with("state error: connection state is 65 bytes"),
    );
    // A state too large for the limit fails `on_connect`: close 1011 with the message.
    let mut big = server
        .connect(&format!(
            "/parties/sleepy/r?_pk=big&name={}",
            "n".repeat(80)
        ))
        .await;
    let (code, reason) = big.closed().await;
    assert_eq!(code, 1011);
    assert!(reason.contains("a hibernating party allows 64"), "{reason}");
}

// ---------------------------------------------------------------------------------------
// Object style: PartyKit's inference

static CHATTY_DROPS: AtomicUsize = AtomicUsize::new(0);
static QUIET_DROPS: AtomicUsize = AtomicUsize::new(0);

/// `on_connect` and `on_message`: hibernates.
#[party(name = "chatty")]
struct ObjectChatty;

#[party]
#[allow(deprecated)]
impl ObjectChatty {
    fn on_connect(connection: &Connection, _room: &Room) -> Result<()> {
        connection.send("hello")?;
        Ok(())
    }

    fn on_message(message: Message, sender: &Connection) -> Result<()> {
        sender.send(format!("echo {}", message.as_text().unwrap_or_default()))?;
        Ok(())
    }
}

impl Drop for ObjectChatty {
    fn drop(&mut self) {
        CHATTY_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

/// `on_connect` only: does not hibernate.
#[party(name = "quiet")]
struct ObjectQuiet;

#[party]
#[allow(deprecated)]
impl ObjectQuiet {
    fn on_connect(connection: &Connection, _room: &Room) -> Result<()> {
        connection.send("hello")?;
        Ok(())
    }
}

impl Drop for ObjectQuiet {
    fn drop(&mut self) {
        QUIET_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

const _: () = {
    assert!(<ObjectChatty as Party>::OPTIONS.hibernate);
    assert!(!<ObjectQuiet as Party>::OPTIONS.hibernate);
};

#[tokio::test]
async fn object_style_parties_hibernate_as_partykit_inferred() {
    init_tracing();
    let server = TestServer::start(
        Server::new()
            .in_memory()
            .no_env_file()
            .party::<ObjectChatty>()
            .party::<ObjectQuiet>()
            .limits(limits()),
    )
    .await;
    let mut chatty = server.connect("/parties/chatty/r").await;
    assert_eq!(chatty.recv_text().await, "hello");
    let mut quiet = server.connect("/parties/quiet/r").await;
    assert_eq!(quiet.recv_text().await, "hello");

    // The one with `on_message` drops its value while its socket is open.
    let deadline = tokio::time::Instant::now() + WAIT;
    while CHATTY_DROPS.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the object-style party with on_message never hibernated"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_quiet_and_open(&mut chatty).await;
    assert_eq!(chatty.ask("still there?").await, "echo still there?");

    // The one with `on_connect` only keeps it.
    tokio::time::sleep(HIBERNATE_AFTER * 3).await;
    assert_eq!(QUIET_DROPS.load(Ordering::SeqCst), 0);
    assert_quiet_and_open(&mut quiet).await;
}
