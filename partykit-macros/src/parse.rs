//! Step 2 of the pipeline: the item under the attribute, parsed leniently.
//!
//! Method bodies are kept as opaque token groups and never parsed. The macro only needs
//! signatures, and a body the user is still typing (`let text = ;`) must not stop the
//! macro from emitting its glue: rustc reports the syntax error in the body itself, and
//! that stays the only error. An item that cannot be parsed at all is re-emitted as it
//! was, with [`Fallback`] glue that keeps the party a party, so that rustc's own syntax
//! error is not followed by "`Chat` is not a party" everywhere the party is used.

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Generics, Ident, ImplItem, Item, ItemStruct, Signature, Token, Type};

/// The item `#[party]` was put on.
pub(crate) enum Input {
    Struct(ItemStruct),
    Impl(ImplBlock),
    /// An item of another kind, for the error saying where `#[party]` goes.
    Other(Item),
    /// An item rustc will report a syntax error in; see [`Fallback`].
    Broken(Fallback),
}

/// What can still be read from an item that does not parse: enough to emit glue that
/// keeps the party a party while the user fixes the syntax error rustc reports.
pub(crate) enum Fallback {
    /// `struct <ident>` without generics.
    Struct(Ident),
    /// `impl <self type> { … }`, not a trait impl.
    Impl(Box<Type>),
    /// Nothing readable: no glue.
    Unknown,
}

/// An impl block whose methods' bodies are not parsed.
pub(crate) struct ImplBlock {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) defaultness: Option<Token![default]>,
    pub(crate) unsafety: Option<Token![unsafe]>,
    pub(crate) impl_token: Token![impl],
    pub(crate) generics: Generics,
    /// `Trait for` in `impl Trait for S` (including a leading `!`), which is refused.
    pub(crate) trait_: Option<TokenStream>,
    pub(crate) self_ty: Box<Type>,
    pub(crate) brace: syn::token::Brace,
    pub(crate) inner_attrs: Vec<Attribute>,
    pub(crate) items: Vec<Entry>,
}

/// One item of the impl block.
pub(crate) enum Entry {
    /// An associated fn; its body is an opaque `{ … }` group (`None` for `fn f();`, which
    /// rustc refuses in an inherent impl).
    Fn(Box<FnEntry>),
    /// A macro call (`my_handlers!();`): what it expands to is invisible to `#[party]`.
    Macro(syn::ImplItemMacro),
    /// A const, a type, or anything else the macro leaves alone.
    Other(Box<ImplItem>),
}

pub(crate) struct FnEntry {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: syn::Visibility,
    pub(crate) defaultness: Option<Token![default]>,
    pub(crate) sig: Signature,
    pub(crate) body: Option<Group>,
    pub(crate) semi: Option<Token![;]>,
}

impl Input {
    /// Reads the item; never fails.
    pub(crate) fn parse(tokens: TokenStream) -> Input {
        match kind_of(&tokens) {
            Kind::Struct => match syn::parse2::<ItemStruct>(tokens.clone()) {
                Ok(item) => Input::Struct(item),
                Err(_) => Input::Broken(struct_fallback(&tokens)),
            },
            Kind::Impl => match syn::parse2::<ImplBlock>(tokens.clone()) {
                Ok(item) => Input::Impl(item),
                Err(_) => Input::Broken(impl_fallback(&tokens)),
            },
            Kind::Other => match syn::parse2::<Item>(tokens) {
                Ok(item) => Input::Other(item),
                Err(_) => Input::Broken(Fallback::Unknown),
            },
        }
    }
}

enum Kind {
    Struct,
    Impl,
    Other,
}

/// The item's keyword, after its attributes and visibility.
fn kind_of(tokens: &TokenStream) -> Kind {
    for token in tokens.clone() {
        if let TokenTree::Ident(ident) = token {
            if ident == "struct" {
                return Kind::Struct;
            }
            if ident == "impl" {
                return Kind::Impl;
            }
            // Visibility, `unsafe`, `default`: keep looking; any other keyword decides.
            if !matches!(ident.to_string().as_str(), "pub" | "unsafe" | "default") {
                return Kind::Other;
            }
        }
        // `#` and `[…]` of attributes, `(crate)` of a visibility: skipped.
    }
    Kind::Other
}

/// `struct <ident>` read from the raw tokens; generic structs get no glue (they are
/// refused anyway).
fn struct_fallback(tokens: &TokenStream) -> Fallback {
    let mut tokens = tokens.clone().into_iter();
    while let Some(token) = tokens.next() {
        if matches!(&token, TokenTree::Ident(ident) if ident == "struct") {
            let ident = match tokens.next() {
                Some(TokenTree::Ident(ident)) => ident,
                _ => return Fallback::Unknown,
            };
            return match tokens.next() {
                Some(TokenTree::Punct(punct)) if punct.as_char() == '<' => Fallback::Unknown,
                _ => Fallback::Struct(ident),
            };
        }
    }
    Fallback::Unknown
}

/// `impl <self type> {` read from the raw tokens: everything between `impl` and the
/// body, when it parses as a type (so neither generics nor `Trait for`).
fn impl_fallback(tokens: &TokenStream) -> Fallback {
    let tokens: Vec<TokenTree> = tokens.clone().into_iter().collect();
    let Some(start) = tokens
        .iter()
        .position(|token| matches!(token, TokenTree::Ident(ident) if ident == "impl"))
    else {
        return Fallback::Unknown;
    };
    let header: TokenStream = tokens[start + 1..]
        .iter()
        .take_while(|token| {
            !matches!(token, TokenTree::Group(group) if group.delimiter() == Delimiter::Brace)
        })
        .cloned()
        .collect();
    match syn::parse2::<Type>(header) {
        Ok(self_ty) => Fallback::Impl(Box::new(self_ty)),
        Err(_) => Fallback::Unknown,
    }
}

impl Parse for ImplBlock {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let defaultness = input.parse()?;
        let unsafety = input.parse()?;
        let impl_token = input.parse()?;
        // `impl<T>`; `impl <T as Trait>::Assoc` is not a generic list, but no party's
        // self type looks like that.
        let mut generics: Generics = if input.peek(Token![<]) {
            input.parse()?
        } else {
            Generics::default()
        };
        let negative: Option<Token![!]> = input.parse()?;
        let first: Type = input.parse()?;
        let (trait_, self_ty) = if input.peek(Token![for]) {
            let for_token: Token![for] = input.parse()?;
            let mut trait_ = negative.into_token_stream();
            first.to_tokens(&mut trait_);
            for_token.to_tokens(&mut trait_);
            (Some(trait_), input.parse()?)
        } else {
            (None, first)
        };
        generics.where_clause = input.parse()?;
        let content;
        let brace = syn::braced!(content in input);
        let inner_attrs = content.call(Attribute::parse_inner)?;
        let mut items = Vec::new();
        while !content.is_empty() {
            items.push(content.parse()?);
        }
        Ok(ImplBlock {
            attrs,
            defaultness,
            unsafety,
            impl_token,
            generics,
            trait_,
            self_ty: Box::new(self_ty),
            brace,
            inner_attrs,
            items,
        })
    }
}

impl Parse for Entry {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let ahead = input.fork();
        ahead.call(Attribute::parse_outer)?;
        ahead.parse::<syn::Visibility>()?;
        ahead.parse::<Option<Token![default]>>()?;
        if ahead.parse::<Signature>().is_err() {
            return match input.parse()? {
                ImplItem::Macro(item) => Ok(Entry::Macro(item)),
                other => Ok(Entry::Other(Box::new(other))),
            };
        }
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let defaultness = input.parse()?;
        let sig = input.parse()?;
        let (body, semi) = if input.peek(Token![;]) {
            (None, Some(input.parse()?))
        } else {
            let body: Group = input.parse()?;
            if body.delimiter() != Delimiter::Brace {
                return Err(syn::Error::new(body.span(), "expected a body"));
            }
            (Some(body), None)
        };
        Ok(Entry::Fn(Box::new(FnEntry {
            attrs,
            vis,
            defaultness,
            sig,
            body,
            semi,
        })))
    }
}

impl ToTokens for ImplBlock {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        for attr in &self.attrs {
            attr.to_tokens(tokens);
        }
        self.defaultness.to_tokens(tokens);
        self.unsafety.to_tokens(tokens);
        self.impl_token.to_tokens(tokens);
        self.generics.to_tokens(tokens);
        self.trait_.to_tokens(tokens);
        self.self_ty.to_tokens(tokens);
        self.generics.where_clause.to_tokens(tokens);
        self.brace.surround(tokens, |tokens| {
            for attr in &self.inner_attrs {
                attr.to_tokens(tokens);
            }
            for item in &self.items {
                item.to_tokens(tokens);
            }
        });
    }
}

impl ToTokens for Entry {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        match self {
            Entry::Fn(entry) => {
                for attr in &entry.attrs {
                    attr.to_tokens(tokens);
                }
                entry.vis.to_tokens(tokens);
                entry.defaultness.to_tokens(tokens);
                entry.sig.to_tokens(tokens);
                entry.body.to_tokens(tokens);
                entry.semi.to_tokens(tokens);
            }
            Entry::Macro(item) => item.to_tokens(tokens),
            Entry::Other(item) => item.to_tokens(tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn bodies_are_not_parsed() {
        let tokens = quote! {
            impl Chat {
                async fn on_message(&mut self, message: Message) { let text = ; }
                fn helper(&self) -> u32 { 1 + }
            }
        };
        let Input::Impl(block) = Input::parse(tokens.clone()) else {
            panic!("the block parses")
        };
        assert_eq!(block.items.len(), 2);
        assert_eq!(block.to_token_stream().to_string(), tokens.to_string());
    }

    #[test]
    fn macro_calls_and_other_items_are_kept() {
        let Input::Impl(block) = Input::parse(quote! {
            impl Chat {
                const LIMIT: usize = 3;
                handlers!();
            }
        }) else {
            panic!("the block parses")
        };
        assert!(matches!(block.items[0], Entry::Other(_)));
        assert!(matches!(block.items[1], Entry::Macro(_)));
    }

    #[test]
    fn broken_headers_fall_back() {
        assert!(matches!(
            Input::parse(quote!(impl Chat { fn on_message(&mut self, message: ) {} })),
            Input::Broken(Fallback::Impl(_))
        ));
        assert!(matches!(
            Input::parse(quote!(pub struct Chat { room: })),
            Input::Broken(Fallback::Struct(ident)) if ident == "Chat"
        ));
        assert!(matches!(
            Input::parse(quote!(impl<T> Chat<T> { fn x(&self) -> {} })),
            Input::Broken(Fallback::Unknown)
        ));
    }

    #[test]
    fn trait_impls_are_recognised() {
        let Input::Impl(block) = Input::parse(quote!(impl Party for Chat {})) else {
            panic!("the block parses")
        };
        assert_eq!(
            block.trait_.map(|tokens| tokens.to_string()).as_deref(),
            Some("Party for")
        );
    }
}
