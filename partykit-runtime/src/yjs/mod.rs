//! Yjs rooms: collaborative documents for the npm `y-partykit` provider (feature `yjs`).
//!
//! A [`YDoc`] is one room's shared Yjs document, served with the y-websocket protocol as
//! y-partykit's `onConnect` serves it. Keep one in your party and forward three handlers
//! to it:
//!
//! ```
//! use partykit_runtime::yjs::{Persistence, YDoc, YjsOptions};
//! use partykit_runtime::{party, Connection, Message, Result, Room};
//!
//! #[party]
//! struct Document {
//!     doc: YDoc,
//! }
//!
//! #[party]
//! impl Document {
//!     fn new(room: Room) -> Self {
//!         let options = YjsOptions::new().persist(Persistence::Snapshot);
//!         Document { doc: YDoc::new(&room, options) }
//!     }
//!
//!     async fn on_connect(&mut self, conn: &Connection) -> Result<()> {
//!         self.doc.on_connect(conn).await
//!     }
//!
//!     async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
//!         self.doc.on_message(message, sender).await
//!     }
//!
//!     async fn on_close(&mut self, conn: &Connection) -> Result<()> {
//!         self.doc.on_close(conn).await
//!     }
//! }
//! ```
//!
//! In the browser, the unchanged provider connects to it:
//!
//! ```js
//! import * as Y from "yjs";
//! import YPartyKitProvider from "y-partykit/provider";
//! const doc = new Y.Doc();
//! const provider = new YPartyKitProvider("127.0.0.1:1999", "my-document", doc);
//! doc.getText("content").insert(0, "hello");
//! ```
//!
//! # What the room does
//!
//! As y-partykit's server, message for message:
//!
//! - On connect it sends SyncStep1 (its state vector) and, if any client has one, every
//!   awareness state.
//! - It answers SyncStep1 with SyncStep2, and applies SyncStep2 and Update messages
//!   (unless the connection is read-only: [`YjsOptions::read_only`],
//!   [`YDoc::on_connect_read_only`]).
//! - Every document update and every awareness change is broadcast to **all**
//!   connections of the room, the sender included, through [`Room::broadcast`]: the frame
//!   is encoded once.
//! - When a connection closes, the awareness states it spoke for are removed and the
//!   removal is broadcast. States not renewed for 30 s are removed too.
//! - Messages over 1,000,000 bytes arrive chunked with y-partykit's `y-pk-batch#`
//!   markers and are reassembled (at most 16 MiB; [`YjsOptions::max_batch_size`]). The
//!   provider cannot reassemble, so the server sends large messages whole, as
//!   y-partykit's does, unless [`YjsOptions::chunk_outbound`] is set for clients that
//!   can.
//! - Other text messages are ignored. To speak your own text protocol beside Yjs, take
//!   them first with [`custom_text`].
//! - Auth and query-awareness messages are ignored, as y-partykit ignores them.
//!
//! Frames from a connection that was not passed to `on_connect` (for instance after the
//! room's value was rebuilt) adopt it: it gets SyncStep1 and then syncs as usual.
//!
//! # Persistence
//!
//! With [`YjsOptions::persist`] the document lives in the room's
//! [storage](crate::storage), in y-partykit's key layout (values split at 128 KiB, so
//! [`Limits::max_value_size`](crate::Limits::max_value_size) must stay at least that):
//!
//! - [`Persistence::Snapshot`]: every update is stored as it arrives; when the last
//!   connection closes, they are merged into one snapshot.
//! - [`Persistence::History`]: updates are kept as history, and merged when the last
//!   connection closes only if there are more than `max_updates` of them or they exceed
//!   `max_bytes` (at most 10,000,000).
//!
//! Updates are stored before they are broadcast, so the runtime's output gate holds the
//! broadcast until the write is durable: an edit any client has seen survives a crash.
//! The document is loaded on the room's first connection (or by [`YDoc::load`]); a
//! [`YjsOptions::load`] function seeds it from elsewhere first. Garbage collection is
//! off when persisting, as in y-partykit ([`YjsOptions::gc`]).
//!
//! A [`Callback`] runs, debounced, after changes ([`YjsOptions::callback`]), for
//! instance to save the document elsewhere. (y-partykit's `callback.url` form is not
//! built in: POST from the handler with the HTTP client of your choice.)

mod awareness;
mod batch;
mod callback;
mod persistence;
mod protocol;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use yrs::updates::decoder::Decode;
use yrs::{ClientID, OffsetKind, ReadTxn, StateVector, Transact, Update};

pub use callback::Callback;
/// The `yrs` crate (Yjs in Rust) this module is built on, to read and change documents.
pub use yrs;

use awareness::Presence;
use batch::{Reassembly, Step};
use persistence::Store;
use protocol::Inbound;

use crate::{Connection, Error, Message, Result, Room};

/// How a document is kept in the room's storage; see the [module docs](self#persistence).
///
/// ```
/// use partykit_runtime::yjs::Persistence;
///
/// let snapshot = Persistence::Snapshot;
/// let history = Persistence::History { max_updates: Some(500), max_bytes: None };
/// assert_ne!(snapshot, history);
/// assert_eq!(Persistence::history(), Persistence::History { max_updates: None, max_bytes: None });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Updates are stored while clients are connected and merged into one snapshot when
    /// the last one leaves (y-partykit's `{ mode: "snapshot" }`, its recommendation).
    Snapshot,
    /// The edit history is kept (y-partykit's `{ mode: "history" }`). When the last
    /// client leaves, it is merged into one update only if there are more than
    /// `max_updates` updates (default: no limit), or if together they exceed `max_bytes`
    /// (default and largest: [`MAX_HISTORY_BYTES`](Self::MAX_HISTORY_BYTES)).
    History {
        /// The most updates kept before merging; `None` (or 0) for no limit.
        max_updates: Option<u64>,
        /// The most bytes of updates kept before merging; `None` (or 0) for the
        /// largest, 10,000,000.
        max_bytes: Option<u64>,
    },
}

impl Persistence {
    /// The largest `max_bytes` of [`History`](Self::History): 10,000,000 bytes.
    pub const MAX_HISTORY_BYTES: u64 = 10_000_000;

    /// History mode with the default limits.
    pub fn history() -> Self {
        Self::History {
            max_updates: None,
            max_bytes: None,
        }
    }

    /// `(max_updates, max_bytes)` for compaction when the last client leaves.
    fn limits(self) -> (u64, u64) {
        match self {
            Self::Snapshot => (0, 0),
            Self::History {
                max_updates,
                max_bytes,
            } => {
                let max_updates = max_updates.filter(|&max| max > 0).unwrap_or(u64::MAX);
                let max_bytes = match max_bytes.filter(|&max| max > 0) {
                    None => Self::MAX_HISTORY_BYTES,
                    Some(max) if max > Self::MAX_HISTORY_BYTES => {
                        tracing::warn!(
                            max_bytes = max,
                            "yjs: max_bytes exceeds the largest allowed value 10,000,000; using that"
                        );
                        Self::MAX_HISTORY_BYTES
                    }
                    Some(max) => max,
                };
                (max_updates, max_bytes)
            }
        }
    }
}

type LoadFn = Box<dyn Fn() -> BoxFuture<'static, Result<Option<yrs::Doc>>> + Send + Sync + 'static>;

/// How a [`YDoc`] behaves: y-partykit's `onConnect` options, as a builder.
///
/// ```
/// use std::time::Duration;
/// use partykit_runtime::yjs::{yrs, Callback, Persistence, YjsOptions};
/// use yrs::{Text, Transact};
///
/// let options = YjsOptions::new()
///     .persist(Persistence::Snapshot)
///     // Seeds the document (runs whenever the room loads it; the fixed client id
///     // makes seeding twice a no-op).
///     .load(|| async {
///         let doc = yrs::Doc::with_client_id(1);
///         doc.get_or_insert_text("content").insert(&mut doc.transact_mut(), 0, "Hello!");
///         Ok(Some(doc))
///     })
///     .callback(Callback::new(|_doc| async { Ok(()) }).wait(Duration::from_secs(1)));
/// # drop(options);
/// ```
pub struct YjsOptions {
    persist: Option<Persistence>,
    gc: Option<bool>,
    read_only: bool,
    load: Option<LoadFn>,
    callback: Option<Callback>,
    chunk_outbound: bool,
    max_batch_size: usize,
}

impl YjsOptions {
    /// The default batch limit: 16 MiB.
    pub const DEFAULT_MAX_BATCH_SIZE: usize = 16 * 1024 * 1024;

    /// No persistence, garbage collection on, writable, no load, no callback.
    pub fn new() -> Self {
        Self {
            persist: None,
            gc: None,
            read_only: false,
            load: None,
            callback: None,
            chunk_outbound: false,
            max_batch_size: Self::DEFAULT_MAX_BATCH_SIZE,
        }
    }

    /// Keeps the document in the room's storage (y-partykit's `persist`).
    #[must_use]
    pub fn persist(mut self, persistence: Persistence) -> Self {
        self.persist = Some(persistence);
        self
    }

    /// Whether deleted content is garbage-collected. Default: on without persistence,
    /// off with it; asking for both fails when the document loads, as in y-partykit.
    #[must_use]
    pub fn gc(mut self, gc: bool) -> Self {
        self.gc = Some(gc);
        self
    }

    /// Ignores document changes from every connection (they still sync and share
    /// awareness). For some connections only, use [`YDoc::on_connect_read_only`].
    #[must_use]
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Seeds the document when the room loads it, before persisted updates are applied
    /// (y-partykit's `load`). `None` leaves it empty. What it returns is not stored: it
    /// runs again whenever the room loads the document (after the room was dropped, or a
    /// restart). With persistence, build the seed with a fixed client id
    /// (`yrs::Doc::with_client_id(1)`) so that seeding again adds nothing.
    #[must_use]
    pub fn load<F, Fut>(mut self, load: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<yrs::Doc>>> + Send + 'static,
    {
        self.load = Some(Box::new(move || Box::pin(load())));
        self
    }

    /// Runs `callback`, debounced, after the document changed (y-partykit's
    /// `callback.handler`).
    #[must_use]
    pub fn callback(mut self, callback: Callback) -> Self {
        self.callback = Some(callback);
        self
    }

    /// Also chunks the server's own messages over 1,000,000 bytes with `y-pk-batch#`
    /// markers. Off by default: y-partykit's provider does not reassemble (it ignores
    /// text frames), so it needs large messages whole, as y-partykit's server sends them.
    #[must_use]
    pub fn chunk_outbound(mut self, chunk: bool) -> Self {
        self.chunk_outbound = chunk;
        self
    }

    /// The largest message a client may send in `y-pk-batch` chunks. Default 16 MiB.
    #[must_use]
    pub fn max_batch_size(mut self, bytes: usize) -> Self {
        self.max_batch_size = bytes;
        self
    }
}

impl Default for YjsOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for YjsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YjsOptions")
            .field("persist", &self.persist)
            .field("gc", &self.gc)
            .field("read_only", &self.read_only)
            .field("load", &self.load.as_ref().map(|_| "Fn"))
            .field("callback", &self.callback)
            .field("chunk_outbound", &self.chunk_outbound)
            .field("max_batch_size", &self.max_batch_size)
            .finish()
    }
}

/// The text of `message` if it is a text frame of your own: not a `y-pk-batch` marker.
/// [`YDoc::on_message`] ignores such frames; take them first to handle them.
///
/// ```
/// use partykit_runtime::yjs::{custom_text, YDoc};
/// use partykit_runtime::{Connection, Message, Result};
///
/// async fn on_message(doc: &mut YDoc, message: Message, sender: &Connection) -> Result<()> {
///     if let Some(text) = custom_text(&message) {
///         sender.send(format!("you said {text}"))?;
///         return Ok(());
///     }
///     doc.on_message(message, sender).await
/// }
/// assert_eq!(custom_text(&Message::from("ping")), Some("ping"));
/// assert_eq!(custom_text(&Message::from(r#"y-pk-batch#{"type":"end"}"#)), None);
/// assert_eq!(custom_text(&Message::from(vec![0u8, 1])), None);
/// ```
pub fn custom_text(message: &Message) -> Option<&str> {
    message.as_text().filter(|text| !batch::is_marker(text))
}

/// A connection that speaks Yjs with the room.
struct Peer {
    connection: Connection,
    read_only: bool,
    /// The awareness client ids this connection added.
    clients: HashSet<ClientID>,
    batch: Reassembly,
}

/// One room's shared Yjs document and its connections; see the [module docs](self).
pub struct YDoc {
    room: Room,
    doc: yrs::Doc,
    presence: Presence,
    peers: Vec<Peer>,
    /// Updates the document emitted that are not yet stored and broadcast.
    emitted: Arc<Mutex<Vec<Vec<u8>>>>,
    loaded: bool,
    store: Option<Store>,
    persist: Option<Persistence>,
    gc: bool,
    conflicting_gc: bool,
    read_only: bool,
    load: Option<LoadFn>,
    callback: Option<callback::Debouncer>,
    chunk_outbound: bool,
    max_batch_size: usize,
}

impl YDoc {
    /// The document of `room`. Nothing is loaded yet: that happens on the first
    /// connection, or with [`load`](Self::load).
    pub fn new(room: &Room, options: YjsOptions) -> Self {
        let gc = options.gc.unwrap_or(options.persist.is_none());
        let doc = yrs::Doc::with_options(yrs::Options {
            skip_gc: !gc,
            // Yjs counts text in UTF-16 code units: so do edits made on the server.
            offset_kind: OffsetKind::Utf16,
            // A 32-bit client id, as Yjs 13 generates them.
            client_id: ClientID::new(ClientID::random().get() & u64::from(u32::MAX)),
            ..yrs::Options::default()
        });
        Self {
            room: room.clone(),
            presence: Presence::new(doc.clone()),
            peers: Vec::new(),
            emitted: Arc::default(),
            loaded: false,
            store: options
                .persist
                .map(|_| Store::new(room.storage().clone(), room.id())),
            persist: options.persist,
            gc,
            conflicting_gc: options.gc == Some(true) && options.persist.is_some(),
            read_only: options.read_only,
            load: options.load,
            callback: options.callback.map(|callback| {
                callback::Debouncer::new(callback, doc.clone(), room.storage().tasks().clone())
            }),
            chunk_outbound: options.chunk_outbound,
            max_batch_size: options.max_batch_size,
            doc,
        }
    }

    /// The Yjs document. Read it with a transaction (`doc.transact()`); change it with
    /// [`edit`](Self::edit) so that the change reaches clients and storage. Outside the
    /// connection handlers (in `on_request`, say), call [`load`](Self::load) first.
    pub fn doc(&self) -> &yrs::Doc {
        &self.doc
    }

    /// The room's awareness states (presence), as clients sent them.
    pub fn awareness(&self) -> &yrs::sync::Awareness {
        self.presence.awareness()
    }

    /// How many connections are syncing with the document.
    pub fn connection_count(&self) -> usize {
        self.peers.len()
    }

    /// Loads the document, once: the [`load`](YjsOptions::load) function's document,
    /// then the persisted updates. The connection handlers call it; call it yourself to
    /// read the document before anyone connected.
    pub async fn load(&mut self) -> Result<()> {
        if self.loaded {
            return Ok(());
        }
        if self.conflicting_gc {
            return Err(Error::msg("Cannot use gc and persist at the same time"));
        }
        // Everything is fetched before anything is applied, so that a failure leaves the
        // document untouched for the next try.
        let seed = match &self.load {
            Some(load) => load().await?,
            None => None,
        };
        let persisted = match &self.store {
            Some(store) => store.updates().await?,
            None => Vec::new(),
        };
        {
            let mut txn = self.doc.transact_mut();
            if let Some(seed) = seed {
                let state = seed
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                txn.apply_update(Update::decode_v1(&state)?)?;
            }
            for update in persisted {
                txn.apply_update(Update::decode_v1(&update)?)?;
            }
        }
        // From now on, every change is stored and broadcast.
        let emitted = Arc::clone(&self.emitted);
        self.doc
            .observe_update_v1("partykit", move |_txn, event| {
                lock(&emitted).push(event.update.clone());
            })
            .map_err(Error::new)?;
        self.loaded = true;
        tracing::debug!(gc = self.gc, "yjs document loaded");
        Ok(())
    }

    /// A connection opened: loads the document if needed, then sends SyncStep1 and the
    /// current awareness states. Call it from your party's `on_connect`.
    pub async fn on_connect(&mut self, connection: &Connection) -> Result<()> {
        self.connect(connection, self.read_only).await
    }

    /// As [`on_connect`](Self::on_connect), but the document ignores this connection's
    /// changes (it still receives the document and shares awareness).
    pub async fn on_connect_read_only(&mut self, connection: &Connection) -> Result<()> {
        self.connect(connection, true).await
    }

    /// A message arrived: Yjs sync and awareness messages are handled, chunked messages
    /// reassembled, other text ignored (see [`custom_text`]). Call it from your party's
    /// `on_message`. A malformed message is an error; the connection stays open.
    pub async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        if custom_text(&message).is_some() {
            return Ok(());
        }
        self.load().await?;
        let index = match self.peer(sender) {
            Some(index) => index,
            None => self.adopt(sender)?,
        };
        let max = self.max_batch_size;
        let batch = &mut self.peers[index].batch;
        let step = match message {
            Message::Text(marker) => batch.marker(&marker, max)?,
            Message::Binary(frame) => batch.binary(frame, max)?,
        };
        let Step::Message(frame) = step else {
            return Ok(());
        };
        let handled = self.handle(index, &frame);
        // Whatever changed before a failure is still stored and broadcast.
        let published = self.publish().await;
        handled.and(published)
    }

    /// A connection closed: its awareness states are removed (and that is broadcast);
    /// when it was the last one, persisted updates are compacted. Call it from your
    /// party's `on_close`.
    pub async fn on_close(&mut self, connection: &Connection) -> Result<()> {
        let Some(index) = self.peer(connection) else {
            return Ok(());
        };
        let peer = self.peers.remove(index);
        if let Some(removed) = self.presence.remove(peer.clients)? {
            self.broadcast(protocol::awareness(removed));
        }
        self.publish().await?;
        if self.peers.is_empty()
            && self.loaded
            && let (Some(store), Some(persist)) = (&self.store, self.persist)
        {
            let (max_updates, max_bytes) = persist.limits();
            store.compact(max_updates, max_bytes).await?;
        }
        Ok(())
    }

    /// Changes the document on the server: `change` runs in a transaction, and the
    /// update it makes is stored and broadcast like a client's. Returns what `change`
    /// returned.
    ///
    /// ```
    /// # use partykit_runtime::yjs::YDoc;
    /// use partykit_runtime::yjs::yrs::Text;
    ///
    /// # async fn example(doc: &mut YDoc) -> partykit_runtime::Result<()> {
    /// let content = doc.doc().get_or_insert_text("content");
    /// doc.edit(|txn| content.push(txn, "\n-- edited on the server")).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn edit<R>(
        &mut self,
        change: impl FnOnce(&mut yrs::TransactionMut<'_>) -> R,
    ) -> Result<R> {
        self.load().await?;
        let result = {
            let mut txn = self.doc.transact_mut();
            change(&mut txn)
        };
        self.publish().await?;
        Ok(result)
    }

    /// Stores and broadcasts changes made directly on [`doc`](Self::doc) since the last
    /// handler call. [`edit`](Self::edit) does this for you.
    pub async fn flush(&mut self) -> Result<()> {
        self.publish().await
    }

    async fn connect(&mut self, connection: &Connection, read_only: bool) -> Result<()> {
        self.load().await?;
        match self.peer(connection) {
            Some(index) => self.peers[index].read_only = read_only,
            None => self.peers.push(Peer {
                connection: connection.clone(),
                read_only,
                clients: HashSet::new(),
                batch: Reassembly::default(),
            }),
        }
        self.greet(connection)
    }

    /// SyncStep1 and the awareness states, for a connection that joins.
    fn greet(&self, connection: &Connection) -> Result<()> {
        self.send(connection, protocol::sync_step1(&self.doc));
        if let Some(states) = self.presence.states()? {
            self.send(connection, protocol::awareness(states));
        }
        Ok(())
    }

    /// Takes in a connection that was never passed to `on_connect`.
    fn adopt(&mut self, connection: &Connection) -> Result<usize> {
        self.peers.push(Peer {
            connection: connection.clone(),
            read_only: self.read_only,
            clients: HashSet::new(),
            batch: Reassembly::default(),
        });
        self.greet(connection)?;
        Ok(self.peers.len() - 1)
    }

    /// Handles one whole message of peer `index`.
    fn handle(&mut self, index: usize, frame: &[u8]) -> Result<()> {
        match protocol::decode(frame)? {
            Inbound::SyncStep1(state_vector) => {
                let reply = protocol::sync_step2(&self.doc, &state_vector);
                self.send(&self.peers[index].connection, reply);
            }
            Inbound::SyncStep2(update) | Inbound::Update(update) => {
                if !self.peers[index].read_only {
                    let update = Update::decode_v1(&update)?;
                    self.doc.transact_mut().apply_update(update)?;
                }
            }
            Inbound::Awareness(update) => {
                let clients = &mut self.peers[index].clients;
                if let Some(change) = self.presence.apply(update, clients)? {
                    self.broadcast(protocol::awareness(change));
                }
            }
            Inbound::Ignored => {}
        }
        if let Some(outdated) = self.presence.prune()? {
            self.broadcast(protocol::awareness(outdated));
        }
        Ok(())
    }

    /// Stores, then broadcasts, the updates the document emitted. The broadcast follows
    /// the writes, so the output gate holds it until they are durable.
    async fn publish(&mut self) -> Result<()> {
        let updates = std::mem::take(&mut *lock(&self.emitted));
        if updates.is_empty() {
            return Ok(());
        }
        let mut stored = Ok(());
        if let Some(store) = &self.store {
            for update in &updates {
                if let Err(error) = store.store_update(update).await {
                    stored = Err(error);
                    break;
                }
            }
        }
        for update in updates {
            self.broadcast(protocol::update(update));
        }
        if let Some(callback) = &mut self.callback {
            callback.changed();
        }
        stored
    }

    fn peer(&self, connection: &Connection) -> Option<usize> {
        self.peers
            .iter()
            .position(|peer| peer.connection.same_socket(connection))
    }

    fn send(&self, connection: &Connection, frame: Bytes) {
        // A connection that closed meanwhile is about to leave: nothing to do.
        if self.chunk_outbound {
            for message in batch::split(frame) {
                let _ = connection.send(message);
            }
        } else {
            let _ = connection.send(Message::Binary(frame));
        }
    }

    fn broadcast(&self, frame: Bytes) {
        if self.chunk_outbound {
            for message in batch::split(frame) {
                self.room.broadcast(message, &[]);
            }
        } else {
            self.room.broadcast(Message::Binary(frame), &[]);
        }
    }
}

impl fmt::Debug for YDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YDoc")
            .field("room", &self.room)
            .field("loaded", &self.loaded)
            .field("connections", &self.peers.len())
            .field("persist", &self.persist)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A list of byte buffers cannot be left half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
