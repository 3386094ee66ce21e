//! `GET /metrics` on a listener of its own, so that the metrics are never served on the
//! public port by accident.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{StatusCode, header};

use super::Metrics;

/// The environment variable that turns on the metrics listener at `host:port` when
/// [`Server::metrics_addr`](crate::Server::metrics_addr) is not set; read when the server
/// starts serving.
pub const METRICS_ADDR_VAR: &str = "PARTYKIT_METRICS_ADDR";

/// The metrics listener's routes: `GET /metrics`, and a 404 that says where they are.
/// It is served with the public listener's connection limits (timeouts, head size, cap):
/// a scraper is a client like any other.
pub(crate) fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "Not found: the metrics are at GET /metrics",
            )
        })
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        metrics.encode(),
    )
}
