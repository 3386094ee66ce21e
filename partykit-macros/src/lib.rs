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

/// The runtime's rule for party names, which `validate`'s tests compare with the macro's.
#[cfg(test)]
#[path = "../../partykit-runtime/src/server/party_name.rs"]
mod runtime_party_name;

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
/// - `hibernate` (on the struct only): rooms drop the party's value between events while
///   their sockets stay open, and rebuild it on the next event (`Party::OPTIONS.hibernate`).
///   Default: off.
/// - `crate = "path"` (on the struct or the impl block): the path of `partykit_runtime`,
///   when the dependency was renamed. Default: `::partykit_runtime`.
///
/// Each may be given once, all in one attribute. Nothing else is accepted.
///
/// # Handlers (class style)
///
/// The impl block's methods named like `Party`'s handlers become the party's handlers,
/// with at most these parameters (the fullest signature of each):
///
/// ```text
/// fn on_start(&mut self)
/// fn connection_tags(&mut self, connection: &Connection, ctx: &ConnectionContext) -> Vec<String>
/// fn on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext)
/// fn on_message(&mut self, message: Message, sender: &Connection)
/// fn on_close(&mut self, connection: &Connection)
/// fn on_error(&mut self, connection: &Connection, error: Error)
/// fn on_request(&mut self, request: Request) -> impl IntoResponse
/// fn on_alarm(&mut self)
/// ```
///
/// and these static hooks, which take no `self` as they run before any room exists:
///
/// ```text
/// fn on_before_connect(request: Request, lobby: &Lobby) -> Request
/// fn on_before_request(request: Request, lobby: &Lobby) -> Request
/// fn on_fetch(request: Request, lobby: &FetchLobby) -> Option<Response>
/// fn on_socket(socket: FetchSocket, lobby: &FetchLobby)
/// fn on_cron(cron: Cron, lobby: &CronLobby)
/// ```
///
/// Each may be `async` or not, take `&mut self` or `&self` (or `self: &mut Self`), and
/// leave out trailing parameters it does not use (`fn on_message(&mut self, message:
/// Message)`), as in JavaScript; parameters cannot be reordered. What a handler may
/// return is decided by traits, never by how the type is spelled; each trait's page in
/// `partykit_runtime::handler` lists what implements it:
///
/// - handlers that return nothing may return `Result<(), E>` instead (`IntoHandlerResult`),
///   and every other return value may be wrapped in a `Result` too; `E` is anything `?`
///   converts into `partykit_runtime::Error`, or `Box<dyn std::error::Error (+ Send +
///   Sync)>` (`IntoHandlerError`);
/// - `on_request` returns anything that implements `IntoResponse` (`&'static str`,
///   `String`, `Json<T>`, `(StatusCode, String)`, `Response`, a `Result` of two of them,
///   …) or a `Result<R, E>` with an error `E` (`IntoRoomResponse`);
/// - the static `on_before_*` hooks return a `Request` (forward it), a `Response` (answer
///   instead) or a `Before` (`IntoBefore`); `on_fetch` returns `Option<R>` with
///   `R: IntoResponse` (`IntoFetchResponse`);
/// - `on_message` may take its message as `Message` (text or binary), `String` (text
///   only: a binary message is logged as an error and the handler does not run),
///   `Json<T>` for any `T: DeserializeOwned` (a frame that does not decode is logged, its
///   sender alone is closed with 1007 and serde's error, and the handler does not run),
///   or `Result<Json<T>, JsonRejection>` to see every frame (`FromMessage`).
///
/// The constructor is `fn new(room: Room) -> Self` (or `fn new() -> Self`), which returns
/// the party itself: set-up that can fail goes in `on_start`. Without one the struct must
/// implement `Default`. Other methods are left alone, except that a name starting with
/// `on_` must be a handler's: `on_conect` is an error that suggests `on_connect`, and
/// `on_disconnect` one that suggests `on_close`. A method named like a handler in an impl
/// block without `#[party]` is never called, and gets a warning; a macro call inside the
/// `#[party]` block is an error, as `#[party]` cannot see what it expands to.
///
/// # Object style (deprecated)
///
/// PartyKit's legacy object syntax (`export default { onConnect(conn, room) { … } }`) also
/// compiles: room handlers without `self` that take the room, where PartyKit had it:
///
/// ```text
/// fn on_connect(connection: &Connection, room: &Room, ctx: &ConnectionContext)
/// fn on_message(message: Message, sender: &Connection, room: &Room)
/// fn on_close(connection: &Connection, room: &Room)
/// fn on_error(connection: &Connection, error: Error, room: &Room)
/// fn on_request(request: Request, room: &Room) -> impl IntoResponse
/// fn on_alarm(room: &Room)
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

#[cfg(test)]
mod tests {
    use crate::args::ARGS;
    use crate::model::{HandlerKind, Style};

    /// The macro's documentation, as `rustdoc` shows it.
    fn docs() -> String {
        include_str!("lib.rs")
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("///"))
            .map(|line| line.strip_prefix(' ').unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The lines of the first ```` ```text ```` block after `heading`.
    fn block_after(docs: &str, heading: &str) -> Vec<String> {
        let after = &docs[docs.find(heading).expect(heading)..];
        let start = after.find("```text\n").expect("a text block") + "```text\n".len();
        let block = &after[start..];
        block[..block.find("```").expect("the block's end")]
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn documented_handler_signatures_are_the_models() {
        let docs = docs();
        let signatures = |filter: fn(&HandlerKind) -> bool, style| -> Vec<String> {
            HandlerKind::ALL
                .into_iter()
                .filter(filter)
                .map(|kind| kind.signature_in(style, false))
                .collect()
        };
        assert_eq!(
            block_after(&docs, "# Handlers (class style)"),
            signatures(|kind| !kind.is_static(), Style::Class)
        );
        assert_eq!(
            block_after(&docs, "and these static hooks"),
            signatures(|kind| kind.is_static(), Style::Class)
        );
        assert_eq!(
            block_after(&docs, "# Object style (deprecated)"),
            signatures(|kind| kind.object_params().is_some(), Style::Object)
        );
    }

    #[test]
    fn documented_arguments_are_the_accepted_ones() {
        let docs = docs();
        let section = &docs[docs.find("# Arguments").expect("an Arguments section")..];
        let section = &section[..section.find("# Handlers").expect("the next section")];
        let documented: Vec<&str> = section
            .lines()
            .filter_map(|line| line.strip_prefix("- `"))
            .map(|item| &item[..item.find('`').expect("a closing backtick")])
            .collect();
        let accepted: Vec<&str> = ARGS.iter().map(|arg| arg.example).collect();
        assert_eq!(documented, accepted);
        assert_eq!(
            crate::args::valid_args(),
            "`name = \"chat\"`, `hibernate` and `crate = \"path\"`"
        );
        // And each documented form parses without an error.
        for example in accepted {
            let mut errors = crate::validate::Errors::default();
            let tokens: proc_macro2::TokenStream = example.parse().expect("tokens");
            crate::args::Args::parse(tokens, &mut errors);
            assert!(errors.is_empty(), "{example}");
        }
    }
}
