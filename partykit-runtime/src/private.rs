//! What `#[party]`'s generated code names. Not public API: it may change in any release.

pub use axum::response::IntoResponse;
pub use std::future::Future;
pub use std::result::Result as StdResult;

pub use crate::{
    Before, Connection, ConnectionContext, Cron, CronLobby, Error, FetchLobby, FetchSocket,
    Handlers, Lobby, Message, Party, PartyOptions, Request, Response, Room,
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
    /// Whether the party hibernates, from `#[party(hibernate)]`.
    const HIBERNATE: bool = false;
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

/// How `#[party]` passes each argument to a user's handler or constructor: the runtime has
/// a `Given` value, the user's parameter is declared as `Self`. Only `Given` itself is
/// accepted; the point of the trait is the error message, spanned at the user's type.
#[diagnostic::on_unimplemented(
    message = "this parameter must be `{Given}`, not `{Self}`",
    label = "write `{Given}` here",
    note = "the handler signatures are listed in the docs of `#[party]`; trailing parameters may be left out, but not reordered"
)]
pub trait Param<Given>: Sized {
    /// Passes the runtime's value on.
    fn param(given: Given) -> Self;
}

impl<T> Param<T> for T {
    #[inline]
    fn param(given: T) -> T {
        given
    }
}

/// What `on_message` may take its message as: [`Message`] (text or binary), or
/// [`String`] (text only: a binary message is an error, logged, and the handler does not
/// run).
#[diagnostic::on_unimplemented(
    message = "a message parameter cannot be `{Self}`",
    label = "write `Message` (text or binary) or `String` (text only)",
    note = "`Message` has `as_text()`, `as_binary()` and `json::<T>()` for other forms"
)]
pub trait MessageParam: Sized {
    /// Converts the message, or fails if it is of the wrong kind.
    fn from_message(message: Message) -> Result<Self, Error>;
}

impl MessageParam for Message {
    #[inline]
    fn from_message(message: Message) -> Result<Self, Error> {
        Ok(message)
    }
}

impl MessageParam for String {
    fn from_message(message: Message) -> Result<Self, Error> {
        match message {
            Message::Text(text) => Ok(text.as_str().to_owned()),
            Message::Binary(_) => Err(Error::msg(
                "a binary message arrived, but `on_message` takes a `String` (text only); \
                 take a `Message` to receive both",
            )),
        }
    }
}

/// Written by `#[party]` on a struct without fields: how an object-style party, which has
/// no constructor, gets its value.
#[diagnostic::on_unimplemented(
    message = "the object-style party `{Self}` must be a struct without fields",
    label = "object-style handlers take no `self`, so nothing could read the fields of `{Self}`",
    note = "declare it as `struct {Self};`, or move to class style: keep state in fields, build it in `fn new(room: Room) -> Self` and take `&mut self` in the handlers"
)]
pub trait UnitStruct: Sized {
    /// The struct's only value.
    fn value() -> Self;
}

tokio::task_local! {
    /// The room whose actor task is running: object-style handlers receive it as an
    /// argument, while the `Party` trait's handlers only get `&mut self`.
    static CURRENT_ROOM: Room;
}

/// Runs a room's actor with `room` as [`current_room`].
pub(crate) fn in_room<F: Future>(room: Room, actor: F) -> impl Future<Output = F::Output> {
    CURRENT_ROOM.scope(room, actor)
}

/// The room an object-style handler runs for; an error if `handler` was called outside a
/// room's task (for instance by calling the `Party` method directly in a test).
pub fn current_room(handler: &str) -> Result<Room, Error> {
    CURRENT_ROOM.try_with(Room::clone).map_err(|_| {
        Error::msg(format!(
            "the object-style handler `{handler}` ran outside a room: it gets its room from \
             the room's task, so call it through a `Server`"
        ))
    })
}
