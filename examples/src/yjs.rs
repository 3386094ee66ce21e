//! A collaborative text document (Yjs) for the npm `y-partykit` provider, kept in the
//! room's storage: it survives restarts.
//!
//! - WebSocket: `ws://127.0.0.1:1999/parties/main/<room>` speaks the y-websocket
//!   protocol; connect with `new YPartyKitProvider("127.0.0.1:1999", "<room>", doc)`.
//!   The text is the document's `content` (`doc.getText("content")`).
//! - `http://127.0.0.1:1999/?room=<room>` serves `examples/yjs/index.html`, a page that
//!   edits the text in a textarea (open it in two tabs). It imports `yjs` and
//!   `y-partykit`'s provider from `examples/yjs/vendor/` (ES modules built from the npm
//!   packages, with their licences): no CDN, no network.
//! - `GET http://127.0.0.1:1999/parties/main/<room>` answers the text.
//!
//! The Yjs room itself is the struct, `new` and the three forwarding handlers; the
//! fourth only serves the text. The binary serves the page with
//! `Server::serve_dir(yjs::assets_dir())`.

use std::path::PathBuf;

use partykit_runtime::yjs::yrs::{GetString, Transact};
use partykit_runtime::yjs::{Persistence, YDoc, YjsOptions};
use partykit_runtime::{Connection, Message, Result, Room, party};

/// The name of the shared text in the document.
pub const TEXT: &str = "content";

/// The directory of the page and its vendored modules: `examples/yjs`, wherever the
/// binary is started from.
pub fn assets_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/yjs"))
}

/// The collaborative document party (`main`).
#[party]
#[derive(Debug)]
pub struct Document {
    doc: YDoc,
}

#[party]
impl Document {
    fn new(room: Room) -> Self {
        let doc = YDoc::new(&room, YjsOptions::new().persist(Persistence::Snapshot));
        Document { doc }
    }

    async fn on_connect(&mut self, conn: &Connection) -> Result<()> {
        self.doc.on_connect(conn).await
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        self.doc.on_message(message, sender).await
    }

    async fn on_close(&mut self, conn: &Connection) -> Result<()> {
        self.doc.on_close(conn).await
    }

    // Not needed for Yjs: the text over HTTP.
    async fn on_request(&mut self) -> Result<String> {
        self.doc.load().await?;
        let doc = self.doc.doc();
        Ok(doc.get_or_insert_text(TEXT).get_string(&doc.transact()))
    }
}
