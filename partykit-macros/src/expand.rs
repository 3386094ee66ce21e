//! Step 4 of the pipeline: code generation.
//!
//! Everything generated lives inside `const _: () = { … };`, so it adds no names to the
//! user's module, and names runtime items only by absolute path
//! (`::partykit_runtime::__private::…`, or the `crate = "…"` path), so user items cannot
//! shadow them. Locals are prefixed `__partykit_` for the same reason.
//!
//! Generated expressions that can fail to type-check are spanned at the user's token they
//! depend on (a parameter's type, a return type), so rustc's error points there.
//!
//! Both styles get the same kind of `Party` impl. For object style it does at compile time
//! what PartyKit's facade did at run time: the party is built from its unit value (no
//! constructor), each handler is called without `self` and with the room, taken from the
//! room's task (`__private::current_room`), where PartyKit's object syntax put it; and
//! `OPTIONS.hibernate` records PartyKit's implicit hibernation rule for object-style
//! parties: a party hibernates if it has `on_message` or no `on_connect`.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ReturnType, Type};

use crate::args::Args;
use crate::model::{
    HandlerKind, Method, OutputKind, Param, PartyImpl, PartyStruct, Receiver, Role, Style, Target,
};
use crate::validate::Errors;

/// The macro's output: the user's item (unchanged, or with deprecation notes inserted by
/// `warnings`), then either the generated glue or the errors (plus just enough glue that
/// the errors do not cascade into others).
pub(crate) fn expand(
    args: &Args,
    target: Option<&Target>,
    item: TokenStream,
    errors: &Errors,
) -> TokenStream {
    let krate = match &args.krate {
        Some(path) => path.to_token_stream(),
        None => quote!(::partykit_runtime),
    };
    let glue = match target {
        Some(Target::Struct(party)) => expand_struct(&krate, args, party, errors.is_empty()),
        Some(Target::Impl(party)) if errors.is_empty() => expand_impl(&krate, party),
        Some(Target::Impl(party)) => stub_impl(&krate, party),
        Some(Target::Other { .. }) | None => TokenStream::new(),
    };
    let errors = errors.to_compile_errors();
    quote! {
        #item
        #errors
        #glue
    }
}

/// `#[party] struct S`: records the party's name for the impl block, and checks that `S`
/// implements `Party`, so a forgotten `#[party]` on the impl block is an error, not a
/// struct that silently serves nothing.
fn expand_struct(
    krate: &TokenStream,
    args: &Args,
    party: &PartyStruct,
    valid: bool,
) -> TokenStream {
    // The runtime's traits take no generics; a generic struct was reported and gets no glue.
    if !party.generics.params.is_empty() {
        return TokenStream::new();
    }
    let ident = &party.ident;
    let name = match &args.name {
        Some(name) => name.to_token_stream(),
        None => quote!("main"),
    };
    let hibernate = args.hibernate.is_some();
    // Skipped when there are errors: while the user fixes them, "not a party" would only
    // be noise.
    let assert_party = valid.then(|| {
        quote_spanned! {at(ident)=>
            #krate::__private::assert_party::<#ident>();
        }
    });
    // How an object-style impl block builds the party, which has no constructor.
    let unit_struct = party.unit_value.as_ref().map(|value| {
        quote! {
            impl #krate::__private::UnitStruct for #ident {
                fn value() -> Self {
                    #value
                }
            }
        }
    });
    quote! {
        const _: () = {
            impl #krate::__private::PartyStruct for #ident {
                const NAME: &'static str = #name;
                const HIBERNATE: bool = #hibernate;
            }
            #unit_struct
            #assert_party
        };
    }
}

/// `#[party] impl S { … }`: the `Party` impl, each trait method calling the user's method.
fn expand_impl(krate: &TokenStream, party: &PartyImpl) -> TokenStream {
    let self_ty = &party.self_ty;
    let private = quote!(#krate::__private);
    // Whether the user defined a handler; under `#[cfg]`, a `cfg!` of the same conditions.
    let defines = |kind: HandlerKind| {
        let methods = methods_of(party, Role::Handler(kind));
        if methods.is_empty() {
            quote!(false)
        } else {
            match condition(&methods) {
                Some(condition) => quote!(::core::cfg!(#condition)),
                None => quote!(true),
            }
        }
    };
    let (on_request, on_fetch, on_socket, on_cron) = (
        defines(HandlerKind::OnRequest),
        defines(HandlerKind::OnFetch),
        defines(HandlerKind::OnSocket),
        defines(HandlerKind::OnCron),
    );
    // Spanned at the self type: if the struct lacks `#[party]`, `PartyStruct`'s error says
    // so there.
    let name = quote_spanned! {at(self_ty)=>
        <#self_ty as #private::PartyStruct>::NAME
    };
    let style = party.style();
    let (new, options) = match style {
        Style::Class => {
            let options = quote! {
                const OPTIONS: #private::PartyOptions = #private::PartyOptions {
                    hibernate: <#self_ty as #private::PartyStruct>::HIBERNATE,
                };
            };
            (
                expand_new(&private, self_ty, &methods_of(party, Role::Constructor)),
                Some(options),
            )
        }
        Style::Object => {
            // PartyKit's legacy rule: hibernate when the object has `onMessage` or lacks
            // `onConnect`.
            let (on_message, on_connect) = (
                defines(HandlerKind::OnMessage),
                defines(HandlerKind::OnConnect),
            );
            let options = quote! {
                const OPTIONS: #private::PartyOptions = #private::PartyOptions {
                    hibernate: <#self_ty as #private::PartyStruct>::HIBERNATE
                        || #on_message
                        || !#on_connect,
                };
            };
            (expand_unit_new(&private, self_ty), Some(options))
        }
    };
    let handlers = party.methods.iter().filter_map(|method| match method.role {
        Role::Handler(kind) => Some(expand_handler(&private, self_ty, style, kind, method)),
        Role::Constructor | Role::Unknown => None,
    });
    quote! {
        const _: () = {
            impl #private::Party for #self_ty {
                const NAME: &'static str = #name;
                const HANDLERS: #private::Handlers = #private::Handlers {
                    on_request: #on_request,
                    on_fetch: #on_fetch,
                    on_socket: #on_socket,
                    on_cron: #on_cron,
                };
                #options
                #new
                #(#handlers)*
            }
        };
    }
}

/// `Party::new`: the user's `fn new(room: Room) -> Self` (one per `#[cfg]` variant), or
/// `Default` where there is none.
fn expand_new(private: &TokenStream, self_ty: &Type, constructors: &[&Method]) -> TokenStream {
    let room = format_ident!("__partykit_room");
    let user_constructors = constructors.iter().map(|method| {
        let args = method
            .params
            .iter()
            .zip([&room])
            .map(|(param, local)| pass(private, param, "Room", quote!(#local)));
        let call = quote_spanned! {output_span(method)=> <#self_ty>::new(#(#args),*) };
        let cfgs = cfg_attrs(method);
        quote! {
            #cfgs
            fn new(#room: #private::Room) -> Self {
                #call
            }
        }
    });
    // `Default` serves when no constructor exists in this configuration.
    let default_cfg = if constructors.is_empty() {
        Some(TokenStream::new())
    } else {
        condition(constructors).map(|condition| quote!(#[cfg(not(#condition))]))
    };
    let from_default = default_cfg.map(|cfg| {
        let call = quote_spanned! {at(self_ty)=>
            <#self_ty as #private::NewFromDefault>::new_from_default()
        };
        quote! {
            #cfg
            fn new(#room: #private::Room) -> Self {
                #call
            }
        }
    });
    quote! {
        #(#user_constructors)*
        #from_default
    }
}

/// `Party::new` of an object-style party: its unit value, as it has no constructor. Spanned
/// at the self type: if the struct has fields, `UnitStruct`'s error says so there.
fn expand_unit_new(private: &TokenStream, self_ty: &Type) -> TokenStream {
    let value = quote_spanned! {at(self_ty)=>
        <#self_ty as #private::UnitStruct>::value()
    };
    quote! {
        fn new(_: #private::Room) -> Self {
            #value
        }
    }
}

/// One trait method: the trait's exact signature, calling the user's method with the
/// arguments it takes and normalising what it returns.
fn expand_handler(
    private: &TokenStream,
    self_ty: &Type,
    style: Style,
    kind: HandlerKind,
    method: &Method,
) -> TokenStream {
    let trait_ident = Ident::new(kind.name(), Span::call_site());
    let user_ident = &method.ident;

    let locals: Vec<Ident> = kind
        .params()
        .iter()
        .map(|param| format_ident!("__partykit_{}", param.name))
        .collect();
    let params = kind.params().iter().zip(&locals).map(|(param, local)| {
        let ty = Ident::new(param.ty, Span::call_site());
        let by_ref = param.by_ref.then(|| quote!(&));
        quote!(#local: #by_ref #private::#ty)
    });
    let receiver = (!kind.is_static()).then(|| quote!(&mut self,));
    let self_arg = match method.receiver {
        Receiver::Exclusive => Some(quote!(self)),
        Receiver::Shared => Some(quote!(&*self)),
        // Static hooks and object style; other receivers were refused by `validate`.
        Receiver::None | Receiver::Unsupported => None,
    };
    // Object style takes the room where PartyKit's object syntax had it; it comes from the
    // room's task.
    let room = format_ident!("__partykit_room");
    let object_style = style == Style::Object && !kind.is_static();
    let get_room = object_style.then(|| {
        let name = kind.name();
        quote! {
            let #room = #private::current_room(#name)?;
        }
    });
    let user_params = kind.params_in(if object_style {
        Style::Object
    } else {
        Style::Class
    });
    let user_args = method
        .params
        .iter()
        .zip(user_params)
        .map(|(param, expected)| {
            let given = if expected.ty == "Room" {
                quote!(&#room)
            } else {
                let index = kind
                    .params()
                    .iter()
                    .position(|trait_param| trait_param.name == expected.name)
                    .unwrap_or_default();
                locals[index].to_token_stream()
            };
            let ty = if expected.by_ref {
                format!("&{}", expected.ty)
            } else {
                expected.ty.to_owned()
            };
            pass(private, param, &ty, given)
        });
    let args = self_arg.into_iter().chain(user_args);
    let awaited = method.asyncness.map(|_| quote!(.await));
    // Spanned at the user's method name: "arguments to this function are incorrect"
    // points there.
    let call = quote_spanned!(at(user_ident)=> <#self_ty>::#user_ident(#(#args),*) #awaited);

    let trait_output = match kind.output() {
        OutputKind::Unit => quote!(()),
        OutputKind::Tags => quote!(::std::vec::Vec<::std::string::String>),
        OutputKind::Response => quote!(#private::Response),
        OutputKind::Before => quote!(#private::Before),
        OutputKind::Fetch => quote!(::core::option::Option<#private::Response>),
    };
    let body = match &method.output {
        // Only unit handlers may return nothing (`validate` refused the others), and then
        // there is nothing to normalise.
        ReturnType::Default => quote! {
            #get_room
            #call;
            #private::StdResult::Ok(())
        },
        ReturnType::Type(_, ty) => {
            let output = Ident::new("__partykit_output", at(ty));
            let normalise = match kind.output() {
                OutputKind::Unit => quote!(#private::HandlerOutput::into_result),
                OutputKind::Tags => quote!(#private::TagsOutput::into_tags),
                OutputKind::Response if is_result(ty) => quote!(#private::response_result),
                OutputKind::Response => quote!(#private::response),
                OutputKind::Before => quote!(#private::BeforeOutput::into_before),
                OutputKind::Fetch => quote!(#private::FetchOutput::into_fetch),
            };
            let normalise = quote_spanned!(at(ty)=> #normalise(#output));
            quote! {
                #get_room
                let #output = #call;
                #normalise
            }
        }
    };
    // The returned future is spanned at the user's method name: if the user's future is
    // not `Send`, rustc reports it there.
    let future_type = quote_spanned! {at(user_ident)=>
        impl #private::Future<
            Output = #private::StdResult<#trait_output, #private::Error>
        > + ::core::marker::Send
    };
    let future = quote_spanned! {at(user_ident)=>
        async move { #body }
    };
    let cfgs = cfg_attrs(method);
    quote! {
        #cfgs
        fn #trait_ident(#receiver #(#params),*) -> #future_type {
            #future
        }
    }
}

/// The methods with this role, in source order.
fn methods_of(party: &PartyImpl, role: Role) -> Vec<&Method> {
    party
        .methods
        .iter()
        .filter(|method| method.role == role)
        .collect()
}

/// The `cfg` predicate under which one of `methods` exists, or `None` if one of them
/// always does.
fn condition(methods: &[&Method]) -> Option<TokenStream> {
    if methods.iter().any(|method| method.cfgs.is_empty()) {
        return None;
    }
    let each = methods.iter().map(|method| {
        let cfgs = &method.cfgs;
        quote!(all(#(#cfgs),*))
    });
    Some(quote!(any(#(#each),*)))
}

/// The user method's `#[cfg(…)]` attributes, for the trait method that calls it.
fn cfg_attrs(method: &Method) -> TokenStream {
    let cfgs = &method.cfgs;
    quote!(#(#[cfg(#cfgs)])*)
}

/// One argument of the user's method: the runtime's `given` value (of type `expected`,
/// as named in the signatures), converted to the user's parameter type. Spanned at that
/// type, so a wrong one is reported on it with a message naming the right one. A message
/// goes through `MessageParam` (`Message` or `String`), anything else through `Param`
/// (only the expected type itself). The user's method may take fewer parameters than the
/// runtime has: trailing ones may be left out.
fn pass(private: &TokenStream, param: &Param, expected: &str, given: TokenStream) -> TokenStream {
    // Every token gets a span of the user's type, the runtime's path included (a span
    // joining the macro's call site with the user's type would underline everything in
    // between): the path its first token's, the arguments its last token's, so that the
    // call, whose span rustc reports, covers exactly the type.
    let tokens = param.ty.to_token_stream();
    let first = tokens.clone().into_iter().next().map(|token| at(&token));
    let last = tokens.into_iter().last().map(|token| at(&token));
    let (first, last) = match (first, last) {
        (Some(first), Some(last)) => (first, last),
        _ => (at(&param.ty), at(&param.ty)),
    };
    let given = respan(given, last);
    let arguments = proc_macro2::Group::new(proc_macro2::Delimiter::Parenthesis, given);
    let mut arguments = proc_macro2::TokenTree::from(arguments);
    arguments.set_span(last);
    if expected == "Message" {
        let path = respan(quote!(#private::MessageParam::from_message), first);
        let question = respan(quote!(?), last);
        quote!(#path #arguments #question)
    } else {
        let path = respan(quote!(#private::Param::param), first);
        quote!(#path #arguments)
    }
}

/// `tokens` with every span set to `span` (keeping hygiene: `span` resolves as the macro's
/// own tokens do, see [`at`]).
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let proc_macro2::TokenTree::Group(group) = &token {
                let mut respanned =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                token = respanned.into();
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

/// Where a conversion of the method's return value is reported: the return type, or the
/// method name when there is none.
fn output_span(method: &Method) -> Span {
    match &method.output {
        ReturnType::Type(_, ty) => at(ty),
        ReturnType::Default => at(&method.ident),
    }
}

/// A span for generated code that rustc reports at the user's `tokens` (their first token:
/// stable proc macros cannot join spans). It keeps the macro's own hygiene and expansion
/// marker, so generated locals still resolve and rustc does not suggest edits to code the
/// user never wrote (such as "consider borrowing here" inside a type).
fn at(tokens: &impl Spanned) -> Span {
    Span::call_site().located_at(tokens.span())
}

/// Whether an `on_request` return type is a `Result` (`Result<…>`, `partykit_runtime::Result`,
/// `io::Result<…>`, …), judged by its last path segment as the macro cannot resolve types.
fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Result"),
        Type::Paren(inner) => is_result(&inner.elem),
        Type::Group(inner) => is_result(&inner.elem),
        _ => false,
    }
}

/// The glue emitted when the impl block has errors: a `Party` impl with nothing but a
/// constructor, so that the struct's "is a party" check and `Server::party::<S>()` calls
/// do not add errors of their own. It never runs: the crate does not compile.
fn stub_impl(krate: &TokenStream, party: &PartyImpl) -> TokenStream {
    // A trait impl or generic impl was refused; a stub would only add conflicts.
    if party.trait_.is_some() || !party.generics.params.is_empty() {
        return TokenStream::new();
    }
    let self_ty = &party.self_ty;
    quote! {
        const _: () = {
            impl #krate::__private::Party for #self_ty {
                fn new(_: #krate::__private::Room) -> Self {
                    ::core::unreachable!()
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        crate::party_tokens(args, item).to_string()
    }

    fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    #[test]
    fn struct_gets_its_name_and_the_party_check() {
        let out = expand(
            quote!(name = "chat"),
            quote!(
                struct Chat;
            ),
        );
        assert!(out.starts_with("struct Chat ;"), "{out}");
        assert!(out.contains("PartyStruct for Chat"), "{out}");
        assert!(out.contains("\"chat\""), "{out}");
        assert!(out.contains("assert_party :: < Chat >"), "{out}");
        assert_eq!(count(&out, "compile_error"), 0, "{out}");
    }

    #[test]
    fn struct_name_defaults_to_main_and_crate_is_replaced() {
        let out = expand(
            quote!(crate = "my_rename"),
            quote!(
                struct Chat;
            ),
        );
        assert!(out.contains("\"main\""), "{out}");
        assert!(
            out.contains("my_rename :: __private :: PartyStruct"),
            "{out}"
        );
        assert!(!out.contains(":: partykit_runtime"), "{out}");
    }

    #[test]
    fn impl_is_re_emitted_and_calls_user_methods() {
        let item = quote! {
            impl Chat {
                async fn on_message(&self, message: Message) {}
                fn on_request(&mut self) -> Result<String, Error> { panic!() }
                fn helper(&self) {}
            }
        };
        let out = expand(TokenStream::new(), item.clone());
        assert!(out.starts_with(&item.to_string()), "{out}");
        assert!(
            out.contains(
                "< Chat > :: on_message (& * self , :: partykit_runtime :: __private :: \
                 MessageParam :: from_message (__partykit_message) ?) . await"
            ),
            "{out}"
        );
        assert!(out.contains("< Chat > :: on_request (self)"), "{out}");
        assert!(out.contains("response_result"), "{out}");
        assert!(out.contains("on_request : true"), "{out}");
        assert!(out.contains("on_fetch : false"), "{out}");
        assert!(out.contains("NewFromDefault"), "{out}");
        let generated = &out[item.to_string().len()..];
        assert!(!generated.contains("helper"), "{generated}");
    }

    #[test]
    fn all_errors_are_reported_and_the_item_is_kept() {
        let item = quote! {
            impl Chat {
                fn on_conect(&mut self) {}
                fn on_start(self) {}
                fn on_request(&mut self) {}
            }
        };
        let out = expand(quote!(nme = "x", name = "Bad"), item.clone());
        assert!(out.starts_with(&item.to_string()), "{out}");
        // The unknown argument, `name` on an impl, and three handlers.
        assert_eq!(count(&out, "compile_error"), 5, "{out}");
        // A stub impl keeps `Chat` a party, so that errors do not cascade.
        assert!(out.contains("unreachable"), "{out}");
    }

    #[test]
    fn unparsable_input_is_kept_without_panicking() {
        let item = quote!(struct);
        let out = expand(quote!(name = ), item);
        assert!(out.starts_with("struct"), "{out}");
        assert_eq!(count(&out, "compile_error"), 2, "{out}");
    }

    #[test]
    fn object_style_gets_the_room_and_the_hibernation_rule() {
        let item = quote! {
            impl Legacy {
                fn on_connect(conn: &Connection, room: &Room) {}
                async fn on_request(req: Request, room: &Room) -> String { panic!() }
                fn on_fetch(req: Request) -> Option<String> { None }
            }
        };
        let out = expand(TokenStream::new(), item);
        // Built from the unit value, not from `new` or `Default`.
        assert!(
            out.contains(
                "< Legacy as :: partykit_runtime :: __private :: UnitStruct > :: value ()"
            ),
            "{out}"
        );
        assert!(!out.contains("NewFromDefault"), "{out}");
        // Each room handler fetches the room and passes it where the user put it.
        assert_eq!(count(&out, "current_room (\"on_connect\") ?"), 1, "{out}");
        assert_eq!(count(&out, "current_room (\"on_request\") ?"), 1, "{out}");
        assert!(out.contains("Param :: param (& __partykit_room)"), "{out}");
        assert!(
            out.contains("< Legacy > :: on_connect (:: partykit_runtime"),
            "{out}"
        );
        // Static hooks do not.
        assert_eq!(count(&out, "current_room"), 2, "{out}");
        // `on_message` or no `on_connect`.
        assert!(out.contains("|| false || ! true"), "{out}");
        // One deprecation note per object-style handler, none for the static hook.
        assert_eq!(count(&out, "OBJECT_STYLE"), 4, "{out}");
    }

    #[test]
    fn unit_structs_record_their_value() {
        for (item, value) in [
            (
                quote!(
                    struct A;
                ),
                "fn value () -> Self { A }",
            ),
            (
                quote!(
                    struct A {}
                ),
                "fn value () -> Self { A { } }",
            ),
            (
                quote!(
                    struct A();
                ),
                "fn value () -> Self { A () }",
            ),
        ] {
            let out = expand(TokenStream::new(), item);
            assert!(out.contains(value), "{out}");
        }
        let out = expand(
            TokenStream::new(),
            quote!(
                struct A {
                    room: Room,
                }
            ),
        );
        assert!(!out.contains("UnitStruct"), "{out}");
    }

    #[test]
    fn mixed_styles_are_refused_without_notes() {
        let item = quote! {
            impl Mixed {
                fn new(room: Room) -> Self { panic!() }
                fn on_message(message: Message) {}
                fn on_close(conn: &Connection) {}
            }
        };
        let out = expand(TokenStream::new(), item.clone());
        assert!(out.starts_with(&item.to_string()), "{out}");
        assert_eq!(count(&out, "compile_error"), 2, "{out}");
        assert_eq!(count(&out, "one impl block cannot mix them"), 2, "{out}");
        assert_eq!(count(&out, "OBJECT_STYLE"), 0, "{out}");
    }

    #[test]
    fn cfg_attributes_follow_handlers_and_constructors() {
        let item = quote! {
            impl Chat {
                #[cfg(feature = "a")]
                fn new(room: Room) -> Self { panic!() }
                #[cfg(feature = "a")]
                fn on_request(&mut self) -> String { panic!() }
            }
        };
        let out = expand(TokenStream::new(), item);
        assert!(
            out.contains("on_request : :: core :: cfg ! (any (all (feature = \"a\")))"),
            "{out}"
        );
        assert!(
            out.contains("# [cfg (not (any (all (feature = \"a\"))))] fn new"),
            "{out}"
        );
    }
}
