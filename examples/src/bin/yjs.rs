//! `cargo run -p partykit-examples --bin yjs`: the Yjs example on 127.0.0.1:1999.

use partykit_examples::{init_tracing, yjs::Document};
use partykit_runtime::{Server, ServerError};

#[tokio::main]
async fn main() -> Result<(), ServerError> {
    init_tracing();
    Server::new().party::<Document>().run().await
}
