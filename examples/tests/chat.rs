//! The chat example, tested as a user tests a party: with `partykit_runtime::testing`.

use std::time::Duration;

use partykit_examples::chat::Chat;
use partykit_runtime::Server;
use partykit_runtime::testing::{SocketOptions, TestServer};
use serde_json::{Value, json};

async fn server() -> TestServer {
    TestServer::start(Server::new().party::<Chat>()).await
}

#[tokio::test]
async fn a_message_reaches_everyone_else_in_the_room_and_no_one_else() {
    let server = server().await;
    let mut alice = server.socket("main", "lobby").await;
    let mut bob = server.socket("main", "lobby").await;
    let mut elsewhere = server.socket("main", "other").await;

    alice.send("hi bob").await;
    assert_eq!(bob.recv_text().await, "hi bob");
    bob.send(vec![1, 2, 3]).await;
    assert_eq!(alice.recv().await.as_binary(), Some(&[1, 2, 3][..]));

    // Not back to the sender, nor into another room.
    alice.expect_silence(Duration::from_millis(50)).await;
    elsewhere.expect_silence(Duration::from_millis(50)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn get_answers_the_room_and_its_connection_count() {
    let server = server().await;
    let empty: Value = server.get("/parties/main/lobby").await.json().await;
    assert_eq!(empty, json!({ "room": "lobby", "connections": 0 }));

    let mut alice = server
        .socket_with("main", "lobby", SocketOptions::new().id("alice"))
        .await;
    let _bob = server.socket("main", "lobby").await;
    let response = server.get("/parties/main/lobby").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{response:?}"
    );
    let info: Value = response.json().await;
    assert_eq!(info, json!({ "room": "lobby", "connections": 2 }));

    // A socket that closes leaves the count.
    assert_eq!(alice.close(1000, "bye").await, (1000, "bye".to_owned()));
    let info: Value = server.get("/parties/main/lobby").await.json().await;
    assert_eq!(info, json!({ "room": "lobby", "connections": 1 }));
    server.shutdown().await;
}
