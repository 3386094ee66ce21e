//! `cargo run -p partykit-examples --features legacy --bin legacy`: the legacy (object-style) example on
//! 127.0.0.1:1999.

use partykit_examples::legacy::Legacy;
use partykit_runtime::{Server, ServerError};

#[tokio::main]
async fn main() -> Result<(), ServerError> {
    Server::new().party::<Legacy>().run().await
}
