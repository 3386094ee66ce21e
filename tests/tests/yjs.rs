//! `partykit_runtime::yjs` over TCP with a Rust y-websocket client (yrs): what the npm
//! scripts (`tests/js/yjs*.mjs`) cannot easily reach: read-only connections, custom text
//! beside Yjs, malformed messages, the server's own chunking, history persistence with
//! `load` and `callback`, and connections adopted without `on_connect`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use partykit_runtime::storage::ListOptions;
use partykit_runtime::yjs::yrs::sync::{Message as YMessage, SyncMessage};
use partykit_runtime::yjs::yrs::updates::decoder::Decode;
use partykit_runtime::yjs::yrs::updates::encoder::Encode;
use partykit_runtime::yjs::yrs::{self, GetString, ReadTxn, StateVector, Text, Transact, Update};
use partykit_runtime::yjs::{Callback, Persistence, YDoc, YjsOptions, custom_text};
use partykit_runtime::{Connection, Limits, Message, Request, Result, Room, Server, party};
use partykit_tests::{TestServer, Ws, WsMessage, within};

/// A y-websocket client: a socket and its own document.
struct Client {
    ws: Ws,
    doc: yrs::Doc,
}

impl Client {
    /// Connects and reads the server's SyncStep1.
    async fn connect(server: &TestServer, path: &str) -> Self {
        let mut ws = server.connect(path).await;
        let first = recv_yjs(&mut ws).await;
        assert!(
            matches!(first, YMessage::Sync(SyncMessage::SyncStep1(_))),
            "the server greets with SyncStep1, got {first:?}"
        );
        Self {
            ws,
            doc: yrs::Doc::new(),
        }
    }

    /// SyncStep1 → SyncStep2: brings the client's document up to date.
    async fn sync(&mut self) {
        let state_vector = self.doc.transact().state_vector();
        self.send(YMessage::Sync(SyncMessage::SyncStep1(state_vector)))
            .await;
        loop {
            match recv_yjs(&mut self.ws).await {
                YMessage::Sync(SyncMessage::SyncStep2(update)) => break self.apply(&update),
                // Broadcasts may come first.
                YMessage::Sync(SyncMessage::Update(update)) => self.apply(&update),
                _ => {}
            }
        }
    }

    /// Inserts `text` at the end of `content` and sends the update.
    async fn append(&mut self, text: &str) -> Vec<u8> {
        let update = self.edit(text);
        self.send(YMessage::Sync(SyncMessage::Update(update.clone())))
            .await;
        update
    }

    /// Inserts `text` at the end of `content` locally; returns the update.
    fn edit(&self, text: &str) -> Vec<u8> {
        let before = self.doc.transact().state_vector();
        let content = self.doc.get_or_insert_text("content");
        let mut txn = self.doc.transact_mut();
        let end = content.len(&txn);
        content.insert(&mut txn, end, text);
        drop(txn);
        self.doc.transact().encode_state_as_update_v1(&before)
    }

    /// Waits for a broadcast update and applies it.
    async fn receive_update(&mut self) {
        loop {
            if let YMessage::Sync(SyncMessage::Update(update)) = recv_yjs(&mut self.ws).await {
                return self.apply(&update);
            }
        }
    }

    fn apply(&self, update: &[u8]) {
        let update = Update::decode_v1(update).expect("a valid update");
        self.doc.transact_mut().apply_update(update).unwrap();
    }

    fn text(&self) -> String {
        let content = self.doc.get_or_insert_text("content");
        content.get_string(&self.doc.transact())
    }

    async fn send(&mut self, message: YMessage) {
        self.ws.send_binary(message.encode_v1()).await;
    }
}

/// The next binary message, decoded.
async fn recv_yjs(ws: &mut Ws) -> YMessage {
    match ws.recv().await {
        WsMessage::Binary(bytes) => YMessage::decode_v1(&bytes).expect("a y-websocket message"),
        other => panic!("expected a binary y-websocket message, got {other:?}"),
    }
}

/// A message the server sent in y-partykit's batch format, joined.
async fn recv_batch(ws: &mut Ws) -> Vec<u8> {
    let start = ws.recv_text().await;
    assert!(start.starts_with("y-pk-batch#{"), "{start}");
    assert!(start.contains(r#""type":"start""#), "{start}");
    let mut joined = Vec::new();
    loop {
        match ws.recv().await {
            WsMessage::Binary(chunk) => {
                assert!(chunk.len() <= 1_000_000, "a chunk of {} bytes", chunk.len());
                joined.extend_from_slice(&chunk);
            }
            WsMessage::Text(end) => {
                assert_eq!(end.as_str(), start.replace(r#""start""#, r#""end""#));
                return joined;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Nothing arrives within 200 ms.
async fn quiet(ws: &mut Ws) {
    ws.expect_silence(Duration::from_millis(200)).await;
}

fn text_of(doc: &YDoc) -> String {
    let content = doc.doc().get_or_insert_text("content");
    content.get_string(&doc.doc().transact())
}

// ---------------------------------------------------------------------------------------
// Parties

/// `?view` connections are read-only; text frames other than Yjs get `pong:<text>`; HTTP
/// answers the text.
#[party(name = "notes")]
struct Notes {
    doc: YDoc,
}

#[party]
impl Notes {
    fn new(room: Room) -> Self {
        Notes {
            doc: YDoc::new(&room, YjsOptions::new()),
        }
    }

    async fn on_connect(&mut self, conn: &Connection) -> Result<()> {
        if conn.uri().contains("view") {
            self.doc.on_connect_read_only(conn).await
        } else {
            self.doc.on_connect(conn).await
        }
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        if let Some(text) = custom_text(&message) {
            sender.send(format!("pong:{text}"))?;
            return Ok(());
        }
        self.doc.on_message(message, sender).await
    }

    async fn on_close(&mut self, conn: &Connection) -> Result<()> {
        self.doc.on_close(conn).await
    }

    async fn on_request(&mut self) -> Result<String> {
        self.doc.load().await?;
        Ok(text_of(&self.doc))
    }
}

/// Chunks its own large messages too.
#[party(name = "chunky")]
struct Chunky {
    doc: YDoc,
}

#[party]
impl Chunky {
    fn new(room: Room) -> Self {
        Chunky {
            doc: YDoc::new(&room, YjsOptions::new().chunk_outbound(true)),
        }
    }

    async fn on_connect(&mut self, conn: &Connection) -> Result<()> {
        self.doc.on_connect(conn).await
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        self.doc.on_message(message, sender).await
    }
}

static CALLBACKS: AtomicUsize = AtomicUsize::new(0);
static HISTORY_BUILT: AtomicUsize = AtomicUsize::new(0);

/// History persistence (merged past 2 updates), seeded by `load`, with a callback.
#[party(name = "history")]
struct History {
    room: Room,
    doc: YDoc,
}

#[party]
impl History {
    fn new(room: Room) -> Self {
        HISTORY_BUILT.fetch_add(1, Ordering::SeqCst);
        let persist = Persistence::History {
            max_updates: Some(2),
            max_bytes: None,
        };
        let options = YjsOptions::new()
            .persist(persist)
            .load(|| async {
                // A fixed client id: seeding again after a reload changes nothing.
                let seed = yrs::Doc::with_client_id(1);
                let content = seed.get_or_insert_text("content");
                content.insert(&mut seed.transact_mut(), 0, "seed:");
                Ok(Some(seed))
            })
            .callback(
                Callback::new(|doc: yrs::Doc| async move {
                    let content = doc.get_or_insert_text("content");
                    assert!(content.get_string(&doc.transact()).starts_with("seed:"));
                    CALLBACKS.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .wait(Duration::from_millis(50))
                .max_wait(Duration::from_millis(200)),
            );
        History {
            doc: YDoc::new(&room, options),
            room,
        }
    }

    async fn on_connect(&mut self, conn: &Connection) -> Result<()> {
        self.doc.on_connect(conn).await
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        self.doc.on_message(message, sender).await
    }

    async fn on_close(&mut self, conn: &Connection) -> Result<()> {
        self.doc.on_close(conn).await
    }

    /// `GET …/updates`: how many updates are stored; otherwise the text.
    async fn on_request(&mut self, request: Request) -> Result<String> {
        if request.path().ends_with("/updates") {
            let entries = self.room.storage().list_bytes(ListOptions::new()).await?;
            let updates = entries
                .iter()
                .filter(|(key, _)| key.starts_with("\"v1\"#") && key.ends_with("#000"))
                .count();
            return Ok(updates.to_string());
        }
        self.doc.load().await?;
        Ok(text_of(&self.doc))
    }
}

/// Forgets to forward `on_connect`: connections are adopted on their first message.
#[party(name = "adopter")]
struct Adopter {
    doc: YDoc,
}

#[party]
impl Adopter {
    fn new(room: Room) -> Self {
        Adopter {
            doc: YDoc::new(&room, YjsOptions::new()),
        }
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        self.doc.on_message(message, sender).await
    }
}

fn server() -> Server {
    Server::new()
        .in_memory()
        .party::<Notes>()
        .party::<Chunky>()
        .party::<History>()
        .party::<Adopter>()
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn read_only_connections_receive_but_cannot_write() {
    let server = TestServer::start(server()).await;
    let mut writer = Client::connect(&server, "/parties/notes/ro").await;
    let mut viewer = Client::connect(&server, "/parties/notes/ro?view").await;

    // The viewer's update is ignored: not applied, not broadcast.
    viewer.append("nope").await;
    quiet(&mut writer.ws).await;
    assert_eq!(server.get("/parties/notes/ro").await.text(), "");

    // The writer's reaches everyone, the writer included.
    writer.append("yes").await;
    writer.receive_update().await;
    let mut fresh = Client::connect(&server, "/parties/notes/ro").await;
    fresh.sync().await;
    assert_eq!(fresh.text(), "yes");
    assert_eq!(server.get("/parties/notes/ro").await.text(), "yes");
    // The viewer still syncs: its own ignored edit stays local.
    viewer.receive_update().await;
    assert!(viewer.text().contains("yes"));
}

#[tokio::test]
async fn custom_text_and_malformed_messages_leave_the_connection_open() {
    let server = TestServer::start(server()).await;
    let mut client = Client::connect(&server, "/parties/notes/text").await;

    // Text beside Yjs goes to the party's own handler.
    assert_eq!(client.ws.ask("ping").await, "pong:ping");
    // A malformed message is an error for that message only.
    client.ws.send_binary(vec![0u8, 9, 9]).await;
    client.ws.send_binary(vec![0u8, 2, 200]).await;
    // Auth and query-awareness messages are ignored, as y-partykit does.
    client.ws.send_binary(vec![2u8, 0]).await;
    client.ws.send_binary(vec![3u8]).await;
    quiet(&mut client.ws).await;
    client.append("still here").await;
    client.sync().await;
    assert_eq!(client.text(), "still here");
    assert_eq!(server.get("/parties/notes/text").await.text(), "still here");
}

#[tokio::test]
async fn large_messages_are_reassembled_and_sent_in_chunks_when_asked() {
    let server = TestServer::start(server()).await;
    let mut sender = Client::connect(&server, "/parties/chunky/big").await;
    let mut receiver = Client::connect(&server, "/parties/chunky/big").await;

    // 1.5 MB in y-partykit's batch format: start marker, 1,000,000-byte chunks, end marker.
    let big: String = (0..1_500_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let update = sender.edit(&big);
    let frame = YMessage::Sync(SyncMessage::Update(update)).encode_v1();
    let marker = |kind: &str| {
        format!(
            r#"y-pk-batch#{{"id":"test","type":"{kind}","size":{},"count":2}}"#,
            frame.len()
        )
    };
    sender.ws.send_text(marker("start")).await;
    sender.ws.send_binary(frame[..1_000_000].to_vec()).await;
    sender.ws.send_binary(frame[1_000_000..].to_vec()).await;
    sender.ws.send_text(marker("end")).await;

    // The server's broadcast comes chunked the same way, to both.
    for client in [&mut receiver, &mut sender] {
        let joined = recv_batch(&mut client.ws).await;
        let YMessage::Sync(SyncMessage::Update(update)) = YMessage::decode_v1(&joined).unwrap()
        else {
            panic!("the joined chunks are not an update");
        };
        client.apply(&update);
    }
    assert_eq!(receiver.text(), big);

    // A batch that does not add up is refused, and the connection goes on.
    sender.ws.send_text(marker("start")).await;
    sender.ws.send_binary(vec![0u8; 10]).await;
    sender.ws.send_text(marker("end")).await;
    let step1 = YMessage::Sync(SyncMessage::SyncStep1(StateVector::default()));
    sender.send(step1).await;
    // The whole document is over 1 MB: the SyncStep2 answer comes chunked too.
    let joined = recv_batch(&mut sender.ws).await;
    let YMessage::Sync(SyncMessage::SyncStep2(update)) = YMessage::decode_v1(&joined).unwrap()
    else {
        panic!("expected SyncStep2");
    };
    let fresh = yrs::Doc::new();
    fresh
        .transact_mut()
        .apply_update(Update::decode_v1(&update).unwrap())
        .unwrap();
    let content = fresh.get_or_insert_text("content");
    assert_eq!(content.get_string(&fresh.transact()), big);
}

#[tokio::test]
async fn history_persistence_is_seeded_by_load_compacted_past_its_limit_and_calls_back() {
    // Idle rooms are dropped at once, so that the document is reloaded from storage.
    let limits = Limits {
        room_idle_timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let server = TestServer::start(server().limits(limits)).await;
    let room = "/parties/history/h";
    assert_eq!(server.get(room).await.text(), "seed:");

    let mut client = Client::connect(&server, room).await;
    client.sync().await;
    assert_eq!(client.text(), "seed:");
    for word in ["a", "b"] {
        client.append(word).await;
        client.receive_update().await;
    }
    // Two updates are within the limit: kept as history when the client leaves.
    client.ws.close().await;
    let updates = || async { server.get(&format!("{room}/updates")).await.text() };
    within("the history to stay", async {
        while updates().await != "2" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let mut client = Client::connect(&server, room).await;
    client.sync().await;
    client.append("c").await;
    client.receive_update().await;
    client.ws.close().await;
    // Three are over it: merged into one.
    within("the history to be merged", async {
        while updates().await != "1" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(server.get(room).await.text(), "seed:abc");

    // Once the idle room is dropped, a new one loads the seed and the merged update.
    let built = HISTORY_BUILT.load(Ordering::SeqCst);
    within("the room to be rebuilt", async {
        while HISTORY_BUILT.load(Ordering::SeqCst) == built {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(server.get(room).await.text(), "seed:abc");
        }
    })
    .await;

    within("the debounced callback", async {
        while CALLBACKS.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_connection_not_passed_to_on_connect_is_adopted() {
    let server = TestServer::start(server()).await;
    let mut ws = server.connect("/parties/adopter/a").await;
    quiet(&mut ws).await;
    let state_vector = StateVector::default();
    let step1 = YMessage::Sync(SyncMessage::SyncStep1(state_vector)).encode_v1();
    ws.send_binary(step1).await;
    assert!(matches!(
        recv_yjs(&mut ws).await,
        YMessage::Sync(SyncMessage::SyncStep1(_))
    ));
    assert!(matches!(
        recv_yjs(&mut ws).await,
        YMessage::Sync(SyncMessage::SyncStep2(_))
    ));
}
