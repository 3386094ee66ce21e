//! Step 5 of the pipeline: code generation.
//!
//! Everything generated lives inside `const _: () = { … };`, so it adds no names to the
//! user's module, and names runtime items only by absolute path
//! (`::partykit_runtime::…`, or the `crate = "…"` path), so user items cannot shadow
//! them. Locals are prefixed `__partykit_` for the same reason. Generated impls are
//! `#[automatically_derived]`, so lints about code the user did not write stay quiet.
//!
//! Generated expressions that can fail to type-check are spanned at the user's token they
//! depend on (a parameter's type, a return type), so rustc's error points there; the
//! traits they are checked against are the public ones of `partykit_runtime::handler`,
//! whose names and docs the errors show.
//!
//! Both styles get the same kind of `Party` impl. For object style it does at compile time
//! what PartyKit's facade did at run time: the party is built from its unit value (no
//! constructor), each handler is called without `self` and with the room, taken from the
//! room's task (`__private::current_room`), where PartyKit's object syntax put it; and
//! `OPTIONS.hibernate` records PartyKit's implicit hibernation rule for object-style
//! parties: a party hibernates if it has `on_message` or no `on_connect`.
//!
//! The modules: [`handler`] writes one trait method, [`outside`] finds handlers written
//! in impl blocks without `#[party]`, and [`spans`] holds the span helpers.

mod handler;
mod outside;
mod spans;

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::{LitStr, Type};

use crate::args::Args;
use crate::model::{HandlerKind, Method, PartyImpl, PartyStruct, Role, Style, Target};
use crate::parse::Fallback;
use crate::validate::Errors;
use spans::{at, output_span};

/// The runtime's paths, from `crate = "…"` or `::partykit_runtime`.
pub(crate) struct Paths {
    /// The runtime crate.
    krate: TokenStream,
    /// `<runtime>::__private`: what generated code names besides the public API.
    private: TokenStream,
    /// `<runtime>::handler`: the traits handler signatures are checked against.
    handler: TokenStream,
}

impl Paths {
    fn new(args: &Args) -> Paths {
        let krate = match &args.krate {
            Some(path) => path.to_token_stream(),
            None => quote!(::partykit_runtime),
        };
        Paths {
            private: quote!(#krate::__private),
            handler: quote!(#krate::handler),
            krate,
        }
    }
}

/// What the glue is generated from: the classified item, or what could be read of an item
/// that does not parse.
pub(crate) enum Source<'a> {
    Target(&'a Target),
    Fallback(Fallback),
}

/// The macro's output: the user's item (unchanged, or with deprecation notes inserted by
/// `warnings`), then either the generated glue or the errors (plus just enough glue that
/// the errors do not cascade into others).
pub(crate) fn expand(
    args: &Args,
    source: Source<'_>,
    item: TokenStream,
    errors: &Errors,
) -> TokenStream {
    let paths = Paths::new(args);
    let glue = match source {
        // Another `#[party]` on the same item runs next and writes the glue.
        Source::Target(Target::Struct(party)) if party.repeated.is_some() => TokenStream::new(),
        Source::Target(Target::Impl(party)) if party.repeated.is_some() => TokenStream::new(),
        Source::Target(Target::Struct(party)) => {
            expand_struct(&paths, args, party, errors.is_empty())
        }
        Source::Target(Target::Impl(party)) if errors.is_empty() => expand_impl(&paths, party),
        Source::Target(Target::Impl(party)) => stub_impl(&paths, party),
        Source::Target(Target::Other { .. }) => TokenStream::new(),
        Source::Fallback(fallback) => fallback_glue(&paths, args, &fallback),
    };
    let errors = errors.to_compile_errors();
    quote! {
        #item
        #errors
        #glue
    }
}

/// `#[party] struct S`: records the party's name and options for the impl block, and
/// checks that `S` implements `Party` with them, so that neither a forgotten `#[party]`
/// on the impl block nor a hand-written `impl Party` that serves another name goes
/// unnoticed.
fn expand_struct(paths: &Paths, args: &Args, party: &PartyStruct, valid: bool) -> TokenStream {
    // The runtime's traits take no generics; a generic struct was reported and gets no glue.
    if !party.generics.params.is_empty() {
        return TokenStream::new();
    }
    let Paths {
        krate,
        private,
        handler,
    } = paths;
    let ident = &party.ident;
    let name = party_name(args);
    // Skipped when there are errors: while the user fixes them, "not a party" would only
    // be noise.
    let check = valid.then(|| {
        let not_a_party = quote_spanned! {at(ident)=>
            <#ident as #krate::Party>::NAME
        };
        let (name_span, shown) = match &args.name {
            Some(name) => (at(name), format!("#[party(name = {:?})]", name.value())),
            None => (at(ident), "#[party]".to_owned()),
        };
        let name_ignored = format!(
            "`{shown}` has no effect: `{ident}` implements `Party` by hand, and that impl \
             serves another name; set `const NAME` in the `impl Party` and remove `#[party]` \
             from the struct, or write the handlers in a `#[party] impl {ident}` block"
        );
        let name_ignored = const_panic(name_span, &name_ignored);
        let hibernate_ignored = args.hibernate.as_ref().map(|path| {
            let message = format!(
                "`#[party(hibernate)]` has no effect: `{ident}` implements `Party` by hand; \
                 set `const OPTIONS: PartyOptions = PartyOptions {{ hibernate: true }}` in \
                 the `impl Party` and remove `#[party]` from the struct"
            );
            let panic = const_panic(at(path), &message);
            quote! {
                if !<#ident as #krate::Party>::OPTIONS.hibernate {
                    #panic
                }
            }
        });
        quote! {
            const _: () = {
                if !#private::same_name(#not_a_party, #name) {
                    #name_ignored
                }
                #hibernate_ignored
            };
        }
    });
    // How an object-style impl block builds the party, which has no constructor.
    let unit_struct = party.unit_value.as_ref().map(|value| {
        quote! {
            #[automatically_derived]
            impl #handler::UnitStruct for #ident {
                fn value() -> Self {
                    #value
                }
            }
        }
    });
    let records = party_struct_impl(paths, args, ident);
    quote! {
        const _: () = {
            #records
            #unit_struct
            #check
        };
    }
}

/// `impl PartyStruct`: the struct's name and options, which the impl block's glue reads.
fn party_struct_impl(paths: &Paths, args: &Args, ident: &syn::Ident) -> TokenStream {
    let handler = &paths.handler;
    let name = party_name(args);
    let hibernate = args.hibernate.is_some();
    quote! {
        #[automatically_derived]
        impl #handler::PartyStruct for #ident {
            const NAME: &'static str = #name;
            const HIBERNATE: bool = #hibernate;
        }
    }
}

/// `panic!` with a fixed message, in a `const`: a compile error spanned at `span`.
fn const_panic(span: proc_macro2::Span, message: &str) -> TokenStream {
    // A lone literal is a format string.
    let message = message.replace('{', "{{").replace('}', "}}");
    quote_spanned!(span=> ::core::panic!(#message))
}

fn party_name(args: &Args) -> LitStr {
    args.name
        .clone()
        .unwrap_or_else(|| LitStr::new("main", proc_macro2::Span::call_site()))
}

/// `#[party] impl S { … }`: the `Party` impl, each trait method calling the user's method.
fn expand_impl(paths: &Paths, party: &PartyImpl) -> TokenStream {
    let Paths {
        private, handler, ..
    } = paths;
    let self_ty = &party.self_ty;
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
    let party_struct = quote_spanned! {at(self_ty)=>
        <#self_ty as #handler::PartyStruct>
    };
    let style = party.style();
    let constructors = methods_of(party, Role::Constructor);
    // `construct` serves where no `fn new` of this block exists: always without one, and
    // outside its `#[cfg]`s with one.
    let with_construct =
        style == Style::Class && (constructors.is_empty() || condition(&constructors).is_some());
    let outside = outside::probes(paths, party, with_construct);
    let (new, hibernate) = match style {
        Style::Class => (
            expand_new(paths, self_ty, &constructors),
            quote!(#party_struct::HIBERNATE),
        ),
        Style::Object => {
            // PartyKit's legacy rule: hibernate when the object has `onMessage` or lacks
            // `onConnect`.
            let (on_message, on_connect) = (
                defines(HandlerKind::OnMessage),
                defines(HandlerKind::OnConnect),
            );
            (
                expand_unit_new(paths, self_ty),
                quote!(#party_struct::HIBERNATE || #on_message || !#on_connect),
            )
        }
    };
    let handlers = first_definitions(party).filter_map(|method| match method.role {
        Role::Handler(kind) => Some(handler::expand(paths, self_ty, style, kind, method)),
        Role::Constructor | Role::Unknown => None,
    });
    quote! {
        const _: () = {
            #outside
            #[automatically_derived]
            impl #private::Party for #self_ty {
                const NAME: &'static str = #party_struct::NAME;
                const HANDLERS: #private::Handlers = #private::Handlers {
                    on_request: #on_request,
                    on_fetch: #on_fetch,
                    on_socket: #on_socket,
                    on_cron: #on_cron,
                };
                const OPTIONS: #private::PartyOptions = #private::PartyOptions {
                    hibernate: #hibernate,
                };
                #new
                #(#handlers)*
            }
        };
    }
}

/// `Party::new`: the user's `fn new(room: Room) -> Self` (one per `#[cfg]` variant), or,
/// where this block has none, `Chat::new` of another impl block, or `Default`.
fn expand_new(paths: &Paths, self_ty: &Type, constructors: &[&Method]) -> TokenStream {
    let Paths {
        private, handler, ..
    } = paths;
    let room = format_ident!("__partykit_room");
    let user_constructors = constructors.iter().map(|method| {
        let args = method
            .params
            .iter()
            .zip([&room])
            .map(|(param, local)| handler::pass(paths, param, quote!(#local)));
        let call = quote_spanned! {output_span(method)=>
            <_ as #handler::IntoParty<Self>>::into_party(<#self_ty>::new(#(#args),*))
        };
        let cfgs = cfg_attrs(method);
        quote! {
            #cfgs
            fn new(#room: #private::Room) -> Self {
                #call
            }
        }
    });
    // Where this block has no constructor, `outside`'s `construct` takes `Chat::new` of
    // another impl block (a second `#[party]` block, which rustc reports as a conflict, or
    // a plain one), or else `Default`.
    let default_cfg = if constructors.is_empty() {
        Some(TokenStream::new())
    } else {
        condition(constructors).map(|condition| quote!(#[cfg(not(#condition))]))
    };
    let elsewhere = default_cfg.map(|cfg| {
        let call = quote!(party_block::construct(#room));
        quote! {
            #cfg
            fn new(#room: #private::Room) -> Self {
                #call
            }
        }
    });
    quote! {
        #(#user_constructors)*
        #elsewhere
    }
}

/// `Party::new` of an object-style party: its unit value, as it has no constructor. Spanned
/// at the self type: if the struct has fields, `UnitStruct`'s error says so there.
fn expand_unit_new(paths: &Paths, self_ty: &Type) -> TokenStream {
    let Paths {
        private, handler, ..
    } = paths;
    let value = quote_spanned! {at(self_ty)=>
        <#self_ty as #handler::UnitStruct>::value()
    };
    quote! {
        fn new(_: #private::Room) -> Self {
            #value
        }
    }
}

/// The methods of the block, without a second definition of a handler already defined
/// without `#[cfg]` (rustc reports the duplicate; one generated method keeps it the only
/// error).
fn first_definitions(party: &PartyImpl) -> impl Iterator<Item = &Method> {
    party
        .methods
        .iter()
        .enumerate()
        .filter_map(|(index, method)| {
            let repeated = party.methods[..index].iter().any(|earlier| {
                earlier.role == method.role && earlier.cfgs.is_empty() && method.cfgs.is_empty()
            });
            (!repeated).then_some(method)
        })
}

/// The methods with this role, in source order.
fn methods_of(party: &PartyImpl, role: Role) -> Vec<&Method> {
    first_definitions(party)
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

/// The glue emitted when the impl block has errors: a `Party` impl with nothing but a
/// constructor and the struct's name, so that the struct's checks and
/// `Server::party::<S>()` calls do not add errors of their own. It never runs: the crate
/// does not compile.
fn stub_impl(paths: &Paths, party: &PartyImpl) -> TokenStream {
    // A trait impl or generic impl was refused; a stub would only add conflicts.
    if party.trait_.is_some() || !party.generics.params.is_empty() {
        return TokenStream::new();
    }
    stub_for(paths, &party.self_ty)
}

fn stub_for(paths: &Paths, self_ty: &Type) -> TokenStream {
    let Paths {
        private, handler, ..
    } = paths;
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #private::Party for #self_ty {
                const NAME: &'static str = <#self_ty as #handler::PartyStruct>::NAME;
                const OPTIONS: #private::PartyOptions = #private::PartyOptions {
                    hibernate: <#self_ty as #handler::PartyStruct>::HIBERNATE,
                };
                fn new(_: #private::Room) -> Self {
                    ::core::unreachable!()
                }
            }
        };
    }
}

/// The glue for an item rustc reports a syntax error in: the struct's records (without
/// checks) or a stub `Party` impl, so that the syntax error is the only error.
fn fallback_glue(paths: &Paths, args: &Args, fallback: &Fallback) -> TokenStream {
    let handler = &paths.handler;
    match fallback {
        Fallback::Struct(ident) => {
            let records = party_struct_impl(paths, args, ident);
            quote! {
                const _: () = {
                    #records
                    #[automatically_derived]
                    impl #handler::UnitStruct for #ident {
                        fn value() -> Self {
                            ::core::unreachable!()
                        }
                    }
                };
            }
        }
        Fallback::Impl(self_ty) => stub_for(paths, self_ty),
        Fallback::Unknown => TokenStream::new(),
    }
}

#[cfg(test)]
mod tests;
