//! One trait method of the generated `Party` impl, in four steps:
//!
//! 1. [`trait_signature`]: the trait's exact signature, with `__partykit_` locals;
//! 2. [`arguments`]: what the user's method takes, converted from those locals (and, in
//!    object style, the room);
//! 3. [`call`]: the call of the user's method, awaited if it is `async`;
//! 4. [`normalise`]: its return value, converted into what the trait returns through the
//!    trait of `partykit_runtime::handler` that fits the handler.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::{ReturnType, Type};

use super::spans::{at, respan};
use super::{Paths, cfg_attrs};
use crate::model::{HandlerKind, Method, OutputKind, Param, Receiver, Style, TraitParam};

/// The trait method `kind` of `Party`, calling the user's `method`.
pub(crate) fn expand(
    paths: &Paths,
    self_ty: &Type,
    style: Style,
    kind: HandlerKind,
    method: &Method,
) -> TokenStream {
    let signature = trait_signature(paths, kind, method);
    // Object style takes the room where PartyKit's object syntax had it; it comes from
    // the room's task.
    let object_style = style == Style::Object && !kind.is_static();
    let room = format_ident!("__partykit_room");
    let get_room = object_style.then(|| {
        let private = &paths.private;
        let name = kind.name();
        quote!(let #room = #private::current_room(#name)?;)
    });
    let user_style = if object_style {
        Style::Object
    } else {
        Style::Class
    };
    let (before, arguments) = arguments(paths, kind, user_style, method, &room);
    let call = call(self_ty, method, arguments);
    let body = normalise(paths, kind, method, call);
    // The returned future is spanned at the user's method name: if the user's future is
    // not `Send`, rustc reports it there.
    let future = quote_spanned! {at(&method.ident)=>
        async move {
            #get_room
            #before
            #body
        }
    };
    let cfgs = cfg_attrs(method);
    quote! {
        #cfgs
        #signature {
            #future
        }
    }
}

/// The local holding the trait method's parameter `param`.
fn local(param: &TraitParam) -> Ident {
    format_ident!("__partykit_{}", param.name)
}

/// `fn on_message(&mut self, __partykit_message: Message, …) -> impl Future<…> + Send`.
fn trait_signature(paths: &Paths, kind: HandlerKind, method: &Method) -> TokenStream {
    let private = &paths.private;
    let name = Ident::new(kind.name(), Span::call_site());
    let receiver = (!kind.is_static()).then(|| quote!(&mut self,));
    let params = kind.params().iter().map(|param| {
        let local = local(param);
        let ty = Ident::new(param.ty, Span::call_site());
        let by_ref = param.by_ref.then(|| quote!(&));
        quote!(#local: #by_ref #private::#ty)
    });
    let output = match kind.output() {
        OutputKind::Unit => quote!(()),
        OutputKind::Tags => quote!(::std::vec::Vec<::std::string::String>),
        OutputKind::Response => quote!(#private::Response),
        OutputKind::Before => quote!(#private::Before),
        OutputKind::Fetch => quote!(::core::option::Option<#private::Response>),
    };
    // Spanned at the user's method name, as the future it describes.
    let future = quote_spanned! {at(&method.ident)=>
        impl #private::Future<
            Output = #private::StdResult<#output, #private::Error>
        > + ::core::marker::Send
    };
    quote!(fn #name(#receiver #(#params),*) -> #future)
}

/// The user's receiver and parameters, in order, each converted from the runtime's value,
/// and the statements that must run first: a message is converted by `FromMessage`, which
/// may answer a message of the wrong kind itself, and then the handler does not run. The
/// user may leave out trailing parameters.
fn arguments(
    paths: &Paths,
    kind: HandlerKind,
    style: Style,
    method: &Method,
    room: &Ident,
) -> (TokenStream, Vec<TokenStream>) {
    let private = &paths.private;
    let receiver = match method.receiver {
        Receiver::Exclusive => Some(quote!(self)),
        Receiver::Shared => Some(quote!(&*self)),
        // Static hooks and object style; other receivers were refused by `validate`.
        Receiver::None | Receiver::Unsupported => None,
    };
    let mut before = TokenStream::new();
    let params: Vec<TokenStream> = method
        .params
        .iter()
        .zip(kind.params_in(style))
        .map(|(param, expected)| {
            if expected.ty == "Room" {
                return pass(paths, param, quote!(&#room));
            }
            // Every parameter of a style's form is one of the trait's, or the room
            // (`model`'s tables say so, and a test there checks it).
            let given = local(expected);
            if expected.ty == "Message" {
                let sender = format_ident!("__partykit_sender");
                let conversion = from_message(paths, param, quote!(#given, #sender));
                before.extend(quote! {
                    let ::core::option::Option::Some(#given) = #conversion else {
                        return #private::StdResult::Ok(());
                    };
                });
                return given.into_token_stream();
            }
            pass(paths, param, given.into_token_stream())
        })
        .collect();
    (before, receiver.into_iter().chain(params).collect())
}

/// `<Chat>::on_message(args…)`, awaited if the method is `async`. Spanned at the user's
/// method name: "arguments to this function are incorrect" points there.
fn call(self_ty: &Type, method: &Method, arguments: Vec<TokenStream>) -> TokenStream {
    let user_ident = &method.ident;
    let awaited = method.asyncness.map(|_| quote!(.await));
    quote_spanned!(at(user_ident)=> <#self_ty>::#user_ident(#(#arguments),*) #awaited)
}

/// The trait method's result from the user's return value.
fn normalise(paths: &Paths, kind: HandlerKind, method: &Method, call: TokenStream) -> TokenStream {
    let private = &paths.private;
    let handler = &paths.handler;
    let ty = match &method.output {
        // Only unit handlers may return nothing (`validate` refused the others), and then
        // there is nothing to convert.
        ReturnType::Default => {
            return quote! {
                #call;
                #private::StdResult::Ok(())
            };
        }
        ReturnType::Type(_, ty) => ty,
    };
    let output = Ident::new("__partykit_output", at(ty));
    let conversion = match kind.output() {
        OutputKind::Unit => quote!(#handler::IntoHandlerResult::into_handler_result),
        OutputKind::Tags => quote!(#handler::IntoTags::into_tags),
        OutputKind::Response => quote!(#handler::IntoRoomResponse::into_room_response),
        OutputKind::Before => quote!(#handler::IntoBefore::into_before),
        OutputKind::Fetch => quote!(#handler::IntoFetchResponse::into_fetch_response),
    };
    // Spanned at the return type: "`on_request` cannot return `u32`" points there.
    let conversion = quote_spanned!(at(ty)=> #conversion(#output));
    quote! {
        let #output = #call;
        #conversion
    }
}

/// One argument of the user's method: the runtime's `given` value, converted to the
/// user's parameter type by `Parameter` (only the type the signature lists). Spanned at
/// that type, so a wrong one is reported on it with a message naming the right one.
pub(crate) fn pass(paths: &Paths, param: &Param, given: TokenStream) -> TokenStream {
    let handler = &paths.handler;
    spanned_call(param, quote!(#handler::Parameter::parameter), given)
}

/// `FromMessage::from_message(message, sender)` for the user's message parameter, spanned
/// at its type.
fn from_message(paths: &Paths, param: &Param, arguments: TokenStream) -> TokenStream {
    let handler = &paths.handler;
    spanned_call(
        param,
        quote!(#handler::FromMessage::from_message),
        arguments,
    )
}

/// `path(arguments)` with every token spanned at the parameter's type (a span joining the
/// macro's call site with the user's type would underline everything in between): the
/// path its first token's, the arguments its last token's, so that the call, whose span
/// rustc reports, covers exactly the type.
fn spanned_call(param: &Param, path: TokenStream, arguments: TokenStream) -> TokenStream {
    let tokens = param.ty.to_token_stream();
    let first = tokens.clone().into_iter().next().map(|token| at(&token));
    let last = tokens.into_iter().last().map(|token| at(&token));
    let (first, last) = match (first, last) {
        (Some(first), Some(last)) => (first, last),
        _ => (at(&param.ty), at(&param.ty)),
    };
    let arguments = respan(arguments, last);
    let mut arguments = proc_macro2::TokenTree::from(proc_macro2::Group::new(
        proc_macro2::Delimiter::Parenthesis,
        arguments,
    ));
    arguments.set_span(last);
    let path = respan(path, first);
    quote!(#path #arguments)
}
