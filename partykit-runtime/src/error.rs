//! The error type handlers return, and what clients are told about it.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http::{HeaderValue, StatusCode};

/// A `Result` whose error defaults to [`Error`].
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// The response header that carries the id of an internal error; the server's log line
/// for the error carries the same id.
pub const ERROR_ID_HEADER: &str = "x-partykit-error-id";

/// An error raised by a handler or by the runtime.
///
/// It carries a message and an HTTP status (500 unless you choose one). Any
/// `std::error::Error + Send + Sync + 'static` converts into it with `?`, like
/// `anyhow::Error`; for that reason `Error` does not implement `std::error::Error`
/// itself.
///
/// # What clients see
///
/// An error is either *deliberate* or *internal*:
///
/// - Deliberate: made with [`Error::msg`] or [`Error::with_status`], or given a status
///   with [`Error::status_code`]. The client gets its status and its message: the body
///   of an HTTP response, or the close reason (code 1011) of a socket refused by
///   `connection_tags` or `on_connect`. Write these messages for the client.
/// - Internal: any other error converted with `?` or [`Error::new`] (an I/O error, a
///   storage failure, a parse error), and the runtime's own failures, panics included.
///   Their text may name files, databases or peers, so the client gets only a generic
///   500 (or close 1011) with an *error id*: a short random hex string, in the body or
///   reason and in the [`ERROR_ID_HEADER`] response header. The full detail is logged
///   (`tracing`, level `error`) with the same id, so a user's report can be matched to
///   the log line.
///
/// To show a converted error's message on purpose, give it a status:
/// `Error::new(e).status_code(StatusCode::BAD_REQUEST)`, or
/// `.map_err(|e| Error::with_status(StatusCode::BAD_REQUEST, e))`.
///
/// ```
/// use partykit_runtime::{Error, StatusCode};
///
/// fn parse(input: &str) -> Result<u32, Error> {
///     let n: u32 = input.parse()?; // ParseIntError: internal, a generic 500
///     if n == 0 {
///         return Err(Error::with_status(StatusCode::BAD_REQUEST, "zero is not allowed"));
///     }
///     Ok(n)
/// }
///
/// let zero = parse("0").unwrap_err();
/// assert_eq!(zero.status(), StatusCode::BAD_REQUEST);
/// assert!(!zero.is_internal()); // the client reads "zero is not allowed"
/// let garbage = parse("x").unwrap_err();
/// assert_eq!(garbage.status(), StatusCode::INTERNAL_SERVER_ERROR);
/// assert!(garbage.is_internal()); // the client reads an error id, the log has the detail
/// ```
pub struct Error {
    status: StatusCode,
    kind: Kind,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Raised on purpose: status and message are shown.
    Deliberate,
    /// A converted error or a failure of the runtime: hidden behind an error id.
    Internal,
    /// A handler panicked: hidden, and never mistaken for a hook's refusal.
    Panic,
}

impl Error {
    /// A deliberate error with this message and status 500: the client sees the message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::with_status(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A deliberate error with this message and HTTP status: the client sees both.
    pub fn with_status(status: StatusCode, message: impl fmt::Display) -> Self {
        Self {
            status,
            kind: Kind::Deliberate,
            source: message.to_string().into(),
        }
    }

    /// Wraps any error as an internal error (status 500): the client sees a generic
    /// message with an error id, the log gets `error`'s text.
    pub fn new<E>(error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: Kind::Internal,
            source: Box::new(error),
        }
    }

    /// Replaces the HTTP status this error answers with, and makes it deliberate: the
    /// client sees its message.
    #[must_use]
    pub fn status_code(mut self, status: StatusCode) -> Self {
        self.status = status;
        self.kind = Kind::Deliberate;
        self
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Whether the client is told only an error id rather than the message: true for
    /// errors converted with `?` or [`Error::new`], the runtime's own failures and
    /// panics.
    pub fn is_internal(&self) -> bool {
        self.kind != Kind::Deliberate
    }

    /// The wrapped error.
    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    /// An internal error wrapping an error that is already boxed (`Box<dyn Error>` does
    /// not implement `std::error::Error`, so [`Error::new`] cannot take it).
    pub(crate) fn boxed(source: Box<dyn std::error::Error + Send + Sync + 'static>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: Kind::Internal,
            source,
        }
    }

    /// An internal failure of the runtime itself, hidden from clients.
    pub(crate) fn internal(message: impl fmt::Display) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: Kind::Internal,
            source: message.to_string().into(),
        }
    }

    /// `what` panicked with `payload`.
    pub(crate) fn panicked(what: &str, payload: &(dyn Any + Send)) -> Self {
        let detail = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: Kind::Panic,
            source: format!("{what} panicked: {detail}").into(),
        }
    }

    pub(crate) fn is_panic(&self) -> bool {
        self.kind == Kind::Panic
    }

    /// What a client may be told about this error, in a context where an empty
    /// deliberate message reads `fallback`. An internal error is logged here, with the
    /// id the client gets; `context` says where it happened.
    pub(crate) fn public(&self, context: &str, fallback: &str) -> Public {
        if self.kind == Kind::Deliberate {
            let message = self.to_string();
            return Public {
                message: if message.is_empty() {
                    fallback.to_owned()
                } else {
                    message
                },
                id: None,
            };
        }
        let id = new_error_id();
        tracing::error!(error_id = %id, error = %self, "{context}");
        Public {
            message: format!("Internal error (error id {id})"),
            id: Some(id),
        }
    }

    /// The response for this error where `context` says what failed: a deliberate
    /// error's status and message; an internal error's 500 with an id.
    pub(crate) fn response(&self, context: &str) -> Response {
        let public = self.public(context, "Uncaught exception when making a request");
        public.into_response(self.status)
    }
}

/// What a client is told about an [`Error`].
pub(crate) struct Public {
    /// The body or close reason.
    pub(crate) message: String,
    /// The id logged with an internal error's detail.
    pub(crate) id: Option<String>,
}

impl Public {
    /// The response with `status`, or 500 for an internal error.
    pub(crate) fn into_response(self, status: StatusCode) -> Response {
        match self.id {
            None => (status, self.message).into_response(),
            Some(id) => {
                let mut response =
                    (StatusCode::INTERNAL_SERVER_ERROR, self.message).into_response();
                if let Ok(value) = HeaderValue::from_str(&id) {
                    response.headers_mut().insert(ERROR_ID_HEADER, value);
                }
                response
            }
        }
    }
}

/// A short random id that ties what a client was told to the server's log line.
pub(crate) fn new_error_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Runs `future` (a handler), turning a panic into an [`Error`] so that one handler's bug
/// answers 500 (or closes 1011) instead of tearing down the connection or the task.
pub(crate) async fn catch_panic<T>(
    what: &str,
    future: impl Future<Output = Result<T>>,
) -> Result<T> {
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(Error::panicked(what, &*payload)),
    }
}

impl<E> From<E> for Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Self::new(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("status", &self.status)
            .field("internal", &self.is_internal())
            .field("source", &self.source)
            .finish()
    }
}

/// A deliberate error answers its status and message (an empty message reads
/// `Uncaught exception when making a request`, as on PartyKit); an internal one answers
/// 500 `Internal error (error id <id>)` with the id in [`ERROR_ID_HEADER`], and its
/// detail is logged with the same id.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.response("a request failed")
    }
}
