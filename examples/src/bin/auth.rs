//! `cargo run -p partykit-examples --bin auth`: the auth example on 127.0.0.1:1999, with
//! the demo tokens `alice-token` and `bob-token` unless `AUTH_TOKENS` is set.

use partykit_examples::auth::Auth;
use partykit_runtime::{Server, ServerError};

#[tokio::main]
async fn main() -> Result<(), ServerError> {
    Server::new().in_memory().party::<Auth>().run().await
}
