//! Hostile and slow HTTP peers: slowloris heads, idle keep-alives, bodies that never
//! finish, huge declared lengths, too many connections, and a process out of file
//! descriptors. Each is cut off or refused while a normal client is served.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use partykit_runtime::{Connection, IntoResponse, Limits, Message, Party, Request, Response, Room};
use partykit_tests::{
    ServerProcess, TempDir, TestServer, WAIT, ends_within_wait, init_tracing, read_response_on,
    within,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};

/// Told when a request to `…/held` has reached the room.
static HELD: Notify = Notify::const_new();
/// Lets that request answer.
static RELEASE: Notify = Notify::const_new();

/// Answers every request with the length of its body (a request to `…/held` waits for
/// [`RELEASE`] first); echoes every message.
struct Sink;

impl Party for Sink {
    fn new(_room: Room) -> Self {
        Sink
    }

    async fn on_request(&mut self, request: Request) -> partykit_runtime::Result<Response> {
        if request.path().ends_with("/held") {
            // In flight until the test lets it go.
            HELD.notify_one();
            RELEASE.notified().await;
        }
        Ok(format!("{} bytes", request.body().len()).into_response())
    }

    async fn on_message(
        &mut self,
        message: Message,
        sender: &Connection,
    ) -> partykit_runtime::Result<()> {
        let _ = sender.send(message);
        Ok(())
    }
}

async fn start(limits: Limits) -> TestServer {
    init_tracing();
    TestServer::start(
        partykit_runtime::Server::new()
            .in_memory()
            .no_env_file()
            .limits(limits)
            .party::<Sink>(),
    )
    .await
}

async fn connect(server: &TestServer) -> TcpStream {
    within("a TCP connection", TcpStream::connect(server.addr()))
        .await
        .expect("cannot connect")
}

/// A normal client: one small POST, answered 200.
async fn served(server: &TestServer) {
    let response = server.http("POST", "/parties/main/r", &[], b"hello").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "5 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_cut_off_while_a_normal_client_is_served() {
    let server = start(Limits {
        header_read_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    // Each attacker trickles a head one byte at a time and reconnects when it is cut
    // off, so the attack lasts until the test stops it.
    const ATTACKERS: usize = 20;
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    let mut first_cuts = Vec::new();
    for _ in 0..ATTACKERS {
        let (addr, stop) = (server.addr(), Arc::clone(&stop));
        let (cut, first_cut) = oneshot::channel::<()>();
        let mut cut = Some(cut);
        first_cuts.push(first_cut);
        attackers.push(tokio::spawn(async move {
            let mut cuts = 0;
            // Bounded: at most 20 connections per attacker.
            for _ in 0..20 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                let head = b"GET /parties/main/r HTTP/1.1\r\nHost: x\r\nX-Slow: ";
                let mut written = 0;
                loop {
                    let byte = head.get(written).copied().unwrap_or(b'a');
                    if stream.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    written += 1;
                    // The server ends the connection: the read sees EOF or a reset.
                    let mut probe = [0u8; 64];
                    match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut probe))
                        .await
                    {
                        Ok(Ok(0) | Err(_)) => break,
                        Ok(Ok(_)) => panic!("a slowloris head got an answer"),
                        Err(_) => {}
                    }
                }
                cuts += 1;
                if let Some(cut) = cut.take() {
                    let _ = cut.send(());
                }
            }
            cuts
        }));
    }
    // Normal clients meanwhile.
    for _ in 0..10 {
        served(&server).await;
    }
    // Every attacker is cut off at least once before the test stops them.
    within("every slowloris connection to be cut off", async {
        for first_cut in first_cuts {
            first_cut
                .await
                .expect("an attacker ended before it was cut off");
        }
    })
    .await;
    served(&server).await;
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        let cuts = tokio::time::timeout(WAIT * 2, attacker)
            .await
            .expect("an attacker did not stop")
            .expect("an attacker panicked");
        assert!(cuts >= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_but_a_websocket_is_not() {
    let server = start(Limits {
        header_read_timeout: Duration::from_millis(300),
        keep_alive_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    // Opened first, so it has idled longer than the HTTP connection below.
    let mut ws = server.raw_connect("/parties/main/r").await;
    let mut stream = connect(&server).await;
    stream
        .write_all(b"GET /parties/main/r HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let response = read_response_on(&mut stream, "a kept-alive response").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), None, "kept alive");
    // The same connection serves a second request ...
    stream
        .write_all(b"GET /parties/main/r HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let response = read_response_on(&mut stream, "a second response").await;
    assert_eq!(response.status, 200);
    // ... and is closed once it idles past the keep-alive timeout.
    assert!(
        ends_within_wait(&mut stream).await,
        "the idle connection stayed open"
    );
    // The WebSocket, idle longer, is not an HTTP connection any more.
    assert_eq!(ws.ask("still here").await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_is_431() {
    let server = start(Limits {
        max_request_head: 16 * 1024,
        ..Limits::default()
    })
    .await;
    let big = "a".repeat(32 * 1024);
    let response = server
        .http("GET", "/parties/main/r", &[("X-Big", &big)], b"")
        .await;
    assert_eq!(response.status, 431, "{}", response.text());
    served(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terabyte_content_length_is_413_before_any_body_byte() {
    let server = start(Limits::default()).await;
    let mut stream = connect(&server).await;
    stream
        .write_all(
            b"POST /parties/main/r HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n\r\n",
        )
        .await
        .expect("write");
    // No body byte is ever sent: the answer comes anyway.
    let response = read_response_on(&mut stream, "the answer to a 1 TB Content-Length").await;
    assert_eq!(response.status, 413, "{}", response.text());
    assert!(
        response.text().contains("larger than"),
        "{}",
        response.text()
    );
    // Outside parties too.
    let mut stream = connect(&server).await;
    stream
        .write_all(b"POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n\r\n")
        .await
        .expect("write");
    let response = read_response_on(&mut stream, "the answer outside parties").await;
    assert_eq!(response.status, 413, "{}", response.text());
    served(&server).await;
}

/// Sends a POST head declaring `length` bytes with `Expect: 100-continue`; returns the
/// stream and whether the server asked for the body (`100 Continue`: its length is
/// reserved) or, if not, the status it answered.
async fn hold_body(server: &TestServer, length: usize) -> (TcpStream, Result<(), u16>) {
    let mut stream = connect(server).await;
    let head = format!(
        "POST /parties/main/r HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\
         Expect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // Reads the answer's head (an interim `100 Continue` or the final one) and no more.
    let mut buffer = Vec::new();
    let status_line = within("the server to answer a body's head", async {
        loop {
            if buffer.windows(4).any(|four| four == b"\r\n\r\n") {
                let end = buffer
                    .windows(2)
                    .position(|pair| pair == b"\r\n")
                    .unwrap_or(0);
                break String::from_utf8_lossy(&buffer[..end]).into_owned();
            }
            let mut byte = [0u8; 1];
            let n = stream.read(&mut byte).await.expect("read");
            assert!(n > 0, "the connection ended before an answer");
            buffer.push(byte[0]);
        }
    })
    .await;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    if status == 100 {
        // The interim response's blank line; then a first byte of the body.
        stream.write_all(b"x").await.expect("write");
        (stream, Ok(()))
    } else {
        (stream, Err(status))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_holders_cannot_exceed_the_buffered_body_budget() {
    const MIB: usize = 1024 * 1024;
    let server = start(Limits {
        max_request_body: MIB,
        max_buffered_bodies: 3 * MIB + MIB / 2,
        ..Limits::default()
    })
    .await;
    // Three bodies of 1 MiB fit in 3.5 MiB and are held, unfinished.
    let mut holders = Vec::new();
    for _ in 0..3 {
        let (stream, reserved) = hold_body(&server, MIB).await;
        assert_eq!(reserved, Ok(()), "a body within the budget was refused");
        holders.push(stream);
    }
    // A fourth does not fit: 503 at once, with a message.
    let mut stream = connect(&server).await;
    stream
        .write_all(
            format!("POST /parties/main/r HTTP/1.1\r\nHost: x\r\nContent-Length: {MIB}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    let response = read_response_on(&mut stream, "the answer over the budget").await;
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(
        response.text().contains("too many request bodies"),
        "{}",
        response.text()
    );
    assert_eq!(response.header("retry-after"), Some("1"));
    // A chunked body is counted as it arrives: 1 MiB of chunks does not fit either.
    let chunk = "a".repeat(64 * 1024);
    let mut chunked = String::new();
    for _ in 0..16 {
        chunked.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    chunked.push_str("0\r\n\r\n");
    let response = server
        .http(
            "POST",
            "/parties/main/r",
            &[("Transfer-Encoding", "chunked")],
            chunked.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 503, "{}", response.text());
    // A normal client with a small body is served meanwhile.
    served(&server).await;
    // Once a holder leaves, its share is given back.
    drop(holders.pop());
    within("a body to fit again", async {
        loop {
            match hold_body(&server, MIB).await {
                (stream, Ok(())) => break holders.push(stream),
                (_, Err(503)) => tokio::time::sleep(Duration::from_millis(10)).await,
                (_, Err(status)) => panic!("unexpected {status}"),
            }
        }
    })
    .await;
    served(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_body_timeout_is_408_and_gives_its_budget_back() {
    const MIB: usize = 1024 * 1024;
    let server = start(Limits {
        max_request_body: MIB,
        max_buffered_bodies: MIB,
        body_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let (mut holder, reserved) = hold_body(&server, MIB).await;
    assert_eq!(reserved, Ok(()));
    // The whole budget is held: a normal body does not fit until the holder is cut.
    let response = read_response_on(&mut holder, "the body timeout's answer").await;
    assert_eq!(response.status, 408, "{}", response.text());
    assert!(
        response.text().contains("not received"),
        "{}",
        response.text()
    );
    assert!(
        ends_within_wait(&mut holder).await,
        "the holder stayed connected"
    );
    served(&server).await;
    let (_holder, reserved) = hold_body(&server, MIB).await;
    assert_eq!(reserved, Ok(()), "the budget was not given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_refuses_with_503_and_recovers() {
    let server = start(Limits {
        max_connections: 3,
        ..Limits::default()
    })
    .await;
    // Two WebSockets and a kept-alive HTTP connection fill the cap.
    let mut first = server.raw_connect("/parties/main/r").await;
    let mut second = server.raw_connect("/parties/main/r").await;
    let mut kept = connect(&server).await;
    kept.write_all(b"GET /parties/main/r HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(
        read_response_on(&mut kept, "a kept-alive response")
            .await
            .status,
        200
    );
    for _ in 0..3 {
        let response = server.http("GET", "/parties/main/r", &[], b"").await;
        assert_eq!(response.status, 503, "{}", response.text());
        assert!(
            response.text().contains("Too many open connections"),
            "{}",
            response.text()
        );
    }
    let refused = server.raw_connect_with("/parties/main/r", &[], None).await;
    assert!(refused.is_err(), "a WebSocket over the cap was accepted");
    // The open ones still work.
    assert_eq!(first.ask("one").await, "one");
    // One closes: a new client is served again.
    second.close().await;
    within("a connection to be accepted again", async {
        loop {
            let response = server.http("GET", "/parties/main/r", &[], b"").await;
            match response.status {
                200 => break,
                503 => tokio::time::sleep(Duration::from_millis(10)).await,
                other => panic!("unexpected {other}: {}", response.text()),
            }
        }
    })
    .await;
    assert_eq!(first.ask("two").await, "two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_survives_running_out_of_file_descriptors() {
    init_tracing();
    const NOFILE: usize = 64;
    let dir = TempDir::new("hostile-fds");
    let server = ServerProcess::start_with_fd_limit(
        env!("CARGO_BIN_EXE_party-server"),
        "chat",
        &dir.database(),
        NOFILE as u32,
    )
    .await;
    let addr = server.addr();
    // More connections than the server has descriptors: the kernel queues the rest.
    let mut held = Vec::new();
    for _ in 0..NOFILE + 16 {
        held.push(
            within("a TCP connection", TcpStream::connect(addr))
                .await
                .expect("connect"),
        );
    }
    within("the server to run out of descriptors", async {
        while server.open_fds() < NOFILE {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Descriptors free up: the server serves again.
    drop(held);
    let response = partykit_tests::http(addr, "GET", "/parties/main/lobby", &[], b"").await;
    assert_eq!(response.status, 200, "{}", response.text());
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_descriptor_limit_a_full_server_answers_503_instead_of_going_silent() {
    init_tracing();
    // 256 descriptors: the cap is lowered to 224 connections, leaving room to refuse.
    const NOFILE: u32 = 256;
    const CAP: usize = 224;
    let dir = TempDir::new("hostile-cap-fds");
    let server = ServerProcess::start_with_fd_limit(
        env!("CARGO_BIN_EXE_party-server"),
        "chat",
        &dir.database(),
        NOFILE,
    )
    .await;
    let addr = server.addr();
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(
            within("a TCP connection", TcpStream::connect(addr))
                .await
                .expect("connect"),
        );
    }
    let response = partykit_tests::http(addr, "GET", "/parties/main/lobby", &[], b"").await;
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(
        response.text().contains("Too many open connections"),
        "{}",
        response.text()
    );
    drop(held);
    within("a connection to be accepted again", async {
        loop {
            let response = partykit_tests::http(addr, "GET", "/parties/main/lobby", &[], b"").await;
            match response.status {
                200 => break,
                503 => tokio::time::sleep(Duration::from_millis(10)).await,
                other => panic!("unexpected {other}: {}", response.text()),
            }
        }
    })
    .await;
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_request_in_flight_finish_and_closes_idle_connections() {
    let mut server = start(Limits::default()).await;
    // An idle kept-alive connection, and a request in flight.
    let mut idle = connect(&server).await;
    idle.write_all(b"GET /parties/main/r HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(
        read_response_on(&mut idle, "a kept-alive response")
            .await
            .status,
        200
    );
    let mut busy = connect(&server).await;
    busy.write_all(b"POST /parties/main/held HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .expect("write");
    within("the request to reach the room", HELD.notified()).await;
    server.trigger_shutdown();
    // The idle connection is closed at once ...
    assert!(
        ends_within_wait(&mut idle).await,
        "the idle connection stayed open"
    );
    // ... the request in flight is answered, and told that its connection closes.
    RELEASE.notify_one();
    let response = read_response_on(&mut busy, "the answer in flight").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "2 bytes");
    assert_eq!(response.header("connection"), Some("close"));
    server.stopped().await.expect("serve failed");
}
