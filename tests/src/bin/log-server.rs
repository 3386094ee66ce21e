//! A server whose handlers log, for the tests of what `Server::run` logs
//! (tests/tests/logs.rs).
//!
//! `log-server` serves the party `logs` with `Server::run`, so on `PARTYKIT_HOST` and
//! `PARTYKIT_PORT`, with the logging `PARTYKIT_LOG` and `PARTYKIT_LOG_FORMAT` ask for on
//! stdout. `on_connect` logs `joined` at info; `on_message` logs `a debug line` at debug,
//! then `received` at info, then echoes the message. A server that cannot start prints
//! why on stderr and exits with 1.
//!
//! With `LOG_SERVER_OWN_SUBSCRIBER` set, it installs a subscriber of its own first (text
//! without timestamps), which `Server::run` must keep.

use partykit_runtime::{Connection, Message, Room, Server, party};

#[party(name = "logs")]
struct Logged {
    room: Room,
}

#[party]
impl Logged {
    fn new(room: Room) -> Self {
        Logged { room }
    }

    fn on_connect(&mut self, connection: &Connection) {
        tracing::info!(connections = self.room.connection_count(), "joined");
        let _ = connection.send("welcome");
    }

    fn on_message(&mut self, message: Message, sender: &Connection) {
        tracing::debug!("a debug line");
        tracing::info!(bytes = message.len(), "received");
        let _ = sender.send(message);
    }
}

#[tokio::main]
async fn main() {
    if std::env::var_os("LOG_SERVER_OWN_SUBSCRIBER").is_some() {
        tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .init();
    }
    let server = Server::new().in_memory().no_env_file().party::<Logged>();
    if let Err(error) = server.run().await {
        eprintln!("log-server: {error}");
        std::process::exit(1);
    }
}
