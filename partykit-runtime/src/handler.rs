//! What a `#[party]` handler may take and return, as traits.
//!
//! [`#[party]`](crate::party) decides whether a handler's parameters and return type fit
//! by these traits, never by how the types are spelled: a type alias, a re-export or a
//! fully written-out path are all the same to it. A compile error about a handler names
//! the trait it is about, and the trait's documentation below lists the accepted shapes.
//!
//! | handler | returns anything that implements |
//! |---|---|
//! | `on_start`, `on_connect`, `on_message`, `on_close`, `on_error`, `on_alarm`, `on_socket`, `on_cron` | [`IntoHandlerResult`]: `()` or `Result<(), E>` |
//! | `connection_tags` | [`IntoTags`]: `Vec<String>`, `Vec<&str>`, or a `Result` of one |
//! | `on_request` | [`IntoRoomResponse`]: any [`IntoResponse`], or `Result<R, E>` with an error `E` |
//! | `on_before_connect`, `on_before_request` | [`IntoBefore`]: `Request`, `Response`, [`Before`], or a `Result` of one |
//! | `on_fetch` | [`IntoFetchResponse`]: `Option<R>` where `R: IntoResponse`, or a `Result` of one |
//! | `fn new` | `IntoParty`: the party itself, `Self` (fallible set-up goes in `on_start`) |
//!
//! An error `E` in those `Result`s is anything that implements [`IntoHandlerError`]:
//! whatever `?` converts into [`Error`] (any `std::error::Error + Send + Sync + 'static`, or
//! `Error` itself), and `Box<dyn std::error::Error + Send + Sync>` or
//! `Box<dyn std::error::Error>`, the usual "any error".
//!
//! `on_message` takes its message as anything that implements [`FromMessage`]:
//! [`Message`] (text or binary), `String` (text only), or [`Json<T>`](crate::Json) (JSON
//! that decodes into `T`).
//!
//! The traits' type parameter `M` only tells their impls apart (for instance a `Result`
//! from a plain response); it is always inferred, and you never name it.
//!
//! ```
//! use partykit_runtime::handler::{IntoHandlerResult, IntoRoomResponse};
//! use partykit_runtime::{Json, StatusCode};
//!
//! fn handler_result<M>(_: impl IntoHandlerResult<M>) {}
//! fn room_response<M>(_: impl IntoRoomResponse<M>) {}
//!
//! type AnyError = Box<dyn std::error::Error + Send + Sync>;
//! handler_result(());
//! handler_result(Ok::<(), std::io::Error>(()));
//! handler_result(Ok::<(), AnyError>(()));
//! room_response("text");
//! room_response(Ok::<_, (StatusCode, String)>(Json(vec![1, 2])));
//! room_response(Ok::<_, std::num::ParseIntError>("parsed"));
//! room_response(Ok::<_, partykit_runtime::Error>(String::new()));
//! ```

use std::error::Error as StdError;

use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::{Before, Connection, Error, Json, JsonRejection, Message, Request, close_code};

/// An error a handler may return in a `Result`.
///
/// Implemented for everything that converts into [`Error`] (so any
/// `std::error::Error + Send + Sync + 'static`, and `Error` itself), and for
/// `Box<dyn std::error::Error + Send + Sync>` and `Box<dyn std::error::Error>`. Converted
/// errors are *internal*: clients see an error id, the log has the detail (see [`Error`]);
/// return an [`Error`] made with [`Error::msg`] or [`Error::with_status`] to show a message.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an error a party handler can return",
    label = "`{Self}` does not convert into `partykit_runtime::Error`",
    note = "a handler's `Result<_, E>` takes any `E: std::error::Error + Send + Sync + 'static`, `partykit_runtime::Error`, or `Box<dyn std::error::Error (+ Send + Sync)>`; for a message the client sees, return `Error::msg(..)` or `Error::with_status(..)`"
)]
pub trait IntoHandlerError<M> {
    /// Converts the handler's error.
    fn into_handler_error(self) -> Error;
}

#[diagnostic::do_not_recommend]
impl<E: Into<Error>> IntoHandlerError<Error> for E {
    fn into_handler_error(self) -> Error {
        self.into()
    }
}

impl<M: ?Sized> IntoHandlerError<(Box<M>,)> for Box<M>
where
    Box<M>: BoxedError,
{
    fn into_handler_error(self) -> Error {
        self.into_error()
    }
}

/// What `on_start`, `on_connect`, `on_message`, `on_close`, `on_error`, `on_alarm`,
/// `on_socket` and `on_cron` may return: nothing, or `Result<(), E>` with an error `E` of
/// [`IntoHandlerError`].
#[diagnostic::on_unimplemented(
    message = "a party handler cannot return `{Self}`",
    label = "return `()` or `Result<(), E>`, where `E` is an error",
    note = "`E` is any `std::error::Error + Send + Sync + 'static`, `partykit_runtime::Error` or `Box<dyn std::error::Error (+ Send + Sync)>`; a handler that returns a future is written `async fn` instead"
)]
pub trait IntoHandlerResult<M> {
    /// Normalises the handler's return value.
    fn into_handler_result(self) -> Result<(), Error>;
}

impl IntoHandlerResult<()> for () {
    fn into_handler_result(self) -> Result<(), Error> {
        Ok(())
    }
}

impl<E: IntoHandlerError<M>, M> IntoHandlerResult<M> for Result<(), E> {
    fn into_handler_result(self) -> Result<(), Error> {
        self.map_err(IntoHandlerError::into_handler_error)
    }
}

/// What `connection_tags` may return: a list of tags (`Vec<String>`, `Vec<&str>`, any
/// `Vec<T>` with `T: Into<String>`), or a `Result` of one.
#[diagnostic::on_unimplemented(
    message = "`connection_tags` cannot return `{Self}`",
    label = "return `Vec<String>` (or `Vec<&str>`), or a `Result` of one"
)]
pub trait IntoTags<M> {
    /// Normalises the handler's return value.
    fn into_tags(self) -> Result<Vec<String>, Error>;
}

#[diagnostic::do_not_recommend]
impl<T: Into<String>> IntoTags<()> for Vec<T> {
    fn into_tags(self) -> Result<Vec<String>, Error> {
        Ok(self.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<String>, E: IntoHandlerError<M>, M> IntoTags<M> for Result<Vec<T>, E> {
    fn into_tags(self) -> Result<Vec<String>, Error> {
        self.map_err(IntoHandlerError::into_handler_error)?
            .into_tags()
    }
}

/// What `on_request` may return: anything that implements [`IntoResponse`] (`&'static str`,
/// `String`, `Json<T>`, `(StatusCode, String)`, `Response`, `Result<R, E>` where both
/// are responses, …), or `Result<R, E>` where `R: IntoResponse` and `E` is a
/// `std::error::Error + Send + Sync + 'static` or a `Box<dyn std::error::Error (+ Send +
/// Sync)>`, which answers as an internal [`Error`].
///
/// A `Result` whose error is itself a response (`(StatusCode, String)`, [`Error`], an
/// `AppError` of yours that implements `IntoResponse`) answers with that response, as in
/// axum. An error type that is both a `std::error::Error` and an `IntoResponse` is
/// ambiguous; map it into one or the other.
#[diagnostic::on_unimplemented(
    message = "`on_request` cannot return `{Self}`",
    label = "return a type that implements `IntoResponse`, or `Result<R, E>` where `R: IntoResponse` and `E` is an error",
    note = "responses: `&'static str`, `String`, `Json<T>`, `(StatusCode, String)`, `Response`, …; errors: `partykit_runtime::Error`, any `std::error::Error + Send + Sync + 'static`, `Box<dyn std::error::Error (+ Send + Sync)>`"
)]
pub trait IntoRoomResponse<M> {
    /// Normalises the handler's return value.
    fn into_room_response(self) -> Result<Response, Error>;
}

impl<R: IntoResponse> IntoRoomResponse<Response> for R {
    fn into_room_response(self) -> Result<Response, Error> {
        Ok(self.into_response())
    }
}

impl<R, E> IntoRoomResponse<Error> for Result<R, E>
where
    R: IntoResponse,
    E: StdError + Send + Sync + 'static,
{
    fn into_room_response(self) -> Result<Response, Error> {
        self.map(IntoResponse::into_response).map_err(Error::new)
    }
}

impl<R, M> IntoRoomResponse<(Box<M>,)> for Result<R, Box<M>>
where
    R: IntoResponse,
    M: ?Sized,
    Box<M>: BoxedError,
{
    fn into_room_response(self) -> Result<Response, Error> {
        self.map(IntoResponse::into_response)
            .map_err(BoxedError::into_error)
    }
}

/// `Box<dyn std::error::Error + Send + Sync>` and `Box<dyn std::error::Error>`, which
/// convert into [`Error`] although they do not implement `std::error::Error`.
pub trait BoxedError: sealed::Sealed {
    /// Converts the boxed error.
    fn into_error(self) -> Error;
}

impl BoxedError for Box<dyn StdError + Send + Sync> {
    fn into_error(self) -> Error {
        Error::boxed(self)
    }
}

/// Not `Send`, so it cannot be kept as the source: its text is.
impl BoxedError for Box<dyn StdError> {
    fn into_error(self) -> Error {
        Error::internal(self)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for Box<dyn std::error::Error + Send + Sync> {}
    impl Sealed for Box<dyn std::error::Error> {}
}

/// What `on_before_connect` and `on_before_request` may return: a [`Request`] to forward
/// (possibly changed), a [`Response`] to answer with instead, a [`Before`], or a `Result`
/// of one with an error of [`IntoHandlerError`].
#[diagnostic::on_unimplemented(
    message = "`on_before_connect` / `on_before_request` cannot return `{Self}`",
    label = "return `Request` (forward it), `Response` (answer instead) or `Before`, or a `Result` of one"
)]
pub trait IntoBefore<M> {
    /// Normalises the hook's return value.
    fn into_before(self) -> Result<Before, Error>;
}

impl IntoBefore<()> for Before {
    fn into_before(self) -> Result<Before, Error> {
        Ok(self)
    }
}

impl IntoBefore<()> for Request {
    fn into_before(self) -> Result<Before, Error> {
        Ok(Before::Forward(self))
    }
}

impl IntoBefore<()> for Response {
    fn into_before(self) -> Result<Before, Error> {
        Ok(Before::Respond(self))
    }
}

impl<T: Into<Before>, E: IntoHandlerError<M>, M> IntoBefore<M> for Result<T, E> {
    fn into_before(self) -> Result<Before, Error> {
        self.map(Into::into)
            .map_err(IntoHandlerError::into_handler_error)
    }
}

/// What `on_fetch` may return: `Option<R>` where `R: IntoResponse` (`None` falls through
/// to 404), or a `Result` of one with an error of [`IntoHandlerError`].
#[diagnostic::on_unimplemented(
    message = "`on_fetch` cannot return `{Self}`",
    label = "return `Option<R>` where `R: IntoResponse` (`None` falls through to 404), or a `Result` of one"
)]
pub trait IntoFetchResponse<M> {
    /// Normalises the hook's return value.
    fn into_fetch_response(self) -> Result<Option<Response>, Error>;
}

impl<R: IntoResponse> IntoFetchResponse<()> for Option<R> {
    fn into_fetch_response(self) -> Result<Option<Response>, Error> {
        Ok(self.map(IntoResponse::into_response))
    }
}

impl<R: IntoResponse, E: IntoHandlerError<M>, M> IntoFetchResponse<M> for Result<Option<R>, E> {
    fn into_fetch_response(self) -> Result<Option<Response>, Error> {
        self.map_err(IntoHandlerError::into_handler_error)?
            .into_fetch_response()
    }
}

/// What `on_message` may take its message as:
///
/// - [`Message`]: text or binary;
/// - `String`: text only; a binary message is logged as an error and the handler does not
///   run;
/// - [`Json<T>`](crate::Json) for any `T: DeserializeOwned`: a text or binary frame holding
///   JSON that decodes into `T`. A frame that does not decode is not passed to the
///   handler: it is logged (level `warn`, with the connection's id and serde's error), and
///   the sender's socket alone is closed with 1007 (`close_code::INVALID_PAYLOAD`, the
///   code WebSocket defines for data that does not fit the message's type) and serde's
///   error as the reason, so the client learns what was wrong. The other connections are
///   not affected;
/// - `Result<Json<T>, JsonRejection>`: every frame reaches the handler, which decides
///   what a bad one means (answer it, ignore it, count it).
///
/// ```
/// use partykit_runtime::{party, Connection, Json, JsonRejection};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Vote {
///     option: u32,
/// }
///
/// #[party]
/// #[derive(Default)]
/// struct Poll {
///     votes: Vec<u32>,
/// }
///
/// #[party]
/// impl Poll {
///     fn on_message(&mut self, Json(vote): Json<Vote>, sender: &Connection) {
///         self.votes.push(vote.option);
///         let _ = sender.send_json(&self.votes);
///     }
/// }
///
/// #[party(name = "lenient")]
/// #[derive(Default)]
/// struct Lenient;
///
/// #[party]
/// impl Lenient {
///     fn on_message(&mut self, vote: Result<Json<Vote>, JsonRejection>, sender: &Connection) {
///         if let Err(rejection) = vote {
///             let _ = sender.send(format!("not a vote: {rejection}"));
///         }
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`on_message` cannot take its message as `{Self}`",
    label = "write `Message` (text or binary), `String` (text only) or `Json<T>` (JSON that decodes into `T`)",
    note = "`Result<Json<T>, JsonRejection>` lets the handler see frames that do not decode"
)]
pub trait FromMessage: Sized {
    /// Converts the message for the handler, or reacts to one of the wrong kind (see the
    /// trait's documentation) and returns `None`: the handler then does not run.
    fn from_message(message: Message, sender: &Connection) -> Option<Self>;
}

impl FromMessage for Message {
    #[inline]
    fn from_message(message: Message, _: &Connection) -> Option<Self> {
        Some(message)
    }
}

impl FromMessage for String {
    fn from_message(message: Message, sender: &Connection) -> Option<Self> {
        match message {
            Message::Text(text) => Some(text.as_str().to_owned()),
            Message::Binary(_) => {
                tracing::error!(
                    connection = sender.id(),
                    "a binary message arrived, but `on_message` takes a `String` (text only); \
                     take a `Message` to receive both"
                );
                None
            }
        }
    }
}

impl<T: DeserializeOwned> FromMessage for Json<T> {
    fn from_message(message: Message, sender: &Connection) -> Option<Self> {
        match JsonRejection::decode(&message) {
            Ok(value) => Some(Json(value)),
            Err(rejection) => {
                tracing::warn!(
                    connection = sender.id(),
                    error = %rejection,
                    "a message is not the JSON `on_message` takes; closing its sender with 1007"
                );
                let _ = sender.close(close_code::INVALID_PAYLOAD, &rejection.to_string());
                None
            }
        }
    }
}

impl<T: DeserializeOwned> FromMessage for Result<Json<T>, JsonRejection> {
    fn from_message(message: Message, _: &Connection) -> Option<Self> {
        Some(JsonRejection::decode(&message).map(Json))
    }
}

/// What the constructor `fn new(room: Room)` may return: the party itself (`Self`).
///
/// Set-up that can fail belongs in `async fn on_start(&mut self) -> Result<(), E>`: its
/// error fails the event that started the room, and the next event tries again. Hidden,
/// like every trait implemented for all types, so that it is not listed on every type's
/// documentation page.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the constructor must return the party `{P}`, not `{Self}`",
    label = "return `Self`",
    note = "do set-up that can fail in `async fn on_start(&mut self) -> Result<(), E>`: its error fails the event that started the room, and the next event tries again"
)]
pub trait IntoParty<P> {
    /// The party.
    fn into_party(self) -> P;
}

impl<P> IntoParty<P> for P {
    #[inline]
    fn into_party(self) -> P {
        self
    }
}

/// A parameter of a handler other than `on_message`'s message: it must have exactly the
/// type the handler's signature lists (`&Connection`, `&ConnectionContext`, `Request`, …).
/// Hidden, like every trait implemented for all types, so that it is not listed on every
/// type's documentation page.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "this parameter must be `{Given}`, not `{Self}`",
    label = "write `{Given}` here",
    note = "the handler signatures are listed in the docs of `#[party]`; trailing parameters may be left out, but not reordered"
)]
pub trait Parameter<Given>: Sized {
    /// Passes the runtime's value on.
    fn parameter(given: Given) -> Self;
}

impl<T> Parameter<T> for T {
    #[inline]
    fn parameter(given: T) -> T {
        given
    }
}

/// How `#[party]` builds a party whose impl block has no `fn new`: from [`Default`]. A
/// trait of its own, rather than a bare `Default` bound, so that a party with neither gets
/// an error naming both fixes.
#[doc(hidden)]
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

/// Written by `#[party]` on the struct; read by `#[party]` on the impl block.
#[doc(hidden)]
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

/// Written by `#[party]` on a struct without fields: how an object-style party, which has
/// no constructor, gets its value.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the object-style party `{Self}` must be a struct without fields",
    label = "object-style handlers take no `self`, so nothing could read the fields of `{Self}`",
    note = "declare it as `struct {Self};`, or move to class style: keep state in fields, build it in `fn new(room: Room) -> Self` and take `&mut self` in the handlers"
)]
pub trait UnitStruct: Sized {
    /// The struct's only value.
    fn value() -> Self;
}

/// What `Chat::new` resolves to in an impl block without `fn new` when no impl block of
/// `Chat` defines one: build the party from [`Default`].
#[doc(hidden)]
#[derive(Debug)]
pub struct FromDefault;

impl FromDefault {
    /// Builds the party from [`Default`]; "has no constructor" when it has none. An
    /// inherent method, so that a call on `Chat::new` prefers it to [`Construct`]'s.
    pub fn construct<P: NewFromDefault>(self, _: crate::Room) -> P {
        P::new_from_default()
    }
}

/// How a `#[party]` impl block without `fn new` builds its party from `Chat::new` of
/// another impl block: `fn new(room: Room) -> Self` or `fn new() -> Self`. The marker `M`
/// tells the two apart.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot build the party `{P}`",
    label = "a party's constructor is `fn new(room: Room) -> Self` (or `fn new() -> Self`) in its `#[party]` impl block",
    note = "`new` is defined in another impl block with another signature: rename it, or give it this signature and move it into the `#[party]` impl block"
)]
pub trait Construct<P, M> {
    /// Builds the party's value.
    fn construct(self, room: crate::Room) -> P;
}

impl<P, F: FnOnce(crate::Room) -> P> Construct<P, (crate::Room,)> for F {
    fn construct(self, room: crate::Room) -> P {
        self(room)
    }
}

impl<P, F: FnOnce() -> P> Construct<P, ()> for F {
    fn construct(self, _: crate::Room) -> P {
        self()
    }
}
