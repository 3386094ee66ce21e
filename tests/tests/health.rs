//! `GET /__partykit/health`: for load balancers. 200 `ok` while serving, with or without
//! the inspection API; 503 from the shutdown signal on, through `Limits::drain_delay`,
//! while the server still serves its clients.

use std::time::Duration;

use partykit_runtime::{Limits, Request, Server, party};
use partykit_tests::TestServer;

#[party]
#[derive(Default)]
struct Main;

#[party]
impl Main {
    fn on_request(&mut self, _request: Request) -> &'static str {
        "served"
    }
}

#[tokio::test]
async fn health_is_ok_without_a_token_whether_the_inspection_api_is_on_or_off() {
    for server in [
        Server::new().party::<Main>(),
        Server::new().party::<Main>().admin_token("secret"),
    ] {
        let server = TestServer::start(server).await;
        let health = server.get("/__partykit/health").await;
        assert_eq!((health.status, health.text()), (200, "ok".to_owned()));
        assert_eq!(health.header("cache-control"), Some("no-store"));
        assert_eq!(
            health.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
}

#[tokio::test]
async fn health_answers_503_through_the_drain_delay_while_clients_are_still_served() {
    let limits = Limits {
        drain_delay: Duration::from_secs(60),
        ..Limits::default()
    };
    let mut server =
        TestServer::start_plain(Server::new().party::<Main>().in_memory().limits(limits)).await;
    let health = server.get("/__partykit/health").await;
    assert_eq!(health.status, 200, "{}", health.text());

    server.trigger_shutdown();
    let health = partykit_tests::cluster::poll(
        "the health check to fail",
        Duration::from_secs(10),
        &mut || async {
            let health = server.get("/__partykit/health").await;
            (health.status == 503).then_some(health)
        },
    )
    .await;
    assert_eq!(health.text(), "shutting down");
    // Still serving: the load balancer takes it out of rotation before it closes.
    let room = server.get("/parties/main/draining").await;
    assert_eq!((room.status, room.text()), (200, "served".to_owned()));
}
