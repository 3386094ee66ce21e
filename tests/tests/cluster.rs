//! Cluster mode with real processes: three `cluster-node` processes (tests/src/bin/
//! cluster-node.rs) against one throw-away PostgreSQL, driven over loopback with SIGKILL,
//! SIGSTOP/SIGCONT, SIGTERM and a database outage.
//!
//! Every test gets a fresh database on the test process's one PostgreSQL server (the
//! outage test gets a server of its own, since it stops it). Without PostgreSQL the tests
//! say `skipped` and pass, except under `CI=true`, where they fail.
//!
//! The counter (`main` party) is how writes are acknowledged: `POST` answers the new
//! value once it is durable, so every value a client saw must survive whatever happens
//! to the nodes.

#![cfg(unix)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use partykit_tests::cluster::{LEASE_TTL, SECRET, SECRET_HEADER, TestCluster, poll, try_http};
use partykit_tests::{Ended, HttpResponse, RawWs, TestDatabase, TestPostgres, try_connect_to};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const NODE: &str = env!("CARGO_BIN_EXE_cluster-node");

/// The longest the tests wait for the cluster to serve a room again after losing its
/// owner (a hang guard, not a performance threshold).
const RECOVERY: Duration = Duration::from_secs(60);

/// A fresh database and three nodes on it, or `None` (the test is skipped) without
/// PostgreSQL.
async fn three_nodes() -> Option<(TestDatabase, TestCluster)> {
    let database = TestPostgres::database().await?;
    let cluster = TestCluster::start(NODE, &database, 3).await;
    Some((database, cluster))
}

fn count_path(room: &str) -> String {
    format!("/parties/main/{room}")
}

/// `POST` the counter through node `i`: the acknowledged value, or why not.
async fn increment(cluster: &TestCluster, i: usize, room: &str) -> Result<u64, String> {
    let response = cluster.http(i, "POST", &count_path(room)).await?;
    acknowledged(&response)
}

/// `GET` the counter through node `i`.
async fn read_count(cluster: &TestCluster, i: usize, room: &str) -> Result<u64, String> {
    let response = cluster.http(i, "GET", &count_path(room)).await?;
    acknowledged(&response)
}

fn acknowledged(response: &HttpResponse) -> Result<u64, String> {
    if response.status != 200 {
        return Err(format!("{} {}", response.status, response.text()));
    }
    response
        .text()
        .parse()
        .map_err(|_| format!("200 with a body that is no count: {:?}", response.text()))
}

/// A request that failed must have failed with an answer or a refused connection, never
/// by hanging: the tests retry those through other nodes.
#[track_caller]
fn assert_not_hung(error: &str) {
    assert!(!error.contains("HUNG"), "a request hung: {error}");
}

/// Reads the counter through any running node until one answers.
async fn settled_count(cluster: &TestCluster, room: &str) -> u64 {
    poll(
        &format!("a node to answer the count of {room}"),
        RECOVERY,
        &mut || async {
            for i in 0..cluster.len() {
                if cluster.is_running(i)
                    && let Ok(count) = read_count(cluster, i, room).await
                {
                    return Some(count);
                }
            }
            None
        },
    )
    .await
}

/// Opens a socket to `path` through node `i`; fails the test if it is refused.
async fn connect(cluster: &TestCluster, i: usize, path: &str) -> RawWs {
    try_connect_to(cluster.addr(i), path, &[], None)
        .await
        .unwrap_or_else(|error| panic!("socket to {path} through node {i} refused: {error}"))
}

/// Reads the socket until it closes; any count it receives first is a late (and
/// therefore wrong) acknowledgement.
async fn close_code(ws: &mut RawWs) -> u16 {
    let code = match ws.ended().await {
        Ended::Closed(code, _) => code,
        other => panic!("expected a close frame, got {other:?}"),
    };
    // One more read sends the reply to the close frame, as a client that reads on does:
    // the server waits for it before its socket task ends.
    let _ = ws.next_within(Duration::from_secs(1)).await;
    code
}

// ---------------------------------------------------------------------------------------
// One room through several nodes

#[tokio::test]
async fn sockets_through_different_nodes_share_a_room_and_http_reaches_the_owner() {
    let Some((_database, mut cluster)) = three_nodes().await else {
        return;
    };
    let path = count_path("shared");
    let mut first = connect(&cluster, 0, &path).await;
    assert_eq!(first.recv_text().await, "0");
    assert_eq!(cluster.owner_of("main", "shared").await, Some(0));

    let mut second = connect(&cluster, 1, &path).await;
    assert_eq!(
        second.recv_text().await,
        "0",
        "node 1 relays the owner's room"
    );

    first.send_text("hello from node 0").await;
    assert_eq!(first.recv_text().await, "hello from node 0");
    assert_eq!(second.recv_text().await, "hello from node 0");
    second.send_text("hello from node 1").await;
    assert_eq!(first.recv_text().await, "hello from node 1");
    assert_eq!(second.recv_text().await, "hello from node 1");
    second.send_text("inc").await;
    assert_eq!(first.recv_text().await, "1");
    assert_eq!(second.recv_text().await, "1");

    // HTTP through a node that owns nothing here reaches the owner.
    assert_eq!(read_count(&cluster, 2, "shared").await, Ok(1));
    let node = cluster
        .http(2, "GET", &format!("{path}/node"))
        .await
        .expect("GET /node through node 2");
    assert_eq!(
        (node.status, node.text()),
        (200, cluster.internal_addr(0).to_string()),
        "the owner (node 0) answered"
    );
    assert_eq!(increment(&cluster, 2, "shared").await, Ok(2));
    assert_eq!(first.recv_text().await, "2");
    assert_eq!(second.recv_text().await, "2");
    assert_eq!(cluster.owner_of("main", "shared").await, Some(0));

    // The owner dies: the socket relayed through node 1 closes with 1012, and coming
    // back through node 1 finds the room on a live node with its count.
    cluster.kill(0).await;
    assert_eq!(close_code(&mut second).await, 1012, "the relayed socket");
    let mut again = poll("the room to take sockets again", RECOVERY, &mut || async {
        let mut socket = try_connect_to(cluster.addr(1), &path, &[], None)
            .await
            .ok()?;
        match socket.next_within(RECOVERY).await {
            Some(Some(Ok(partykit_tests::WsMessage::Text(count)))) => Some((socket, count)),
            _ => None,
        }
    })
    .await;
    assert_eq!(again.1, "2", "every acknowledged write is there");
    again.0.send_text("inc").await;
    assert_eq!(again.0.recv_text().await, "3");
    assert_ne!(cluster.owner_of("main", "shared").await, Some(0));
}

// ---------------------------------------------------------------------------------------
// Failover

/// Increments through `addr` until a request fails, reporting each acknowledged value;
/// returns the failure.
fn increment_until_failure(
    addr: SocketAddr,
    room: &'static str,
) -> (mpsc::UnboundedReceiver<u64>, JoinHandle<String>) {
    let (acks, received) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let answer = try_http(addr, "POST", &count_path(room), &[], b"").await;
            match answer.and_then(|response| acknowledged(&response)) {
                Ok(value) => {
                    if acks.send(value).is_err() {
                        return "the test stopped listening".to_owned();
                    }
                }
                Err(error) => return error,
            }
        }
    });
    (received, task)
}

#[tokio::test]
async fn a_killed_owners_room_comes_back_on_another_node_with_every_acknowledged_write() {
    let Some((_database, mut cluster)) = three_nodes().await else {
        return;
    };
    let room = "failover";
    assert_eq!(increment(&cluster, 0, room).await, Ok(1));
    assert_eq!(cluster.owner_of("main", room).await, Some(0));

    let (mut acks, client) = increment_until_failure(cluster.addr(0), room);
    let mut last_acked = 1;
    while last_acked < 20 {
        last_acked = acks
            .recv()
            .await
            .expect("the client stopped before 20 writes");
    }
    // SIGKILL while the client is writing: its request in flight may or may not have
    // committed, but nothing it was told about may be lost.
    let killed_at = Instant::now();
    cluster.kill(0).await;
    let why = client.await.expect("the client task");
    while let Ok(value) = acks.try_recv() {
        assert!(value > last_acked, "acknowledged values go up");
        last_acked = value;
    }
    println!("the client stopped: {why}");
    assert_not_hung(&why);

    let (node, first) = poll("the room to be served again", RECOVERY, &mut || async {
        for i in [1, 2] {
            match increment(&cluster, i, room).await {
                Ok(value) => return Some((i, value)),
                Err(error) => assert_not_hung(&error),
            }
        }
        None
    })
    .await;
    let failover = killed_at.elapsed();
    println!(
        "failover: {} ms from SIGKILL to the first acknowledged write (through node {node}, lease TTL {} ms)",
        failover.as_millis(),
        LEASE_TTL.as_millis()
    );
    assert!(
        first > last_acked,
        "the count after failover ({first}) is at least the last acknowledged value ({last_acked}) plus this write"
    );
    let owner = cluster.wait_owner("main", room).await;
    assert_ne!(owner, 0, "a live node owns the room");
    let mut previous = first;
    for i in [1, 2, 1, 2] {
        let value = poll("a write after failover", RECOVERY, &mut || async {
            match increment(&cluster, i, room).await {
                Ok(value) => Some(value),
                Err(error) => {
                    assert_not_hung(&error);
                    // Without forwarding only the owner serves: write through it.
                    increment(&cluster, owner, room).await.ok()
                }
            }
        })
        .await;
        assert_eq!(value, previous + 1, "never lower, nothing skipped");
        previous = value;
    }
    assert_eq!(settled_count(&cluster, room).await, previous);
}

#[tokio::test]
async fn a_paused_owner_is_fenced_its_sockets_close_1012_and_nothing_is_lost_or_doubled() {
    let Some((database, cluster)) = three_nodes().await else {
        return;
    };
    let room = "paused";
    let path = count_path(room);
    let mut old = connect(&cluster, 0, &path).await;
    assert_eq!(old.recv_text().await, "0");
    assert_eq!(cluster.owner_of("main", room).await, Some(0));
    old.send_text("inc").await;
    assert_eq!(old.recv_text().await, "1");

    cluster.stop(0);
    // Waiting in the paused node's socket buffer: it reaches the room only after
    // SIGCONT, when another node owns it, so its commit must be fenced.
    old.send_text("inc").await;
    let stopped_at = Instant::now();
    poll("node 0's lease to expire", RECOVERY, &mut || async {
        match cluster.owner_of("main", room).await {
            Some(0) => None,
            _ => Some(()),
        }
    })
    .await;

    let mut acked = Vec::new();
    let mut served_by = None;
    while acked.len() < 5 {
        let ack = poll("another node to serve the room", RECOVERY, &mut || async {
            for i in [1, 2] {
                match increment(&cluster, i, room).await {
                    Ok(value) => return Some((i, value)),
                    Err(error) => {
                        assert_not_hung(&error);
                        eprintln!("while node 0 is paused, node {i}: {error}");
                    }
                }
            }
            None
        })
        .await;
        served_by.get_or_insert(ack.0);
        acked.push(ack.1);
    }
    println!(
        "takeover: {} ms from SIGSTOP to the first write on node {}",
        stopped_at.elapsed().as_millis(),
        served_by.unwrap_or_default()
    );
    assert_eq!(acked, vec![2, 3, 4, 5, 6], "the new owner continues from 1");
    let owner = cluster.wait_owner("main", room).await;
    assert_ne!(owner, 0);

    cluster.cont(0);
    assert_eq!(
        close_code(&mut old).await,
        1012,
        "the old owner's socket closes with 1012 and no late acknowledgement"
    );
    // Whichever came first on SIGCONT, the fenced commit or the soft deadline, the late
    // increment never landed: the count is what the new owner acknowledged, in the stored
    // state itself.
    let fenced = cluster.logged(0, "fenced");
    println!(
        "after SIGCONT node 0 {}",
        if fenced.is_empty() {
            "gave the room up at the soft deadline before committing"
        } else {
            "had its late commit fenced"
        }
    );
    assert_eq!(read_count(&cluster, owner, room).await, Ok(6));
    let stored = stored_count(&database, room).await;
    assert_eq!(stored, 6, "nothing lost, nothing doubled in storage");
    // Node 0 serves again, now as a non-owner.
    assert_eq!(cluster.owner_of("main", room).await, Some(owner));
}

#[tokio::test]
async fn an_owner_paused_in_the_middle_of_writes_does_not_hold_its_rooms_hostage() {
    let Some((database, cluster)) = three_nodes().await else {
        return;
    };
    let room = "paused-writing";
    let path = count_path(room);
    let mut old = connect(&cluster, 0, &path).await;
    assert_eq!(old.recv_text().await, "0");
    // A burst of writes, so that the pause lands while the owner's writer is inside a
    // transaction (between its lease check and its COMMIT).
    for _ in 0..200 {
        old.send_text("inc").await;
    }
    cluster.stop(0);
    poll("node 0's lease to expire", RECOVERY, &mut || async {
        match cluster.owner_of("main", room).await {
            Some(0) => None,
            _ => Some(()),
        }
    })
    .await;
    // Still paused: the room must be served elsewhere, whatever node 0 left open.
    let refusals = std::sync::Mutex::new(Vec::new());
    let (node, first) = poll(
        "another node to serve the room while node 0 is paused",
        RECOVERY,
        &mut || async {
            for i in [1, 2] {
                match increment(&cluster, i, room).await {
                    Ok(value) => return Some((i, value)),
                    Err(error) => {
                        assert_not_hung(&error);
                        refusals.lock().expect("refusals").push(error);
                    }
                }
            }
            None
        },
    )
    .await;
    println!(
        "served by node {node} while node 0 was paused; refused before: {:?}",
        tally(&refusals.lock().expect("refusals"))
    );
    let last = increment(&cluster, node, room)
        .await
        .expect("a second write");
    assert_eq!(last, first + 1);
    cluster.cont(0);
    // Counts the old owner sent before the pause are acknowledgements of writes the new
    // owner started from; none may come from a write it made after losing the room.
    let code = loop {
        match old.next_within(RECOVERY).await {
            Some(Some(Ok(partykit_tests::WsMessage::Text(text)))) => {
                let count: u64 = text.parse().expect("a count");
                assert!(
                    count < first,
                    "the old owner acknowledged {count} after the new owner's {first}"
                );
            }
            Some(Some(Ok(partykit_tests::WsMessage::Close(Some(frame))))) => {
                break u16::from(frame.code);
            }
            Some(Some(Ok(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 1012, "the old owner's socket closes with 1012");
    assert_eq!(
        stored_count(&database, room).await,
        last,
        "the stored count is the new owner's"
    );
}

/// The `count` key of a counter room, straight from `partykit_kv` (JSON text).
async fn stored_count(database: &TestDatabase, room: &str) -> u64 {
    let client = database.client().await;
    let row = client
        .query_one(
            "SELECT value FROM partykit_kv WHERE party = 'main' AND room = $1 AND key = $2",
            &[&room, &b"count".as_slice()],
        )
        .await
        .expect("the stored count");
    let value: Vec<u8> = row.get(0);
    String::from_utf8_lossy(&value)
        .parse()
        .unwrap_or_else(|_| panic!("stored count {value:?}"))
}

// ---------------------------------------------------------------------------------------
// Alarms and cron

#[tokio::test]
async fn an_alarm_set_on_a_killed_node_fires_on_another_node() {
    let Some((_database, mut cluster)) = three_nodes().await else {
        return;
    };
    // Due well after the kill below, so that only another node can run it.
    let set = cluster
        .http(0, "POST", "/parties/alarm/reminder?in=5000")
        .await
        .expect("setting the alarm");
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(cluster.owner_of("alarm", "reminder").await, Some(0));
    cluster.kill(0).await;
    let killed_at = Instant::now();

    let fired = poll(
        "the alarm to fire on another node",
        RECOVERY,
        &mut || async {
            for i in [1, 2] {
                let Ok(response) = cluster.http(i, "GET", "/parties/alarm/reminder").await else {
                    continue;
                };
                if response.status == 200 && response.json()["fired"].as_u64() >= Some(1) {
                    return Some(response.json());
                }
            }
            None
        },
    )
    .await;
    println!(
        "the alarm fired {} ms after the kill: {fired}",
        killed_at.elapsed().as_millis()
    );
    let node = fired["node"].as_str().expect("the node that ran it");
    assert!(
        [cluster.internal_addr(1), cluster.internal_addr(2)]
            .iter()
            .any(|addr| addr.to_string() == node),
        "fired on {node}, not on a live node"
    );
    assert_eq!(fired["fired"], 1, "it fired once");
}

#[tokio::test]
async fn on_cron_runs_once_per_tick_across_three_nodes() {
    let Some(database) = TestPostgres::database().await else {
        return;
    };
    let cluster = TestCluster::start_with(NODE, &database, 3, &[("CLUSTER_NODE_CRON", "1")]).await;
    // Each run stores a key in room `<tick>@<node>` of the `ticks` party.
    let runs = || async {
        let client = cluster.database().await.ok()?;
        let rows = client
            .query(
                "SELECT room FROM partykit_kv WHERE party = 'ticks' AND key LIKE 'run:%'",
                &[],
            )
            .await
            .ok()?;
        let mut by_tick: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for row in rows {
            let room: String = row.get(0);
            let (tick, node) = room.split_once('@').expect("<tick>@<node>");
            by_tick
                .entry(tick.parse().expect("a tick in seconds"))
                .or_default()
                .push(node.to_owned());
        }
        Some(by_tick)
    };
    let by_tick = poll("two cron ticks", Duration::from_secs(150), &mut || async {
        runs().await.filter(|by_tick| by_tick.len() >= 2)
    })
    .await;
    println!("cron runs by tick: {by_tick:?}");
    for (tick, nodes) in &by_tick {
        assert_eq!(nodes.len(), 1, "tick {tick} ran once, not on {nodes:?}");
        assert_eq!(tick % 60, 0, "ticks are whole minutes");
    }
    let claims = database
        .client()
        .await
        .query("SELECT tick FROM partykit_cron_ticks", &[])
        .await
        .expect("the claimed ticks");
    assert!(claims.len() >= by_tick.len(), "every run was claimed");
}

// ---------------------------------------------------------------------------------------
// Room-to-room calls and the internal listener

#[tokio::test]
async fn rooms_call_rooms_on_other_nodes_and_a_cross_node_cycle_is_508() {
    let Some((_database, cluster)) = three_nodes().await else {
        return;
    };
    // `callee` lives on node 1, `caller` on node 0.
    let callee = cluster
        .http(1, "GET", "/parties/caller/callee")
        .await
        .expect("GET callee");
    assert_eq!(
        (callee.status, callee.text()),
        (200, format!("callee on {}", cluster.internal_addr(1)))
    );
    let call = cluster
        .http(0, "GET", "/parties/caller/caller?to=callee")
        .await
        .expect("caller calls callee");
    assert_eq!(
        (call.status, call.text()),
        (200, format!("callee on {}", cluster.internal_addr(1))),
        "the call from node 0 reached the room on node 1"
    );
    assert_eq!(cluster.owner_of("caller", "caller").await, Some(0));
    assert_eq!(cluster.owner_of("caller", "callee").await, Some(1));

    // `a` (node 0) calls `back` (node 1), which calls `a` back while `a` waits: 508.
    let back = cluster
        .http(1, "GET", "/parties/caller/back")
        .await
        .expect("GET back");
    assert_eq!(back.status, 200, "{}", back.text());
    let cycle = cluster
        .http(0, "GET", "/parties/caller/a?to=back")
        .await
        .expect("the cycle answers");
    assert_eq!(cycle.status, 508, "{}", cycle.text());
    assert!(
        cycle.text().contains("deadlock"),
        "the answer says why: {}",
        cycle.text()
    );
    assert_eq!(cluster.owner_of("caller", "a").await, Some(0));
    assert_eq!(cluster.owner_of("caller", "back").await, Some(1));
    // Both rooms still serve afterwards.
    let after = cluster
        .http(2, "GET", "/parties/caller/a?to=callee")
        .await
        .expect("a calls callee");
    assert_eq!(
        (after.status, after.text()),
        (200, format!("callee on {}", cluster.internal_addr(1)))
    );
}

#[tokio::test]
async fn the_internal_listener_refuses_requests_without_the_right_secret() {
    let Some((_database, cluster)) = three_nodes().await else {
        return;
    };
    assert_eq!(increment(&cluster, 0, "guarded").await, Ok(1));
    let internal = cluster.internal_addr(0);
    let path = count_path("guarded");
    let without = try_http(internal, "GET", &path, &[], b"")
        .await
        .expect("the internal listener answers");
    assert_eq!(without.status, 401, "{}", without.text());
    let wrong = try_http(
        internal,
        "POST",
        &path,
        &[(SECRET_HEADER, "not-the-cluster-secret-at-all")],
        b"",
    )
    .await
    .expect("the internal listener answers");
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let other_path = try_http(internal, "GET", "/", &[], b"")
        .await
        .expect("the internal listener answers");
    assert_eq!(other_path.status, 401, "{}", other_path.text());
    // The refused POST did nothing; with the secret the owner answers.
    let right = try_http(internal, "GET", &path, &[(SECRET_HEADER, SECRET)], b"")
        .await
        .expect("the internal listener answers");
    assert_eq!((right.status, right.text()), (200, "1".to_owned()));
}

// ---------------------------------------------------------------------------------------
// Rolling restart and database outage

/// What a client got: every acknowledged value in order, and every failed answer.
type Outcome = (Vec<u64>, Vec<String>);

/// A client that increments through each node in turn until told to stop, going on to
/// the next on a refused connection or a 503 (nodes are down or restarting meanwhile);
/// reports every acknowledged value, and returns them with the failed answers it saw.
fn keep_incrementing(
    nodes: Vec<SocketAddr>,
    room: &'static str,
    stop: &Arc<AtomicBool>,
) -> (mpsc::UnboundedReceiver<u64>, JoinHandle<Outcome>) {
    let (progress, received) = mpsc::unbounded_channel();
    let stop = Arc::clone(stop);
    let task = tokio::spawn(async move {
        let (mut acked, mut failures) = (Vec::new(), Vec::new());
        for addr in nodes.iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match try_http(*addr, "POST", &count_path(room), &[], b"").await {
                Ok(response) => match acknowledged(&response) {
                    Ok(value) => {
                        acked.push(value);
                        let _ = progress.send(value);
                    }
                    Err(error) => failures.push(error),
                },
                Err(error) => {
                    assert_not_hung(&error);
                    // A node that is down refuses at once: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        (acked, failures)
    });
    (received, task)
}

/// How many times each answer came.
fn tally(answers: &[String]) -> BTreeMap<&str, usize> {
    let mut tally = BTreeMap::new();
    for answer in answers {
        *tally.entry(answer.as_str()).or_default() += 1;
    }
    tally
}

fn addrs(cluster: &TestCluster) -> Vec<SocketAddr> {
    (0..cluster.len()).map(|i| cluster.addr(i)).collect()
}

/// Waits until the client has `more` new acknowledgements.
async fn acknowledgements(progress: &mut mpsc::UnboundedReceiver<u64>, more: usize) {
    tokio::time::timeout(RECOVERY, async {
        for _ in 0..more {
            progress.recv().await.expect("the client stopped");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the client got no {more} acknowledgements within {RECOVERY:?}"));
}

#[tokio::test]
async fn a_rolling_restart_loses_no_acknowledged_write() {
    let Some((_database, mut cluster)) = three_nodes().await else {
        return;
    };
    let room = "rolling";
    assert_eq!(increment(&cluster, 0, room).await, Ok(1));
    let stop = Arc::new(AtomicBool::new(false));
    let (mut progress, client) = keep_incrementing(addrs(&cluster), room, &stop);
    acknowledgements(&mut progress, 10).await;
    for i in 0..3 {
        // A room node `i` owns, with a socket on it.
        let path = count_path(&format!("rolling-socket-{i}"));
        let mut socket = connect(&cluster, i, &path).await;
        assert_eq!(socket.recv_text().await, "0");
        cluster.terminate(i).await;
        assert_eq!(
            close_code(&mut socket).await,
            1012,
            "a socket on the terminating node {i} closes with 1012"
        );
        // Handed off at exit, not left to expire after the TTL.
        assert_eq!(
            cluster
                .owner_of("main", &format!("rolling-socket-{i}"))
                .await,
            None,
            "node {i} released its lease"
        );
        let client_db = cluster.database().await.expect("the test database");
        let rows = client_db
            .query(
                "SELECT id FROM partykit_nodes WHERE internal_addr = $1",
                &[&cluster.internal_addr(i).to_string()],
            )
            .await
            .expect("the node rows");
        assert!(rows.is_empty(), "node {i} removed its row on exit");
        acknowledgements(&mut progress, 10).await;
        cluster.restart(i).await;
        acknowledgements(&mut progress, 10).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (acked, failures) = client.await.expect("the client task");
    println!(
        "rolling restart: {} acknowledged writes; refused meanwhile: {:?}",
        acked.len(),
        tally(&failures)
    );
    assert!(
        acked.windows(2).all(|pair| pair[0] < pair[1]),
        "acknowledged values only go up: {acked:?}"
    );
    let last = *acked.last().expect("writes were acknowledged");
    let count = settled_count(&cluster, room).await;
    assert!(
        count >= last,
        "the count ({count}) has every acknowledged write (last {last})"
    );
    for failure in &failures {
        assert!(
            failure.starts_with("503 ") && failure.len() > 4,
            "refusals meanwhile are 503 with a message: {failure}"
        );
    }
}

#[tokio::test]
async fn a_database_outage_fails_cleanly_and_service_resumes_by_itself() {
    let Some(database) = TestPostgres::own_database().await else {
        return;
    };
    let cluster = TestCluster::start(NODE, &database, 3).await;
    let room = "outage";
    assert_eq!(increment(&cluster, 0, room).await, Ok(1));
    let mut socket = connect(&cluster, 0, &count_path(room)).await;
    assert_eq!(socket.recv_text().await, "1");

    let stop = Arc::new(AtomicBool::new(false));
    let (mut progress, client) = keep_incrementing(addrs(&cluster), room, &stop);
    acknowledgements(&mut progress, 10).await;

    database.stop().await;
    let stopped_at = Instant::now();
    // The owner cannot renew its lease: the socket closes at the soft deadline. Counts
    // broadcast before are acknowledgements (checked below), not failures.
    let mut last_seen = 0;
    let code = loop {
        match socket.next_within(RECOVERY).await {
            Some(Some(Ok(partykit_tests::WsMessage::Text(text)))) => {
                last_seen = text.parse().expect("a count");
            }
            Some(Some(Ok(partykit_tests::WsMessage::Close(Some(frame))))) => {
                break u16::from(frame.code);
            }
            Some(Some(Ok(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(
        code, 1012,
        "a room whose lease cannot be renewed closes 1012"
    );
    println!(
        "outage: the socket closed 1012 {} ms after PostgreSQL stopped",
        stopped_at.elapsed().as_millis()
    );
    // A new room cannot start either.
    let new_room = cluster
        .http(1, "POST", &count_path("outage-new"))
        .await
        .expect("a new room answers, and does not hang");
    assert_eq!(new_room.status, 503, "{}", new_room.text());
    assert!(!new_room.text().is_empty(), "the 503 says why");
    // Load balancers hear it from every node's health check.
    for i in 0..cluster.len() {
        let health = poll("the health check to fail", RECOVERY, &mut || async {
            let health = cluster.http(i, "GET", "/__partykit/health").await.ok()?;
            (health.status == 503).then_some(health)
        })
        .await;
        assert_eq!(health.text(), "the cluster database is unreachable");
    }
    // Down for a whole TTL more, so that every lease has expired in the database too:
    // the nodes must take their rooms again, not just carry on.
    tokio::time::sleep(LEASE_TTL).await;
    database.start().await;
    let started_at = Instant::now();
    acknowledgements(&mut progress, 10).await;
    println!(
        "outage: writes acknowledged again {} ms after PostgreSQL started",
        started_at.elapsed().as_millis()
    );
    stop.store(true, Ordering::Relaxed);
    let (acked, failures) = client.await.expect("the client task");
    println!(
        "outage: {} acknowledged writes; refused: {:?}",
        acked.len(),
        tally(&failures)
    );
    assert!(
        !failures.is_empty(),
        "writes failed while the database was down"
    );
    for failure in &failures {
        assert!(
            failure.starts_with("503 ") && failure.len() > 4,
            "errors meanwhile are 503 with a message: {failure}"
        );
    }
    let last = *acked.last().expect("writes were acknowledged");
    let count = settled_count(&cluster, room).await;
    assert!(
        count >= last && count >= last_seen,
        "the count ({count}) has every acknowledged write (last {last}, last broadcast {last_seen})"
    );
    let fresh = poll("a new room to start again", RECOVERY, &mut || async {
        for i in 0..cluster.len() {
            if let Ok(value) = increment(&cluster, i, "outage-new").await {
                return Some(value);
            }
        }
        None
    })
    .await;
    assert_eq!(fresh, 1, "the refused room had not started");
    for i in 0..cluster.len() {
        poll("the health check to pass again", RECOVERY, &mut || async {
            let health = cluster.http(i, "GET", "/__partykit/health").await.ok()?;
            (health.status == 200 && health.text() == "ok").then_some(())
        })
        .await;
    }
    for i in 0..cluster.len() {
        let down = cluster.logged(i, "the cluster database is unreachable");
        let up = cluster.logged(i, "the cluster database is reachable again");
        assert!(
            !down.is_empty() && !up.is_empty(),
            "node {i} logged both transitions: {down:?} {up:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The inspection API across nodes

const ADMIN_TOKEN: &str = "cluster-admin-token";

async fn inspect(cluster: &TestCluster, i: usize, method: &str, path: &str) -> serde_json::Value {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let body: &[u8] = if method == "POST" {
        br#"{"code": 4001, "reason": "closed by the operator"}"#
    } else {
        b""
    };
    let response = try_http(
        cluster.addr(i),
        method,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
    .unwrap_or_else(|error| panic!("{method} {path} on node {i}: {error}"));
    assert_eq!(
        response.status,
        200,
        "{method} {path} on node {i}: {}",
        response.text()
    );
    response.json()
}

#[tokio::test]
async fn the_inspection_api_lists_every_nodes_rooms_and_reaches_each_rooms_owner() {
    let Some(database) = TestPostgres::database().await else {
        return;
    };
    let cluster =
        TestCluster::start_with(NODE, &database, 3, &[("PARTYKIT_ADMIN_TOKEN", ADMIN_TOKEN)]).await;
    // A room owned by node 0, one by node 1; node 2 owns nothing.
    let mut on_zero = connect(
        &cluster,
        0,
        &format!("{}?_pk=zero", count_path("inspected-a")),
    )
    .await;
    assert_eq!(on_zero.recv_text().await, "0");
    let mut on_one = connect(&cluster, 1, &count_path("inspected-b")).await;
    assert_eq!(on_one.recv_text().await, "0");
    assert_eq!(cluster.owner_of("main", "inspected-a").await, Some(0));
    assert_eq!(cluster.owner_of("main", "inspected-b").await, Some(1));

    let listed = inspect(&cluster, 2, "GET", "/__partykit/rooms?prefix=inspected-").await;
    let rooms: Vec<(String, u64, String)> = listed["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|room| {
            (
                room["id"].as_str().expect("id").to_owned(),
                room["connections"].as_u64().expect("connections"),
                room["node"].as_str().expect("node").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rooms,
        [
            (
                "inspected-a".to_owned(),
                1,
                cluster.internal_addr(0).to_string()
            ),
            (
                "inspected-b".to_owned(),
                1,
                cluster.internal_addr(1).to_string()
            ),
        ],
        "node 2 lists both nodes' rooms, with their owners: {listed}"
    );
    assert!(listed["next_cursor"].is_null());

    // One room a page, across nodes.
    let first = inspect(
        &cluster,
        2,
        "GET",
        "/__partykit/rooms?prefix=inspected-&limit=1",
    )
    .await;
    assert_eq!(first["rooms"][0]["id"], "inspected-a");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = inspect(
        &cluster,
        2,
        "GET",
        &format!("/__partykit/rooms?prefix=inspected-&limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(second["rooms"][0]["id"], "inspected-b");
    assert!(second["next_cursor"].is_null(), "{second}");

    // A room's detail comes from its owner, and so does an action.
    let detail = inspect(&cluster, 2, "GET", "/__partykit/rooms/main/inspected-a").await;
    assert_eq!(detail["live"], true, "{detail}");
    assert_eq!(detail["node"], cluster.internal_addr(0).to_string());
    assert_eq!(detail["connections"][0]["id"], "zero", "{detail}");
    inspect(
        &cluster,
        2,
        "POST",
        "/__partykit/rooms/main/inspected-a/connections/zero/close",
    )
    .await;
    assert_eq!(
        on_zero.closed().await,
        (4001, "closed by the operator".to_owned()),
        "the owner closed its socket"
    );
    for i in 0..cluster.len() {
        let health = cluster
            .http(i, "GET", "/__partykit/health")
            .await
            .expect("health");
        assert_eq!((health.status, health.text()), (200, "ok".to_owned()));
    }
}

// ---------------------------------------------------------------------------------------
// The npm clients (Node suite)

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Whether Node is there with `tests/js` installed (installing it with `npm ci` if
/// needed). Without Node the test is skipped, except under `CI`, where it fails.
fn node_ready() -> bool {
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "`node` is not installed, and CI must run the npm client tests"
        );
        eprintln!("SKIPPED: `node` is not installed");
        return false;
    }
    let installed = ["partysocket", "y-partykit", "yjs", "ws"]
        .iter()
        .all(|package| js_dir().join("node_modules").join(package).is_dir());
    if !installed {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(js_dir())
            .status()
            .expect("`npm` must be installed beside `node`");
        assert!(status.success(), "`npm ci` failed in tests/js");
    }
    true
}

/// Runs `node <script> <args…>` in tests/js (bounded) and fails the test unless it
/// exits 0; prints what it printed.
async fn run_script(script: &str, args: &[&str]) {
    let child = tokio::process::Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(js_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot run node");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 60 s"))
        .expect("cannot wait for node");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("[{script}]\n{printed}");
    assert!(output.status.success(), "{script} failed:\n{printed}");
}

#[tokio::test]
async fn npm_clients_on_two_nodes_exchange_messages_and_converge() {
    if !node_ready() {
        return;
    }
    let Some((_database, cluster)) = three_nodes().await else {
        return;
    };
    let (a, b) = (cluster.addr(0).to_string(), cluster.addr(1).to_string());
    run_script("cluster-partysocket.mjs", &[&a, &b, "npm-room"]).await;
    run_script("cluster-yjs.mjs", &[&a, &b, "npm-doc"]).await;
    // The document is the owner's, whichever node is asked.
    let text = cluster
        .http(2, "GET", "/parties/yjs/npm-doc")
        .await
        .expect("GET the document");
    assert_eq!(text.status, 200, "{}", text.text());
    assert!(
        text.text().contains("from a") && text.text().contains("from b"),
        "the stored text has both edits: {:?}",
        text.text()
    );
}
