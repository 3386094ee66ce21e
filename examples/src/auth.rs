//! Authentication in front of the rooms: a token is checked in `on_before_connect` (for
//! WebSockets) and `on_before_request` (for HTTP) before any room is touched, and the
//! user it belongs to is passed to the room in the `x-user-id` header.
//!
//! - Tokens come from the project variable `AUTH_TOKENS`, a JSON object of token → user
//!   (`.var("AUTH_TOKENS", json!({…}))`, a `.env` line `AUTH_TOKENS={"t":"u"}`, or
//!   `PARTYKIT_VAR_AUTH_TOKENS`); without it, the demo tokens [`DEMO_TOKENS`] apply.
//! - A client sends its token as `?token=<token>` (browsers cannot set headers on a
//!   WebSocket) or as `Authorization: Bearer <token>`.
//! - No token: 401 `Missing token` (the hook returns an error). An unknown token: 403
//!   `Invalid token` (the hook answers itself). Either way the room never starts.
//! - A client cannot pick its own user: an `x-user-id` header it sends is replaced.
//! - Connection ids are bound to users. A connection id (`_pk`) is chosen by the client,
//!   and a newer socket with the same id replaces the older one (closing it with 4409),
//!   so without a check anyone who saw Alice's id could knock her off. Here an id must
//!   be `<user>` or start with `<user>:` (partysocket: `id: "alice:" +
//!   crypto.randomUUID()`); another user's id is refused with 403 `Connection id "…" is
//!   not yours`, and a socket without `_pk` gets `<user>:<random>`.
//!
//! In the room:
//!
//! - WebSocket `ws://127.0.0.1:1999/parties/main/<room>?token=alice-token`: receives
//!   `{"type":"welcome","user":"alice","id":"alice:…","online":["alice",…]}`; everyone
//!   else receives
//!   `{"type":"joined","user":"alice"}`. Text it sends reaches the others as
//!   `{"type":"message","user":"alice","text":"…"}`; `{"type":"left","user":"alice"}` when
//!   it closes.
//! - HTTP `GET http://127.0.0.1:1999/parties/main/<room>` with a token answers
//!   `{"room":"<room>","user":"alice","online":[…]}`.

use partykit_runtime::{
    Before, Connection, ConnectionContext, Error, IntoResponse, Json, Lobby, Message, Request,
    Room, StatusCode, party,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The header the hooks put the user id in.
pub const USER_HEADER: &str = "x-user-id";

/// The project variable with the token → user map.
pub const TOKENS_VAR: &str = "AUTH_TOKENS";

/// The tokens accepted when `AUTH_TOKENS` is not set: `(token, user)`.
pub const DEMO_TOKENS: [(&str, &str); 2] = [("alice-token", "alice"), ("bob-token", "bob")];

/// The auth party (`main`).
#[party]
#[derive(Debug)]
pub struct Auth {
    room: Room,
}

/// What a connection remembers: who it is.
#[derive(Debug, Serialize, Deserialize)]
struct User {
    user: String,
}

#[party]
impl Auth {
    fn new(room: Room) -> Self {
        Auth { room }
    }

    /// WebSockets: check the token and the connection id, pass the user on.
    fn on_before_connect(request: Request, lobby: &Lobby) -> Result<Before, Error> {
        match authenticate(request, lobby)? {
            Before::Forward(request) => bind_connection_id(request),
            refused => Ok(refused),
        }
    }

    /// HTTP: the same check.
    fn on_before_request(request: Request, lobby: &Lobby) -> Result<Before, Error> {
        authenticate(request, lobby)
    }

    fn on_connect(
        &mut self,
        connection: &Connection,
        ctx: &ConnectionContext,
    ) -> Result<(), Error> {
        // Only requests that passed `on_before_connect` get here, so the header is set.
        let user = ctx
            .request()
            .header(USER_HEADER)
            .ok_or_else(|| Error::msg("no user: the request bypassed on_before_connect"))?
            .to_owned();
        connection.set_state(&User { user: user.clone() })?;
        let welcome = json!({
            "type": "welcome",
            "user": user,
            "id": connection.id(),
            "online": self.online(),
        });
        connection.send(welcome.to_string())?;
        let joined = json!({ "type": "joined", "user": user });
        self.room.broadcast(joined.to_string(), &[connection.id()]);
        Ok(())
    }

    fn on_message(&mut self, message: Message, sender: &Connection) -> Result<(), Error> {
        let Some(text) = message.as_text() else {
            return Ok(());
        };
        let user = user_of(sender);
        let out = json!({ "type": "message", "user": user, "text": text });
        self.room.broadcast(out.to_string(), &[sender.id()]);
        Ok(())
    }

    fn on_close(&mut self, connection: &Connection) {
        let left = json!({ "type": "left", "user": user_of(connection) });
        self.room.broadcast(left.to_string(), &[]);
    }

    fn on_request(&mut self, request: Request) -> Json<serde_json::Value> {
        Json(json!({
            "room": self.room.id(),
            "user": request.header(USER_HEADER),
            "online": self.online(),
        }))
    }
}

impl Auth {
    /// The users connected to the room, in connection order (one per socket).
    fn online(&self) -> Vec<String> {
        self.room
            .get_connections(None)
            .iter()
            .map(user_of)
            .collect()
    }
}

fn user_of(connection: &Connection) -> String {
    match connection.state::<User>() {
        Ok(Some(User { user })) => user,
        _ => "unknown".to_owned(),
    }
}

/// Checks the request's token: forwards the request with `x-user-id` set, or answers the
/// client without touching the room. A missing token is an error (PartyKit's "throw in
/// the hook": 401 with the message); an unknown one gets a response of the hook's own
/// (403).
fn authenticate(mut request: Request, lobby: &Lobby) -> Result<Before, Error> {
    // Whatever the client claims, the user id comes from the token.
    request.headers_mut().remove(USER_HEADER);
    let token = token_of(&request).ok_or_else(|| Error::msg("Missing token"))?;
    let Some(user) = user_for(&token, lobby) else {
        return Ok(Before::Respond(
            (StatusCode::FORBIDDEN, "Invalid token").into_response(),
        ));
    };
    request.headers_mut().insert(USER_HEADER, user.parse()?);
    Ok(Before::Forward(request))
}

/// Makes sure the connection id is the user's: `<user>` or `<user>:…`; sets
/// `<user>:<random>` when the client sent none. Runs after [`authenticate`], which set the
/// user header.
fn bind_connection_id(mut request: Request) -> Result<Before, Error> {
    let user = request
        .header(USER_HEADER)
        .ok_or_else(|| Error::msg("no user: authenticate first"))?
        .to_owned();
    match request.query("_pk").filter(|id| !id.is_empty()) {
        Some(id) if *id == *user || id.starts_with(&format!("{user}:")) => {}
        Some(id) => {
            let message =
                format!("Connection id {id:?} is not yours: use one that starts with \"{user}:\"");
            return Ok(Before::Respond(
                (StatusCode::FORBIDDEN, message).into_response(),
            ));
        }
        None => {
            let id = format!("{user}:{:016x}", rand::random::<u64>());
            let uri = request.uri();
            let query = uri.query().filter(|query| !query.is_empty());
            let target = match query {
                Some(query) => format!("{}?{query}&_pk={}", uri.path(), encode(&id)),
                None => format!("{}?_pk={}", uri.path(), encode(&id)),
            };
            request.set_uri(target.parse()?);
        }
    }
    Ok(Before::Forward(request))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `?token=…`, else `Authorization: Bearer …`.
fn token_of(request: &Request) -> Option<String> {
    if let Some(token) = request.query("token").filter(|token| !token.is_empty()) {
        return Some(token.into_owned());
    }
    let header = request.header("authorization")?;
    let token = header.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// The user of `token`: from `AUTH_TOKENS` if set, else from [`DEMO_TOKENS`].
fn user_for(token: &str, lobby: &Lobby) -> Option<String> {
    match lobby.env().get(TOKENS_VAR) {
        Some(tokens) => tokens.get(token)?.as_str().map(str::to_owned),
        None => DEMO_TOKENS
            .iter()
            .find(|(known, _)| *known == token)
            .map(|(_, user)| (*user).to_owned()),
    }
}
