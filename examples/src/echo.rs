//! Echo: every message goes back to its sender, as it came (text stays text, binary stays
//! binary). It is the server the Autobahn|Testsuite fuzzing client runs against
//! (`docs/PROTOCOL.md`), so its limits allow the suite's largest messages.
//!
//! - WebSocket: `ws://127.0.0.1:1999/parties/main/<room>` (any room; `/party/<room>`
//!   too) — every message comes back.

use partykit_runtime::{Connection, Limits, Message, Server, party};

/// The largest message the echo server takes: Autobahn's section 9 sends 16 MiB.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The echo party (`main`).
#[party]
#[derive(Debug)]
pub struct Echo;

#[party]
impl Echo {
    fn new() -> Self {
        Echo
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) {
        // A closed sender has nobody to echo to.
        let _ = sender.send(message);
    }
}

/// The echo server: the [`Echo`] party, storage in memory, limits for 16 MiB messages
/// (and room for a few of them queued per connection).
pub fn server() -> Server {
    Server::new()
        .in_memory()
        .limits(Limits {
            max_message_size: MAX_MESSAGE,
            max_outbound_buffer: 4 * MAX_MESSAGE,
            ..Limits::default()
        })
        .party::<Echo>()
}
