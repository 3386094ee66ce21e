//! WebSocket connections: ids, ordering, broadcast, tags,
//! state, duplicates, limits and close codes, over TCP.

use std::time::Duration;

use partykit_runtime::{
    Connection, ConnectionContext, Error, IntoResponse, Json, Limits, Message, Party, Request,
    Response, Result, Room, close_code,
};
use partykit_tests::{Ended, Probe, TestServer, WsMessage, init_tracing, is_uuid_v4, record};
use serde_json::{Value, json};

/// A party driven by its clients: the query string of the upgrade chooses tags and
/// `on_connect` behaviour, text messages are commands (`command:argument`).
struct Main {
    room: Room,
}

impl Main {
    fn record(&self, event: impl Into<String>) {
        record(self.room.env(), event);
    }
}

impl Party for Main {
    fn new(room: Room) -> Self {
        Main { room }
    }

    async fn connection_tags(
        &mut self,
        _connection: &Connection,
        ctx: &ConnectionContext,
    ) -> Result<Vec<String>> {
        Ok(match ctx.request().query("tags").as_deref() {
            None => Vec::new(),
            Some("nine") => (0..9).map(|i| format!("t{i}")).collect(),
            Some("ten") => (0..10).map(|i| format!("t{i}")).collect(),
            Some("empty") => vec![String::new()],
            Some("longest") => vec!["é".repeat(256)],
            Some("too-long") => vec!["x".repeat(257)],
            Some(list) => list.split(',').map(str::to_owned).collect(),
        })
    }

    async fn on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext) -> Result<()> {
        let id = connection.id();
        let request = ctx.request();
        self.record(format!("connect-start {id}"));
        if let Some(ms) = request.query("slow") {
            tokio::time::sleep(Duration::from_millis(ms.parse()?)).await;
        }
        if let Some(reason) = request.query("fail") {
            return Err(Error::msg(reason));
        }
        // Sent before on_connect returns: must reach the client.
        connection.send(format!("hello {id}"))?;
        if request.query("announce").is_some() {
            self.room.broadcast(format!("joined {id}"), &[id]);
        }
        self.record(format!("connect-end {id}"));
        Ok(())
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        let text = match message {
            Message::Binary(bytes) => {
                self.record(format!("binary {} {}", sender.id(), bytes.len()));
                sender.send(bytes)?;
                return Ok(());
            }
            Message::Text(text) => text,
        };
        self.record(format!("message {} {}", sender.id(), text.as_str()));
        let (command, argument) = text.as_str().split_once(':').unwrap_or((text.as_str(), ""));
        let room = &self.room;
        match command {
            "echo" => sender.send(argument)?,
            "id" => sender.send(sender.id())?,
            "uri" => sender.send(sender.uri())?,
            "tags" => sender.send(sender.tags().join(","))?,
            "broadcast" => room.broadcast(argument, &[sender.id()]),
            "broadcast-all" => room.broadcast(argument, &[]),
            "broadcast-binary" => room.broadcast(argument.as_bytes().to_vec(), &[sender.id()]),
            "tag" => {
                let (tag, text) = argument.split_once(':').unwrap_or((argument, ""));
                for connection in room.get_connections(Some(tag)) {
                    connection.send(text)?;
                }
            }
            "count-tag" => sender.send(room.get_connections(Some(argument)).len().to_string())?,
            "ids" => {
                let ids: Vec<String> = room
                    .get_connections(None)
                    .iter()
                    .map(|connection| connection.id().to_owned())
                    .collect();
                sender.send(ids.join(","))?;
            }
            "send-to" => {
                let (id, text) = argument.split_once(':').unwrap_or((argument, ""));
                match room.get_connection(id) {
                    Some(connection) => connection.send(text)?,
                    None => sender.send("no such connection")?,
                }
            }
            "set" => {
                let value: Value = serde_json::from_str(argument)?;
                sender.set_state(&value)?;
                sender.send("ok")?;
            }
            "get" => {
                let state: Option<Value> = sender.state()?;
                sender.send(state.map_or_else(|| "none".to_owned(), |state| state.to_string()))?;
            }
            "close" => {
                let (code, reason) = argument.split_once(':').unwrap_or((argument, ""));
                if let Err(error) = sender.close(code.parse()?, reason) {
                    sender.send(format!("refused: {error}"))?;
                }
            }
            other => sender.send(format!("unknown command {other}"))?,
        }
        Ok(())
    }

    async fn on_close(&mut self, connection: &Connection) -> Result<()> {
        let listed = self
            .room
            .get_connections(None)
            .iter()
            .any(|c| c.same_socket(connection));
        self.record(format!("close {}", connection.id()));
        if listed {
            self.record(format!("still listed {}", connection.id()));
        }
        if let Some(current) = self.room.get_connection(connection.id())
            && !current.same_socket(connection)
        {
            self.record(format!("replaced by a live socket {}", connection.id()));
        }
        Ok(())
    }

    async fn on_request(&mut self, request: Request) -> Result<Response> {
        // `/flood/<id>?size=&count=`: queue up to `count` binary messages of `size` bytes
        // for one connection, never waiting for the peer, until the runtime refuses one.
        let id = request
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let size: usize = request.query("size").unwrap_or_default().parse()?;
        let count: usize = request.query("count").unwrap_or_default().parse()?;
        let Some(connection) = self.room.get_connection(&id) else {
            return Err(Error::msg(format!("no connection {id}")));
        };
        let payload = bytes::Bytes::from(vec![7u8; size]);
        let mut queued = 0;
        let mut refused = false;
        for _ in 0..count {
            if connection.send(payload.clone()).is_err() {
                refused = true;
                break;
            }
            queued += 1;
            // Let the connection's writer run, so that the socket fills up before the
            // queue does.
            tokio::task::yield_now().await;
        }
        Ok(Json(json!({ "queued": queued, "refused": refused })).into_response())
    }
}

async fn start(probe: &Probe) -> TestServer {
    init_tracing();
    TestServer::start(probe.server().party::<Main>()).await
}

/// Connects and reads the `hello <id>` sent by `on_connect`; returns the socket and id.
async fn join(server: &TestServer, path: &str) -> (partykit_tests::Ws, String) {
    let mut ws = server.connect(path).await;
    let hello = ws.recv_text().await;
    let id = hello
        .strip_prefix("hello ")
        .unwrap_or_else(|| panic!("expected hello, got {hello:?}"))
        .to_owned();
    (ws, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_the_pk_parameter_or_a_generated_uuid_v4() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (mut first, first_id) = join(&server, "/parties/main/r").await;
    let (_second, second_id) = join(&server, "/parties/main/r").await;
    assert!(is_uuid_v4(&first_id), "{first_id}");
    assert!(is_uuid_v4(&second_id), "{second_id}");
    assert_ne!(first_id, second_id);
    assert_eq!(first.ask("id").await, first_id);

    let (_ws, id) = join(&server, "/parties/main/r?_pk=alice").await;
    assert_eq!(id, "alice");
    let (_ws, id) = join(&server, "/parties/main/r?x=1&_pk=bob&y=2").await;
    assert_eq!(id, "bob");
    // Like `searchParams.get`, the value is decoded.
    let (_ws, id) = join(&server, "/parties/main/r?_pk=a%20b").await;
    assert_eq!(id, "a b");
    // An empty `_pk` counts as none.
    let (_ws, id) = join(&server, "/parties/main/r?_pk=").await;
    assert!(is_uuid_v4(&id), "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_is_the_full_upgrade_url_with_its_query() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (mut ws, _) = join(&server, "/parties/main/r/sub?_pk=p1&token=abc%20d").await;
    let expected = format!(
        "http://{}/parties/main/r/sub?_pk=p1&token=abc%20d",
        server.addr()
    );
    assert_eq!(ws.ask("uri").await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_message_never_runs_before_on_connect_returns() {
    let probe = Probe::new();
    let server = start(&probe).await;
    // `on_connect` sleeps; the client sends as soon as its socket is open.
    let mut ws = server
        .connect("/parties/main/r?_pk=slowpoke&slow=300")
        .await;
    ws.send_text("echo:first").await;
    ws.send_text("echo:second").await;
    assert_eq!(ws.recv_text().await, "hello slowpoke");
    assert_eq!(ws.recv_text().await, "first");
    assert_eq!(ws.recv_text().await, "second");
    let events = probe.events();
    assert_eq!(
        events,
        [
            "connect-start slowpoke",
            "connect-end slowpoke",
            "message slowpoke echo:first",
            "message slowpoke echo:second",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_during_on_connect_are_delivered() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (mut a, _) = join(&server, "/parties/main/r?_pk=a").await;
    // B's on_connect sends to B and broadcasts to the others.
    let (mut b, id) = join(&server, "/parties/main/r?_pk=b&announce=1").await;
    assert_eq!(id, "b");
    assert_eq!(a.recv_text().await, "joined b");
    // B did not get its own announcement.
    assert_eq!(b.ask("echo:next").await, "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_without_excludes_the_sender() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (mut a, _) = join(&server, "/parties/main/r?_pk=a").await;
    let (mut b, _) = join(&server, "/parties/main/r?_pk=b").await;
    let (mut c, _) = join(&server, "/parties/main/r?_pk=c").await;
    a.send_text("broadcast:hi").await;
    assert_eq!(b.recv_text().await, "hi");
    assert_eq!(c.recv_text().await, "hi");
    // A's next message is its own echo: the broadcast skipped it.
    assert_eq!(a.ask("echo:marker").await, "marker");

    a.send_text("broadcast-all:everyone").await;
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(ws.recv_text().await, "everyone");
    }
    // Another room hears nothing.
    let (mut elsewhere, _) = join(&server, "/parties/main/other?_pk=a").await;
    b.send_text("broadcast-all:only r").await;
    assert_eq!(a.recv_text().await, "only r");
    assert_eq!(elsewhere.ask("echo:quiet").await, "quiet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_connections_filters_by_tag() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (mut a, _) = join(&server, "/parties/main/r?_pk=a&tags=red").await;
    let (mut b, _) = join(&server, "/parties/main/r?_pk=b&tags=red,blue").await;
    let (mut c, _) = join(&server, "/parties/main/r?_pk=c&tags=blue").await;

    // The id is the first tag; a user duplicate of it is dropped.
    assert_eq!(b.ask("tags").await, "b,red,blue");
    let (mut d, _) = join(&server, "/parties/main/r?_pk=d&tags=d,green,green").await;
    assert_eq!(d.ask("tags").await, "d,green");

    c.send_text("tag:red:to red").await;
    assert_eq!(a.recv_text().await, "to red");
    assert_eq!(b.recv_text().await, "to red");
    assert_eq!(c.ask("echo:c-marker").await, "c-marker");

    a.send_text("tag:blue:to blue").await;
    assert_eq!(b.recv_text().await, "to blue");
    assert_eq!(c.recv_text().await, "to blue");
    assert_eq!(a.ask("echo:a-marker").await, "a-marker");

    // Every connection carries its id as a tag.
    b.send_text("tag:a:just a").await;
    assert_eq!(a.recv_text().await, "just a");
    assert_eq!(b.ask("echo:b-marker").await, "b-marker");

    assert_eq!(a.ask("count-tag:red").await, "2");
    assert_eq!(a.ask("count-tag:blue").await, "2");
    assert_eq!(a.ask("count-tag:green").await, "1");
    assert_eq!(a.ask("count-tag:nobody").await, "0");
    assert_eq!(a.ask("ids").await, "a,b,c,d");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_at_the_limits_are_accepted() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (mut nine, _) = join(&server, "/parties/main/r?_pk=nine&tags=nine").await;
    assert_eq!(nine.ask("tags").await, "nine,t0,t1,t2,t3,t4,t5,t6,t7,t8");
    let (mut longest, _) = join(&server, "/parties/main/r?_pk=longest&tags=longest").await;
    assert_eq!(
        longest.ask("tags").await,
        format!("longest,{}", "é".repeat(256))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_over_the_limits_close_with_1011() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (mut observer, _) = join(&server, "/parties/main/r?_pk=observer").await;
    for case in ["ten", "empty", "too-long"] {
        let mut ws = server
            .connect(&format!("/parties/main/r?_pk={case}&tags={case}"))
            .await;
        let (code, reason) = ws.closed().await;
        assert_eq!(code, 1011, "tags={case}: {reason}");
        assert!(!reason.is_empty(), "tags={case}: the close reason says why");
        assert!(reason.len() <= 123, "tags={case}: {reason}");
        assert!(
            !probe.events().contains(&format!("connect-start {case}")),
            "tags={case}: on_connect must not run: {:?}",
            probe.events()
        );
    }
    assert_eq!(observer.ask("ids").await, "observer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_connect_error_closes_with_1011_and_its_message() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (mut observer, _) = join(&server, "/parties/main/r?_pk=observer").await;
    let mut ws = server
        .connect("/parties/main/r?_pk=refused&fail=no%20entry")
        .await;
    assert_eq!(ws.closed().await, (1011, "no entry".to_owned()));
    // An empty message gets PartyKit's default reason.
    let mut ws = server.connect("/parties/main/r?_pk=refused&fail=").await;
    assert_eq!(
        ws.closed().await,
        (1011, "Uncaught exception when connecting".to_owned())
    );
    // The refused connection is not among the room's connections.
    assert_eq!(observer.ask("ids").await, "observer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reasons_are_cut_to_123_bytes() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let long = "x".repeat(200);
    let mut ws = server
        .connect(&format!("/parties/main/r?fail={long}"))
        .await;
    assert_eq!(ws.closed().await, (1011, "x".repeat(123)));

    // Cut at a character boundary: 61 two-byte characters.
    let accents = "%C3%A9".repeat(100);
    let mut ws = server
        .connect(&format!("/parties/main/r?fail={accents}"))
        .await;
    assert_eq!(ws.closed().await, (1011, "é".repeat(61)));

    let (mut ws, _) = join(&server, "/parties/main/r").await;
    ws.send_text(format!("close:4000:{long}")).await;
    assert_eq!(ws.closed().await, (4000, "x".repeat(123)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_state_round_trips_per_connection() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (mut a, _) = join(&server, "/parties/main/r").await;
    let (mut b, _) = join(&server, "/parties/main/r").await;
    assert_eq!(a.ask("get").await, "none");
    assert_eq!(a.ask(r#"set:{"n":1,"name":"ann"}"#).await, "ok");
    let state: Value = serde_json::from_str(&a.ask("get").await).unwrap();
    assert_eq!(state, json!({"n": 1, "name": "ann"}));
    // Replaced, not merged.
    assert_eq!(a.ask("set:[1,2]").await, "ok");
    assert_eq!(a.ask("get").await, "[1,2]");
    assert_eq!(a.ask("set:null").await, "ok");
    assert_eq!(a.ask("get").await, "null");
    // Each connection has its own.
    assert_eq!(b.ask("get").await, "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_the_same_pk_replaces_the_old_socket() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (mut other, _) = join(&server, "/parties/main/r?_pk=other").await;
    let (mut old, _) = join(&server, "/parties/main/r?_pk=dup").await;
    let (mut new, _) = join(&server, "/parties/main/r?_pk=dup").await;

    // The old socket is told it was replaced, with a close frame.
    assert_eq!(
        old.closed().await,
        (close_code::REPLACED, close_code::REPLACED_REASON.to_owned())
    );
    assert_eq!(close_code::REPLACED, 4409);
    // Its `on_close` runs after the new socket's `on_connect`, while the id already
    // names the new socket.
    let events = probe.wait_for("close dup", 1).await;
    let dup: Vec<&str> = events
        .iter()
        .map(String::as_str)
        .filter(|event| event.ends_with(" dup"))
        .collect();
    assert_eq!(
        dup,
        [
            "connect-start dup",
            "connect-end dup",
            "connect-start dup",
            "connect-end dup",
            "close dup",
            "replaced by a live socket dup"
        ]
    );

    // Only the new socket is registered under the id.
    assert_eq!(other.ask("ids").await, "other,dup");
    other.send_text("broadcast:to everyone").await;
    assert_eq!(new.recv_text().await, "to everyone");
    other.send_text("send-to:dup:found you").await;
    assert_eq!(new.recv_text().await, "found you");
    assert_eq!(new.ask("echo:alive").await, "alive");

    // When the new one closes, the id is gone.
    new.close().await;
    probe.wait_for("close dup", 2).await;
    assert_eq!(other.ask("ids").await, "other");
    assert_eq!(other.ask("send-to:dup:anyone?").await, "no such connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_message_over_max_message_size_closes_with_1009() {
    init_tracing();
    let probe = Probe::new();
    let server = TestServer::start(probe.server().party::<Main>().limits(Limits {
        max_message_size: 1024,
        ..Limits::default()
    }))
    .await;
    let (mut ws, id) = join(&server, "/parties/main/r").await;
    // Exactly at the limit: fine.
    let fits = format!("echo:{}", "y".repeat(1024 - 5));
    assert_eq!(ws.ask(&fits).await.len(), 1019);
    ws.send_text(format!("echo:{}", "y".repeat(1024 - 4))).await;
    let (code, _reason) = ws.closed().await;
    assert_eq!(code, 1009);
    probe.wait_for(&format!("close {id}"), 1).await;

    let (mut ws, id) = join(&server, "/parties/main/r").await;
    ws.send_binary(vec![0u8; 1025]).await;
    assert_eq!(ws.closed().await.0, 1009);
    probe.wait_for(&format!("close {id}"), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_close_runs_after_the_client_closes() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (mut a, _) = join(&server, "/parties/main/r?_pk=a").await;
    let (mut b, _) = join(&server, "/parties/main/r?_pk=b").await;
    // The server answers the client's close frame (the closing handshake completes).
    assert_eq!(a.close().await, Ended::Closed(1000, "done".to_owned()));
    let events = probe.wait_for("close a", 1).await;
    assert!(
        !events.contains(&"still listed a".to_owned()),
        "the closed connection is no longer listed in on_close: {events:?}"
    );
    assert_eq!(b.ask("ids").await, "b");
    b.send_text("broadcast:anyone?").await;
    assert_eq!(b.ask("echo:b").await, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_its_socket_is_closed_too() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (a, _) = join(&server, "/parties/main/r?_pk=a").await;
    let (mut b, _) = join(&server, "/parties/main/r?_pk=b").await;
    drop(a);
    probe.wait_for("close a", 1).await;
    assert_eq!(b.ask("ids").await, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_reaches_the_client_with_its_code_and_reason() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (mut ws, id) = join(&server, "/parties/main/r").await;
    // A code that may not go on the wire is refused; the socket stays open.
    let refused = ws.ask("close:1005:nope").await;
    assert!(refused.starts_with("refused: "), "{refused}");
    ws.send_text("echo:queued before close").await;
    ws.send_text("close:4000:bye").await;
    assert_eq!(ws.recv_text().await, "queued before close");
    assert_eq!(ws.closed().await, (4000, "bye".to_owned()));
    probe.wait_for(&format!("close {id}"), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_go_both_ways() {
    let probe = Probe::new();
    let server = start(&probe).await;
    let (mut a, _) = join(&server, "/parties/main/r?_pk=a").await;
    let (mut b, _) = join(&server, "/parties/main/r?_pk=b").await;
    let payload = vec![0u8, 1, 2, 0xff, 0xfe];
    a.send_binary(payload.clone()).await;
    assert_eq!(a.recv().await, WsMessage::binary(payload));
    a.send_text("broadcast-binary:abc").await;
    assert_eq!(b.recv().await, WsMessage::binary(b"abc".to_vec()));
    assert!(probe.events().contains(&"binary a 5".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_1008() {
    init_tracing();
    let probe = Probe::new();
    let max_outbound_buffer = 256 * 1024;
    let server = TestServer::start(probe.server().party::<Main>().limits(Limits {
        max_outbound_buffer,
        ..Limits::default()
    }))
    .await;
    // A client with a small receive buffer that reads nothing after the handshake.
    let mut slow = server
        .raw_connect_with("/parties/main/r?_pk=slow", &[], Some(4096))
        .await
        .expect("connect");
    assert_eq!(slow.recv_text().await, "hello slow");
    let (mut watcher, _) = join(&server, "/parties/main/r?_pk=watcher").await;

    // The room queues 64 KiB messages for it, up to 1 GiB in all, until the runtime
    // refuses: the socket's buffers (a few MiB at most) fill, then the queue.
    let size = 64 * 1024;
    let count = 16 * 1024;
    let response = server
        .get(&format!(
            "/parties/main/r/flood/slow?size={size}&count={count}"
        ))
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let flood = response.json();
    assert_eq!(
        flood["refused"], true,
        "the runtime never refused a message: {flood}"
    );
    let queued = flood["queued"].as_u64().unwrap();
    assert!(queued < count as u64, "{flood}");

    // The client now reads: some of the messages, then the end of the socket: a close
    // frame with 1008, or the connection dropped if the close frame could not be sent.
    let mut received = 0u64;
    let ended = loop {
        match slow.next_within(partykit_tests::WAIT).await {
            None => panic!("the slow client's socket was not closed; read {received} messages"),
            Some(Some(Ok(WsMessage::Binary(bytes)))) => {
                assert_eq!(bytes.len(), size);
                received += 1;
            }
            Some(Some(Ok(WsMessage::Close(frame)))) => {
                break Ended::Closed(
                    frame.as_ref().map_or(0, |frame| frame.code.into()),
                    frame
                        .map(|frame| frame.reason.as_str().to_owned())
                        .unwrap_or_default(),
                );
            }
            Some(Some(Ok(other))) => panic!("unexpected {other:?}"),
            Some(Some(Err(error))) => break Ended::Dropped(error.to_string()),
            Some(None) => break Ended::Dropped("end of stream".to_owned()),
        }
    };
    assert!(received <= queued, "received {received} of {queued} queued");
    match &ended {
        Ended::Closed(code, _) => assert_eq!(*code, 1008, "{ended:?}"),
        Ended::Dropped(_) => {}
        Ended::ClosedWithoutCode => panic!("a close frame without 1008"),
    }
    // Reading on sends the client's close reply.
    while let Some(Some(Ok(_))) = slow.next_within(partykit_tests::WAIT).await {}

    // The room forgets the connection and runs on_close. (Had the client not read, the
    // runtime would wait for its close reply up to its close timeout.)
    probe
        .wait_until_for(
            "on_close of the slow client",
            Duration::from_secs(15),
            |events| events.iter().any(|event| event == "close slow"),
        )
        .await;
    assert_eq!(watcher.ask("ids").await, "watcher");

    // The room still works.
    assert_eq!(watcher.ask("echo:still here").await, "still here");
}
