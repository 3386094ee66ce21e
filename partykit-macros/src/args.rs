//! Step 1 of the pipeline: the attribute's own arguments, `#[party(name = "…", crate = "…")]`.
//!
//! Parsing is lenient: every bad argument is reported into the error collector and the rest
//! are still read, so one compile shows every mistake.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, Lit, LitStr, Meta, Token};

use crate::validate::Errors;

/// One argument `#[party(…)]` accepts.
pub(crate) struct Arg {
    /// Its key.
    pub(crate) key: &'static str,
    /// How it is written, as the macro's documentation lists it (a test checks that).
    pub(crate) example: &'static str,
}

/// Every argument `#[party(…)]` accepts, in the order the documentation lists them.
pub(crate) const ARGS: [Arg; 3] = [
    Arg {
        key: "name",
        example: "name = \"chat\"",
    },
    Arg {
        key: "hibernate",
        example: "hibernate",
    },
    Arg {
        key: "crate",
        example: "crate = \"path\"",
    },
];

/// The text listing the arguments in error messages: "`name = \"chat\"`, `hibernate` and
/// `crate = \"path\"`".
pub(crate) fn valid_args() -> String {
    let examples: Vec<String> = ARGS
        .iter()
        .map(|arg| format!("`{}`", arg.example))
        .collect();
    match examples.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The parsed arguments. Each keeps its span so that checks done later (the party name's
/// format, `name` on an impl block) point at the user's own token.
#[derive(Default)]
pub(crate) struct Args {
    /// `name = "chat"`: the party's name in URLs.
    pub(crate) name: Option<LitStr>,
    /// `crate = "path"`: where the runtime is, when the dependency was renamed. Its tokens
    /// carry the string's span, so "cannot find crate" errors point at it.
    pub(crate) krate: Option<syn::Path>,
    /// `hibernate`: drop the party's value between events while sockets stay open.
    pub(crate) hibernate: Option<syn::Path>,
}

impl Args {
    /// Parses the tokens inside `#[party(…)]`.
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> Args {
        let mut args = Args::default();
        if tokens.is_empty() {
            return args;
        }
        let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens) {
            Ok(metas) => metas,
            Err(error) => {
                errors.push(syn::Error::new(
                    error.span(),
                    format!("{error}; `#[party]` accepts {}", valid_args()),
                ));
                return args;
            }
        };
        let mut seen: Vec<String> = Vec::new();
        for meta in metas {
            args.parse_one(&meta, &mut seen, errors);
        }
        args
    }

    /// Reads one argument; `seen` holds the keys read before it, to refuse repeats.
    fn parse_one(&mut self, meta: &Meta, seen: &mut Vec<String>, errors: &mut Errors) {
        let path = meta.path();
        let key = path.get_ident().map(ToString::to_string);
        match key.as_deref() {
            Some(key)
                if ARGS.iter().any(|arg| arg.key == key)
                    && seen.iter().any(|earlier| earlier == key) =>
            {
                errors.error(
                    path,
                    format!(
                        "`{key}` is given twice; keep one (`#[party]` accepts {})",
                        valid_args()
                    ),
                );
            }
            Some("name") => {
                seen.push("name".to_owned());
                self.name = string_value(meta, "name = \"chat\"", errors);
            }
            Some("hibernate") => {
                seen.push("hibernate".to_owned());
                match meta {
                    Meta::Path(path) => self.hibernate = Some(path.clone()),
                    _ => errors.error(
                        meta,
                        "`hibernate` takes no value: write `#[party(hibernate)]`",
                    ),
                }
            }
            Some("crate") => {
                seen.push("crate".to_owned());
                let value = string_value(meta, "crate = \"partykit_runtime\"", errors);
                self.krate = value.and_then(|value| match value.parse::<syn::Path>() {
                    Ok(krate) => Some(krate),
                    Err(_) => {
                        errors.error(
                            &value,
                            "`crate` must be a path to the runtime crate, such as \
                             `crate = \"partykit_runtime\"` or `crate = \"::my_party_rename\"`",
                        );
                        None
                    }
                });
            }
            Some(key) => errors.error(
                path,
                format!(
                    "unknown `#[party]` argument `{key}`; expected {}",
                    valid_args()
                ),
            ),
            None => errors.error(
                path,
                format!("unknown `#[party]` argument; expected {}", valid_args()),
            ),
        }
    }
}

/// The string literal of `key = "value"`, or an error showing the expected form.
fn string_value(meta: &Meta, example: &str, errors: &mut Errors) -> Option<LitStr> {
    let expected = format!("expected a string: `#[party({example})]`");
    match meta {
        Meta::NameValue(name_value) => match &name_value.value {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Str(lit), ..
            }) => Some(lit.clone()),
            other => {
                errors.error(other, expected);
                None
            }
        },
        Meta::Path(path) => {
            errors.error(path, expected);
            None
        }
        Meta::List(list) => {
            errors.error(&list.path, expected);
            None
        }
    }
}
