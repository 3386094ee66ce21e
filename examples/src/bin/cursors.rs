//! `cargo run -p partykit-examples --bin cursors`: the cursors example on
//! 127.0.0.1:1999; open <http://127.0.0.1:1999/> in two browser windows.

use partykit_examples::cursors::{self, Cursors};
use partykit_runtime::{Server, ServerError};

#[tokio::main]
async fn main() -> Result<(), ServerError> {
    Server::new()
        .in_memory()
        .party::<Cursors>()
        .serve_dir(cursors::assets_dir())
        .run()
        .await
}
