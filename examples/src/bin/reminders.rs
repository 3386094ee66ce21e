//! `cargo run -p partykit-examples --bin reminders`: the reminders example on
//! 127.0.0.1:1999, storing into `.partykit/state.sqlite3`.

use partykit_examples::reminders::Reminders;
use partykit_runtime::{Server, ServerError};

#[tokio::main]
async fn main() -> Result<(), ServerError> {
    Server::new().party::<Reminders>().run().await
}
