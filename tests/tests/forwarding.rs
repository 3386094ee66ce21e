//! Forwarding between cluster nodes, with the nodes in this process and a throw-away
//! PostgreSQL (skipped with a message when PostgreSQL is not installed, outside CI).
//!
//! A room is owned by the node that takes its lease first, so each test first asks the
//! node meant to own a room for it, then reaches the room through the other node.

use std::net::SocketAddr;

use partykit_runtime::{
    Before, ClusterConfig, Connection, ConnectionContext, Env, Error, Lobby, Message, Request,
    Room, Server, party,
};
use partykit_tests::{Ended, TestDatabase, TestPostgres, TestServer, WsMessage, http};

const SECRET: &str = "forwarding-test-secret";
const SECRET_HEADER: &str = "x-partykit-cluster-secret";
const CHAIN_HEADER: &str = "x-partykit-wait-chain";

#[party(name = "main")]
struct Probe {
    room: Room,
}

fn node_of(env: &Env) -> String {
    env.get_str("NODE").unwrap_or("-").to_owned()
}

fn text_of(message: Option<Message>) -> String {
    match message {
        Some(Message::Text(text)) => text.to_string(),
        other => format!("{other:?}"),
    }
}

#[party]
impl Probe {
    fn new(room: Room) -> Self {
        Probe { room }
    }

    async fn on_before_request(mut request: Request, lobby: &Lobby) -> Result<Before, Error> {
        let node = node_of(lobby.env());
        request
            .headers_mut()
            .insert("x-hooked-on", node.parse().map_err(Error::new)?);
        Ok(Before::Forward(request))
    }

    async fn on_connect(
        &mut self,
        connection: &Connection,
        _ctx: &ConnectionContext,
    ) -> Result<(), Error> {
        let node = node_of(self.room.env());
        let _ = connection.send(format!(
            "{} welcomes {} on {node}",
            self.room.id(),
            connection.id()
        ));
        Ok(())
    }

    async fn on_request(&mut self, request: Request) -> Result<String, Error> {
        let main = self.room.context().parties().get("main").unwrap();
        // `?call=a,b`: call `a`, which calls `b`.
        if let Some(calls) = request.query("call") {
            let calls = calls.into_owned();
            let (target, rest) = calls.split_once(',').unwrap_or((&calls, ""));
            let path = match rest {
                "" => String::new(),
                rest => format!("/next?call={rest}"),
            };
            let answer = main
                .get(target)
                .fetch(&path, Request::builder().build()?)
                .await?;
            let status = answer.status();
            let body = answer.text().await?;
            return Ok(format!("{target} answered {status}: {body}"));
        }
        if let Some(target) = request.query("socket") {
            let mut socket = main.get(&target).socket("").await?;
            let greeting = text_of(socket.recv().await?);
            socket.send("ping").await?;
            let echo = text_of(socket.recv().await?);
            let id = socket.id().to_owned();
            socket.close().await;
            return Ok(format!("{id}: {greeting}; {echo}"));
        }
        Ok(format!(
            "{} on {}: {} {} hooked on {}",
            self.room.id(),
            node_of(self.room.env()),
            request.url(),
            request.header("x-user").unwrap_or_default(),
            request.header("x-hooked-on").unwrap_or_default(),
        ))
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<(), Error> {
        if let Message::Text(text) = &message
            && let Some(code) = text.strip_prefix("close:")
        {
            let _ = sender.close(code.parse().unwrap(), "closed by the room");
            return Ok(());
        }
        let _ = sender.send(message);
        Ok(())
    }
}

struct Node {
    server: TestServer,
    internal: SocketAddr,
}

/// A free port on 127.0.0.1 for a node's internal listener.
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

async fn node(url: &str, name: &str) -> Node {
    let internal = free_addr();
    let config = ClusterConfig::new(url, internal.to_string(), SECRET);
    let server = Server::new()
        .party::<Probe>()
        .no_env_file()
        .var("NODE", name)
        .cluster(config);
    let server = TestServer::start_plain(server).await;
    // The public listener answers once the node is built, and its internal listener
    // bound: a first request waits for that.
    let answer = server.get("/").await;
    assert_eq!(answer.status, 404, "{}", answer.text());
    Node { server, internal }
}

/// Two nodes of one cluster (and their database, which must outlive them), or `None`
/// (skipped) without PostgreSQL.
async fn cluster() -> Option<(Node, Node, TestDatabase)> {
    let database = TestPostgres::database().await?;
    let a = node(&database.url, "a").await;
    let b = node(&database.url, "b").await;
    Some((a, b, database))
}

/// Makes `node` the owner of room `room`: the first event takes the lease.
async fn own(node: &Node, room: &str) {
    let answer = node.server.get(&format!("/parties/main/{room}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn the_internal_listener_refuses_without_the_secret_or_with_a_wrong_one() {
    let Some((_a, b, _database)) = cluster().await else {
        return;
    };
    for path in ["/parties/main/r", "/parties/nope/r", "/elsewhere"] {
        for headers in [vec![], vec![(SECRET_HEADER, "wrong")]] {
            let answer = http(b.internal, "GET", path, &headers, b"").await;
            assert_eq!(answer.status, 401, "{path} {headers:?}");
            assert_eq!(
                answer.text(),
                "internal listener: missing or wrong cluster secret"
            );
        }
    }
    let upgrade = [
        ("Connection", "Upgrade, close"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    for secret in [None, Some("wrong")] {
        let mut headers = upgrade.to_vec();
        headers.extend(secret.map(|secret| (SECRET_HEADER, secret)));
        let answer = http(b.internal, "GET", "/parties/main/r", &headers, b"").await;
        assert_eq!(answer.status, 401, "a socket with secret {secret:?}");
    }
    // With the secret: served, without the hooks.
    let answer = http(
        b.internal,
        "GET",
        "/parties/main/r?q=1",
        &[(SECRET_HEADER, SECRET)],
        b"",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.text(),
        format!(
            "r on b: http://{}/parties/main/r?q=1  hooked on ",
            b.internal
        )
    );
    let malformed = [(SECRET_HEADER, SECRET), (CHAIN_HEADER, "[[1]]")];
    let answer = http(b.internal, "GET", "/parties/main/r", &malformed, b"").await;
    assert_eq!(answer.status, 400);
}

#[tokio::test]
async fn a_request_through_another_node_reaches_the_owner_after_the_first_nodes_hooks() {
    let Some((a, b, _database)) = cluster().await else {
        return;
    };
    own(&b, "r").await;
    let answer = a
        .server
        .http("POST", "/parties/main/r/x?q=1", &[("x-user", "ada")], b"")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // The owner's room sees the URL the client used on the first node.
    assert_eq!(
        answer.text(),
        format!(
            "r on b: http://{}/parties/main/r/x?q=1 ada hooked on a",
            a.server.addr()
        )
    );
    // A forged chain or secret from a client is not forwarded.
    let forged = [(CHAIN_HEADER, "not json"), (SECRET_HEADER, "guess")];
    let answer = a.server.http("GET", "/parties/main/r", &forged, b"").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn a_socket_through_another_node_is_relayed_to_the_owner() {
    let Some((a, b, _database)) = cluster().await else {
        return;
    };
    own(&b, "r").await;
    let mut socket = a.server.connect("/parties/main/r?_pk=ada").await;
    assert_eq!(socket.recv_text().await, "r welcomes ada on b");
    socket.send_text("text").await;
    assert_eq!(socket.recv_text().await, "text");
    socket.send_binary(vec![1, 2, 3]).await;
    assert_eq!(socket.recv().await, WsMessage::Binary(vec![1, 2, 3].into()));
    socket.send_text("close:4321").await;
    assert_eq!(
        socket.closed().await,
        (4321, "closed by the room".to_owned())
    );

    // A client's close is answered with its code and reason.
    let mut socket = a.server.connect("/parties/main/r?_pk=bob").await;
    assert_eq!(socket.recv_text().await, "r welcomes bob on b");
    assert_eq!(
        socket.close_with(4100, "client says bye").await,
        Ended::Closed(4100, "client says bye".to_owned())
    );
}

#[tokio::test]
async fn rooms_call_rooms_of_other_nodes() {
    let Some((a, b, _database)) = cluster().await else {
        return;
    };
    own(&b, "r").await;
    own(&a, "p").await;
    let answer = a.server.get("/parties/main/p?call=r").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.text(),
        "r answered 200 OK: r on b: http://localhost/parties/main/r  hooked on "
    );
    let answer = a.server.get("/parties/main/p?socket=r").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let text = answer.text();
    let (id, rest) = text.split_once(": ").unwrap();
    assert_eq!(rest, format!("r welcomes {id} on b; ping"));
}

#[tokio::test]
async fn a_cycle_across_nodes_is_508() {
    let Some((a, b, _database)) = cluster().await else {
        return;
    };
    own(&a, "p").await;
    own(&b, "r").await;
    own(&a, "q").await;
    // p (on a) calls r (on b), which calls p back.
    let answer = a.server.get("/parties/main/p?call=r,p").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        answer
            .text()
            .starts_with("r answered 508 Loop Detected: calling main/p would deadlock"),
        "{}",
        answer.text()
    );
    // Through three rooms: p (a) -> r (b) -> q (a) -> p.
    let answer = a.server.get("/parties/main/p?call=r,q,p").await;
    assert!(
        answer
            .text()
            .starts_with("r answered 200 OK: q answered 508 Loop Detected"),
        "{}",
        answer.text()
    );
    // Without a cycle the same rooms answer.
    let answer = a.server.get("/parties/main/p?call=r,q").await;
    assert!(
        answer
            .text()
            .starts_with("r answered 200 OK: q answered 200 OK: q on a"),
        "{}",
        answer.text()
    );
}

#[tokio::test]
async fn an_unreachable_owner_or_a_room_that_keeps_moving_is_503() {
    let Some((a, b, database)) = cluster().await else {
        return;
    };
    let (client, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let add_node =
        "INSERT INTO partykit_nodes (id, internal_addr, heartbeat_at) VALUES ($1, $2, now())";
    let add_lease = "INSERT INTO partykit_room_leases (party, room, node_id, epoch, expires_at) \
                     VALUES ('main', $1, $2, 1, now() + interval '1 hour')";

    // A node that died holding room `d`, before its lease expired.
    let gone = free_addr();
    client
        .execute(add_node, &[&"dead", &gone.to_string()])
        .await
        .unwrap();
    client.execute(add_lease, &[&"d", &"dead"]).await.unwrap();
    let answer = a.server.get("/parties/main/d").await;
    assert_eq!(answer.status, 503);
    assert!(
        answer
            .text()
            .starts_with(&format!("the room's node dead ({gone}) is unreachable")),
        "{}",
        answer.text()
    );
    let refused = a.server.refused_upgrade("/parties/main/d").await;
    assert_eq!(refused.status, 503);
    assert!(
        refused.text().contains("is unreachable"),
        "{}",
        refused.text()
    );

    // A lease naming b's internal listener for a room b does not hold: b answers 421
    // every time, and a gives up after three attempts.
    client
        .execute(add_node, &[&"stale", &b.internal.to_string()])
        .await
        .unwrap();
    client.execute(add_lease, &[&"m", &"stale"]).await.unwrap();
    let answer = a.server.get("/parties/main/m").await;
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.text(),
        "the room m changed owner 3 times while this request was routed; try again"
    );
    let refused = a.server.refused_upgrade("/parties/main/m").await;
    assert_eq!(refused.status, 503);
}
