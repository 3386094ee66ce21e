//! Spans for generated code, so that rustc reports a mistake at the user's own token.

use proc_macro2::{Span, TokenStream};
use syn::ReturnType;
use syn::spanned::Spanned;

use crate::model::Method;

/// A span for generated code that rustc reports at the user's `tokens` (their first token:
/// stable proc macros cannot join spans). It keeps the macro's own hygiene and expansion
/// marker, so generated locals still resolve, lints treat the code as generated, and rustc
/// does not suggest edits to code the user never wrote (such as "consider borrowing here"
/// inside a type).
pub(crate) fn at(tokens: &impl Spanned) -> Span {
    Span::call_site().located_at(tokens.span())
}

/// `tokens` with every span set to `span` (keeping hygiene: `span` resolves as the macro's
/// own tokens do, see [`at`]).
pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
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
pub(crate) fn output_span(method: &Method) -> Span {
    match &method.output {
        ReturnType::Type(_, ty) => at(ty),
        ReturnType::Default => at(&method.ident),
    }
}
