//! The internal listener: where other nodes send the events of rooms this node owns.
//!
//! Every request must carry the cluster secret (`x-partykit-cluster-secret`); without it,
//! or with another one, the answer is 401 whatever the path. Then only party paths are
//! served: a room this node does not own answers 421 Misdirected Request (the caller
//! locates the room again), a room it owns takes the event as from a public client whose
//! hooks already ran on the first node. The call's wait chain is recorded in this node's
//! wait graph while the request runs, so cycles across nodes are found (508).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use http::{HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use super::chain::{self, Chain};
use super::forward::{LOOP_HEADER, MISDIRECTED_HEADER, REFUSED_SECRET_HEADER, SECRET_HEADER};
use super::throttle::Throttle;
use crate::Response;
use crate::room::{Location, Refused};
use crate::server::App;
use crate::server::dispatch;
use crate::storage::RoomKey;

/// How often a refused request is logged at most (a misconfigured peer retries often).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The internal listener's routes.
pub(crate) fn router(app: Arc<App>) -> axum::Router {
    let secret = app
        .cluster
        .as_ref()
        .map(|cluster| Arc::<str>::from(cluster.secret()));
    let state = Arc::new(Internal {
        app,
        guard: Guard::new(secret),
    });
    axum::Router::new().fallback(handle).with_state(state)
}

struct Internal {
    app: Arc<App>,
    guard: Guard,
}

async fn handle(
    State(internal): State<Arc<Internal>>,
    request: axum::extract::Request,
) -> Response {
    if !internal.guard.admits(request.headers()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(REFUSED_SECRET_HEADER, "1")],
            "internal listener: missing or wrong cluster secret",
        )
            .into_response();
    }
    let app = &internal.app;
    let path = request.uri().path().to_owned();
    if crate::inspect::is_inspect_path(&path) {
        return crate::inspect::handle_forwarded(app, request).await;
    }
    let Some(dispatch::Target { party, room }) = dispatch::parse_target(&path) else {
        return (
            StatusCode::NOT_FOUND,
            "internal listener: only party paths are served here",
        )
            .into_response();
    };
    let Some(entry) = app.parties.get(party) else {
        return (StatusCode::NOT_FOUND, format!("Party {party} not found")).into_response();
    };
    if let Err(refused) = Refused::check_id(room, &app.limits) {
        return refused.into_error().into_response();
    }
    let chain = match request.headers().get(chain::HEADER).map(Chain::decode) {
        None => Chain::empty(),
        Some(Ok(chain)) => chain,
        Some(Err(message)) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    match entry.rooms.locate(room).await {
        Err(refused) => return refused.into_error().into_response(),
        Ok(Location::Node(_)) => {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                [(MISDIRECTED_HEADER, "1")],
                format!("this node does not own {party}/{room}"),
            )
                .into_response();
        }
        Ok(Location::Here) => {}
    }
    let target = RoomKey::new(party, room);
    // Held until the room answered (for a socket: until it accepted the upgrade).
    let _waits = match chain.install(app.directory.waits(), &target) {
        Ok(waits) => waits,
        Err(cycle) => {
            let error = crate::parties::loop_detected(&target, &cycle);
            return (error.status(), [(LOOP_HEADER, "1")], error.to_string()).into_response();
        }
    };
    dispatch::owned(app, entry, room, request).await
}

/// The secret check, and a log of refusals that a retrying peer cannot flood.
struct Guard {
    /// `None`: this node is not in cluster mode, and refuses everything.
    secret: Option<Arc<str>>,
    refusals: Throttle,
}

impl Guard {
    fn new(secret: Option<Arc<str>>) -> Self {
        Self {
            secret,
            refusals: Throttle::new(REFUSAL_LOG_INTERVAL),
        }
    }

    /// Whether the request carries the secret; a refusal is logged.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let given = headers.get(SECRET_HEADER).map(|value| value.as_bytes());
        // Constant time: how long the comparison takes must not tell how much of a
        // guess was right.
        let right = match (&self.secret, given) {
            (Some(secret), Some(given)) => bool::from(given.ct_eq(secret.as_bytes())),
            _ => false,
        };
        if !right {
            self.log_refusal(given.is_some());
        }
        right
    }

    fn log_refusal(&self, had_secret: bool) {
        let Some(unlogged) = self.refusals.admit() else {
            return;
        };
        tracing::warn!(
            secret = if had_secret { "wrong" } else { "missing" },
            refused_since_last_log = unlogged,
            "internal listener refused a request: check that every node has the same PARTYKIT_CLUSTER_SECRET"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn the_secret_must_match_exactly() {
        let guard = Guard::new(Some(Arc::from("s3cret")));
        let mut headers = HeaderMap::new();
        assert!(!guard.admits(&headers));
        for wrong in ["", "s3cre", "s3cret ", "S3CRET", "s3crets"] {
            headers.insert(SECRET_HEADER, HeaderValue::from_str(wrong).unwrap());
            assert!(!guard.admits(&headers), "{wrong:?} was accepted");
        }
        headers.insert(SECRET_HEADER, HeaderValue::from_static("s3cret"));
        assert!(guard.admits(&headers));
        // Not in cluster mode: nothing is accepted.
        assert!(!Guard::new(None).admits(&headers));
    }
}
