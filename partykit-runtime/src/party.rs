//! The `Party` trait: a server class, as `implements Party.Server` is in PartyKit.

use std::future::Future;

use crate::{
    Before, Connection, ConnectionContext, Cron, CronLobby, Error, FetchLobby, FetchSocket, Lobby,
    Message, Request, Response, Result, Room,
};

/// A party: the code behind every room at `/parties/<NAME>/<room id>`.
///
/// One value of the implementing type exists per live room. The runtime builds it with
/// [`new`](Party::new), awaits [`on_start`](Party::on_start), and then delivers the room's
/// events one at a time with `&mut self`: no locks in your code, no interleaving.
///
/// Every handler has a default body, so implement only what you need. Most users write
/// handlers in a plain impl block and let [`#[party]`](crate::party) implement this trait;
/// implementing it by hand is equally supported:
///
/// ```
/// use partykit_runtime::{Connection, Message, Party, Result, Room};
///
/// struct Echo {
///     room: Room,
/// }
///
/// impl Party for Echo {
///     const NAME: &'static str = "echo";
///
///     fn new(room: Room) -> Self {
///         Echo { room }
///     }
///
///     async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
///         self.room.broadcast(message, &[sender.id()]);
///         Ok(())
///     }
/// }
///
/// let server = partykit_runtime::Server::new().party::<Echo>();
/// # drop(server);
/// ```
///
/// Static hooks (`on_before_connect`, `on_before_request`, `on_fetch`, `on_socket`,
/// `on_cron`) take no `self`: they run in front of the rooms, where PartyKit's worker ran
/// them.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a party",
    label = "`{Self}` does not implement `Party`",
    note = "put `#[party]` on the struct and on its impl block of handlers, or implement `partykit_runtime::Party` by hand"
)]
pub trait Party: Sized + Send + 'static {
    /// The party's name in URLs: `/parties/<NAME>/<room>`. `main` also answers
    /// `/party/<room>`. Must match `^[a-z0-9_-]+$`.
    const NAME: &'static str = "main";

    /// Which optional handlers this party defines; see [`Handlers`].
    const HANDLERS: Handlers = Handlers::DEFAULT;

    /// How the runtime runs this party's rooms; see [`PartyOptions`].
    const OPTIONS: PartyOptions = PartyOptions::DEFAULT;

    /// Builds the room's value. Called on the room's first event, and again after the
    /// room was evicted, after a failed `on_start`, or after a handler panicked.
    fn new(room: Room) -> Self;

    /// Runs once after [`new`](Party::new), before any other event of the room. If it
    /// fails, the event that started the room gets the error, and the next event tries
    /// again with a fresh value.
    fn on_start(&mut self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// The tags of a new connection, for [`Room::get_connections`]. The connection's id is
    /// always its first tag. At most 9 tags, each non-empty and at most 256 characters;
    /// otherwise the socket is closed with 1011.
    fn connection_tags(
        &mut self,
        connection: &Connection,
        ctx: &ConnectionContext,
    ) -> impl Future<Output = Result<Vec<String>>> + Send {
        let _ = (connection, ctx);
        async { Ok(Vec::new()) }
    }

    /// A WebSocket connected. No message of this connection is delivered before this
    /// returns; an error closes the socket with 1011 and the error's message.
    fn on_connect(
        &mut self,
        connection: &Connection,
        ctx: &ConnectionContext,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (connection, ctx);
        async { Ok(()) }
    }

    /// A connection sent a message. An error is logged; the connection stays open.
    fn on_message(
        &mut self,
        message: Message,
        sender: &Connection,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (message, sender);
        async { Ok(()) }
    }

    /// A connection closed (whoever closed it). It is no longer among the room's
    /// connections.
    fn on_close(&mut self, connection: &Connection) -> impl Future<Output = Result<()>> + Send {
        let _ = connection;
        async { Ok(()) }
    }

    /// A connection failed (a protocol error or a reset). `on_close` follows.
    fn on_error(
        &mut self,
        connection: &Connection,
        error: Error,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = connection;
        async move {
            tracing::debug!(%error, "connection error");
            Ok(())
        }
    }

    /// An HTTP request to the room (any method, any sub-path). An error answers with its
    /// status and message. Set [`Handlers::on_request`] when you implement it by hand.
    fn on_request(&mut self, request: Request) -> impl Future<Output = Result<Response>> + Send {
        let _ = request;
        async { Err(Error::msg("No onRequest handler")) }
    }

    /// The room's alarm fired.
    fn on_alarm(&mut self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Runs before a WebSocket upgrade reaches a room of this party. Return
    /// [`Before::Forward`] (possibly with changed headers or URL) or
    /// [`Before::Respond`] to answer without touching the room. An error answers 401
    /// with its message (an internal error's message is replaced by an error id, see
    /// [`Error`]); a panic answers 500.
    fn on_before_connect(
        request: Request,
        lobby: &Lobby,
    ) -> impl Future<Output = Result<Before>> + Send {
        let _ = lobby;
        async { Ok(Before::Forward(request)) }
    }

    /// Runs before an HTTP request reaches a room of this party; as
    /// [`on_before_connect`](Party::on_before_connect).
    fn on_before_request(
        request: Request,
        lobby: &Lobby,
    ) -> impl Future<Output = Result<Before>> + Send {
        let _ = lobby;
        async { Ok(Before::Forward(request)) }
    }

    /// Answers HTTP requests outside `/parties/…` (main party only). `None` falls
    /// through to 404.
    fn on_fetch(
        request: Request,
        lobby: &FetchLobby,
    ) -> impl Future<Output = Result<Option<Response>>> + Send {
        let _ = (request, lobby);
        async { Ok(None) }
    }

    /// Takes WebSockets opened on paths outside `/parties/…` (main party only). Set
    /// [`Handlers::on_socket`] when you implement it by hand.
    fn on_socket(
        socket: FetchSocket,
        lobby: &FetchLobby,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (socket, lobby);
        async { Ok(()) }
    }

    /// Runs on a cron schedule (main party only). Set [`Handlers::on_cron`] when you
    /// implement it by hand.
    fn on_cron(cron: Cron, lobby: &CronLobby) -> impl Future<Output = Result<()>> + Send {
        let _ = (cron, lobby);
        async { Ok(()) }
    }
}

/// Which optional handlers a party defines, where the runtime must know before calling
/// them. `#[party]` fills this in from your impl block; when implementing [`Party`] by
/// hand, set the flags of the handlers you implement.
///
/// ```
/// use partykit_runtime::Handlers;
///
/// const HANDLERS: Handlers = Handlers { on_request: false, ..Handlers::DEFAULT };
/// assert!(!HANDLERS.on_request);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handlers {
    /// `on_request` is implemented; when false, HTTP requests to a room answer
    /// 500 `No onRequest handler` without starting it.
    pub on_request: bool,
    /// `on_fetch` is implemented.
    pub on_fetch: bool,
    /// `on_socket` is implemented; when false, upgrades to non-party paths are treated as
    /// plain HTTP.
    pub on_socket: bool,
    /// `on_cron` is implemented.
    pub on_cron: bool,
}

impl Handlers {
    /// What a hand-written impl gets: `on_request` on (its default body answers 500
    /// `No onRequest handler`), the rest off.
    pub const DEFAULT: Self = Self {
        on_request: true,
        on_fetch: false,
        on_socket: false,
        on_cron: false,
    };
}

impl Default for Handlers {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How the runtime runs a party's rooms: PartyKit's `options` field of a server class.
///
/// ```
/// use partykit_runtime::PartyOptions;
///
/// const OPTIONS: PartyOptions = PartyOptions { hibernate: true };
/// assert_ne!(OPTIONS, PartyOptions::DEFAULT);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartyOptions {
    /// Whether rooms of this party hibernate: drop the party's value between events while
    /// keeping its sockets open, and rebuild it (`new`, then `on_start`) on the next event.
    ///
    /// A hibernating room drops its value after
    /// [`Limits::hibernate_after`](crate::Limits::hibernate_after) without events, even with
    /// sockets open; connections, their tags and state (limited to
    /// [`Limits::max_hibernating_state`](crate::Limits::max_hibernating_state) bytes) and
    /// storage survive. Keep anything else you need in storage or connection state.
    ///
    /// `#[party(hibernate)]` on the struct sets it. For object-style (legacy) parties
    /// `#[party]` also infers it as PartyKit did: `true` when the impl block has
    /// `on_message` or has no `on_connect`.
    pub hibernate: bool,
}

impl PartyOptions {
    /// What a party gets unless it says otherwise: no hibernation.
    pub const DEFAULT: Self = Self { hibernate: false };
}

impl Default for PartyOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}
