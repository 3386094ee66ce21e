//! The `#[party]` attribute of [partykit-runtime](https://docs.rs/partykit-runtime).
//!
//! Depend on `partykit-runtime`, which re-exports this macro as `partykit_runtime::party`
//! and holds everything the generated code names. This crate depends on nothing of the
//! runtime, so its runnable examples live in the runtime's documentation.
//!
//! The macro is a pipeline, one module per step:
//!
//! 1. `args`: the attribute's arguments, `#[party(name = "…", hibernate, crate = "…")]`;
//! 2. `parse`: the item, parsed without parsing method bodies, so that a body the user is
//!    still typing leaves rustc's syntax error as the only error;
//! 3. `model`: the item, classified: a struct, or an impl block's constructor, handlers,
//!    static hooks and misspelled handlers, each with its style (class or object) and the
//!    user's tokens for spans;
//! 4. `validate`: every check, all pushing into one error collector, so that one compile
//!    reports every mistake;
//! 5. `expand`: the generated `impl Party`, inside `const _: () = { … };`, the same for
//!    both styles;
//! 6. `warnings`: deprecation notes for object-style handlers and `unstable_on_fetch`, as
//!    `#[deprecated]` items used in the handlers' bodies (warnings on stable Rust).
//!
//! The user's item is always emitted, even when there are errors (unchanged then), so that
//! one mistake does not cascade into errors about the whole item; with errors, the glue
//! is a stub that keeps the party a party. The macro never panics on user input.

use proc_macro::TokenStream;

mod args;
mod expand;
mod model;
mod parse;
mod validate;
mod warnings;

/// Turns a struct and an impl block of handlers into a party.
///
/// Put it on both: on the struct (optionally naming the party; the default name is
/// `main`, which also answers `/party/<room>`), and on an inherent impl block whose
/// methods are the party's handlers. It implements `partykit_runtime::Party` for you;
/// everything it writes could be written by hand against that trait.
///
/// ```text
/// use partykit_runtime::{party, Connection, Message, Room};
///
/// #[party(name = "chat")]            // served at /parties/chat/<room>
/// struct Chat {
///     room: Room,
/// }
///
/// #[party]
/// impl Chat {
///     fn new(room: Room) -> Self {   // or #[derive(Default)] on the struct
///         Chat { room }
///     }
///
///     async fn on_message(&mut self, message: Message, sender: &Connection) {
///         self.room.broadcast(message, &[sender.id()]);
///     }
/// }
/// ```
///
/// # Arguments
///
/// - `name = "chat"` (on the struct only): the party's name in URLs,
///   `/parties/chat/<room>`; lowercase letters, digits, `_` and `-`
///   (`^[a-z0-9_-]+$`). Default: `main`.
/// - `crate = "path"` (on the struct or the impl block): the path of `partykit_runtime`,
///   when the dependency was renamed. Default: `::partykit_runtime`.
///
/// Each may be given once. Nothing else is accepted.
///
/// # Handlers (class style)
///
/// The impl block's methods named like `Party`'s handlers become the party's handlers:
///
/// ```text
/// fn new(room: Room) -> Self                       // or `Default` on the struct
/// on_start(&mut self)
/// connection_tags(&mut self, connection: &Connection, ctx: &ConnectionContext) -> Vec<String>
/// on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext)
/// on_message(&mut self, message: Message, sender: &Connection)
/// on_close(&mut self, connection: &Connection)
/// on_error(&mut self, connection: &Connection, error: Error)
/// on_request(&mut self, request: Request) -> impl IntoResponse
/// on_alarm(&mut self)
/// ```
///
/// and these static hooks, which take no `self` as they run before any room exists:
///
/// ```text
/// on_before_connect(request: Request, lobby: &Lobby) -> Request | Response | Before
/// on_before_request(request: Request, lobby: &Lobby) -> Request | Response | Before
/// on_fetch(request: Request, lobby: &FetchLobby) -> Option<impl IntoResponse>
/// on_socket(socket: FetchSocket, lobby: &FetchLobby)
/// on_cron(cron: Cron, lobby: &CronLobby)
/// ```
///
/// Each may be `async` or not, take `&mut self` or `&self`, and leave out trailing
/// parameters it does not use (`fn on_message(&mut self, message: Message)`), as in
/// JavaScript; parameters cannot be reordered. Handlers that return nothing may instead
/// return `Result<(), E>`; every return value may be wrapped in a `Result` whose error
/// converts into `partykit_runtime::Error`. `on_request` returns anything that implements
/// `IntoResponse` (`&'static str`, `String`, `Json<T>`, `(StatusCode, String)`,
/// `Response`, …) or a `Result` of one. `on_message` may take its message as `Message`
/// (text or binary) or `String` (text only: a binary message is logged as an error and
/// the handler does not run).
///
/// The constructor is `fn new(room: Room) -> Self` (or `fn new() -> Self`); without one the
/// struct must implement `Default`. Other methods are left alone, except that a name
/// starting with `on_` must be a handler's: `on_conect` is an error that suggests
/// `on_connect`.
///
/// # Object style (deprecated)
///
/// PartyKit's legacy object syntax (`export default { onConnect(conn, room) { … } }`) also
/// compiles: room handlers without `self` that take the room, where PartyKit had it:
///
/// ```text
/// on_connect(connection: &Connection, room: &Room, ctx: &ConnectionContext)
/// on_message(message: Message, sender: &Connection, room: &Room)
/// on_close(connection: &Connection, room: &Room)
/// on_error(connection: &Connection, error: Error, room: &Room)
/// on_request(request: Request, room: &Room) -> impl IntoResponse
/// on_alarm(room: &Room)
/// ```
///
/// Static hooks are written as in class style. The struct has no fields (`struct S;`) and
/// the impl block no constructor, no `on_start` and no `connection_tags`, as PartyKit's
/// objects had none; one impl block is all one style. Trailing parameters may be left
/// out, returns are as in class style. Rooms of an object-style party hibernate when it
/// has `on_message` or lacks `on_connect`, as PartyKit inferred
/// (`Party::OPTIONS.hibernate`).
///
/// Each object-style handler gets a deprecation warning on its name, with the class-style
/// signature to write instead; so does a static hook named `unstable_on_fetch` (PartyKit's
/// old name of `on_fetch`). `#[allow(deprecated)]` on the fn or on the impl block silences
/// it. The migration guide is `partykit_runtime::guide::migration`; every error and warning
/// is explained in `partykit_runtime::guide::debugging`.
#[proc_macro_attribute]
pub fn party(args: TokenStream, item: TokenStream) -> TokenStream {
    party_tokens(args.into(), item.into()).into()
}

/// The pipeline on `proc_macro2` tokens, so that unit tests can run it.
fn party_tokens(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let mut errors = validate::Errors::default();
    let args = args::Args::parse(args, &mut errors);
    let input = parse::Input::parse(item.clone());
    let target = model::Target::from_input(&input);
    if let Some(target) = &target {
        validate::check(&args, target, &mut errors);
    }
    let (item, source) = match (input, &target) {
        // Deprecation notes only on an impl block without errors: beside errors, they are
        // noise.
        (parse::Input::Impl(block), Some(target @ model::Target::Impl(party)))
            if errors.is_empty() =>
        {
            let notes = warnings::notes(party);
            (
                warnings::annotate(block, &notes),
                expand::Source::Target(target),
            )
        }
        (_, Some(target)) => (item, expand::Source::Target(target)),
        // Re-emitted as written: rustc reports its syntax error, once.
        (parse::Input::Broken(fallback), None) => (item, expand::Source::Fallback(fallback)),
        (_, None) => (item, expand::Source::Fallback(parse::Fallback::Unknown)),
    };
    expand::expand(&args, source, item, &errors)
}
