//! The error type handlers return.

use std::fmt;

use axum::response::{IntoResponse, Response};
use http::StatusCode;

/// A `Result` whose error defaults to [`Error`].
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// An error raised by a handler or by the runtime.
///
/// It carries a message and an HTTP status (500 unless you choose one). When an
/// `on_request` or `on_start` fails, the client gets that status with the message as
/// body; when `connection_tags` or `on_connect` fails, the socket is closed with 1011
/// and the message as reason.
///
/// Any `std::error::Error + Send + Sync + 'static` converts into it with `?`, like
/// `anyhow::Error`; for that reason `Error` does not implement `std::error::Error`
/// itself.
///
/// ```
/// use partykit_runtime::{Error, StatusCode};
///
/// fn parse(input: &str) -> Result<u32, Error> {
///     let n: u32 = input.parse()?; // ParseIntError -> 500
///     if n == 0 {
///         return Err(Error::with_status(StatusCode::BAD_REQUEST, "zero is not allowed"));
///     }
///     Ok(n)
/// }
///
/// assert_eq!(parse("0").unwrap_err().status(), StatusCode::BAD_REQUEST);
/// assert_eq!(parse("x").unwrap_err().status(), StatusCode::INTERNAL_SERVER_ERROR);
/// ```
pub struct Error {
    status: StatusCode,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl Error {
    /// An error with this message and status 500.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::with_status(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// An error with this message and HTTP status.
    pub fn with_status(status: StatusCode, message: impl fmt::Display) -> Self {
        Self {
            status,
            source: message.to_string().into(),
        }
    }

    /// Wraps any error with status 500.
    pub fn new<E>(error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            source: Box::new(error),
        }
    }

    /// Replaces the HTTP status this error answers with.
    #[must_use]
    pub fn status_code(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The wrapped error.
    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
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
            .field("source", &self.source)
            .finish()
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut message = self.to_string();
        if message.is_empty() {
            message = "Uncaught exception when making a request".to_owned();
        }
        (self.status, message).into_response()
    }
}
