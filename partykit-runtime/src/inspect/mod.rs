//! The inspection API and the dashboard, under `/__partykit/` on the public listener.
//!
//! - `GET /__partykit/health` is always on and needs no token: 200 while the server
//!   serves, 503 while it shuts down or (cluster mode) while it cannot reach PostgreSQL.
//! - Everything else is on only with an admin token ([`Server::admin_token`] or
//!   `PARTYKIT_ADMIN_TOKEN`), else 404. The dashboard page and the OpenAPI document load
//!   without the token (they hold no data); every other endpoint wants
//!   `Authorization: Bearer <token>`, compared in constant time, and answers 401 without.
//! - Answers are JSON; errors are `{"error": "…"}` with their status.
//!
//! The endpoints read rooms from outside their actors (a room's connection registry and
//! storage cache are behind their own locks), so inspecting a busy room does not wait for
//! its handlers; the actions that change a room (evicting it, deleting its alarm) are
//! events that its actor runs in turn. `docs/OPERATIONS.md` documents every endpoint;
//! `openapi.json` is the contract, checked by the tests.
//!
//! [`Server::admin_token`]: crate::Server::admin_token

mod cluster;
mod rooms;

use std::sync::Arc;

use axum::response::IntoResponse;
use http::{HeaderValue, Method, StatusCode, header};
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::server::App;
use crate::{Request, Response};

/// The prefix of every inspection path.
const PREFIX: &str = "/__partykit";
/// The health check's path.
pub(crate) const HEALTH_PATH: &str = "/__partykit/health";

const DASHBOARD: &str = include_str!("dashboard.html");
const OPENAPI: &str = include_str!("openapi.json");

/// Whether `path` is the inspection API's: `/__partykit` or below it.
pub(crate) fn is_inspect_path(path: &str) -> bool {
    path.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Which rooms a request is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Every node's: in cluster mode, lists ask every node, and a room's requests go to
    /// the node that holds it.
    Cluster,
    /// This node's only: a request another node forwarded.
    Node,
}

/// A request another node forwarded to this one's internal listener (which checked the
/// cluster secret; the first node checked the admin token): answered from this node's
/// rooms.
pub(crate) async fn handle_forwarded(app: &Arc<App>, request: axum::extract::Request) -> Response {
    let path = request.uri().path().to_owned();
    let rest = path.strip_prefix(PREFIX).unwrap_or_default().to_owned();
    let request = match crate::server::dispatch::buffered(app, request).await {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    rooms::route(app, &rest, &request, Scope::Node).await
}

/// Answers a request under `/__partykit/`.
pub(crate) async fn handle(app: &Arc<App>, request: axum::extract::Request) -> Response {
    let path = request.uri().path().to_owned();
    if path == HEALTH_PATH {
        return health(app, request.method());
    }
    let Some(token) = &app.admin_token else {
        return error(
            StatusCode::NOT_FOUND,
            "the inspection API is off: set PARTYKIT_ADMIN_TOKEN",
        );
    };
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    let method = request.method().clone();
    match rest {
        "" | "/" => {
            return only_get(&method).unwrap_or_else(dashboard);
        }
        "/openapi.json" => {
            return only_get(&method).unwrap_or_else(|| page(OPENAPI, "application/json"));
        }
        _ => {}
    }
    if !authorized(&request, token) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "the inspection API needs the admin token: Authorization: Bearer <token>",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"partykit\""),
        );
        return response;
    }
    let request = match crate::server::dispatch::buffered(app, request).await {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    rooms::route(app, rest, &request, Scope::Cluster).await
}

/// `GET /__partykit/health`: for load balancers and supervisors.
fn health(app: &App, method: &Method) -> Response {
    if let Some(refusal) = only_get(method) {
        return refusal;
    }
    let (status, body) = if app.unhealthy.is_cancelled() || app.tasks.stopping().is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if app
        .cluster
        .as_ref()
        .is_some_and(|cluster| !cluster.is_reachable())
    {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster database is unreachable",
        )
    } else {
        (StatusCode::OK, "ok")
    };
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        body,
    )
        .into_response()
}

fn authorized(request: &axum::extract::Request, token: &str) -> bool {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Constant time: how long the comparison takes must not tell how much of a guess
    // was right.
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

/// The dashboard page. No other site may frame it (clickjacking an operator's buttons);
/// the page's own policy (a meta tag) keeps its requests on this origin.
fn dashboard() -> Response {
    let mut response = page(DASHBOARD, "text/html; charset=utf-8");
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// 405 unless `method` is GET (or HEAD).
fn only_get(method: &Method) -> Option<Response> {
    (method != Method::GET && method != Method::HEAD).then(|| not_allowed("GET"))
}

fn not_allowed(allowed: &'static str) -> Response {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("this endpoint takes {allowed}"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}

/// A JSON answer.
fn json(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            bytes,
        )
            .into_response(),
        Err(failure) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {failure}"),
        ),
    }
}

/// A refusal, answered as [`error`] does; small, for `Result`s.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, &self.message)
    }
}

/// An error answer: `{"error": message}`.
fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message });
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// A query parameter, percent-decoded.
fn query(request: &Request, name: &str) -> Option<String> {
    request.query(name).map(|value| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_paths_are_the_prefix_and_below() {
        assert!(is_inspect_path("/__partykit"));
        assert!(is_inspect_path("/__partykit/"));
        assert!(is_inspect_path("/__partykit/rooms"));
        assert!(!is_inspect_path("/__partykitx"));
        assert!(!is_inspect_path("/parties/main/__partykit"));
    }
}
