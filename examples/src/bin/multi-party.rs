//! `cargo run -p partykit-examples --bin multi-party`: the multi-party example on
//! 127.0.0.1:1999: chat rooms at `/parties/chat/<room>`, their user counts at
//! `/parties/lobby/global`.

use partykit_examples::multi_party::{Chat, LobbyParty};
use partykit_runtime::{Server, ServerError};

#[tokio::main]
async fn main() -> Result<(), ServerError> {
    // Counts of connected users mean nothing after a restart: keep them in memory.
    Server::new()
        .in_memory()
        .party::<Chat>()
        .party::<LobbyParty>()
        .run()
        .await
}
