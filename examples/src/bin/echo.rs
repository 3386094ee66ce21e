//! `cargo run -p partykit-examples --bin echo`: the echo example on 127.0.0.1:1999.

use partykit_examples::echo;
use partykit_runtime::ServerError;

#[tokio::main]
async fn main() -> Result<(), ServerError> {
    echo::server().run().await
}
