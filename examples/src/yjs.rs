//! A collaborative text document (Yjs) for the npm `y-partykit` provider, kept in the
//! room's storage: it survives restarts.
//!
//! - WebSocket: `ws://127.0.0.1:1999/parties/main/<room>` speaks the y-websocket
//!   protocol; connect with `new YPartyKitProvider("127.0.0.1:1999", "<room>", doc)`.
//!   The text is the document's `content` (`doc.getText("content")`).
//! - `http://127.0.0.1:1999/?room=<room>` serves `examples/yjs/index.html`, a page that
//!   edits the text in a textarea (open it in two tabs). It loads `yjs` and
//!   `y-partykit` from the esm.sh CDN.
//! - `GET http://127.0.0.1:1999/parties/main/<room>` answers the text.
//!
//! The Yjs room itself is the struct, `new` and the three forwarding handlers; the
//! other two handlers only serve the page and the text.

use partykit_runtime::yjs::yrs::{GetString, Transact};
use partykit_runtime::yjs::{Persistence, YDoc, YjsOptions};
use partykit_runtime::{Connection, IntoResponse, Message, Request, Response, Result, Room, party};

/// The name of the shared text in the document.
pub const TEXT: &str = "content";

/// The browser page.
const PAGE: &str = include_str!("../yjs/index.html");

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

    // Not needed for Yjs: the text over HTTP...
    async fn on_request(&mut self) -> Result<String> {
        self.doc.load().await?;
        let doc = self.doc.doc();
        Ok(doc.get_or_insert_text(TEXT).get_string(&doc.transact()))
    }

    // ...and the page that edits it.
    fn on_fetch(request: Request) -> Option<Response> {
        let html = [("content-type", "text/html; charset=utf-8")];
        (request.path() == "/").then(|| (html, PAGE).into_response())
    }
}
