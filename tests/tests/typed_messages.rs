//! `on_message` with typed JSON messages, over real sockets: `Json<T>` decodes a frame
//! into `T`, a frame that does not decode closes its sender alone with 1007 and never
//! reaches the handler, `Result<Json<T>, JsonRejection>` sees every frame; and
//! `Connection::send_json` / `Room::broadcast_json` send JSON text.

use partykit_runtime::{Connection, Json, JsonRejection, Room, Server, close_code, party};
use partykit_tests::TestServer;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Vote {
    option: u32,
}

#[derive(Serialize)]
struct Tally<'a> {
    voter: &'a str,
    votes: &'a [u32],
}

#[party(name = "poll")]
struct Poll {
    room: Room,
    votes: Vec<u32>,
}

#[party]
impl Poll {
    fn new(room: Room) -> Self {
        Poll {
            room,
            votes: Vec::new(),
        }
    }

    fn on_message(
        &mut self,
        Json(vote): Json<Vote>,
        sender: &Connection,
    ) -> partykit_runtime::Result<()> {
        self.votes.push(vote.option);
        let tally = Tally {
            voter: sender.id(),
            votes: &self.votes,
        };
        self.room.broadcast_json(&tally, &[sender.id()])?;
        sender.send_json(&serde_json::json!({ "ok": self.votes.len() }))?;
        Ok(())
    }
}

#[party(name = "lenient")]
#[derive(Default)]
struct Lenient {
    rejected: u32,
}

#[party]
impl Lenient {
    fn on_message(&mut self, vote: Result<Json<Vote>, JsonRejection>, sender: &Connection) {
        let reply = match vote {
            Ok(Json(vote)) => serde_json::json!({ "vote": vote.option }),
            Err(rejection) => {
                self.rejected += 1;
                serde_json::json!({ "rejected": self.rejected, "why": rejection.to_string() })
            }
        };
        let _ = sender.send_json(&reply);
    }
}

fn server() -> Server {
    Server::new()
        .in_memory()
        .no_env_file()
        .party::<Poll>()
        .party::<Lenient>()
}

#[tokio::test]
async fn json_messages_reach_the_handler_decoded() {
    let server = TestServer::start(server()).await;
    let mut alice = server.connect("/parties/poll/p1?_pk=alice").await;
    let mut bob = server.connect("/parties/poll/p1?_pk=bob").await;
    alice.send_text(r#"{"option": 2}"#).await;
    assert_eq!(alice.recv_json().await, serde_json::json!({ "ok": 1 }));
    assert_eq!(
        bob.recv_json().await,
        serde_json::json!({ "voter": "alice", "votes": [2] })
    );
    // Binary frames holding JSON decode too.
    bob.send_binary(br#"{"option": 3}"#.to_vec()).await;
    assert_eq!(bob.recv_json().await, serde_json::json!({ "ok": 2 }));
    assert_eq!(
        alice.recv_json().await,
        serde_json::json!({ "voter": "bob", "votes": [2, 3] })
    );
}

#[tokio::test]
async fn a_frame_that_does_not_decode_closes_its_sender_alone_with_1007() {
    let server = TestServer::start(server()).await;
    let mut alice = server.connect("/parties/poll/p2?_pk=alice").await;
    let mut bob = server.connect("/parties/poll/p2?_pk=bob").await;
    alice.send_text(r#"{"option": "two"}"#).await;
    let (code, reason) = alice.closed().await;
    assert_eq!(code, close_code::INVALID_PAYLOAD);
    assert!(
        reason.starts_with("invalid type: string \"two\""),
        "{reason}"
    );
    // The handler did not run, and the room and its other sockets carry on.
    bob.send_text(r#"{"option": 1}"#).await;
    assert_eq!(bob.recv_json().await, serde_json::json!({ "ok": 1 }));
}

#[tokio::test]
async fn a_result_parameter_sees_every_frame() {
    let server = TestServer::start(server()).await;
    let mut carol = server.connect("/parties/lenient/l1?_pk=carol").await;
    carol.send_text("not json").await;
    let reply = carol.recv_json().await;
    assert_eq!(reply["rejected"], 1);
    assert!(
        reply["why"]
            .as_str()
            .is_some_and(|why| why.starts_with("expected ident")),
        "{reply}"
    );
    carol.send_text(r#"{"option": 7}"#).await;
    assert_eq!(carol.recv_json().await, serde_json::json!({ "vote": 7 }));
}
