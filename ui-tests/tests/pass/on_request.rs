//! `on_request` returning the usual `IntoResponse` types, or a `Result` of one.

// Class style only: the generated code must trigger no lint at all.
#![deny(warnings)]

use partykit_runtime::{Error, Json, Party, Request, Response, StatusCode, party};
use serde::Serialize;

#[party(name = "static-str")]
#[derive(Default)]
struct StaticStr;

#[party]
impl StaticStr {
    fn on_request(&mut self) -> &'static str {
        "hello"
    }
}

#[party(name = "string")]
#[derive(Default)]
struct OwnedString;

#[party]
impl OwnedString {
    async fn on_request(&self, request: Request) -> String {
        request.path().to_owned()
    }
}

#[derive(Serialize)]
struct Info {
    path: String,
}

#[party(name = "json")]
#[derive(Default)]
struct JsonBody;

#[party]
impl JsonBody {
    async fn on_request(&mut self, request: Request) -> Json<Info> {
        Json(Info {
            path: request.path().to_owned(),
        })
    }
}

#[party(name = "status")]
#[derive(Default)]
struct WithStatus;

#[party]
impl WithStatus {
    fn on_request(&mut self, _request: Request) -> (StatusCode, String) {
        (StatusCode::CREATED, "created".to_owned())
    }
}

#[party(name = "result")]
#[derive(Default)]
struct Fallible;

#[party]
impl Fallible {
    async fn on_request(&mut self, request: Request) -> Result<Response, Error> {
        let text = request.text()?;
        Err(Error::with_status(StatusCode::BAD_REQUEST, text))
    }
}

#[party(name = "result-alias")]
#[derive(Default)]
struct ResultAlias;

#[party]
impl ResultAlias {
    fn on_request(&mut self, request: Request) -> partykit_runtime::Result<String> {
        Ok(request.text()?.to_uppercase())
    }
}

#[party(name = "impl-trait")]
#[derive(Default)]
struct ImplTrait;

#[party]
impl ImplTrait {
    async fn on_request(&mut self) -> impl partykit_runtime::IntoResponse {
        StatusCode::NO_CONTENT
    }
}

fn main() {
    assert!(<StaticStr as Party>::HANDLERS.on_request);
    assert_eq!(<StaticStr as Party>::NAME, "static-str");
    let _ = partykit_runtime::Server::new()
        .party::<StaticStr>()
        .party::<OwnedString>()
        .party::<JsonBody>()
        .party::<WithStatus>()
        .party::<Fallible>()
        .party::<ResultAlias>()
        .party::<ImplTrait>();
}
