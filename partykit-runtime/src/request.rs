//! HTTP requests as handlers see them: buffered, cheap to inspect.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use serde::de::DeserializeOwned;

use crate::Error;

/// An HTTP request (or WebSocket upgrade request) with its body already read.
///
/// The URI keeps the path exactly as the client sent it (still percent-encoded), with the
/// query string; sub-paths after the room id are there for `on_request` to route on.
///
/// ```
/// use partykit_runtime::Request;
///
/// let req = Request::builder()
///     .method("POST")
///     .uri("/parties/main/lobby/items?limit=5")
///     .body(r#"{"name":"cake"}"#)
///     .unwrap();
/// assert_eq!(req.method(), "POST");
/// assert_eq!(req.path(), "/parties/main/lobby/items");
/// assert_eq!(req.query("limit").as_deref(), Some("5"));
/// assert_eq!(req.text().unwrap(), r#"{"name":"cake"}"#);
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    inner: http::Request<Bytes>,
}

impl Request {
    /// A builder for a request, handy in tests and for calls between rooms.
    ///
    /// ```
    /// use partykit_runtime::{Method, Request};
    ///
    /// let request = Request::builder()
    ///     .method(Method::PUT)
    ///     .uri("/notes?draft=1")
    ///     .header("content-type", "text/plain")
    ///     .body("hello")?;
    /// assert_eq!(request.query("draft").as_deref(), Some("1"));
    /// let get = Request::builder().uri("/notes").build()?; // no body
    /// assert_eq!(get.method(), Method::GET);
    /// # Ok::<(), partykit_runtime::Error>(())
    /// ```
    pub fn builder() -> RequestBuilder {
        RequestBuilder {
            inner: http::Request::builder(),
        }
    }

    /// A `GET` of `uri` without a body: `Request::get("/count")?`.
    pub fn get(uri: impl TryInto<Uri, Error: Into<http::Error>>) -> Result<Request, Error> {
        Request::builder().uri(uri).build()
    }

    /// A `POST` of `body` to `uri`: `Request::post("/votes", r#"{"option":2}"#)?`.
    pub fn post(
        uri: impl TryInto<Uri, Error: Into<http::Error>>,
        body: impl Into<Bytes>,
    ) -> Result<Request, Error> {
        Request::builder().method(Method::POST).uri(uri).body(body)
    }

    /// The HTTP method.
    pub fn method(&self) -> &Method {
        self.inner.method()
    }

    /// The request target: raw path and query.
    pub fn uri(&self) -> &Uri {
        self.inner.uri()
    }

    /// Replaces the request target (e.g. in `on_before_request` to rewrite the URL).
    pub fn set_uri(&mut self, uri: Uri) {
        *self.inner.uri_mut() = uri;
    }

    /// The raw (still percent-encoded) path.
    pub fn path(&self) -> &str {
        self.inner.uri().path()
    }

    /// The path after the room: `/sub/path` for `/parties/chat/lobby/sub/path` (or
    /// `/party/lobby/sub/path`), `""` for the room itself. Rooms answer any sub-path; this
    /// is what routes within one.
    ///
    /// ```
    /// use partykit_runtime::Request;
    ///
    /// let request = Request::get("/parties/chat/lobby/messages/7?limit=2")?;
    /// assert_eq!(request.sub_path(), "/messages/7");
    /// assert_eq!(Request::get("/party/lobby")?.sub_path(), "");
    /// assert_eq!(Request::get("/party/lobby/")?.sub_path(), "/");
    /// # Ok::<(), partykit_runtime::Error>(())
    /// ```
    pub fn sub_path(&self) -> &str {
        let path = self.path();
        let (rest, segments) = if let Some(rest) = path.strip_prefix("/parties/") {
            (rest, 2)
        } else if let Some(rest) = path.strip_prefix("/party/") {
            (rest, 1)
        } else {
            return path;
        };
        let mut rest = rest;
        for _ in 0..segments {
            match rest.find('/') {
                Some(slash) => rest = &rest[slash + 1..],
                None => return "",
            }
        }
        // `rest` follows a `/`: give the sub-path with it.
        &path[path.len() - rest.len() - 1..]
    }

    /// The segments of [`sub_path`](Self::sub_path): `["messages", "7"]` for
    /// `/parties/chat/lobby/messages/7`, none for the room itself. Each is as sent
    /// (percent-encoded).
    pub fn sub_path_segments(&self) -> impl Iterator<Item = &str> {
        self.sub_path()
            .split('/')
            .filter(|segment| !segment.is_empty())
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        query_param(self.inner.uri().query()?, name)
    }

    /// The full URL, `http://<host><path>?<query>`, as PartyKit's `request.url` gives it.
    pub fn url(&self) -> String {
        let host = self
            .headers()
            .get(http::header::HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("localhost");
        let target = self
            .inner
            .uri()
            .path_and_query()
            .map_or("/", |target| target.as_str());
        format!("http://{host}{target}")
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// The headers, mutable (e.g. to pass a user id from `on_before_connect` to the room).
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        self.inner.headers_mut()
    }

    /// One header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.headers().get(name)?.to_str().ok()
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        self.inner.body()
    }

    /// The body as UTF-8 text; a 400 error if it is not.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(self.inner.body()).map_err(|error| {
            Error::with_status(
                http::StatusCode::BAD_REQUEST,
                format!("request body is not UTF-8: {error}"),
            )
        })
    }

    /// The body parsed as JSON; a 400 error if it does not parse.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(self.inner.body()).map_err(|error| {
            Error::with_status(
                http::StatusCode::BAD_REQUEST,
                format!("request body is not the expected JSON: {error}"),
            )
        })
    }

    /// The underlying `http::Request`.
    pub fn into_inner(self) -> http::Request<Bytes> {
        self.inner
    }
}

impl From<http::Request<Bytes>> for Request {
    fn from(inner: http::Request<Bytes>) -> Self {
        Self { inner }
    }
}

impl AsRef<http::Request<Bytes>> for Request {
    fn as_ref(&self) -> &http::Request<Bytes> {
        &self.inner
    }
}

/// Builds a [`Request`]; see [`Request::builder`].
#[derive(Debug)]
pub struct RequestBuilder {
    inner: http::request::Builder,
}

impl RequestBuilder {
    /// Sets the method.
    pub fn method(self, method: impl TryInto<Method, Error: Into<http::Error>>) -> Self {
        Self {
            inner: self.inner.method(method),
        }
    }

    /// Sets the target (path and query, or a full URL).
    pub fn uri(self, uri: impl TryInto<Uri, Error: Into<http::Error>>) -> Self {
        Self {
            inner: self.inner.uri(uri),
        }
    }

    /// Adds a header.
    pub fn header(
        self,
        name: impl TryInto<http::HeaderName, Error: Into<http::Error>>,
        value: impl TryInto<http::HeaderValue, Error: Into<http::Error>>,
    ) -> Self {
        Self {
            inner: self.inner.header(name, value),
        }
    }

    /// Sets the body and builds the request.
    pub fn body(self, body: impl Into<Bytes>) -> Result<Request, Error> {
        let inner = self.inner.body(body.into())?;
        Ok(Request { inner })
    }

    /// Builds the request with an empty body (a `GET`, a `DELETE`).
    pub fn build(self) -> Result<Request, Error> {
        self.body(Bytes::new())
    }
}

/// The first value of `name` in a raw query string, percent-decoded (`+` is a space).
pub(crate) fn query_param<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

fn decode(component: &str) -> Cow<'_, str> {
    if !component.contains(['%', '+']) {
        return Cow::Borrowed(component);
    }
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn query_params_are_decoded() {
        let query = "_pk=abc&name=a%20b+c&empty&bad=%zz&tail=%4";
        assert_eq!(query_param(query, "_pk").as_deref(), Some("abc"));
        assert_eq!(query_param(query, "name").as_deref(), Some("a b c"));
        assert_eq!(query_param(query, "empty").as_deref(), Some(""));
        assert_eq!(query_param(query, "bad").as_deref(), Some("%zz"));
        assert_eq!(query_param(query, "tail").as_deref(), Some("%4"));
        assert_eq!(query_param(query, "missing"), None);
    }
}
