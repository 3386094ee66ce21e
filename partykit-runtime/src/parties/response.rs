//! What a call to another room answers: a response whose body can be read without axum.

use std::ops::{Deref, DerefMut};

use axum::response::IntoResponse;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::{Error, Response};

/// The most of a body [`RoomResponse::bytes`], `text` and `json` read: a room answering
/// more is an error (413) rather than memory taken without bound.
pub const MAX_ROOM_RESPONSE: usize = 32 * 1024 * 1024;

/// The answer of [`RoomStub::fetch`](crate::parties::RoomStub::fetch): the other room's
/// HTTP response, with its body readable as bytes, text or JSON.
///
/// It dereferences to the [`Response`] (`status()`, `headers()`), converts into one with
/// [`into_inner`](Self::into_inner) or `Response::from`, and is itself a response, so a
/// hook or handler can answer with it as it is.
///
/// ```
/// # async fn example() -> partykit_runtime::Result<()> {
/// use partykit_runtime::parties::RoomResponse;
/// use partykit_runtime::{IntoResponse, Json, StatusCode};
///
/// let answer = RoomResponse::from((StatusCode::CREATED, Json(vec![1, 2])).into_response());
/// assert_eq!(answer.status(), StatusCode::CREATED);
/// assert_eq!(answer.header("content-type"), Some("application/json"));
/// let numbers: Vec<u32> = answer.json().await?;
/// assert_eq!(numbers, [1, 2]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RoomResponse {
    inner: Response,
}

impl RoomResponse {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// A header's value, if it is present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.headers().get(name)?.to_str().ok()
    }

    /// The body, read whole (at most [`MAX_ROOM_RESPONSE`] bytes).
    pub async fn bytes(self) -> Result<Bytes, Error> {
        let limited = http_body_util::Limited::new(self.inner.into_body(), MAX_ROOM_RESPONSE);
        match limited.collect().await {
            Ok(body) => Ok(body.to_bytes()),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                Err(Error::with_status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the room answered more than {MAX_ROOM_RESPONSE} bytes"),
                ))
            }
            Err(error) => Err(Error::msg(format!("the room's answer broke off: {error}"))),
        }
    }

    /// The body as UTF-8 text.
    pub async fn text(self) -> Result<String, Error> {
        let bytes = self.bytes().await?;
        String::from_utf8(bytes.into())
            .map_err(|_| Error::msg("the room's answer is not UTF-8 text"))
    }

    /// The body as JSON of type `T`.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        let bytes = self.bytes().await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// The response itself.
    pub fn into_inner(self) -> Response {
        self.inner
    }
}

impl From<Response> for RoomResponse {
    fn from(inner: Response) -> Self {
        Self { inner }
    }
}

impl From<RoomResponse> for Response {
    fn from(response: RoomResponse) -> Self {
        response.inner
    }
}

impl IntoResponse for RoomResponse {
    fn into_response(self) -> Response {
        self.inner
    }
}

impl Deref for RoomResponse {
    type Target = Response;

    fn deref(&self) -> &Response {
        &self.inner
    }
}

impl DerefMut for RoomResponse {
    fn deref_mut(&mut self) -> &mut Response {
        &mut self.inner
    }
}
