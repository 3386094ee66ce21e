//! The reminders example's alarms, driven by the test clock instead of real time.

use std::time::Duration;

use partykit_examples::reminders::{Reminder, Reminders};
use partykit_runtime::Server;
use partykit_runtime::storage::ListOptions;
use partykit_runtime::testing::TestServer;

#[tokio::test]
async fn reminders_arrive_when_due_in_order_and_leave_storage() {
    let server = TestServer::start(Server::new().party::<Reminders>()).await;
    let mut socket = server.socket("main", "team").await;
    // Minutes away at least, so that none falls due in real time while the test runs.
    let (minute, hour) = (60_000, 3_600_000);
    for (delay, message) in [
        (30 * minute, "stand-up"),
        (10 * minute, "coffee"),
        (24 * hour, "lunch"),
    ] {
        let response = server
            .post(&format!("/parties/main/team?in={delay}"), message)
            .await;
        assert_eq!(response.status(), 200, "{}", response.text().await);
    }
    let pending: Vec<Reminder> = server.get("/parties/main/team").await.json().await;
    assert_eq!(pending.len(), 3);

    // An hour fires the first two, in the order they are due; the next day's stays.
    assert_eq!(server.advance(Duration::from_secs(3600)).await, 2);
    assert_eq!(socket.recv_text().await, "coffee");
    assert_eq!(socket.recv_text().await, "stand-up");
    socket.expect_silence(Duration::from_millis(50)).await;
    let stored: Vec<(String, Reminder)> = server
        .storage("main", "team")
        .list(ListOptions::new().prefix("reminder:"))
        .await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].1.message, "lunch");
    assert!(server.storage("main", "team").alarm().await.is_some());

    assert_eq!(server.advance(Duration::from_secs(24 * 3600)).await, 1);
    assert_eq!(socket.recv_text().await, "lunch");
    assert_eq!(
        server.storage("main", "team").keys().await,
        Vec::<String>::new()
    );
    assert_eq!(server.storage("main", "team").alarm().await, None);
    server.shutdown().await;
}
