//! `cargo run -p partykit-examples --bin counter`: the counter example on 127.0.0.1:1999.

use partykit_examples::{counter::Counter, init_tracing};
use partykit_runtime::{Server, ServerError};

#[tokio::main]
async fn main() -> Result<(), ServerError> {
    init_tracing();
    Server::new().party::<Counter>().run().await
}
