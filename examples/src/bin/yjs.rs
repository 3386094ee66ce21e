//! `cargo run -p partykit-examples --bin yjs`: the Yjs example on 127.0.0.1:1999; open
//! <http://127.0.0.1:1999/?room=notes> in two tabs.

use partykit_examples::yjs::{self, Document};
use partykit_runtime::{Server, ServerError};

#[tokio::main]
async fn main() -> Result<(), ServerError> {
    Server::new()
        .party::<Document>()
        .serve_dir(yjs::assets_dir())
        .run()
        .await
}
