//! Calls between rooms: `room.context().parties()`.
//!
//! A room reaches any room of any party of the server in-process, without the
//! `on_before_*` hooks, with HTTP-like requests ([`RoomStub::fetch`]) or a WebSocket-like
//! connection ([`RoomStub::socket`]).
//!
//! ```
//! use partykit_runtime::{party, Error, Request, Room};
//!
//! #[party(name = "counter")]
//! struct Counter {
//!     room: Room,
//! }
//!
//! #[party]
//! impl Counter {
//!     fn new(room: Room) -> Self {
//!         Counter { room }
//!     }
//!
//!     async fn on_request(&mut self, _req: Request) -> Result<String, Error> {
//!         // Ask the lobby room of the `stats` party, in-process.
//!         let stats = self.room.context().parties().get("stats").ok_or_else(|| Error::msg("no stats party"))?;
//!         let response = stats.get("lobby").fetch("/visits", Request::post("/", "")?).await?;
//!         let visits: u64 = response.json().await?;
//!         Ok(format!("{visits} visits"))
//!     }
//! }
//! ```
//!
//! LiveRooms run one event at a time, so a room that awaits another cannot take events
//! meanwhile. A call that would make rooms wait for each other in a cycle (A awaits B
//! while B awaits A, directly or through others) fails at once with 508 Loop Detected
//! instead of hanging.

mod response;
mod socket;
mod waits;

pub use response::{MAX_ROOM_RESPONSE, RoomResponse};

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use axum::response::IntoResponse;
use http::StatusCode;
use tokio::sync::oneshot;

pub use socket::StubSocket;
pub(crate) use waits::{WaitGraph, Waiting};

use crate::cluster::chain::Chain;
use crate::cluster::forward::{self, Owner, route};
use crate::cluster::relay;
use crate::room::{Event, LiveRooms};
use crate::storage::RoomKey;
use crate::{Error, Request, Response};

/// Every party of the server, by name.
#[derive(Clone, Default)]
pub struct Parties {
    inner: Arc<Directory>,
    /// The room that holds this handle: its calls are recorded as its waits.
    caller: Option<RoomKey>,
}

/// The server's one directory: every party's live rooms by party name, and the wait-for
/// graph of calls between rooms.
#[derive(Default)]
pub(crate) struct Directory {
    parties: OnceLock<HashMap<&'static str, Arc<LiveRooms>>>,
    waits: Arc<WaitGraph>,
}

impl Directory {
    /// Called once, when the server is built.
    pub(crate) fn fill(&self, parties: HashMap<&'static str, Arc<LiveRooms>>) {
        let _ = self.parties.set(parties);
    }

    /// The server's wait-for graph.
    pub(crate) fn waits(&self) -> &Arc<WaitGraph> {
        &self.waits
    }
}

/// The error of a call that would close `cycle` (which starts and ends at the caller).
pub(crate) fn loop_detected(target: &RoomKey, cycle: &[RoomKey]) -> Error {
    let path: Vec<String> = cycle.iter().map(ToString::to_string).collect();
    Error::with_status(
        StatusCode::LOOP_DETECTED,
        format!(
            "calling {target} would deadlock: rooms would wait for each other in a cycle ({})",
            path.join(" -> ")
        ),
    )
}

impl Parties {
    pub(crate) fn new(directory: Arc<Directory>, caller: Option<RoomKey>) -> Self {
        Self {
            inner: directory,
            caller,
        }
    }

    /// The party named `name`, if the server has it.
    pub fn get(&self, name: &str) -> Option<PartyRooms> {
        let (name, rooms) = self.inner.parties.get()?.get_key_value(name)?;
        Some(PartyRooms {
            name,
            rooms: Arc::clone(rooms),
            parties: self.clone(),
        })
    }

    /// The names of every party, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .inner
            .parties
            .get()
            .map(|parties| parties.keys().copied().collect())
            .unwrap_or_default();
        names.sort_unstable();
        names
    }
}

impl fmt::Debug for Parties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parties")
            .field("names", &self.names())
            .field("caller", &self.caller)
            .finish()
    }
}

/// One party's rooms, as [`Parties::get`] returns it.
#[derive(Clone)]
pub struct PartyRooms {
    name: &'static str,
    rooms: Arc<LiveRooms>,
    parties: Parties,
}

impl PartyRooms {
    /// The party's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A stub for the room `room_id` (raw, as in a URL); the room starts on its first
    /// call.
    pub fn get(&self, room_id: &str) -> RoomStub {
        RoomStub {
            party: self.clone(),
            room: room_id.to_owned(),
        }
    }
}

impl fmt::Debug for PartyRooms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartyRooms")
            .field("name", &self.name)
            .finish()
    }
}

/// A handle to one room of a party, for calls from another room or a hook.
#[derive(Clone)]
pub struct RoomStub {
    party: PartyRooms,
    room: String,
}

impl RoomStub {
    /// Sends `request` to the room's `on_request` at `path` (which must start with `/`,
    /// or be empty for the room itself): the room sees
    /// `/parties/<party>/<room><path>`. The `on_before_request` hook is not run.
    ///
    /// A room that cannot be started now answers as it would over HTTP: 503 when the
    /// server is at [`Limits::max_rooms`](crate::Limits::max_rooms) or shutting down, 414
    /// for an id over [`Limits::max_room_id_length`](crate::Limits::max_room_id_length).
    /// A call that would deadlock fails with an error of status 508.
    ///
    /// The answer's body reads with [`RoomResponse::text`], `json` or `bytes`.
    pub async fn fetch(&self, path: &str, request: Request) -> Result<RoomResponse, Error> {
        self.fetch_response(path, request)
            .await
            .map(RoomResponse::from)
    }

    async fn fetch_response(&self, path: &str, mut request: Request) -> Result<Response, Error> {
        let target = self.target(path)?;
        request.set_uri(
            target
                .parse()
                .map_err(|error| Error::msg(format!("cannot call {target}: {error}")))?,
        );
        if !self.party.rooms.handlers().on_request {
            return Ok(Error::msg("No onRequest handler").into_response());
        }
        let _waiting = self.wait()?;
        if let Some(cluster) = self.party.rooms.cluster() {
            let forwarder = cluster.forwarder();
            let chain = self.chain();
            // The room sees the URL it would see in-process (`http://localhost/...`), not
            // the internal listener's address.
            let mut forwarded = request.clone();
            forwarded
                .headers_mut()
                .entry(http::header::HOST)
                .or_insert(http::HeaderValue::from_static("localhost"));
            let routed = route(&self.party.rooms, &self.room, |peer| {
                let (request, chain) = (forwarded.clone(), &chain);
                async move { forwarder.request(&peer, request, chain).await }
            })
            .await;
            match routed {
                Ok(Owner::Here) => {}
                Ok(Owner::Remote(response)) => return remote_answer(response).await,
                // As an HTTP client would hear it.
                Err(error) => return Ok(error.into_response()),
            }
        }
        let (reply, response) = oneshot::channel();
        let event = Event::Request { request, reply };
        if let Err(refused) = self.party.rooms.send(&self.room, event).await {
            // As an HTTP client would hear it: the room cannot be started now.
            return Ok(refused.into_error().into_response());
        }
        response
            .await
            .map_err(|_| Error::msg("the room stopped before answering"))
    }

    /// Opens a connection to the room, as a WebSocket client would at `path` (which must
    /// start with `/`, or be empty): the room runs `connection_tags` and `on_connect`
    /// before this returns. The `on_before_connect` hook is not run; the connection gets
    /// a generated id.
    pub async fn socket(&self, path: &str) -> Result<StubSocket, Error> {
        let target = self.target(path)?;
        let _waiting = self.wait()?;
        let rooms = &self.party.rooms;
        let socket = match rooms.cluster() {
            None => StubSocket::open(Arc::clone(rooms), &self.room, &target).await?,
            Some(cluster) => {
                let id = crate::connection::new_id();
                let uri = socket::remote_uri(&target, &id)?;
                let (secret, chain) = (cluster.forwarder().secret(), self.chain());
                // The connection's `uri` is the one an in-process stub connection gets.
                let mut headers = http::HeaderMap::new();
                headers.insert(
                    http::header::HOST,
                    http::HeaderValue::from_static(socket::STUB_HOST),
                );
                let routed = route(rooms, &self.room, |peer| {
                    let (uri, headers, chain) = (&uri, &headers, &chain);
                    async move { relay::open(&peer, uri, headers, secret, chain).await }
                })
                .await?;
                match routed {
                    Owner::Here => StubSocket::open(Arc::clone(rooms), &self.room, &target).await?,
                    Owner::Remote(Ok(upstream)) => StubSocket::remote(id, upstream, rooms.tasks()),
                    Owner::Remote(Err(refusal)) => return Err(socket::refused(refusal).await),
                }
            }
        };
        // Awaiting a message from the room is a wait on it too.
        let stub = self.clone();
        Ok(socket.with_waits(move || stub.wait()))
    }

    fn target(&self, path: &str) -> Result<String, Error> {
        if !path.is_empty() && !path.starts_with('/') {
            return Err(Error::msg("Path must start with /"));
        }
        Ok(format!("/parties/{}/{}{path}", self.party.name, self.room))
    }

    /// The rooms that wait on a call from this stub's caller: the caller and whoever
    /// waits for it.
    fn chain(&self) -> Chain {
        Chain::of(
            self.party.parties.caller.as_ref(),
            &self.party.parties.inner.waits,
        )
    }

    fn wait(&self) -> Result<Option<waits::Waiting>, Error> {
        let Some(caller) = &self.party.parties.caller else {
            return Ok(None);
        };
        let target = RoomKey::new(self.party.name, self.room.as_str());
        self.party
            .parties
            .inner
            .waits
            .wait(caller, &target)
            .map(Some)
            .map_err(|cycle| loop_detected(&target, &cycle))
    }
}

impl fmt::Debug for RoomStub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomStub")
            .field("party", &self.party.name)
            .field("room", &self.room)
            .finish()
    }
}

/// The owner's answer to a forwarded call; a cycle the owner found with the call's wait
/// chain is the caller's error, as its own check would have made it.
async fn remote_answer(response: Response) -> Result<Response, Error> {
    if response.status() != StatusCode::LOOP_DETECTED
        || !response.headers().contains_key(forward::LOOP_HEADER)
    {
        return Ok(response);
    }
    let body = http_body_util::Limited::new(response.into_body(), 64 * 1024);
    let message = match http_body_util::BodyExt::collect(body).await {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        Err(_) => "a call between rooms would deadlock".to_owned(),
    };
    Err(Error::with_status(StatusCode::LOOP_DETECTED, message))
}

/// What a room (or a hook) can reach beyond itself: PartyKit's `room.context`.
#[derive(Clone, Debug, Default)]
pub struct Context {
    parties: Parties,
}

impl Context {
    pub(crate) fn new(parties: Parties) -> Self {
        Self { parties }
    }

    /// Every party of the server.
    pub fn parties(&self) -> &Parties {
        &self.parties
    }
}
