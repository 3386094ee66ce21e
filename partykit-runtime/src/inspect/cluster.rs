//! The inspection API across a cluster: a list asks every node that holds rooms, and a
//! room's requests go to the node that holds its lease (read off the lease table, never
//! taken: inspecting a room does not move it).

use std::time::Instant;

use http::StatusCode;
use http_body_util::BodyExt;

use axum::response::IntoResponse;

use super::rooms::{ListQuery, RoomList, cursor, list as local_list};
use super::{Refusal, error};
use crate::cluster::chain::Chain;
use crate::cluster::{Cluster, Peer};
use crate::metrics::Forwarded;
use crate::server::App;
use crate::storage::RoomKey;
use crate::{Request, Response};

/// The most bytes of one node's answer to a list (a page of at most 1,000 rooms).
const MAX_LIST_ANSWER: usize = 4 * 1024 * 1024;

/// `GET /__partykit/rooms` in cluster mode: each node's page after the cursor, merged.
/// Every room of the merged page is within its node's page, so one page from each node
/// is enough.
pub(super) async fn list(app: &App, cluster: &Cluster, request: &Request) -> Response {
    let query = match ListQuery::of(app, request) {
        Ok(query) => query,
        Err(refusal) => return refusal.into_response(),
    };
    let mut merged = match local_list(app, request).await {
        Ok(list) => list,
        Err(refusal) => return refusal.into_response(),
    };
    let peers = match cluster.lease_holders().await {
        Ok(peers) => peers,
        Err(failure) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot read which nodes hold rooms: {failure}"),
            );
        }
    };
    let mut more = merged.next_cursor.is_some();
    for peer in peers {
        match ask(cluster, &peer, request).await {
            Ok(page) => {
                more |= page.next_cursor.is_some();
                merged.rooms.extend(page.rooms);
            }
            Err(refusal) => return refusal.into_response(),
        }
    }
    merged
        .rooms
        .sort_by(|a, b| (&a.party, &a.id).cmp(&(&b.party, &b.id)));
    more |= merged.rooms.len() > query.limit;
    merged.rooms.truncate(query.limit);
    merged.next_cursor = more
        .then(|| {
            merged
                .rooms
                .last()
                .map(|room| cursor(&room.party, &room.id))
        })
        .flatten();
    super::json(StatusCode::OK, &merged)
}

/// One node's page of rooms.
async fn ask(cluster: &Cluster, peer: &Peer, request: &Request) -> Result<RoomList, Refusal> {
    let answer = forward(cluster, peer, request.clone()).await;
    let status = answer.status();
    let body = http_body_util::Limited::new(answer.into_body(), MAX_LIST_ANSWER)
        .collect()
        .await
        .map(|collected| collected.to_bytes());
    let unusable = |why: String| {
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "node {} ({}) did not list its rooms: {why}",
                peer.node_id, peer.addr
            ),
        )
    };
    let body = body.map_err(|failure| unusable(failure.to_string()))?;
    if status != StatusCode::OK {
        return Err(unusable(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    serde_json::from_slice(&body).map_err(|failure| unusable(failure.to_string()))
}

/// A room's request, sent to the node that holds the room; `None` when this node does
/// (or nobody does: the room is not live, and its storage is read here).
pub(super) async fn to_holder(
    cluster: &Cluster,
    party: &str,
    room: &str,
    request: &Request,
) -> Option<Response> {
    match cluster.holder(&RoomKey::new(party, room)).await {
        Ok(None) => None,
        Ok(Some(peer)) => Some(forward(cluster, &peer, request.clone()).await),
        Err(failure) => Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot read which node holds the room: {failure}"),
        )),
    }
}

async fn forward(cluster: &Cluster, peer: &Peer, request: Request) -> Response {
    let started = Instant::now();
    let answer = cluster
        .forwarder()
        .request(peer, request, &Chain::empty())
        .await;
    cluster
        .metrics()
        .forwarded(Forwarded::Inspect, started.elapsed());
    // Inspection paths are never misdirected: the node answers from its own rooms.
    answer.unwrap_or_else(|_| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("node {} refused the request; try again", peer.node_id),
        )
    })
}
