//! What the static hooks see: they run before any room is touched.

use axum::extract::ws::WebSocket;

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
#[derive(Debug)]
pub struct FetchSocket {
    /// The accepted socket.
    pub socket: WebSocket,
    /// The upgrade request.
    pub request: Request,
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
