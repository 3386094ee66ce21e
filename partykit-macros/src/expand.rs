//! Step 4 of the pipeline: code generation.
//!
//! Everything generated lives inside `const _: () = { … };`, so it adds no names to the
//! user's module, and names runtime items only by absolute path
//! (`::partykit_runtime::__private::…`, or the `crate = "…"` path), so user items cannot
//! shadow them. Locals are prefixed `__partykit_` for the same reason.
//!
//! Generated expressions that can fail to type-check are spanned at the user's token they
//! depend on (a parameter's type, a return type), so rustc's error points there.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ReturnType, Type};

use crate::args::Args;
use crate::model::{
    HandlerKind, Method, OutputKind, PartyImpl, PartyStruct, Receiver, Role, Target,
};
use crate::validate::Errors;

/// The macro's output: the user's item, unchanged, then either the generated glue or the
/// errors (plus just enough glue that the errors do not cascade into others).
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
    // Skipped when there are errors: while the user fixes them, "not a party" would only
    // be noise.
    let assert_party = valid.then(|| {
        quote_spanned! {at(ident)=>
            #krate::__private::assert_party::<#ident>();
        }
    });
    quote! {
        const _: () = {
            impl #krate::__private::PartyStruct for #ident {
                const NAME: &'static str = #name;
            }
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
    let new = expand_new(&private, self_ty, &methods_of(party, Role::Constructor));
    let handlers = party.methods.iter().filter_map(|method| match method.role {
        Role::Handler(kind) => Some(expand_handler(&private, self_ty, kind, method)),
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
        let args = call_args(method, std::slice::from_ref(&room));
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

/// One trait method: the trait's exact signature, calling the user's method with the
/// arguments it takes and normalising what it returns.
fn expand_handler(
    private: &TokenStream,
    self_ty: &Type,
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
        // Static hooks; other receivers were refused by `validate`.
        Receiver::None | Receiver::Unsupported => None,
    };
    let args = self_arg.into_iter().chain(
        call_args(method, &locals)
            .into_iter()
            .map(ToTokens::into_token_stream),
    );
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

/// The arguments passed to the user's method: the first `n` of the trait's, where the
/// user's method takes `n` (trailing parameters may be left out). Each is spanned at the
/// user's parameter type, so a wrong type is reported on it.
fn call_args(method: &Method, locals: &[Ident]) -> Vec<Ident> {
    method
        .params
        .iter()
        .zip(locals)
        .map(|(param, local)| Ident::new(&local.to_string(), at(&param.ty)))
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
                fn on_request(&mut self) -> Result<String, Error> { todo!() }
                fn helper(&self) {}
            }
        };
        let out = expand(TokenStream::new(), item.clone());
        assert!(out.starts_with(&item.to_string()), "{out}");
        assert!(
            out.contains("< Chat > :: on_message (& * self , __partykit_message) . await"),
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
    fn cfg_attributes_follow_handlers_and_constructors() {
        let item = quote! {
            impl Chat {
                #[cfg(feature = "a")]
                fn new(room: Room) -> Self { todo!() }
                #[cfg(feature = "a")]
                fn on_request(&mut self) -> String { todo!() }
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
