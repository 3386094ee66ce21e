//! A socket whose room is busy keeps receiving: while an inbound message waits for room
//! in the room's full mailbox, the socket task still writes what is sent to the peer (and
//! stops reading, so the peer's further frames wait in TCP).

use std::sync::{Mutex, PoisonError};

use partykit_runtime::{Connection, ConnectionContext, Limits, Message, Party, Result, Room};
use partykit_tests::{Probe, TestServer, init_tracing, record};
use tokio::sync::Semaphore;

/// The one test's connection and the signal that unblocks its room.
struct Shared {
    connection: Mutex<Option<Connection>>,
    release: Semaphore,
}

static SHARED: Shared = Shared {
    connection: Mutex::new(None),
    release: Semaphore::const_new(0),
};

struct Busy {
    room: Room,
}

impl Party for Busy {
    fn new(room: Room) -> Self {
        Busy { room }
    }

    async fn on_connect(
        &mut self,
        connection: &Connection,
        _ctx: &ConnectionContext,
    ) -> Result<()> {
        *SHARED
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(connection.clone());
        Ok(())
    }

    async fn on_message(&mut self, message: Message, _sender: &Connection) -> Result<()> {
        let Message::Text(text) = message else {
            return Ok(());
        };
        record(self.room.env(), format!("message {}", text.as_str()));
        if text.as_str() == "block" {
            // The room is busy until the test says so; its mailbox fills meanwhile.
            SHARED.release.acquire().await?.forget();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_keeps_receiving_while_its_room_mailbox_is_full() {
    init_tracing();
    let probe = Probe::new();
    let server = TestServer::start(probe.server().party::<Busy>().limits(Limits {
        room_mailbox: 1,
        ..Limits::default()
    }))
    .await;
    let mut ws = server.connect("/parties/main/r").await;
    ws.send_text("block").await;
    probe.wait_for("message block", 1).await;
    // The room is blocked: one message fills its mailbox, the next waits in the socket
    // task, the rest wait in TCP.
    const FLOOD: usize = 20;
    for n in 0..FLOOD {
        ws.send_text(format!("flood {n}")).await;
    }
    let connection = SHARED
        .connection
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .expect("connected");
    // Frames pushed while the delivery is stuck all reach the client, one at a time, so
    // each is written after the socket task has had every chance to read (and get stuck
    // delivering) the flood.
    for n in 0..50 {
        connection
            .send(format!("tick {n}"))
            .expect("the connection is open");
        assert_eq!(ws.recv_text().await, format!("tick {n}"));
    }
    SHARED.release.add_permits(1);
    // Nothing was lost: every flooded message reaches the room, in order.
    let events = probe
        .wait_until("the flood to reach the room", |events| {
            events.len() == FLOOD + 1
        })
        .await;
    let expected: Vec<String> = std::iter::once("message block".to_owned())
        .chain((0..FLOOD).map(|n| format!("message flood {n}")))
        .collect();
    assert_eq!(events, expected);
    // And the socket is still open and served.
    connection.send("still here").expect("open");
    assert_eq!(ws.recv_text().await, "still here");
}
