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
//! ambiguous.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};

use super::Paths;
use super::spans::at;
use crate::model::{HandlerKind, PartyImpl, Role};

/// The module holding the probes of the handlers this impl block does not define (in any
/// `#[cfg]` variant) and, with `with_construct`, its `construct` fn.
///
/// The module cannot name the party's type by path: in a fn body (a test, a doctest), a
/// nested module does not see the fn's local items. So the type comes in as the
/// associated type of an impl written beside the module, where it is in scope, and
/// type-relative paths on it resolve as on the type itself.
pub(crate) fn probes(paths: &Paths, party: &PartyImpl, with_construct: bool) -> TokenStream {
    let handler = &paths.handler;
    let private = &paths.private;
    let self_ty = &party.self_ty;
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
    let span = at(self_ty);
    let calls = names.iter().map(|name| {
        let method = Ident::new(&name.to_string(), span);
        quote_spanned!(span=> #name.#method();)
    });
    let (fallback_new, construct) = if with_construct {
        let call = quote_spanned! {span=>
            (<PartyType>::new).construct(room)
        };
        (
            Some(quote!(const new: #handler::FromDefault = #handler::FromDefault;)),
            Some(quote! {
                // `Party::new` of an impl block without `fn new`.
                pub(super) fn construct(room: #private::Room) -> PartyType {
                    use #handler::Construct as _;
                    #call
                }
            }),
        )
    } else {
        (None, None)
    };
    quote! {
        mod party_block {
            pub(super) trait TypeOf {
                type Type: ?::core::marker::Sized;
            }
            pub(super) struct This;
            type PartyType = <This as TypeOf>::Type;
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
                #(let #names = <PartyType>::#names;)*
                {
                    use outside::HandlerOutsideThePartyBlock as _;
                    #(#calls)*
                }
            }
            #construct
        }
        impl party_block::TypeOf for party_block::This {
            type Type = #self_ty;
        }
    }
}
