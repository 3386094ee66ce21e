//! Step 3 of the pipeline: every check of the model, each pushing into one [`Errors`]
//! collector so that one compile reports all of them.
//!
//! Checks only judge what syntax can tell. Whether a parameter has the right type or a
//! return type converts is left to rustc, on generated code spanned at the user's tokens
//! (see `expand`).

use std::fmt::Display;

use quote::ToTokens;
use syn::{LitStr, ReturnType};

use crate::args::Args;
use crate::model::{
    HandlerKind, Method, OutputKind, PartyImpl, PartyStruct, Receiver, Role, Style, Target,
    UNSTABLE_ON_FETCH,
};

/// Collects every error of one `#[party]` input; they are emitted together, beside the
/// user's item.
#[derive(Default)]
pub(crate) struct Errors {
    errors: Vec<syn::Error>,
}

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    /// An error spanning all of `tokens` (first to last token).
    pub(crate) fn error(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Every error as `compile_error!` invocations.
    pub(crate) fn to_compile_errors(&self) -> proc_macro2::TokenStream {
        self.errors
            .iter()
            .map(syn::Error::to_compile_error)
            .collect()
    }
}

/// Runs every check that applies to `target`.
pub(crate) fn check(args: &Args, target: &Target, errors: &mut Errors) {
    match target {
        Target::Struct(item) => check_struct(args, item, errors),
        Target::Impl(item) => check_impl(args, item, errors),
        Target::Other { what, tokens } => errors.error(
            tokens,
            format!("`#[party]` goes on a struct and on its impl block of handlers, not on {what}"),
        ),
    }
}

fn check_struct(args: &Args, item: &PartyStruct, errors: &mut Errors) {
    if let Some(repeated) = &item.repeated {
        errors.error(
            repeated,
            repeated_message(&format!("struct {}", item.ident)),
        );
        return;
    }
    if let Some(name) = &args.name {
        check_name(name, errors);
    }
    check_generics(&item.generics, errors);
}

/// `#[party]` twice on one item: the second of them runs after this one and does the work.
fn repeated_message(item: &str) -> String {
    format!(
        "`#[party]` is given twice on `{item}`; keep one (all arguments go in one \
         attribute: `#[party(name = \"…\", hibernate)]`)"
    )
}

/// Parties are single concrete types: the runtime builds a value of it for each room and
/// keeps it as long as the room lives.
fn check_generics(generics: &syn::Generics, errors: &mut Errors) {
    let Some(first) = generics.params.first() else {
        return;
    };
    let message = if generics
        .params
        .iter()
        .all(|param| matches!(param, syn::GenericParam::Lifetime(_)))
    {
        "a party cannot borrow: the runtime keeps its value for as long as the room lives, \
         so it is `'static`; remove the lifetime parameters and own the data (`String`, \
         `Vec<T>`, `Arc<T>`) instead of borrowing it"
    } else {
        "a party cannot be generic: the runtime builds one value of a single type per \
         room; remove the parameters, or wrap a generic type in a concrete struct"
    };
    errors.error(first, message);
}

/// Party names appear in URLs (`/parties/<name>/<room>`).
fn check_name(name: &LitStr, errors: &mut Errors) {
    let value = name.value();
    if value.is_empty() {
        errors.error(
            name,
            "the party name is empty; it appears in URLs as `/parties/<name>/<room>`, \
             e.g. `#[party(name = \"chat\")]`",
        );
    } else if !value.bytes().all(is_name_byte) {
        let suggestion: String = value
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| {
                if c.is_ascii() && is_name_byte(c as u8) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        errors.error(
            name,
            format!(
                "invalid party name {value:?}: use only lowercase letters, digits, `_` and \
                 `-` (it appears in URLs as `/parties/<name>/<room>`), e.g. \
                 `name = {suggestion:?}`"
            ),
        );
    }
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
}

fn check_impl(args: &Args, item: &PartyImpl, errors: &mut Errors) {
    if let Some(repeated) = &item.repeated {
        let self_ty = item.self_ty.to_token_stream();
        errors.error(repeated, repeated_message(&format!("impl {self_ty}")));
        return;
    }
    if let Some(name) = &args.name {
        errors.error(
            name,
            "the party's name goes on the struct: `#[party(name = \"…\")] struct …`; \
             the impl block takes only `crate = \"…\"`",
        );
    }
    if let Some(hibernate) = &args.hibernate {
        errors.error(
            hibernate,
            "`hibernate` goes on the struct: `#[party(hibernate)] struct …`; \
             the impl block takes only `crate = \"…\"`",
        );
    }
    if let Some(trait_) = &item.trait_ {
        errors.error(
            trait_,
            "`#[party]` goes on an inherent impl block (`impl MyParty { … }`), not on a \
             trait impl; to implement `Party` by hand, remove `#[party]` from this impl \
             and from the struct",
        );
    }
    check_generics(&item.generics, errors);
    for path in &item.macros {
        errors.error(
            path,
            format!(
                "`#[party]` cannot see what `{path}!` expands to (macros expand after it), so \
                 handlers it defines would never be called; write the handlers in this \
                 block, and move the macro call into an impl block without `#[party]`",
                path = path.to_string().replace(' ', "")
            ),
        );
    }

    let mut seen: Vec<&Method> = Vec::new();
    for method in &item.methods {
        // Methods under `#[cfg]` may legitimately come in variants, one per configuration.
        if method.role != Role::Unknown && method.cfgs.is_empty() {
            if let Some(earlier) = seen.iter().find(|earlier| earlier.role == method.role) {
                check_duplicate(earlier, method, errors);
                continue;
            }
            seen.push(method);
        }
        match method.role {
            Role::Constructor => check_constructor(method, errors),
            Role::Handler(kind) => check_handler(kind, method, errors),
            Role::Unknown => check_unknown(method, errors),
        }
    }
    check_one_style(item, errors);
}

/// A second definition of the same handler: `on_fetch` beside its old name
/// `unstable_on_fetch` is ours to report; the same name twice is rustc's ("duplicate
/// definitions"), on the user's token, and `expand` generates the first one only, so that
/// it stays the one error.
fn check_duplicate(earlier: &Method, later: &Method, errors: &mut Errors) {
    if earlier.ident == later.ident {
        return;
    }
    if let Some(old) = [earlier, later]
        .into_iter()
        .find(|method| method.is_unstable_on_fetch())
    {
        errors.error(
            &old.ident,
            format!(
                "`{UNSTABLE_ON_FETCH}` is the old name of `on_fetch`, which this impl block \
                 also defines; remove `{UNSTABLE_ON_FETCH}`"
            ),
        );
    }
}

/// An impl block is written in one style: object-style handlers beside a constructor or
/// class-style handlers are refused, each with its class-style form (the style to move to).
fn check_one_style(item: &PartyImpl, errors: &mut Errors) {
    let Some(class) = item
        .methods
        .iter()
        .find(|method| method.style() == Some(Style::Class))
    else {
        return;
    };
    let class = match class.role {
        Role::Constructor => "`fn new`".to_owned(),
        _ => format!("`{}`, which takes `self`,", class.ident),
    };
    for method in &item.methods {
        let Role::Handler(kind) = method.role else {
            continue;
        };
        // Handlers without an object-style form got their own error.
        if method.style() == Some(Style::Object) && kind.object_params().is_some() {
            errors.error(
                &method.ident,
                format!(
                    "`{name}` is written in object style (no `self`), but {class} makes this \
                     impl block class style, and one impl block cannot mix them; write \
                     `{signature}` and keep the room in a field",
                    name = kind.name(),
                    signature = kind.signature_in(Style::Class, method.asyncness.is_some()),
                ),
            );
        }
    }
}

/// Checks shared by the constructor and the handlers.
fn check_common(what: &str, method: &Method, errors: &mut Errors) {
    if let Some(unsafety) = &method.unsafety {
        errors.error(
            unsafety,
            format!("`{what}` cannot be `unsafe`; remove `unsafe`"),
        );
    }
    if let Some(first) = method.type_params.first() {
        errors.error(
            first,
            format!(
                "`{what}` cannot have type or const parameters: the runtime calls it with \
                 fixed types; remove them"
            ),
        );
    }
    for param in &method.params {
        if let syn::Type::ImplTrait(impl_trait) = &*param.ty {
            errors.error(
                impl_trait,
                format!(
                    "`{what}` cannot take `impl Trait`: that is a type parameter, and the \
                     runtime calls it with fixed types; write the type the signature lists"
                ),
            );
        }
    }
    if let ReturnType::Type(_, ty) = &method.output
        && returns_future(ty)
    {
        let written = if what == "new" {
            "the constructor cannot be `async`; do async set-up in `async fn on_start(&mut \
             self)`"
                .to_owned()
        } else {
            format!(
                "write `async fn {what}(…)` instead of returning a future: `#[party]` makes the \
                 future and awaits the handler"
            )
        };
        errors.error(ty, written);
    }
}

/// `impl Future<…>` (or `impl Future + Send`, `impl core::future::Future`) as written.
fn returns_future(ty: &syn::Type) -> bool {
    let syn::Type::ImplTrait(impl_trait) = ty else {
        return false;
    };
    impl_trait.bounds.iter().any(|bound| {
        matches!(bound, syn::TypeParamBound::Trait(bound)
            if bound.path.segments.last().is_some_and(|segment| segment.ident == "Future"))
    })
}

fn check_constructor(method: &Method, errors: &mut Errors) {
    const SIGNATURE: &str = "`fn new(room: Room) -> Self`";
    check_common("new", method, errors);
    if let Some(asyncness) = &method.asyncness {
        errors.error(
            asyncness,
            format!(
                "the constructor cannot be `async`: write {SIGNATURE} and do async set-up \
                 in `async fn on_start(&mut self)`"
            ),
        );
    }
    if !matches!(method.receiver, Receiver::None) {
        errors.error(
            &method.receiver_tokens,
            format!("the constructor takes no `self`: write {SIGNATURE}"),
        );
    }
    for extra in method.params.iter().skip(1) {
        errors.error(
            &extra.tokens,
            format!(
                "the constructor takes only the room: write {SIGNATURE}; remove this parameter"
            ),
        );
    }
    if let ReturnType::Default = method.output {
        errors.error(
            &method.ident,
            format!("the constructor must return the party: write {SIGNATURE}"),
        );
    }
}

fn check_handler(kind: HandlerKind, method: &Method, errors: &mut Errors) {
    let name = kind.name();
    let signature = kind.signature();
    check_common(name, method, errors);

    // Handlers without an object-style form are counted against their class-style form.
    let style = match method.style() {
        Some(Style::Object) if kind.object_params().is_some() => Style::Object,
        _ => Style::Class,
    };
    match (&method.receiver, kind.is_static()) {
        (Receiver::Shared | Receiver::Exclusive, false) | (Receiver::None, true) => {}
        (Receiver::Shared | Receiver::Exclusive | Receiver::Unsupported, true) => errors.error(
            &method.receiver_tokens,
            format!(
                "`{name}` is a static hook: it runs before any room exists, so it takes no \
                 `self`; write `{signature}`"
            ),
        ),
        (Receiver::Unsupported, false) => errors.error(
            &method.receiver_tokens,
            format!(
                "`{name}` must take `&mut self` or `&self`: the room keeps its value between \
                 events; write `{signature}`"
            ),
        ),
        // Object style; only the handlers PartyKit's object syntax had exist in it.
        (Receiver::None, false) if kind.object_params().is_none() => errors.error(
            &method.ident,
            format!(
                "`{name}` must take `&mut self` or `&self`: PartyKit's object style had no \
                 `{name}`, so there is no form of it without `self`; write `{signature}`"
            ),
        ),
        (Receiver::None, false) => {}
    }

    let max = kind.params_in(style).len();
    let allowed = match max {
        0 => "takes no parameters".to_owned(),
        1 => "takes at most 1 parameter".to_owned(),
        n => format!("takes at most {n} parameters"),
    };
    let (besides, written) = match style {
        _ if kind.is_static() => ("", signature.clone()),
        Style::Class => (" besides `self`", signature.clone()),
        Style::Object => (
            " in object style",
            kind.signature_in(Style::Object, method.asyncness.is_some()),
        ),
    };
    for extra in method.params.iter().skip(max) {
        errors.error(
            &extra.tokens,
            format!("`{name}` {allowed}{besides}: `{written}`; remove this one"),
        );
    }

    if let ReturnType::Default = method.output {
        let missing = match kind.output() {
            OutputKind::Unit => None,
            OutputKind::Response => Some(
                "`on_request` must return a response: `-> impl IntoResponse` (e.g. \
                 `&'static str`, `String`, `Json<T>`, `Response`) or `-> Result<R, E>`",
            ),
            OutputKind::Tags => Some(
                "`connection_tags` must return the connection's tags: `-> Vec<String>` or \
                 `-> Result<Vec<String>, E>`",
            ),
            OutputKind::Before => Some(
                "this hook must return what to do with the request: `-> Request` to forward \
                 it (possibly changed), `-> Response` to answer instead, `-> Before`, or a \
                 `Result` of one",
            ),
            OutputKind::Fetch => Some(
                "`on_fetch` must return `Option<R>` where `R: IntoResponse` (`None` falls \
                 through to 404), or a `Result` of one",
            ),
        };
        if let Some(message) = missing {
            errors.error(&method.ident, message);
        }
    }
}

fn check_unknown(method: &Method, errors: &mut Errors) {
    let name = method.ident.to_string();
    let valid: Vec<String> = HandlerKind::ALL
        .iter()
        .map(|kind| format!("`{}`", kind.name()))
        .collect();
    let suggestion = match nearest_handler(&name) {
        Some(nearest) => format!(": did you mean `{nearest}`?"),
        None => String::new(),
    };
    errors.error(
        &method.ident,
        format!(
            "`{name}` is not a party handler{suggestion}\n\
             the handlers are {}; helper methods named like handlers go in a separate \
             impl block without `#[party]`",
            valid.join(", ")
        ),
    );
}

/// The handler `name` most likely means: the one whose meaning its words name
/// (`on_disconnect` means `on_close`, although it is spelled nearer to `on_connect`), or
/// else the nearest by spelling, if near enough to be a typo. `onMessage` (JavaScript's
/// spelling) is first turned into `on_message`.
pub(crate) fn nearest_handler(name: &str) -> Option<&'static str> {
    let name = to_snake_case(name);
    if let Some(meant) = by_meaning(&name) {
        return Some(meant);
    }
    HandlerKind::ALL
        .iter()
        .map(|kind| (edit_distance(&name, kind.name()), kind.name()))
        .min_by_key(|(distance, _)| *distance)
        // Like rustc's typo suggestions: about one edit per three characters.
        .filter(|(distance, _)| *distance <= name.len().max(3) / 3)
        .map(|(_, nearest)| nearest)
}

/// Words users write for each handler, from other frameworks' names for the same events
/// (Socket.IO's `disconnect`, ws's `open`, Durable Objects' `alarm`, …).
const MEANINGS: &[(&[&str], HandlerKind)] = &[
    (
        &[
            "disconnect",
            "disconnected",
            "leave",
            "left",
            "hangup",
            "closed",
            "end",
            "exit",
            "quit",
        ],
        HandlerKind::OnClose,
    ),
    (
        &[
            "open",
            "opened",
            "join",
            "joined",
            "connection",
            "connected",
            "enter",
            "socket_open",
        ],
        HandlerKind::OnConnect,
    ),
    (
        &[
            "data", "msg", "receive", "received", "recv", "text", "binary", "frame", "event",
        ],
        HandlerKind::OnMessage,
    ),
    (
        &[
            "init",
            "initialize",
            "setup",
            "create",
            "created",
            "load",
            "begin",
            "boot",
            "ready",
        ],
        HandlerKind::OnStart,
    ),
    (
        &[
            "http",
            "get",
            "post",
            "handle",
            "request_handler",
            "api",
            "route",
        ],
        HandlerKind::OnRequest,
    ),
    (
        &[
            "timer",
            "tick",
            "timeout",
            "schedule",
            "scheduled",
            "wake",
            "wakeup",
        ],
        HandlerKind::OnAlarm,
    ),
    (
        &["failure", "fail", "failed", "err", "exception", "problem"],
        HandlerKind::OnError,
    ),
    (
        &["auth", "authorize", "authenticate", "upgrade", "handshake"],
        HandlerKind::OnBeforeConnect,
    ),
    (
        &["schedule_cron", "crontab", "job", "periodic"],
        HandlerKind::OnCron,
    ),
    (
        &["tags", "tag", "connection_tag"],
        HandlerKind::ConnectionTags,
    ),
];

fn by_meaning(name: &str) -> Option<&'static str> {
    let words = name.strip_prefix("on_").unwrap_or(name);
    MEANINGS
        .iter()
        .find(|(synonyms, _)| synonyms.contains(&words))
        .map(|(_, kind)| kind.name())
}

fn to_snake_case(name: &str) -> String {
    let mut snake = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if !snake.is_empty() && !snake.ends_with('_') {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

/// Levenshtein distance: insertions, deletions and substitutions of one character.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // `row[j]` is the distance between the prefix of `a` read so far and `b[..j]`.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("on_connect", "on_connect"), 0);
        assert_eq!(edit_distance("on_conect", "on_connect"), 1);
        assert_eq!(edit_distance("on_mesage", "on_message"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn typos_suggest_the_nearest_handler() {
        assert_eq!(nearest_handler("on_conect"), Some("on_connect"));
        assert_eq!(nearest_handler("on_mesage"), Some("on_message"));
        assert_eq!(nearest_handler("on_requests"), Some("on_request"));
        assert_eq!(
            nearest_handler("on_befor_connect"),
            Some("on_before_connect")
        );
        assert_eq!(nearest_handler("on_connection"), Some("on_connect"));
    }

    #[test]
    fn javascript_spelling_suggests_the_snake_case_handler() {
        assert_eq!(nearest_handler("onMessage"), Some("on_message"));
        assert_eq!(
            nearest_handler("onBeforeConnect"),
            Some("on_before_connect")
        );
    }

    #[test]
    fn names_suggest_the_handler_they_mean() {
        assert_eq!(nearest_handler("on_disconnect"), Some("on_close"));
        assert_eq!(nearest_handler("onDisconnect"), Some("on_close"));
        assert_eq!(nearest_handler("on_join"), Some("on_connect"));
        assert_eq!(nearest_handler("on_open"), Some("on_connect"));
        assert_eq!(nearest_handler("on_data"), Some("on_message"));
        assert_eq!(nearest_handler("on_init"), Some("on_start"));
        assert_eq!(nearest_handler("on_timer"), Some("on_alarm"));
        assert_eq!(nearest_handler("on_http"), Some("on_request"));
        assert_eq!(nearest_handler("on_auth"), Some("on_before_connect"));
    }

    #[test]
    fn unrelated_names_suggest_nothing() {
        assert_eq!(nearest_handler("on_foo"), None);
        assert_eq!(nearest_handler("on_timer_tick"), None);
    }

    #[test]
    fn the_runtime_and_the_macro_judge_names_alike() {
        for name in [
            "",
            "chat",
            "main",
            "my-party_2",
            "0",
            "-",
            "_",
            "My",
            "a b",
            "a/b",
            "é",
            "chat!",
            "a.b",
            "A",
            "z9",
            "x\u{0}",
        ] {
            let mut errors = Errors::default();
            check_name(
                &LitStr::new(name, proc_macro2::Span::call_site()),
                &mut errors,
            );
            assert_eq!(
                errors.is_empty(),
                crate::runtime_party_name::is_valid_party_name(name),
                "{name:?}"
            );
        }
    }

    #[test]
    fn party_names_must_be_url_safe() {
        let check = |value: &str| {
            let mut errors = Errors::default();
            check_name(
                &LitStr::new(value, proc_macro2::Span::call_site()),
                &mut errors,
            );
            errors
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert!(check("chat").is_empty());
        assert!(check("my-party_2").is_empty());
        assert_eq!(check("").len(), 1);
        let errors = check("My Party");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].contains("e.g. `name = \"my-party\"`"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn handler_signatures_for_messages() {
        assert_eq!(
            HandlerKind::OnMessage.signature(),
            "async fn on_message(&mut self, message: Message, sender: &Connection)"
        );
        assert_eq!(
            HandlerKind::OnFetch.signature(),
            "async fn on_fetch(request: Request, lobby: &FetchLobby) -> Option<Response>"
        );
    }
}
