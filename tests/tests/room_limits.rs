//! Room limits: a cap on live rooms across every party (503 until rooms are evicted) and
//! a maximum room id length (414 before any hook runs).

use std::time::Duration;

use partykit_runtime::{
    Before, Connection, ConnectionContext, Error, Limits, Lobby, Request, Result, Room, Server,
    party,
};
use partykit_tests::{HttpResponse, Probe, TestServer, init_tracing, record};

#[party(name = "rooms")]
struct Rooms {
    room: Room,
}

#[party]
impl Rooms {
    fn new(room: Room) -> Self {
        Rooms { room }
    }

    fn on_before_request(request: Request, lobby: &Lobby) -> Result<Before> {
        record(lobby.env(), format!("before_request {}", lobby.id()));
        Ok(request.into())
    }

    fn on_before_connect(request: Request, lobby: &Lobby) -> Result<Before> {
        record(lobby.env(), format!("before_connect {}", lobby.id()));
        Ok(request.into())
    }

    fn on_connect(&mut self, connection: &Connection, _ctx: &ConnectionContext) -> Result<()> {
        connection.send(format!("hello {}", self.room.id()))?;
        Ok(())
    }

    async fn on_request(&mut self, request: Request) -> Result<String> {
        // `/parties/rooms/<room>/call/<other>`: a call to another room of the party.
        if let Some(other) = request.path().split("/call/").nth(1) {
            let rooms = self.room.context().parties().get("rooms");
            let rooms = rooms.ok_or_else(|| Error::msg("no rooms party"))?;
            let response = rooms
                .get(other)
                .fetch("", Request::builder().body("")?)
                .await?;
            return Ok(format!("{} from {other}", response.status().as_u16()));
        }
        Ok(format!("ok {}", self.room.id()))
    }
}

impl Drop for Rooms {
    fn drop(&mut self) {
        record(self.room.env(), format!("drop {}", self.room.id()));
    }
}

/// A second party: the cap counts the rooms of every party.
#[party(name = "other")]
struct Other {
    room: Room,
}

#[party]
impl Other {
    fn new(room: Room) -> Self {
        Other { room }
    }

    fn on_request(&mut self) -> &'static str {
        "other"
    }
}

impl Drop for Other {
    fn drop(&mut self) {
        record(self.room.env(), format!("drop other {}", self.room.id()));
    }
}

fn server(probe: &Probe, limits: Limits) -> Server {
    init_tracing();
    probe
        .server()
        .no_env_file()
        .party::<Rooms>()
        .party::<Other>()
        .limits(limits)
}

#[track_caller]
fn assert_refused(response: &HttpResponse, what: &str) {
    assert_eq!(
        (response.status, response.text().as_str()),
        (
            503,
            "Too many rooms are live (the limit is 3); try again later"
        ),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_cap_refuses_new_rooms_and_recovers_after_eviction() {
    let probe = Probe::new();
    let limits = Limits {
        max_rooms: 3,
        room_idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = TestServer::start(server(&probe, limits)).await;
    // Three rooms, in two parties, each kept live by a socket.
    let mut a = server.connect("/parties/rooms/a").await;
    assert_eq!(a.recv_text().await, "hello a");
    let mut b = server.connect("/parties/other/b").await;
    assert_eq!(server.get("/parties/other/b").await.text(), "other");
    let mut c = server.connect("/parties/rooms/c").await;
    assert_eq!(c.recv_text().await, "hello c");

    // The cap: a new room is refused, by HTTP, by WebSocket (before the upgrade), in
    // either party, and by a call between rooms; live rooms still answer.
    assert_refused(&server.get("/parties/rooms/d").await, "HTTP");
    // A socket is accepted and closed with 1013 Try Again Later, which a browser's
    // WebSocket can read (a refused upgrade would only show it a failed connection).
    let mut refused = server.connect("/parties/rooms/e").await;
    assert_eq!(
        refused.closed().await,
        (
            1013,
            "Too many rooms are live (the limit is 3); try again later".to_owned()
        )
    );
    assert_refused(&server.get("/parties/other/f").await, "another party");
    assert_eq!(server.get("/parties/rooms/a").await.text(), "ok a");
    assert_eq!(
        server.get("/parties/rooms/a/call/g").await.text(),
        "503 from g"
    );
    assert_eq!(
        server.get("/parties/rooms/a/call/c").await.text(),
        "200 from c"
    );
    for refused in ["d", "e", "g"] {
        assert_eq!(
            probe.count(&format!("drop {refused}")),
            0,
            "{refused} never started"
        );
    }
    assert_eq!(probe.count("drop other f"), 0, "f never started");

    // Once an idle room is evicted, a new room starts in its place.
    a.close().await;
    probe.wait_for("drop a", 1).await;
    let mut e = server.connect("/parties/rooms/e").await;
    assert_eq!(e.recv_text().await, "hello e");
    assert_refused(&server.get("/parties/rooms/d").await, "full again");
    b.close().await;
    probe.wait_for("drop other b", 1).await;
    assert_eq!(server.get("/parties/rooms/d").await.text(), "ok d");
    // The socket's room stayed live throughout.
    assert_eq!(server.get("/parties/rooms/c").await.text(), "ok c");
    c.close().await;
    e.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_id_over_the_limit_is_414_before_any_hook() {
    let probe = Probe::new();
    let limits = Limits {
        max_room_id_length: 16,
        ..Limits::default()
    };
    let server = TestServer::start(server(&probe, limits)).await;
    let longest = "x".repeat(16);
    assert_eq!(
        server
            .get(&format!("/parties/rooms/{longest}"))
            .await
            .text(),
        format!("ok {longest}")
    );
    // The limit counts the raw path segment's bytes: `%41` is three.
    let too_long = [
        "x".repeat(17),
        format!("{}%41", "x".repeat(14)),
        "y".repeat(10_000),
    ];
    let message = |length: usize| format!("The room id is {length} bytes long; the limit is 16");
    for id in &too_long {
        for response in [
            server.get(&format!("/parties/rooms/{id}")).await,
            server
                .refused_upgrade(&format!("/parties/rooms/{id}"))
                .await,
            server.get(&format!("/parties/rooms/{id}/sub/path")).await,
        ] {
            assert_eq!(
                (response.status, response.text()),
                (414, message(id.len())),
                "{} bytes",
                id.len()
            );
        }
        assert!(
            !probe
                .events()
                .iter()
                .any(|event| event.contains(id.as_str())),
            "no hook ran for a {}-byte id: {:?}",
            id.len(),
            probe.events()
        );
    }
    // A call between rooms is held to the same limit.
    assert_eq!(
        server
            .get(&format!("/parties/rooms/a/call/{}", "z".repeat(17)))
            .await
            .text(),
        "414 from zzzzzzzzzzzzzzzzz"
    );
}
