//! A server process for tests that need a real process (SIGKILL, restarts).
//!
//! `party-server <example> <database>`: serves the named example party
//! (`chat`, `counter`, `reminders`, `yjs`) on `127.0.0.1:0` with its storage in the
//! SQLite file `<database>` (or `echo`, the echo example's server as it is, storage in
//! memory: `<database>` is ignored), prints `listening on <addr>` on stdout once it accepts
//! connections, and runs until SIGINT or SIGTERM (or SIGKILL).

use std::io::Write;

use partykit_examples::{chat::Chat, counter::Counter, echo, reminders::Reminders, yjs::Document};
use partykit_runtime::{Server, shutdown_signal};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(example), Some(database)) = (args.next(), args.next()) else {
        eprintln!("usage: party-server <chat|counter|echo|reminders|yjs> <database>");
        std::process::exit(2);
    };
    let server = Server::new().persist(database);
    let server = match example.as_str() {
        "echo" => echo::server(),
        "chat" => server.party::<Chat>(),
        "counter" => server.party::<Counter>(),
        "reminders" => server.party::<Reminders>(),
        "yjs" => server.party::<Document>(),
        other => {
            eprintln!("unknown example {other:?}");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    println!("listening on {addr}");
    std::io::stdout().flush().expect("flush stdout");
    if let Err(error) = server.serve(listener, shutdown_signal()).await {
        eprintln!("{error}");
        std::process::exit(1);
    }
}
