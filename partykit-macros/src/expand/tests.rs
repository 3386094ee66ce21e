//! The expansion, checked on its structure: the output is parsed back with syn and its
//! items, paths and attributes are inspected, so these tests do not depend on how tokens
//! are spaced.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::visit::Visit;

/// Everything of interest in one expansion.
#[derive(Default)]
struct Expansion {
    /// `(trait path, self type)` of every impl, `None` for inherent ones.
    impls: Vec<(Option<String>, String)>,
    /// Every impl's attributes, as written.
    impl_attrs: Vec<Vec<String>>,
    /// Names of the trait methods of `impl … Party for …`.
    party_methods: Vec<String>,
    /// Names of `const` items in trait impls, with their values.
    consts: Vec<(String, String)>,
    /// Every path in an expression, e.g. `< Chat > :: on_message`.
    paths: Vec<String>,
    /// Macro calls, by name (`compile_error`, `panic`, `unreachable`, `cfg`).
    macros: Vec<String>,
    /// Names of `mod` items.
    modules: Vec<String>,
    /// `#[deprecated(note = …)]` notes.
    deprecations: Vec<String>,
    /// `#[cfg(…)]` on trait methods, as written.
    method_cfgs: Vec<String>,
}

fn text(tokens: impl ToTokens) -> String {
    tokens.to_token_stream().to_string()
}

impl<'ast> Visit<'ast> for Expansion {
    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        let trait_ = item.trait_.as_ref().map(|(_, path, _)| text(path));
        let is_party = trait_
            .as_deref()
            .is_some_and(|path| path.ends_with("Party"));
        for impl_item in &item.items {
            match impl_item {
                syn::ImplItem::Fn(method) if is_party => {
                    self.party_methods.push(method.sig.ident.to_string());
                    for attr in &method.attrs {
                        if attr.path().is_ident("cfg") {
                            self.method_cfgs.push(text(&attr.meta));
                        }
                    }
                }
                syn::ImplItem::Const(constant) => self
                    .consts
                    .push((constant.ident.to_string(), text(&constant.expr))),
                _ => {}
            }
        }
        self.impls.push((trait_, text(&item.self_ty)));
        self.impl_attrs
            .push(item.attrs.iter().map(|attr| text(&attr.meta)).collect());
        syn::visit::visit_item_impl(self, item);
    }

    fn visit_expr_path(&mut self, path: &'ast syn::ExprPath) {
        self.paths.push(text(path));
        syn::visit::visit_expr_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        if let Some(last) = mac.path.segments.last() {
            self.macros.push(last.ident.to_string());
        }
        syn::visit::visit_macro(self, mac);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.modules.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        if attr.path().is_ident("deprecated")
            && let syn::Meta::List(list) = &attr.meta
            && let Ok(syn::MetaNameValue {
                value:
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(note),
                        ..
                    }),
                ..
            }) = list.parse_args()
        {
            self.deprecations.push(note.value());
        }
    }
}

impl Expansion {
    fn has_impl(&self, trait_suffix: &str, self_ty: &str) -> bool {
        self.impls.iter().any(|(trait_, ty)| {
            trait_
                .as_deref()
                .is_some_and(|path| path.ends_with(trait_suffix))
                && ty == self_ty
        })
    }

    fn count_macro(&self, name: &str) -> usize {
        self.macros.iter().filter(|mac| *mac == name).count()
    }

    fn has_path(&self, needle: &str) -> bool {
        self.paths.iter().any(|path| path.contains(needle))
    }

    fn constant(&self, name: &str) -> Option<&str> {
        self.consts
            .iter()
            .find(|(constant, _)| constant == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Runs the macro and parses its output back.
fn expand(args: TokenStream, item: TokenStream) -> (Expansion, String) {
    let out = crate::party_tokens(args, item);
    let file: syn::File = syn::parse2(out.clone()).expect("the expansion parses");
    let mut expansion = Expansion::default();
    expansion.visit_file(&file);
    (expansion, out.to_string())
}

#[test]
fn struct_records_its_name_and_checks_the_party_impl() {
    let (out, _) = expand(
        quote!(name = "chat"),
        quote!(
            struct Chat;
        ),
    );
    assert!(
        out.has_impl("handler :: PartyStruct", "Chat"),
        "{:?}",
        out.impls
    );
    assert_eq!(out.constant("NAME"), Some("\"chat\""));
    assert_eq!(out.constant("HIBERNATE"), Some("false"));
    // The name check: `<Chat as Party>::NAME` (which also proves `Chat` is a party) must
    // equal the struct's name, or const evaluation fails with a message.
    assert!(out.has_path("__private :: same_name"), "{:?}", out.paths);
    assert!(out.has_path("< Chat as :: partykit_runtime :: Party > :: NAME"));
    assert_eq!(out.count_macro("panic"), 1);
    assert_eq!(out.count_macro("compile_error"), 0);
    assert!(
        out.impl_attrs
            .iter()
            .all(|attrs| attrs.contains(&"automatically_derived".to_owned()))
    );
}

#[test]
fn hibernate_is_recorded_and_checked() {
    let (out, _) = expand(
        quote!(hibernate),
        quote!(
            struct Chat;
        ),
    );
    assert_eq!(out.constant("HIBERNATE"), Some("true"));
    assert_eq!(out.count_macro("panic"), 2);
}

#[test]
fn struct_name_defaults_to_main_and_crate_is_replaced() {
    let (out, text) = expand(
        quote!(crate = "my_rename"),
        quote!(
            struct Chat;
        ),
    );
    assert_eq!(out.constant("NAME"), Some("\"main\""));
    assert!(out.has_impl("my_rename :: handler :: PartyStruct", "Chat"));
    assert!(!text.contains("partykit_runtime"), "{text}");
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
    let (out, text) = expand(TokenStream::new(), item);
    // The user's methods, handlers with the lints their fixed signatures would raise
    // allowed.
    assert!(
        text.starts_with(
            "impl Chat { # [allow (clippy :: needless_pass_by_value , clippy :: unused_self)] \
             async fn on_message (& self , message : Message) { }"
        ),
        "{text}"
    );
    assert!(text.contains("fn helper (& self) { }"), "{text}");
    assert!(
        text.contains("use :: partykit_runtime :: handler :: Construct as _"),
        "{text}"
    );
    assert!(out.has_impl("__private :: Party", "Chat"));
    assert_eq!(out.party_methods, ["new", "on_message", "on_request"]);
    assert!(out.has_path("< Chat > :: on_message"));
    assert!(out.has_path("handler :: FromMessage :: from_message"));
    assert!(out.has_path("handler :: IntoRoomResponse :: into_room_response"));
    assert!(!out.has_path("helper"));
    assert_eq!(
        out.constant("HANDLERS")
            .map(|handlers| handlers.replace(' ', "")),
        Some(
            "::partykit_runtime::__private::Handlers{on_request:true,on_fetch:false,\
             on_socket:false,on_cron:false,}"
                .to_owned()
        )
    );
    // Without `fn new`: `Chat::new` of another block, or `Default`, through the probe module.
    assert!(out.has_path("party_block :: construct"));
    assert!(out.has_path("< PartyType > :: new"));
}

#[test]
fn handlers_outside_the_block_are_probed_for_those_it_lacks() {
    let (out, _) = expand(
        TokenStream::new(),
        quote! {
            impl Chat {
                fn new(room: Room) -> Self { panic!() }
                fn on_message(&mut self, message: Message) {}
            }
        },
    );
    assert_eq!(out.modules, ["party_block", "outside"]);
    assert_eq!(out.deprecations.len(), 12, "{:?}", out.deprecations);
    assert!(
        out.deprecations
            .iter()
            .all(|note| !note.starts_with("`on_message`"))
    );
    assert!(
        out.deprecations[0].starts_with("`on_start` is defined in an impl block other than this")
    );
    assert!(out.has_path("< PartyType > :: on_close"));
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
    let (out, text) = expand(quote!(nme = "x", name = "Bad"), item.clone());
    assert!(text.starts_with(&item.to_string()), "{text}");
    // The unknown argument, `name` on an impl, and three handlers.
    assert_eq!(out.count_macro("compile_error"), 5);
    // A stub impl keeps `Chat` a party, so that errors do not cascade.
    assert_eq!(out.party_methods, ["new"]);
    assert_eq!(out.count_macro("unreachable"), 1);
}

#[test]
fn a_syntax_error_in_a_body_is_left_to_rustc() {
    let item = quote! {
        impl Chat {
            fn new(room: Room) -> Self { Chat { room } }
            async fn on_message(&mut self, message: Message) { let text = ; }
        }
    };
    let out = crate::party_tokens(TokenStream::new(), item).to_string();
    // The item with its body as written (rustc reports the error in it), then the glue.
    assert!(out.contains("{ let text = ; }"), "{out}");
    assert!(!out.contains("compile_error"), "{out}");
    assert!(out.contains("< Chat > :: on_message"), "{out}");
}

#[test]
fn unparsable_items_get_glue_and_no_error_of_ours() {
    let out = crate::party_tokens(quote!(name = "chat"), quote!(struct Chat { room: })).to_string();
    assert!(!out.contains("compile_error"), "{out}");
    assert!(out.contains("PartyStruct for Chat"), "{out}");
    let out = crate::party_tokens(
        TokenStream::new(),
        quote!(impl Chat { fn on_message(&mut self, message: ) {} }),
    )
    .to_string();
    assert!(!out.contains("compile_error"), "{out}");
    assert!(out.contains("Party for Chat"), "{out}");
    // Only the arguments are ours to report.
    let out = crate::party_tokens(quote!(name = ), quote!(struct)).to_string();
    assert_eq!(out.matches("compile_error").count(), 1, "{out}");
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
    let (out, text) = expand(TokenStream::new(), item);
    // Built from the unit value, not from `new` or `Default`.
    assert!(out.has_path("< Legacy as :: partykit_runtime :: handler :: UnitStruct > :: value"));
    assert!(!out.has_path("construct"));
    // Each room handler fetches the room; static hooks do not.
    assert_eq!(
        out.paths
            .iter()
            .filter(|path| path.ends_with("current_room"))
            .count(),
        2
    );
    // `on_message` or no `on_connect`.
    assert!(
        out.constant("OPTIONS")
            .is_some_and(|options| options.contains("|| false || ! true")),
        "{:?}",
        out.constant("OPTIONS")
    );
    // One deprecation note per object-style room handler (not the static hook), beside
    // the probes of the handlers the block lacks.
    assert_eq!(text.matches("OBJECT_STYLE").count(), 4, "{text}");
}

#[test]
fn unit_structs_record_their_value() {
    for item in [
        quote!(
            struct A;
        ),
        quote!(
            struct A {}
        ),
        quote!(
            struct A();
        ),
    ] {
        let (out, _) = expand(TokenStream::new(), item);
        assert!(out.has_impl("UnitStruct", "A"));
    }
    let (out, _) = expand(
        TokenStream::new(),
        quote!(
            struct A {
                room: Room,
            }
        ),
    );
    assert!(!out.has_impl("UnitStruct", "A"));
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
    let (out, text) = expand(TokenStream::new(), item.clone());
    assert!(text.starts_with(&item.to_string()), "{text}");
    assert_eq!(out.count_macro("compile_error"), 2);
    assert_eq!(text.matches("one impl block cannot mix them").count(), 2);
    assert!(!text.contains("OBJECT_STYLE"), "{text}");
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
    let (out, _) = expand(TokenStream::new(), item);
    assert_eq!(
        out.method_cfgs,
        [
            "cfg (feature = \"a\")",
            "cfg (not (any (all (feature = \"a\"))))",
            "cfg (feature = \"a\")"
        ]
    );
    assert!(out.constant("HANDLERS").is_some_and(|handlers| {
        handlers.contains("on_request : :: core :: cfg ! (any (all (feature = \"a\")))")
    }));
}

#[test]
fn a_repeated_attribute_is_one_error_and_the_next_one_does_the_work() {
    let (out, _) = expand(
        TokenStream::new(),
        quote!(
            #[party]
            struct Chat;
        ),
    );
    assert_eq!(out.count_macro("compile_error"), 1);
    assert!(out.impls.is_empty());
    let (out, _) = expand(
        TokenStream::new(),
        quote!(
            #[party]
            impl Chat {}
        ),
    );
    assert_eq!(out.count_macro("compile_error"), 1);
    // Only the user's own (inherent) impl block.
    assert!(out.impls.iter().all(|(trait_, _)| trait_.is_none()));
}

#[test]
fn macro_calls_in_the_block_are_refused() {
    let (out, text) = expand(TokenStream::new(), quote!(impl Chat { handlers!(); }));
    assert_eq!(out.count_macro("compile_error"), 1);
    assert!(
        text.contains("cannot see what `handlers!` expands to"),
        "{text}"
    );
}
