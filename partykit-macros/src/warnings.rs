//! Step 5 of the pipeline: deprecation notes, as warnings on stable Rust.
//!
//! Stable proc macros cannot emit warnings, but rustc warns about uses of `#[deprecated]`
//! items. So each deprecated handler gets, as the first statement of its body,
//!
//! ```text
//! {
//!     #[deprecated(note = "object-style handlers are deprecated; write `…`")]
//!     const OBJECT_STYLE: () = ();
//!     let _: () = OBJECT_STYLE;
//! }
//! ```
//!
//! with every token carrying the span of the handler's name. rustc then reports
//! ``use of deprecated constant `Legacy::on_message::OBJECT_STYLE`: …`` on the user's
//! handler name, and since the use is inside the user's fn, `#[allow(deprecated)]` on the
//! fn or on the impl block silences it, and `-D warnings` makes it an error, as for any
//! deprecated item. The spans are the user's own (not the macro's call site), so rustc
//! treats the statement as the user's code: it is the code the lint is about.

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{ToTokens, quote_spanned};
use syn::{Ident, LitStr};

use crate::model::{Method, PartyImpl, Role, Style, UNSTABLE_ON_FETCH};
use crate::parse::{Entry, ImplBlock};

/// One deprecation note: which handler, what the const is called, what it says.
pub(crate) struct Note {
    /// The handler's name, as the user wrote it.
    handler: String,
    span: Span,
    constant: &'static str,
    text: String,
}

/// The notes an error-free impl block gets: one per object-style room handler, and one
/// for `unstable_on_fetch`.
pub(crate) fn notes(party: &PartyImpl) -> Vec<Note> {
    party.methods.iter().filter_map(note).collect()
}

fn note(method: &Method) -> Option<Note> {
    let Role::Handler(kind) = method.role else {
        return None;
    };
    let (constant, text) = if method.is_unstable_on_fetch() {
        (
            "OLD_NAME",
            format!("`{UNSTABLE_ON_FETCH}` is deprecated; rename it `on_fetch`"),
        )
    } else if method.style() == Some(Style::Object) {
        (
            "OBJECT_STYLE",
            format!(
                "object-style handlers are deprecated; write `{}` and keep the room in a field",
                kind.signature_in(Style::Class, method.asyncness.is_some())
            ),
        )
    } else {
        return None;
    };
    Some(Note {
        handler: method.ident.to_string(),
        span: method.ident.span(),
        constant,
        text,
    })
}

/// The user's impl block with each note inserted at the start of its handler's body (a
/// token group the macro never parses), and the handlers' signature lints allowed.
pub(crate) fn annotate(mut block: ImplBlock, notes: &[Note]) -> TokenStream {
    for item in &mut block.items {
        let Entry::Fn(method) = item else {
            continue;
        };
        allow_signature_lints(method);
        let Some(body) = &method.body else {
            continue;
        };
        // A handler under `#[cfg]` may come in several variants: each gets its note.
        let name = method.sig.ident.to_string();
        let mut stream = TokenStream::new();
        for note in notes.iter().filter(|note| note.handler == name) {
            stream.extend(statement(note));
        }
        if stream.is_empty() {
            continue;
        }
        stream.extend(body.stream());
        let mut annotated = Group::new(Delimiter::Brace, stream);
        annotated.set_span(body.span());
        method.body = Some(annotated);
    }
    block.into_token_stream()
}

/// A handler's signature is the runtime's, not the user's choice: by-value parameters it
/// does not consume (`request: Request`) and a `self` it does not use cannot be changed,
/// so the pedantic lints about them are allowed on handlers and the constructor. Lints
/// about what the user can change (an `async` that awaits nothing) stay.
fn allow_signature_lints(method: &mut crate::parse::FnEntry) {
    if matches!(
        Role::of(&method.sig.ident.to_string()),
        Some(Role::Handler(_) | Role::Constructor)
    ) {
        method.attrs.push(syn::parse_quote! {
            #[allow(clippy::needless_pass_by_value, clippy::unused_self)]
        });
    }
}

fn statement(note: &Note) -> TokenStream {
    let span = note.span;
    let constant = Ident::new(note.constant, span);
    let text = LitStr::new(&note.text, span);
    quote_spanned! {span=>
        {
            #[deprecated(note = #text)]
            const #constant: () = ();
            let _: () = #constant;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HandlerKind;

    fn annotated(item: TokenStream) -> String {
        let input = crate::parse::Input::parse(item);
        let Some(crate::model::Target::Impl(party)) = crate::model::Target::from_input(&input)
        else {
            panic!("not an impl");
        };
        let crate::parse::Input::Impl(block) = input else {
            panic!("not an impl");
        };
        annotate(block, &notes(&party)).to_string()
    }

    #[test]
    fn object_style_handlers_get_one_note_each() {
        let out = annotated(quote::quote! {
            impl Legacy {
                async fn on_connect(conn: &Connection, room: &Room) {}
                fn on_message(message: Message) {}
                fn on_before_connect(request: Request) -> Request { request }
                fn helper() {}
            }
        });
        assert_eq!(out.matches("[deprecated").count(), 2, "{out}");
        assert!(
            out.contains(
                "write `async fn on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext)`"
            ),
            "{out}"
        );
        assert!(
            out.contains("write `fn on_message(&mut self, message: Message, sender: &Connection)`"),
            "{out}"
        );
    }

    #[test]
    fn class_style_gets_no_note_but_unstable_on_fetch_does() {
        let out = annotated(quote::quote! {
            impl Chat {
                fn on_message(&mut self, message: Message) {}
                fn unstable_on_fetch(request: Request) -> Option<String> { None }
            }
        });
        assert_eq!(out.matches("[deprecated").count(), 1, "{out}");
        assert!(out.contains("rename it `on_fetch`"), "{out}");
        assert!(out.contains("OLD_NAME"), "{out}");
    }

    #[test]
    fn every_room_handler_with_an_object_form_is_covered() {
        let covered: Vec<&str> = HandlerKind::ALL
            .into_iter()
            .filter(|kind| kind.object_params().is_some())
            .map(HandlerKind::name)
            .collect();
        assert_eq!(
            covered,
            [
                "on_connect",
                "on_message",
                "on_close",
                "on_error",
                "on_request",
                "on_alarm"
            ]
        );
    }
}
