//! The `#[party]` attribute of [partykit-runtime](https://docs.rs/partykit-runtime).
//!
//! Depend on `partykit-runtime`, which re-exports this macro as `partykit_runtime::party`
//! and holds everything the generated code names. This crate depends on nothing of the
//! runtime, so its runnable examples live in the runtime's documentation.
//!
//! The macro is a pipeline, one module per step:
//!
//! 1. `args`: the attribute's arguments, `#[party(name = "…", crate = "…")]`;
//! 2. `model`: the item, classified: a struct, or an impl block's constructor, handlers,
//!    static hooks and misspelled handlers, each with the user's tokens for spans;
//! 3. `validate`: every check, all pushing into one error collector, so that one compile
//!    reports every mistake;
//! 4. `expand`: the generated `impl Party`, inside `const _: () = { … };`.
//!
//! The user's item is always emitted unchanged, even when there are errors, so that one
//! mistake does not cascade into errors about the whole item.

use proc_macro::TokenStream;

mod args;
mod expand;
mod model;
mod validate;

/// Turns a struct and an impl block of handlers into a party.
///
/// Put it on both: on the struct (optionally naming the party; the default name is
/// `main`, which also answers `/party/<room>`), and on an inherent impl block whose
/// methods are the party's handlers. It implements `partykit_runtime::Party` for you.
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
/// # Handlers
///
/// The impl block's methods named like `Party`'s handlers become the party's handlers:
///
/// ```text
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
/// JavaScript. Handlers that return nothing may instead return `Result<(), E>`; every
/// return value may be wrapped in a `Result` whose error converts into
/// `partykit_runtime::Error`. `on_request` returns anything that implements
/// `IntoResponse` (`&'static str`, `String`, `Json<T>`, `(StatusCode, String)`,
/// `Response`, …) or a `Result` of one.
///
/// The constructor is `fn new(room: Room) -> Self`; without one the struct must implement
/// `Default`. Other methods are left alone, except that a name starting with `on_` must be
/// a handler's: `on_conect` is an error that suggests `on_connect`.
///
/// # Arguments
///
/// - `name = "chat"` (on the struct): the party's name in URLs, `/parties/chat/<room>`;
///   lowercase letters, digits, `_` and `-`.
/// - `crate = "path"` (on the struct or the impl block): the path of `partykit_runtime`,
///   when the dependency was renamed.
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
    let target = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(parsed) => Some(model::Target::from_item(parsed)),
        Err(error) => {
            errors.push(error);
            None
        }
    };
    if let Some(target) = &target {
        validate::check(&args, target, &mut errors);
    }
    expand::expand(&args, target.as_ref(), item, &errors)
}
