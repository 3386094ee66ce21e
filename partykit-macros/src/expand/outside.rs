//! Handlers written where `#[party]` cannot see them: in an impl block of the party
//! without `#[party]` (or in a second `#[party]` block, which rustc also reports as a
//! conflicting `impl Party`). Such a method is never called, so each gets a warning. And
//! the constructor of an impl block without `fn new`.
//!
//! A type-relative path `<Chat>::on_close` resolves to an inherent associated item of
//! `Chat` if any impl block defines one, and only otherwise to a trait's. The probe puts a
//! trait in scope whose constant `on_close` is a marker, and calls `.on_close()` on
//! whatever the path resolved to: on the marker that is an inherent, silent method; on the
//! user's fn it is a `#[deprecated]` trait method, whose note rustc prints as a warning
//! (deny-able, and silenced by `#[allow(deprecated)]` like any).
//!
//! The same fallback constant `new` lets an impl block without a constructor use
//! `Chat::new` of another impl block, or else `Default` (`handler::Construct`).
//!
//! All of it lives in a module of its own: a module does not see its parent's imports, so
//! no trait the user imported (`Party`, with its own `on_close` and `new`) makes the paths
//! ambiguous; the party's type is named from there through `super`.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::Type;

use super::Paths;
use super::spans::at;
use crate::model::{HandlerKind, PartyImpl, Role};

/// The module holding the probes of the handlers this impl block does not define (in any
/// `#[cfg]` variant) and, for class style, its `construct` fn; `None` when the self type
/// cannot be named from a child module (a type that is not a plain path).
pub(crate) fn probes(
    paths: &Paths,
    party: &PartyImpl,
    with_construct: bool,
) -> Option<TokenStream> {
    let handler = &paths.handler;
    let private = &paths.private;
    let self_ty = from_child_module(&party.self_ty)?;
    let missing: Vec<HandlerKind> = HandlerKind::ALL
        .into_iter()
        .filter(|kind| {
            !party
                .methods
                .iter()
                .any(|method| method.role == Role::Handler(*kind))
        })
        .collect();
    let names: Vec<Ident> = missing
        .iter()
        .map(|kind| Ident::new(kind.name(), Span::call_site()))
        .collect();
    let notes = missing.iter().map(|kind| {
        format!(
            "`{name}` is defined in an impl block other than this `#[party]` block, so it \
             is never called: a party has one `#[party]` impl block with all its handlers; \
             move `{name}` into it (merge the blocks if both have `#[party]`; a helper \
             named like a handler needs another name)",
            name = kind.name()
        )
    });
    // Each call is spanned at the `#[party]` block's self type: the warning points there.
    let span = at(&party.self_ty);
    let calls = names.iter().map(|name| {
        let method = Ident::new(&name.to_string(), span);
        quote_spanned!(span=> #name.#method();)
    });
    let (fallback_new, construct) = if with_construct {
        let call = quote_spanned! {span=>
            (<#self_ty>::new).construct(room)
        };
        (
            Some(quote!(const new: #handler::FromDefault = #handler::FromDefault;)),
            Some(quote! {
                // `Party::new` of an impl block without `fn new`.
                #[allow(dead_code)]
                pub(super) fn construct(room: #private::Room) -> #self_ty {
                    use #handler::Construct as _;
                    #call
                }
            }),
        )
    } else {
        (None, None)
    };
    Some(quote! {
        mod party_block {
            pub struct NotInAnyImplBlock;
            #[allow(non_upper_case_globals, dead_code)]
            trait Fallback {
                #fallback_new
                #(const #names: NotInAnyImplBlock = NotInAnyImplBlock;)*
            }
            impl<T: ?::core::marker::Sized> Fallback for T {}
            #[allow(dead_code)]
            impl NotInAnyImplBlock {
                #(fn #names(&self) {})*
            }
            mod outside {
                pub trait HandlerOutsideThePartyBlock {
                    #(
                        #[deprecated(note = #notes)]
                        fn #names(&self) {}
                    )*
                }
                impl<T> HandlerOutsideThePartyBlock for T {}
            }
            #[allow(dead_code)]
            fn probe() {
                #(let #names = <#self_ty>::#names;)*
                {
                    use outside::HandlerOutsideThePartyBlock as _;
                    #(#calls)*
                }
            }
            #construct
        }
    })
}

/// The self type as a path valid in a module declared beside the impl block.
fn from_child_module(self_ty: &Type) -> Option<TokenStream> {
    match self_ty {
        Type::Group(group) => from_child_module(&group.elem),
        Type::Paren(paren) => from_child_module(&paren.elem),
        Type::Path(path) if path.qself.is_none() => {
            let path = &path.path;
            let first = path.segments.first()?;
            Some(if path.leading_colon.is_some() || first.ident == "crate" {
                path.to_token_stream()
            } else if first.ident == "self" {
                let rest = path.segments.iter().skip(1);
                quote!(super #(::#rest)*)
            } else {
                quote!(super::#path)
            })
        }
        _ => None,
    }
}
