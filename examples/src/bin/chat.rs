//! `cargo run -p partykit-examples --bin chat`: the chat example on 127.0.0.1:1999.

use partykit_examples::chat::Chat;
use partykit_runtime::{Server, ServerError};

#[tokio::main]
async fn main() -> Result<(), ServerError> {
    Server::new().party::<Chat>().run().await
}
