//! WebSocket protocol errors (RFC 6455 section 7.1.7): a peer that breaks the protocol
//! gets a close frame with the right code before the socket is dropped, and the room's
//! `on_error` hears of it. The client is raw TCP: it does the upgrade by hand so that it
//! can send frames no WebSocket library would.

use partykit_runtime::{Connection, Error, Party, Result, Room};
use partykit_tests::{Probe, TestServer, init_tracing, record, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Main {
    room: Room,
}

impl Party for Main {
    fn new(room: Room) -> Self {
        Main { room }
    }

    async fn on_error(&mut self, connection: &Connection, _error: Error) -> Result<()> {
        record(self.room.env(), format!("error {}", connection.id()));
        Ok(())
    }

    async fn on_close(&mut self, connection: &Connection) -> Result<()> {
        record(self.room.env(), format!("close {}", connection.id()));
        Ok(())
    }
}

/// A WebSocket over a raw TCP stream, after a hand-made upgrade.
struct RawSocket {
    stream: TcpStream,
    /// Bytes read past the end of what has been parsed.
    buffer: Vec<u8>,
}

/// One frame as the server sent it.
#[derive(Debug)]
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
}

impl RawSocket {
    async fn connect(server: &TestServer, path: &str) -> Self {
        let mut stream = within("connecting", TcpStream::connect(server.addr()))
            .await
            .expect("cannot connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut socket = Self {
            stream,
            buffer: Vec::new(),
        };
        let head = within("the upgrade response", socket.read_head()).await;
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "expected 101 Switching Protocols, got {head:?}"
        );
        // RFC 6455's sample key and its accept value.
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "bad accept header in {head:?}"
        );
        socket
    }

    async fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                self.buffer.drain(..end + 4);
                return head;
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let read = self.stream.read(&mut chunk).await.expect("read failed");
        assert!(read > 0, "the server closed the connection early");
        self.buffer.extend_from_slice(&chunk[..read]);
    }

    async fn need(&mut self, len: usize) {
        while self.buffer.len() < len {
            self.fill().await;
        }
    }

    /// Sends one frame: `first` is the FIN/RSV/opcode byte; `mask` masks the payload.
    async fn send(&mut self, first: u8, payload: &[u8], mask: bool) {
        assert!(payload.len() < 126, "small frames only");
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![first, payload.len() as u8 | if mask { 0x80 } else { 0 }];
        if mask {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.expect("write failed");
    }

    /// The next frame from the server (which never masks).
    async fn recv(&mut self) -> ServerFrame {
        within("a frame from the server", async {
            self.need(2).await;
            let opcode = self.buffer[0] & 0x0f;
            assert_eq!(self.buffer[1] & 0x80, 0, "the server masked a frame");
            let (len, header) = match self.buffer[1] & 0x7f {
                126 => {
                    self.need(4).await;
                    (
                        u16::from_be_bytes([self.buffer[2], self.buffer[3]]) as usize,
                        4,
                    )
                }
                127 => panic!("unexpectedly large frame"),
                len => (len as usize, 2),
            };
            self.need(header + len).await;
            let payload = self.buffer[header..header + len].to_vec();
            self.buffer.drain(..header + len);
            ServerFrame { opcode, payload }
        })
        .await
    }

    /// Reads frames until a close frame; returns its code and reason.
    async fn closed(&mut self) -> (u16, String) {
        loop {
            let frame = self.recv().await;
            if frame.opcode == 0x8 {
                assert!(frame.payload.len() >= 2, "a close frame without a code");
                let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
                let reason = String::from_utf8(frame.payload[2..].to_vec()).expect("utf-8");
                return (code, reason);
            }
        }
    }

    /// After the close frame, the server ends the TCP connection.
    async fn ends(&mut self) {
        within("the server to end the connection", async {
            let mut chunk = [0u8; 1024];
            // Reset or end of stream both end it.
            while let Ok(1..) = self.stream.read(&mut chunk).await {}
        })
        .await;
    }
}

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;

async fn start(probe: &Probe) -> TestServer {
    init_tracing();
    TestServer::start(probe.server().party::<Main>()).await
}

/// Sends `first`/`payload` on a fresh socket and checks the close code that comes back,
/// and that the room heard of the failure.
async fn violation_closes_with(first: u8, payload: &[u8], mask: bool, code: u16, name: &str) {
    let probe = Probe::new();
    let server = start(&probe).await;
    let mut socket = RawSocket::connect(&server, &format!("/parties/main/r?_pk={name}")).await;
    socket.send(first, payload, mask).await;
    let (got, reason) = socket.closed().await;
    assert_eq!(got, code, "close code for {name} (reason {reason:?})");
    assert!(
        !reason.is_empty(),
        "the close frame for {name} gives no reason"
    );
    socket.ends().await;
    let events = probe
        .wait_until(&format!("on_error and on_close for {name}"), |events| {
            events.contains(&format!("close {name}"))
        })
        .await;
    assert_eq!(
        events,
        [format!("error {name}"), format!("close {name}")],
        "on_error, then on_close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    violation_closes_with(FIN | TEXT, b"ok \xc3\x28 no", true, 1007, "utf8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_closes_with_1002() {
    violation_closes_with(FIN | TEXT, b"hello", false, 1002, "unmasked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_opcode_closes_with_1002() {
    // 0x3 is a reserved data opcode, 0xb a reserved control opcode.
    violation_closes_with(FIN | 0x3, b"x", true, 1002, "reserved-data").await;
    violation_closes_with(FIN | 0xb, b"", true, 1002, "reserved-control").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsv_bits_without_an_extension_close_with_1002() {
    violation_closes_with(FIN | 0x40 | TEXT, b"hello", true, 1002, "rsv1").await;
    violation_closes_with(FIN | 0x10 | TEXT, b"hello", true, 1002, "rsv3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_control_frame_closes_with_1002() {
    // A ping without FIN.
    violation_closes_with(0x9, b"ping", true, 1002, "fragmented-ping").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_without_a_start_closes_with_1002() {
    violation_closes_with(FIN, b"tail", true, 1002, "continuation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_byte_close_payload_closes_with_1002() {
    violation_closes_with(FIN | 0x8, b"\x03", true, 1002, "close-payload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_frames_still_work_on_the_raw_client() {
    // The raw client itself speaks the protocol: a clean close is answered with 1000.
    let probe = Probe::new();
    let server = start(&probe).await;
    let mut socket = RawSocket::connect(&server, "/parties/main/r?_pk=fine").await;
    socket.send(FIN | 0x8, b"\x03\xe8bye", true).await;
    let (code, _) = socket.closed().await;
    assert_eq!(code, 1000);
    socket.ends().await;
    probe.wait_for("close fine", 1).await;
    assert_eq!(probe.count("error fine"), 0);
}
