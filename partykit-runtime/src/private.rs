//! What `#[party]`'s generated code names. Not public API: it may change in any release.

pub use axum::response::IntoResponse;
pub use std::future::Future;
pub use std::result::Result as StdResult;

pub use crate::{
    Before, Connection, ConnectionContext, Cron, CronLobby, Error, FetchLobby, FetchSocket,
    Handlers, Lobby, Message, Party, Request, Response, Room,
};

/// Written by `#[party]` on the struct; read by `#[party]` on the impl.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has a `#[party]` impl block but the struct has no `#[party]` attribute",
    label = "add `#[party]` to the definition of `{Self}`",
    note = "both the struct and its impl block of handlers need `#[party]`"
)]
pub trait PartyStruct {
    /// The party's name, from `#[party(name = "…")]`.
    const NAME: &'static str;
}

/// What a room handler may return: nothing, or a `Result<(), E>`.
#[diagnostic::on_unimplemented(
    message = "a party handler cannot return `{Self}`",
    label = "return `()` or `Result<(), E>` where `E` converts into `partykit_runtime::Error`"
)]
pub trait HandlerOutput {
    /// Normalises the handler's return value.
    fn into_result(self) -> Result<(), Error>;
}

impl HandlerOutput for () {
    fn into_result(self) -> Result<(), Error> {
        Ok(())
    }
}

impl<E: Into<Error>> HandlerOutput for Result<(), E> {
    fn into_result(self) -> Result<(), Error> {
        self.map_err(Into::into)
    }
}

/// What `connection_tags` may return: a list of tags, or a `Result` of one.
#[diagnostic::on_unimplemented(
    message = "`connection_tags` cannot return `{Self}`",
    label = "return `Vec<String>` (or `Vec<&str>`), or a `Result` of one"
)]
pub trait TagsOutput {
    /// Normalises the handler's return value.
    fn into_tags(self) -> Result<Vec<String>, Error>;
}

impl<T: Into<String>> TagsOutput for Vec<T> {
    fn into_tags(self) -> Result<Vec<String>, Error> {
        Ok(self.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<String>, E: Into<Error>> TagsOutput for Result<Vec<T>, E> {
    fn into_tags(self) -> Result<Vec<String>, Error> {
        self.map_err(Into::into)?.into_tags()
    }
}

/// What `on_before_connect` / `on_before_request` may return: a request to forward, a
/// response to answer with, a [`Before`], or a `Result` of one of them.
#[diagnostic::on_unimplemented(
    message = "`on_before_connect` / `on_before_request` cannot return `{Self}`",
    label = "return `Request`, `Response` or `Before`, or a `Result` of one"
)]
pub trait BeforeOutput {
    /// Normalises the hook's return value.
    fn into_before(self) -> Result<Before, Error>;
}

impl BeforeOutput for Before {
    fn into_before(self) -> Result<Before, Error> {
        Ok(self)
    }
}

impl BeforeOutput for Request {
    fn into_before(self) -> Result<Before, Error> {
        Ok(Before::Forward(self))
    }
}

impl BeforeOutput for Response {
    fn into_before(self) -> Result<Before, Error> {
        Ok(Before::Respond(self))
    }
}

impl<T: Into<Before>, E: Into<Error>> BeforeOutput for Result<T, E> {
    fn into_before(self) -> Result<Before, Error> {
        self.map(Into::into).map_err(Into::into)
    }
}

/// What `on_fetch` may return: `Option<R>` where `R` is a response, or a `Result` of one.
#[diagnostic::on_unimplemented(
    message = "`on_fetch` cannot return `{Self}`",
    label = "return `Option<R>` where `R: IntoResponse` (`None` falls through to 404), or a `Result` of one"
)]
pub trait FetchOutput {
    /// Normalises the hook's return value.
    fn into_fetch(self) -> Result<Option<Response>, Error>;
}

impl<R: IntoResponse> FetchOutput for Option<R> {
    fn into_fetch(self) -> Result<Option<Response>, Error> {
        Ok(self.map(IntoResponse::into_response))
    }
}

impl<R: IntoResponse, E: Into<Error>> FetchOutput for Result<Option<R>, E> {
    fn into_fetch(self) -> Result<Option<Response>, Error> {
        self.map_err(Into::into)?.into_fetch()
    }
}

/// Converts an `on_request` return value that is not a `Result`.
pub fn response<R: IntoResponse>(response: R) -> Result<Response, Error> {
    Ok(response.into_response())
}

/// Converts an `on_request` return value that is a `Result`.
pub fn response_result<R: IntoResponse, E: Into<Error>>(
    result: Result<R, E>,
) -> Result<Response, Error> {
    result.map(IntoResponse::into_response).map_err(Into::into)
}

/// Makes a party name a compile-time constant checked by `#[party]`.
pub const fn party_name(name: &'static str) -> &'static str {
    name
}

/// Fails to compile unless `P` implements [`Party`]. `#[party]` on a struct calls it, so a
/// struct whose impl block lacks `#[party]` gets `Party`'s "is not a party" error instead of
/// compiling to nothing.
pub const fn assert_party<P: Party>() {}

/// How `#[party]` builds a party whose impl block has no `fn new`: from [`Default`]. A trait
/// of its own, rather than a bare `Default` bound, so that a party with neither gets an
/// error naming both fixes.
#[diagnostic::on_unimplemented(
    message = "the party `{Self}` has no constructor",
    label = "`{Self}` has no `fn new(room: Room) -> Self` and does not implement `Default`",
    note = "add `fn new(room: Room) -> Self` to the `#[party]` impl block, or `#[derive(Default)]` to the struct"
)]
pub trait NewFromDefault: Sized {
    /// Builds the party's value.
    fn new_from_default() -> Self;
}

impl<T: Default> NewFromDefault for T {
    fn new_from_default() -> Self {
        T::default()
    }
}
