//! What the static hooks see: they run before any room is touched.

use axum::extract::ws::{self, WebSocket};
use tokio::sync::oneshot;

use crate::parties::Parties;
use crate::{Env, Request, Response};

/// What `on_before_connect` and `on_before_request` receive beside the request: the
/// target room's id and the project's variables. No storage, no connections: these hooks
/// run in front of the room, like PartyKit's edge worker.
#[derive(Clone, Debug)]
pub struct Lobby {
    pub(crate) id: String,
    pub(crate) party: &'static str,
    pub(crate) env: Env,
    pub(crate) parties: Parties,
}

impl Lobby {
    /// The target room's id (raw, still percent-encoded).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The target party's name.
    pub fn party(&self) -> &str {
        self.party
    }

    /// The project's variables.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Every party of the server, to call rooms before (or instead of) forwarding.
    pub fn parties(&self) -> &Parties {
        &self.parties
    }
}

/// What `on_fetch` and `on_socket` receive: the project's variables.
#[derive(Clone, Debug)]
pub struct FetchLobby {
    pub(crate) env: Env,
    pub(crate) parties: Parties,
}

impl FetchLobby {
    /// The project's variables.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Every party of the server, to call rooms before (or instead of) forwarding.
    pub fn parties(&self) -> &Parties {
        &self.parties
    }
}

/// What `on_cron` receives.
#[derive(Clone, Debug)]
pub struct CronLobby {
    pub(crate) env: Env,
    pub(crate) parties: Parties,
}

impl CronLobby {
    /// The project's variables.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Every party of the server, to call rooms before (or instead of) forwarding.
    pub fn parties(&self) -> &Parties {
        &self.parties
    }
}

/// A cron trigger passed to `on_cron`.
#[derive(Clone, Debug)]
pub struct Cron {
    pub(crate) name: String,
    pub(crate) cron: String,
    pub(crate) scheduled_time: std::time::SystemTime,
}

impl Cron {
    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cron expression.
    pub fn cron(&self) -> &str {
        &self.cron
    }

    /// When this run was scheduled.
    pub fn scheduled_time(&self) -> std::time::SystemTime {
        self.scheduled_time
    }
}

/// A raw WebSocket accepted on a path outside `/parties/…`, handed to `on_socket`.
///
/// It has no id, tags or room: it is a plain socket with the request that opened it.
/// When `on_socket` is done with it (returns, fails or panics) and it is dropped, the
/// runtime closes it properly: 1000 after success, 1011 after an error or a panic (with
/// the error's message, or an error id for an internal error), so the client always gets
/// a close frame. [`into_inner`](Self::into_inner) takes the socket out of that care.
///
/// ```
/// use partykit_runtime::{party, FetchLobby, FetchSocket};
///
/// #[party]
/// #[derive(Default)]
/// struct Main;
///
/// #[party]
/// impl Main {
///     // Echoes every frame on `/echo` and any other non-party path.
///     async fn on_socket(mut socket: FetchSocket, _lobby: &FetchLobby) {
///         while let Some(Ok(frame)) = socket.recv().await {
///             if socket.send(frame).await.is_err() {
///                 break;
///             }
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct FetchSocket {
    /// `None` once taken by `into_inner` (or handed back on drop).
    socket: Option<WebSocket>,
    request: Request,
    /// Where the socket goes when this is dropped, for the runtime to close it.
    hand_back: Option<oneshot::Sender<WebSocket>>,
}

impl FetchSocket {
    pub(crate) fn new(socket: WebSocket, request: Request) -> (Self, oneshot::Receiver<WebSocket>) {
        let (hand_back, handed_back) = oneshot::channel();
        let socket = Self {
            socket: Some(socket),
            request,
            hand_back: Some(hand_back),
        };
        (socket, handed_back)
    }

    /// The upgrade request.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The next frame from the client; `None` once the socket has ended.
    pub async fn recv(&mut self) -> Option<Result<ws::Message, axum::Error>> {
        self.socket().recv().await
    }

    /// Sends a frame to the client.
    pub async fn send(&mut self, frame: impl Into<ws::Message>) -> Result<(), axum::Error> {
        self.socket().send(frame.into()).await
    }

    /// The socket itself, for what `recv` and `send` do not cover.
    pub fn socket(&mut self) -> &mut WebSocket {
        self.socket
            .as_mut()
            .expect("the socket is taken only by into_inner, which consumes self")
    }

    /// Takes the socket (to split it, or to keep it beyond `on_socket`); the runtime no
    /// longer closes it.
    pub fn into_inner(mut self) -> WebSocket {
        self.hand_back = None;
        self.socket
            .take()
            .expect("the socket is taken only by into_inner, which consumes self")
    }
}

impl Drop for FetchSocket {
    fn drop(&mut self) {
        if let (Some(socket), Some(hand_back)) = (self.socket.take(), self.hand_back.take()) {
            // The runtime is gone only when the server is; then so is the socket.
            let _ = hand_back.send(socket);
        }
    }
}

/// What `on_before_connect` / `on_before_request` decide.
///
/// `From` conversions let a hook return `Ok(req.into())` or `Ok(response.into())`.
#[derive(Debug)]
pub enum Before {
    /// Forward this request (the original, or a changed copy) to the room.
    Forward(Request),
    /// Answer the client with this response; the room is never touched.
    Respond(Response),
}

impl From<Request> for Before {
    fn from(request: Request) -> Self {
        Self::Forward(request)
    }
}

impl From<Response> for Before {
    fn from(response: Response) -> Self {
        Self::Respond(response)
    }
}
