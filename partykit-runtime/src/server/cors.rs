//! CORS for a party's HTTP routes, with partyserver's semantics: PartyKit had
//! none; partyserver's `routePartykitRequest` takes a `cors` option that answers
//! preflights and adds headers to every non-WebSocket response of the party's routes.

use std::collections::HashMap;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{PartyEntry, Server, ServerError};

/// Whether (and how) a party answers cross-origin requests; set with [`Server::cors`].
///
/// With CORS on, for every path of the party (`/parties/<party>/<room>/…`, and
/// `/party/<room>/…` for `main`):
///
/// - an `OPTIONS` request (a preflight) is answered at once with 200, an empty body and
///   the CORS headers: `on_before_request` and the room never see it;
/// - every other response to a non-WebSocket request gets the CORS headers, replacing
///   headers of the same name: the room's `on_request` answers, `on_before_request`'s
///   [`Before::Respond`](crate::Before::Respond), and the runtime's errors (401 from a
///   hook, 500 `No onRequest handler`, 413 body too large, …);
/// - WebSocket upgrades (and their refusals) are left alone: browsers do not apply CORS
///   to WebSockets.
///
/// `/parties/<unknown>/…` answers 404 without CORS headers: there is no party whose
/// setting applies. Paths outside the parties (`on_fetch`, static assets) are yours to
/// decorate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cors {
    /// No CORS handling (the default): `OPTIONS` goes to the hooks and the room like any
    /// other method, and responses are left as they are.
    #[default]
    Off,
    /// partyserver's `cors: true`: the headers of [`Cors::DEFAULT_HEADERS`] (any origin).
    On,
    /// partyserver's `cors: { … }`: exactly these headers, for instance a single
    /// origin with credentials. Names are case-insensitive; a name given twice sends
    /// both values. Invalid names or values make the server refuse to start.
    Headers(Vec<(String, String)>),
}

impl Cors {
    /// The headers [`Cors::On`] sends, the same as partyserver's `cors: true`.
    pub const DEFAULT_HEADERS: [(&'static str, &'static str); 4] = [
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Methods", "GET, POST, HEAD, OPTIONS"),
        ("Access-Control-Allow-Headers", "*"),
        ("Access-Control-Max-Age", "86400"),
    ];

    /// [`Cors::Headers`] from any pairs of strings.
    ///
    /// ```
    /// use partykit_runtime::Cors;
    ///
    /// let cors = Cors::headers([
    ///     ("Access-Control-Allow-Origin", "https://example.com"),
    ///     ("Access-Control-Allow-Credentials", "true"),
    /// ]);
    /// assert!(matches!(cors, Cors::Headers(ref headers) if headers.len() == 2));
    /// ```
    pub fn headers<N, V>(headers: impl IntoIterator<Item = (N, V)>) -> Self
    where
        N: Into<String>,
        V: Into<String>,
    {
        Self::Headers(
            headers
                .into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
        )
    }
}

impl Server {
    /// Sets CORS for the party named `party` (see [`Cors`]); off unless set. Setting it
    /// again replaces the earlier setting. The server refuses to start if no party has that
    /// name or a header is invalid.
    ///
    /// This is partyserver's `cors` option of `routePartykitRequest` (PartyKit itself had
    /// none); as there, it belongs to the routing, not to the party's code, so one party
    /// type can be served with different origins in development and production.
    ///
    /// ```no_run
    /// use partykit_runtime::{party, Cors, Server};
    ///
    /// #[party]
    /// #[derive(Default)]
    /// struct Main;
    ///
    /// #[party]
    /// impl Main {}
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), partykit_runtime::ServerError> {
    ///     Server::new()
    ///         .party::<Main>()
    ///         // Any origin, as partyserver's `cors: true`…
    ///         .cors("main", Cors::On)
    ///         // …or one origin, with credentials:
    ///         .cors(
    ///             "main",
    ///             Cors::headers([
    ///                 ("Access-Control-Allow-Origin", "https://app.example.com"),
    ///                 ("Access-Control-Allow-Credentials", "true"),
    ///                 ("Access-Control-Allow-Methods", "GET, POST, HEAD, OPTIONS"),
    ///                 ("Access-Control-Allow-Headers", "Content-Type, Authorization"),
    ///             ]),
    ///         )
    ///         .run()
    ///         .await
    /// }
    /// ```
    #[must_use]
    pub fn cors(mut self, party: impl Into<String>, cors: Cors) -> Self {
        let party = party.into();
        self.cors.retain(|(name, _)| *name != party);
        self.cors.push((party, cors));
        self
    }
}

/// The checked policies of the parties with CORS on, from the builder's settings.
pub(super) fn policies(
    settings: Vec<(String, Cors)>,
    parties: &HashMap<&'static str, PartyEntry>,
) -> Result<HashMap<&'static str, Policy>, ServerError> {
    let mut policies = HashMap::new();
    for (party, cors) in settings {
        let Some((&name, _)) = parties.get_key_value(party.as_str()) else {
            let message = "the server has no party of that name".to_owned();
            return Err(ServerError::Cors { party, message });
        };
        match Policy::new(&cors) {
            Ok(Some(policy)) => {
                policies.insert(name, policy);
            }
            Ok(None) => {}
            Err(message) => return Err(ServerError::Cors { party, message }),
        }
    }
    Ok(policies)
}

/// A party's CORS headers, checked.
#[derive(Debug)]
pub(crate) struct Policy {
    headers: HeaderMap,
}

impl Policy {
    /// The policy of `cors`: `None` when off, an error naming a header that HTTP does not
    /// allow.
    pub(crate) fn new(cors: &Cors) -> Result<Option<Self>, String> {
        let pairs: Vec<(&str, &str)> = match cors {
            Cors::Off => return Ok(None),
            Cors::On => Cors::DEFAULT_HEADERS.to_vec(),
            Cors::Headers(headers) => headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect(),
        };
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a valid header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("{value:?} is not a valid value for header `{name}`"))?;
            headers.append(name, value);
        }
        Ok(Some(Self { headers }))
    }

    /// The answer to a preflight: 200, no body, the headers.
    pub(crate) fn preflight(&self) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::OK;
        *response.headers_mut() = self.headers.clone();
        response
    }

    /// `response` with the headers set, replacing any of the same name.
    pub(crate) fn apply(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        for name in self.headers.keys() {
            headers.remove(name);
        }
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;
    use http::StatusCode;

    use super::{Cors, Policy};

    #[test]
    fn off_is_no_policy() {
        assert!(Policy::new(&Cors::Off).unwrap().is_none());
        assert_eq!(Cors::default(), Cors::Off);
    }

    #[test]
    fn headers_replace_and_repeat() {
        let policy = Policy::new(&Cors::headers([
            ("access-control-allow-origin", "https://a.example"),
            ("Vary", "Origin"),
            ("vary", "Cookie"),
        ]))
        .unwrap()
        .unwrap();
        let response = (
            StatusCode::CREATED,
            [("access-control-allow-origin", "*"), ("x-own", "kept")],
            "body",
        )
            .into_response();
        let response = policy.apply(response);
        assert_eq!(response.status(), StatusCode::CREATED);
        let headers = response.headers();
        let origins: Vec<_> = headers
            .get_all("access-control-allow-origin")
            .iter()
            .collect();
        assert_eq!(origins, ["https://a.example"]);
        let vary: Vec<_> = headers.get_all("vary").iter().collect();
        assert_eq!(vary, ["Origin", "Cookie"]);
        assert_eq!(headers["x-own"], "kept");
    }

    #[test]
    fn invalid_headers_are_refused() {
        let error = Policy::new(&Cors::headers([("bad name", "x")])).unwrap_err();
        assert!(error.contains("\"bad name\""), "{error}");
        let error = Policy::new(&Cors::headers([("x-ok", "line\nbreak")])).unwrap_err();
        assert!(error.contains("x-ok"), "{error}");
    }
}
