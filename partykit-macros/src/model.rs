//! Step 3 of the pipeline: what the user wrote, as the macro sees it.
//!
//! This module only classifies syntax; it judges nothing. Everything a later check or the
//! code generator needs is kept here with the user's tokens, so that every error and every
//! generated expression can carry the span of the exact token it is about.
//!
//! Both handler styles share the model: a room handler is class style when it takes
//! `&mut self` / `&self`, and object style (PartyKit's legacy object syntax) when it takes no
//! `self`, receiving the room as a `&Room` parameter instead; see [`Style`].

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{FnArg, GenericParam, Ident, Item, ReturnType, Type};

use crate::parse::{Entry, ImplBlock, Input};

/// The item `#[party]` was put on.
pub(crate) enum Target {
    /// `#[party] struct S { … }`.
    Struct(PartyStruct),
    /// `#[party] impl S { … }` (or a trait impl, which `validate` refuses).
    Impl(PartyImpl),
    /// Anything else: an enum, a fn, a trait, … `what` names it for the error message,
    /// `tokens` are what the error points at (its keyword and name).
    Other {
        what: &'static str,
        tokens: TokenStream,
    },
}

/// `#[party]` on a struct.
pub(crate) struct PartyStruct {
    pub(crate) ident: Ident,
    pub(crate) generics: syn::Generics,
    /// For a struct without fields (`S`, `S {}`, `S()`), the expression of its one value:
    /// an object-style party has no constructor and is built from it.
    pub(crate) unit_value: Option<TokenStream>,
    /// Another `#[party]` attribute on the same item: it runs after this one.
    pub(crate) repeated: Option<TokenStream>,
}

/// `#[party]` on an impl block.
pub(crate) struct PartyImpl {
    pub(crate) self_ty: Box<Type>,
    pub(crate) generics: syn::Generics,
    /// `Trait for` in `impl Trait for S`, which is refused.
    pub(crate) trait_: Option<TokenStream>,
    /// The constructor, handlers and misspelled handlers, in source order. Helper methods
    /// (any other name) are not listed: the macro leaves them alone.
    pub(crate) methods: Vec<Method>,
    /// Macro calls among the items: whatever they expand to is invisible to `#[party]`.
    pub(crate) macros: Vec<TokenStream>,
    /// Another `#[party]` attribute on the same item: it runs after this one.
    pub(crate) repeated: Option<TokenStream>,
}

/// What an associated fn of the impl block is, judged by its name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Role {
    /// `fn new(room: Room) -> Self`.
    Constructor,
    /// One of the `Party` trait's handlers or static hooks.
    Handler(HandlerKind),
    /// Named like a handler (`on_…`, or `onMessage`) but is none: most likely a typo.
    Unknown,
}

/// The two ways of writing a party's room handlers: PartyKit's class style and its older
/// object style.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Style {
    /// `fn new(room: Room) -> Self` and handlers taking `&mut self` / `&self`, as
    /// PartyKit's `class … implements Party.Server`. The recommended style.
    Class,
    /// Handlers without `self` that take the room as a parameter
    /// (`fn on_message(message: Message, sender: &Connection, room: &Room)`), as PartyKit's
    /// deprecated `export default { … } satisfies PartyKitServer`.
    Object,
}

/// An associated fn that matters to the macro.
pub(crate) struct Method {
    pub(crate) role: Role,
    pub(crate) ident: Ident,
    pub(crate) asyncness: Option<syn::token::Async>,
    pub(crate) unsafety: Option<syn::token::Unsafe>,
    /// Type and const parameters (lifetime parameters are harmless and allowed).
    pub(crate) type_params: Vec<GenericParam>,
    pub(crate) receiver: Receiver,
    /// The receiver as written (`&mut self`), for errors about it; empty without one.
    pub(crate) receiver_tokens: TokenStream,
    /// The parameters after the receiver, in order.
    pub(crate) params: Vec<Param>,
    pub(crate) output: ReturnType,
    /// The predicates of its `#[cfg(…)]` attributes: the generated trait method exists
    /// under the same conditions.
    pub(crate) cfgs: Vec<TokenStream>,
}

/// How a method takes `self`.
pub(crate) enum Receiver {
    /// No receiver: an associated fn.
    None,
    /// `&self`, `self: &Self` or `self: &Chat`.
    Shared,
    /// `&mut self`, `self: &mut Self` or `self: &mut Chat`.
    Exclusive,
    /// `self`, `mut self`, `self: Box<Self>`, …
    Unsupported,
}

/// A typed parameter after the receiver.
pub(crate) struct Param {
    /// The whole parameter (`message: Message`), for errors about the parameter itself.
    pub(crate) tokens: TokenStream,
    /// Its type, for spans of the generated argument.
    pub(crate) ty: Box<Type>,
}

impl Target {
    /// Classifies the item under the attribute; `None` for an item that does not parse.
    pub(crate) fn from_input(input: &Input) -> Option<Target> {
        Some(match input {
            Input::Struct(item) => Target::Struct(PartyStruct {
                unit_value: unit_value(&item.ident, &item.fields),
                ident: item.ident.clone(),
                generics: item.generics.clone(),
                repeated: repeated(&item.attrs),
            }),
            Input::Impl(block) => Target::Impl(PartyImpl::from_block(block)),
            Input::Other(item) => Target::other(item),
            Input::Broken(_) => return None,
        })
    }

    fn other(item: &Item) -> Target {
        match item {
            Item::Enum(item) => other("an enum", (&item.enum_token, &item.ident)),
            Item::Union(item) => other("a union", (&item.union_token, &item.ident)),
            Item::Fn(item) => other("a function", (&item.sig.fn_token, &item.sig.ident)),
            Item::Trait(item) => other("a trait", (&item.trait_token, &item.ident)),
            Item::Mod(item) => other("a module", (&item.mod_token, &item.ident)),
            Item::Type(item) => other("a type alias", (&item.type_token, &item.ident)),
            other_item => Target::Other {
                what: "this item",
                tokens: other_item.to_token_stream(),
            },
        }
    }
}

/// A second `#[party]` (or `#[partykit_runtime::party]`) among the item's attributes.
fn repeated(attrs: &[syn::Attribute]) -> Option<TokenStream> {
    attrs
        .iter()
        .find(|attr| {
            attr.path()
                .segments
                .last()
                .is_some_and(|segment| segment.ident == "party")
        })
        .map(ToTokens::to_token_stream)
}

/// The value of a struct without fields, written as it was declared.
fn unit_value(ident: &Ident, fields: &syn::Fields) -> Option<TokenStream> {
    match fields {
        syn::Fields::Unit => Some(quote::quote!(#ident)),
        syn::Fields::Named(named) if named.named.is_empty() => Some(quote::quote!(#ident {})),
        syn::Fields::Unnamed(unnamed) if unnamed.unnamed.is_empty() => {
            Some(quote::quote!(#ident()))
        }
        _ => None,
    }
}

/// `#[party]` on an item it does not support; errors point at its keyword and name.
fn other(what: &'static str, (keyword, name): (&impl ToTokens, &Ident)) -> Target {
    let mut tokens = keyword.to_token_stream();
    name.to_tokens(&mut tokens);
    Target::Other { what, tokens }
}

impl PartyImpl {
    fn from_block(block: &ImplBlock) -> PartyImpl {
        let mut methods = Vec::new();
        let mut macros = Vec::new();
        for item in &block.items {
            match item {
                Entry::Fn(entry) => methods.extend(Method::from_fn(&entry.attrs, &entry.sig)),
                Entry::Macro(item) => macros.push(item.mac.path.to_token_stream()),
                Entry::Other(_) => {}
            }
        }
        PartyImpl {
            self_ty: block.self_ty.clone(),
            generics: block.generics.clone(),
            trait_: block.trait_.clone(),
            methods,
            macros,
            repeated: repeated(&block.attrs),
        }
    }
}

impl PartyImpl {
    /// The impl block's style: object style as soon as one room handler is written in it
    /// (mixing styles is an error reported by `validate`).
    pub(crate) fn style(&self) -> Style {
        if self
            .methods
            .iter()
            .any(|method| method.style() == Some(Style::Object))
        {
            Style::Object
        } else {
            Style::Class
        }
    }
}

impl Method {
    /// Which style this method is written in; `None` for static hooks (the same in both
    /// styles) and misspelled handlers.
    pub(crate) fn style(&self) -> Option<Style> {
        match self.role {
            Role::Constructor => Some(Style::Class),
            Role::Handler(kind) if kind.is_static() => None,
            Role::Handler(_) => match self.receiver {
                Receiver::None => Some(Style::Object),
                Receiver::Shared | Receiver::Exclusive | Receiver::Unsupported => {
                    Some(Style::Class)
                }
            },
            Role::Unknown => None,
        }
    }

    /// Whether this is `on_fetch` under its deprecated name, `unstable_on_fetch`.
    pub(crate) fn is_unstable_on_fetch(&self) -> bool {
        self.ident == UNSTABLE_ON_FETCH
    }

    /// The method's model, or `None` for a helper the macro does not touch.
    fn from_fn(attrs: &[syn::Attribute], sig: &syn::Signature) -> Option<Method> {
        let role = Role::of(&sig.ident.to_string())?;
        let cfgs = attrs
            .iter()
            .filter(|attr| attr.path().is_ident("cfg"))
            .filter_map(|attr| match &attr.meta {
                syn::Meta::List(list) => Some(list.tokens.clone()),
                // `#[cfg]` without a predicate: rustc reports it on the user's item.
                _ => None,
            })
            .collect();
        let mut receiver = Receiver::None;
        let mut receiver_tokens = TokenStream::new();
        let mut params = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(self_arg) => {
                    receiver = Receiver::of(self_arg);
                    receiver_tokens = self_arg.to_token_stream();
                }
                FnArg::Typed(param) => params.push(Param {
                    tokens: param.to_token_stream(),
                    ty: param.ty.clone(),
                }),
            }
        }
        let type_params = sig
            .generics
            .params
            .iter()
            .filter(|param| !matches!(param, GenericParam::Lifetime(_)))
            .cloned()
            .collect();
        Some(Method {
            role,
            ident: sig.ident.clone(),
            asyncness: sig.asyncness,
            unsafety: sig.unsafety,
            type_params,
            receiver,
            receiver_tokens,
            params,
            output: sig.output.clone(),
            cfgs,
        })
    }
}

impl Role {
    /// The role of a fn named `name`; `None` for helpers.
    pub(crate) fn of(name: &str) -> Option<Role> {
        if name == "new" {
            return Some(Role::Constructor);
        }
        if let Some(kind) = HandlerKind::from_name(name) {
            return Some(Role::Handler(kind));
        }
        if name == UNSTABLE_ON_FETCH {
            return Some(Role::Handler(HandlerKind::OnFetch));
        }
        if looks_like_handler(name) {
            return Some(Role::Unknown);
        }
        None
    }
}

/// PartyKit's deprecated name of `on_fetch` (`unstable_onFetch`): accepted, with a
/// deprecation warning.
pub(crate) const UNSTABLE_ON_FETCH: &str = "unstable_on_fetch";

/// `on_…` names, and `onSomething` as written in JavaScript.
pub(crate) fn looks_like_handler(name: &str) -> bool {
    name.starts_with("on_")
        || name
            .strip_prefix("on")
            .and_then(|rest| rest.chars().next())
            .is_some_and(|first| first.is_ascii_uppercase())
}

impl Receiver {
    fn of(self_arg: &syn::Receiver) -> Receiver {
        // syn gives `&mut self` the type `&mut Self` too. Any referent is taken: `Self`,
        // the party's own name, or a mistake rustc reports on the user's token itself.
        match &*self_arg.ty {
            Type::Reference(reference) if reference.mutability.is_some() => Receiver::Exclusive,
            Type::Reference(_) => Receiver::Shared,
            _ => Receiver::Unsupported,
        }
    }
}

/// The handlers and static hooks of the runtime's `Party` trait. The macro cannot depend
/// on the runtime, so the tables below restate the trait; the test
/// `handler_table_is_the_party_traits` reads `partykit-runtime/src/party.rs` and fails
/// if they differ in any handler, parameter, receiver or output.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum HandlerKind {
    OnStart,
    ConnectionTags,
    OnConnect,
    OnMessage,
    OnClose,
    OnError,
    OnRequest,
    OnAlarm,
    OnBeforeConnect,
    OnBeforeRequest,
    OnFetch,
    OnSocket,
    OnCron,
}

/// A parameter of a trait handler: its name in messages and the runtime type it has,
/// named as in `__private`.
pub(crate) struct TraitParam {
    pub(crate) name: &'static str,
    pub(crate) ty: &'static str,
    pub(crate) by_ref: bool,
}

const fn owned(name: &'static str, ty: &'static str) -> TraitParam {
    TraitParam {
        name,
        ty,
        by_ref: false,
    }
}

const fn borrowed(name: &'static str, ty: &'static str) -> TraitParam {
    TraitParam {
        name,
        ty,
        by_ref: true,
    }
}

/// What a handler returns to the runtime, which decides how the user's return value is
/// normalised.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum OutputKind {
    /// `Result<()>`, from `()` or `Result<(), E>`.
    Unit,
    /// `Result<Vec<String>>`, from `connection_tags`.
    Tags,
    /// `Result<Response>`, from `on_request`.
    Response,
    /// `Result<Before>`, from `on_before_connect` / `on_before_request`.
    Before,
    /// `Result<Option<Response>>`, from `on_fetch`.
    Fetch,
}

impl HandlerKind {
    /// Every handler, in the order they are listed in error messages.
    pub(crate) const ALL: [HandlerKind; 13] = [
        HandlerKind::OnStart,
        HandlerKind::ConnectionTags,
        HandlerKind::OnConnect,
        HandlerKind::OnMessage,
        HandlerKind::OnClose,
        HandlerKind::OnError,
        HandlerKind::OnRequest,
        HandlerKind::OnAlarm,
        HandlerKind::OnBeforeConnect,
        HandlerKind::OnBeforeRequest,
        HandlerKind::OnFetch,
        HandlerKind::OnSocket,
        HandlerKind::OnCron,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            HandlerKind::OnStart => "on_start",
            HandlerKind::ConnectionTags => "connection_tags",
            HandlerKind::OnConnect => "on_connect",
            HandlerKind::OnMessage => "on_message",
            HandlerKind::OnClose => "on_close",
            HandlerKind::OnError => "on_error",
            HandlerKind::OnRequest => "on_request",
            HandlerKind::OnAlarm => "on_alarm",
            HandlerKind::OnBeforeConnect => "on_before_connect",
            HandlerKind::OnBeforeRequest => "on_before_request",
            HandlerKind::OnFetch => "on_fetch",
            HandlerKind::OnSocket => "on_socket",
            HandlerKind::OnCron => "on_cron",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<HandlerKind> {
        HandlerKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
    }

    /// Static hooks run in front of the rooms and take no `self`.
    pub(crate) fn is_static(self) -> bool {
        matches!(
            self,
            HandlerKind::OnBeforeConnect
                | HandlerKind::OnBeforeRequest
                | HandlerKind::OnFetch
                | HandlerKind::OnSocket
                | HandlerKind::OnCron
        )
    }

    /// The trait method's parameters after the receiver.
    pub(crate) fn params(self) -> &'static [TraitParam] {
        // Named constants, as calls to `const fn`s are not promoted to `'static` in place.
        const NONE: &[TraitParam] = &[];
        const CONNECT: &[TraitParam] = &[
            borrowed("connection", "Connection"),
            borrowed("ctx", "ConnectionContext"),
        ];
        const MESSAGE: &[TraitParam] = &[
            owned("message", "Message"),
            borrowed("sender", "Connection"),
        ];
        const CLOSE: &[TraitParam] = &[borrowed("connection", "Connection")];
        const ERROR: &[TraitParam] = &[
            borrowed("connection", "Connection"),
            owned("error", "Error"),
        ];
        const REQUEST: &[TraitParam] = &[owned("request", "Request")];
        const BEFORE: &[TraitParam] = &[owned("request", "Request"), borrowed("lobby", "Lobby")];
        const FETCH: &[TraitParam] =
            &[owned("request", "Request"), borrowed("lobby", "FetchLobby")];
        const SOCKET: &[TraitParam] = &[
            owned("socket", "FetchSocket"),
            borrowed("lobby", "FetchLobby"),
        ];
        const CRON: &[TraitParam] = &[owned("cron", "Cron"), borrowed("lobby", "CronLobby")];
        match self {
            HandlerKind::OnStart | HandlerKind::OnAlarm => NONE,
            HandlerKind::ConnectionTags | HandlerKind::OnConnect => CONNECT,
            HandlerKind::OnMessage => MESSAGE,
            HandlerKind::OnClose => CLOSE,
            HandlerKind::OnError => ERROR,
            HandlerKind::OnRequest => REQUEST,
            HandlerKind::OnBeforeConnect | HandlerKind::OnBeforeRequest => BEFORE,
            HandlerKind::OnFetch => FETCH,
            HandlerKind::OnSocket => SOCKET,
            HandlerKind::OnCron => CRON,
        }
    }

    /// The parameters of the object-style form: the class-style ones with the room put
    /// where PartyKit's legacy object syntax had it; `None` where that syntax had no such
    /// handler (`on_start`, `connection_tags`) and for static hooks, which are the same in
    /// both styles.
    pub(crate) fn object_params(self) -> Option<&'static [TraitParam]> {
        const ROOM: TraitParam = borrowed("room", "Room");
        const CONNECT: &[TraitParam] = &[
            borrowed("connection", "Connection"),
            ROOM,
            borrowed("ctx", "ConnectionContext"),
        ];
        const MESSAGE: &[TraitParam] = &[
            owned("message", "Message"),
            borrowed("sender", "Connection"),
            ROOM,
        ];
        const CLOSE: &[TraitParam] = &[borrowed("connection", "Connection"), ROOM];
        const ERROR: &[TraitParam] = &[
            borrowed("connection", "Connection"),
            owned("error", "Error"),
            ROOM,
        ];
        const REQUEST: &[TraitParam] = &[owned("request", "Request"), ROOM];
        const ALARM: &[TraitParam] = &[ROOM];
        match self {
            HandlerKind::OnConnect => Some(CONNECT),
            HandlerKind::OnMessage => Some(MESSAGE),
            HandlerKind::OnClose => Some(CLOSE),
            HandlerKind::OnError => Some(ERROR),
            HandlerKind::OnRequest => Some(REQUEST),
            HandlerKind::OnAlarm => Some(ALARM),
            _ => None,
        }
    }

    /// The parameters a handler written in `style` may take.
    pub(crate) fn params_in(self, style: Style) -> &'static [TraitParam] {
        match style {
            Style::Object => self.object_params().unwrap_or_else(|| self.params()),
            Style::Class => self.params(),
        }
    }

    pub(crate) fn output(self) -> OutputKind {
        match self {
            HandlerKind::ConnectionTags => OutputKind::Tags,
            HandlerKind::OnRequest => OutputKind::Response,
            HandlerKind::OnBeforeConnect | HandlerKind::OnBeforeRequest => OutputKind::Before,
            HandlerKind::OnFetch => OutputKind::Fetch,
            _ => OutputKind::Unit,
        }
    }

    /// The fullest signature the user may write, for error messages.
    pub(crate) fn signature(self) -> String {
        self.signature_in(Style::Class, true)
    }

    /// The fullest signature in `style`, `async` or not.
    pub(crate) fn signature_in(self, style: Style, asyncness: bool) -> String {
        let receiver = if self.is_static() || style == Style::Object {
            None
        } else {
            Some("&mut self".to_owned())
        };
        let params = self.params_in(style).iter().map(|param| {
            let by_ref = if param.by_ref { "&" } else { "" };
            format!("{}: {by_ref}{}", param.name, param.ty)
        });
        let inputs: Vec<String> = receiver.into_iter().chain(params).collect();
        let output = match self.output() {
            OutputKind::Unit => "",
            OutputKind::Tags => " -> Vec<String>",
            OutputKind::Response => " -> impl IntoResponse",
            OutputKind::Before => " -> Request",
            OutputKind::Fetch => " -> Option<Response>",
        };
        let asyncness = if asyncness { "async " } else { "" };
        format!(
            "{asyncness}fn {}({}){output}",
            self.name(),
            inputs.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn methods(item: TokenStream) -> Vec<Method> {
        match Target::from_input(&Input::parse(item)) {
            Some(Target::Impl(party)) => party.methods,
            _ => panic!("not an impl"),
        }
    }

    #[test]
    fn methods_are_classified_by_name() {
        let methods = methods(quote::quote! {
            impl Chat {
                fn new(room: Room) -> Self { panic!() }
                async fn on_message(&mut self, message: Message) {}
                fn on_conect(&mut self) {}
                fn onClose(&mut self) {}
                fn helper(&self) {}
                fn only(&self) {}
            }
        });
        let roles: Vec<Role> = methods.iter().map(|method| method.role).collect();
        assert_eq!(
            roles,
            [
                Role::Constructor,
                Role::Handler(HandlerKind::OnMessage),
                Role::Unknown,
                Role::Unknown,
            ]
        );
        assert!(methods[1].asyncness.is_some());
        assert_eq!(methods[1].params.len(), 1);
    }

    #[test]
    fn receivers_are_read_from_either_spelling() {
        let methods = methods(quote::quote! {
            impl Chat {
                fn on_start(&mut self) {}
                fn on_alarm(self: &Self) {}
                fn on_close(self) {}
                fn on_error(self: Box<Self>) {}
                fn on_fetch() {}
                fn on_connect(self: &mut Chat) {}
            }
        });
        let receivers: Vec<&str> = methods
            .iter()
            .map(|method| match method.receiver {
                Receiver::Exclusive => "&mut self",
                Receiver::Shared => "&self",
                Receiver::Unsupported => "unsupported",
                Receiver::None => "none",
            })
            .collect();
        assert_eq!(
            receivers,
            [
                "&mut self",
                "&self",
                "unsupported",
                "unsupported",
                "none",
                "&mut self"
            ]
        );
    }

    /// The model's table of handlers is checked against the runtime's `Party` trait, the
    /// one source of truth: same handlers, same parameters in the same order, same
    /// receivers and outputs.
    #[test]
    fn handler_table_is_the_party_traits() {
        let source = include_str!("../../partykit-runtime/src/party.rs");
        let file = syn::parse_file(source).expect("party.rs parses");
        let party = file
            .items
            .iter()
            .find_map(|item| match item {
                syn::Item::Trait(item) if item.ident == "Party" => Some(item),
                _ => None,
            })
            .expect("party.rs defines `trait Party`");
        let mut handlers = Vec::new();
        for item in &party.items {
            let syn::TraitItem::Fn(method) = item else {
                continue;
            };
            let name = method.sig.ident.to_string();
            if name == "new" {
                continue;
            }
            let kind = HandlerKind::from_name(&name)
                .unwrap_or_else(|| panic!("`Party::{name}` is missing from the model"));
            handlers.push(kind);
            let has_self = matches!(method.sig.inputs.first(), Some(FnArg::Receiver(_)));
            assert_eq!(has_self, !kind.is_static(), "{name}'s receiver");
            let params: Vec<String> = method
                .sig
                .inputs
                .iter()
                .filter_map(|input| match input {
                    FnArg::Typed(param) => Some(format!(
                        "{}: {}",
                        param.pat.to_token_stream(),
                        param.ty.to_token_stream()
                    )),
                    FnArg::Receiver(_) => None,
                })
                .collect();
            let modelled: Vec<String> = kind
                .params()
                .iter()
                .map(|param| {
                    let by_ref = if param.by_ref { "& " } else { "" };
                    format!("{}: {by_ref}{}", param.name, param.ty)
                })
                .collect();
            assert_eq!(params, modelled, "{name}'s parameters");
            let output = method.sig.output.to_token_stream().to_string();
            let result = match kind.output() {
                OutputKind::Unit => "Result < () >",
                OutputKind::Tags => "Result < Vec < String > >",
                OutputKind::Response => "Result < Response >",
                OutputKind::Before => "Result < Before >",
                OutputKind::Fetch => "Result < Option < Response > >",
            };
            assert!(
                output.contains(&format!("Output = {result}")),
                "{name} returns {output}, the model says {result}"
            );
        }
        assert_eq!(
            handlers,
            HandlerKind::ALL,
            "the handlers, in the trait's order"
        );
    }

    #[test]
    fn object_parameters_are_the_traits_or_the_room() {
        for kind in HandlerKind::ALL {
            for param in kind.object_params().unwrap_or_default() {
                assert!(
                    param.ty == "Room"
                        || kind.params().iter().any(|trait_param| {
                            trait_param.name == param.name
                                && trait_param.ty == param.ty
                                && trait_param.by_ref == param.by_ref
                        }),
                    "{}'s `{}`",
                    kind.name(),
                    param.name
                );
            }
        }
    }

    #[test]
    fn handler_table_matches_names() {
        for kind in HandlerKind::ALL {
            assert_eq!(HandlerKind::from_name(kind.name()), Some(kind));
        }
        assert!(looks_like_handler("on_x") && looks_like_handler("onMessage"));
        assert!(!looks_like_handler("once") && !looks_like_handler("only"));
    }
}
