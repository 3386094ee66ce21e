//! `cargo run -p partykit-examples --bin counter`: the counter example on 127.0.0.1:1999.

use partykit_examples::counter::Counter;
use partykit_runtime::{Server, ServerError};

#[tokio::main]
async fn main() -> Result<(), ServerError> {
    Server::new().party::<Counter>().run().await
}
