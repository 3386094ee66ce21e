//! The endpoints about rooms: statistics, the list of live rooms, one room in detail,
//! a stored value, and the operator's actions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use axum::response::IntoResponse;

use super::{Refusal, Scope, cluster, error, json, not_allowed, query};
use crate::room::{Admin, Event, Room};
use crate::server::{App, PartyEntry};
use crate::storage::RoomKey;
use crate::{Request, Response};

/// The default and the largest page, of rooms and of storage keys.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub(super) async fn route(app: &Arc<App>, rest: &str, request: &Request, scope: Scope) -> Response {
    let method = request.method();
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    if let (Some(cluster), Scope::Cluster) = (&app.cluster, scope) {
        match segments.as_slice() {
            ["rooms"] if method == Method::GET => {
                return cluster::list(app, cluster, request).await;
            }
            ["rooms", party, room, ..] if app.parties.contains_key(party) => {
                if let Some(answer) = cluster::to_holder(cluster, party, room, request).await {
                    return answer;
                }
            }
            _ => {}
        }
    }
    match segments.as_slice() {
        ["stats"] => get(method).unwrap_or_else(|| json(StatusCode::OK, &stats(app))),
        ["rooms"] => match get(method) {
            Some(refusal) => refusal,
            None => match list(app, request).await {
                Ok(list) => json(StatusCode::OK, &list),
                Err(refusal) => refusal.into_response(),
            },
        },
        ["rooms", party, room] => match get(method) {
            Some(refusal) => refusal,
            None => with_party(app, party, |entry| detail(entry, room, request)).await,
        },
        ["rooms", party, room, "value"] => match get(method) {
            Some(refusal) => refusal,
            None => with_party(app, party, |entry| value(entry, room, request)).await,
        },
        ["rooms", party, room, "connections", id, "close"] => {
            if method != Method::POST {
                return not_allowed("POST");
            }
            with_party(app, party, |entry| close(entry, room, id, request)).await
        }
        ["rooms", party, room, "evict"] => {
            if method != Method::POST {
                return not_allowed("POST");
            }
            with_party(app, party, |entry| evict(entry, room)).await
        }
        ["rooms", party, room, "alarm"] => {
            if method != Method::DELETE {
                return not_allowed("DELETE");
            }
            with_party(app, party, |entry| delete_alarm(entry, room)).await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "no such inspection endpoint: see /__partykit/openapi.json",
        ),
    }
}

fn get(method: &Method) -> Option<Response> {
    super::only_get(method)
}

async fn with_party<'a, F, Fut>(app: &'a App, party: &str, then: F) -> Response
where
    F: FnOnce(&'a PartyEntry) -> Fut,
    Fut: Future<Output = Response>,
{
    match app.parties.get(party) {
        Some(entry) => then(entry).await,
        None => no_party(party),
    }
}

fn no_party(party: &str) -> Response {
    no_such_party(party).into_response()
}

fn no_such_party(party: &str) -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        format!("no party is named {party:?}"),
    )
}

#[derive(Serialize)]
struct Stats {
    time: u64,
    parties: Vec<PartyStats>,
}

#[derive(Serialize)]
struct PartyStats {
    party: &'static str,
    rooms: i64,
    hibernating: i64,
    connections: i64,
    connections_opened: u64,
    messages_in: u64,
    messages_out: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// `GET /__partykit/stats`: every party's gauges and counters, read off the metrics.
fn stats(app: &App) -> Stats {
    let mut parties: Vec<PartyStats> = app
        .metrics
        .parties()
        .map(|(party, metrics)| PartyStats {
            party,
            rooms: metrics.rooms.get(),
            hibernating: metrics.hibernating.get(),
            connections: metrics.connections.get(),
            connections_opened: metrics.connections_opened.get(),
            messages_in: metrics.messages_in.get(),
            messages_out: metrics.messages_out.get(),
            bytes_in: metrics.bytes_in.get(),
            bytes_out: metrics.bytes_out.get(),
        })
        .collect();
    parties.sort_by_key(|stats| stats.party);
    Stats {
        time: millis(SystemTime::now()),
        parties,
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RoomList {
    pub(crate) rooms: Vec<RoomSummary>,
    pub(crate) next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RoomSummary {
    pub(crate) party: String,
    pub(crate) id: String,
    pub(crate) connections: usize,
    pub(crate) hibernating: bool,
    pub(crate) storage: Option<StorageSize>,
    pub(crate) alarm: Option<i64>,
    pub(crate) node: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct StorageSize {
    keys: usize,
    bytes: usize,
}

/// What a list asks for.
pub(crate) struct ListQuery {
    pub(crate) limit: usize,
    party: Option<String>,
    prefix: String,
    after: Option<(String, String)>,
}

impl ListQuery {
    pub(crate) fn of(app: &App, request: &Request) -> Result<Self, Refusal> {
        let limit = page_size(request, "limit")?;
        let party = query(request, "party");
        if let Some(party) = party.as_deref()
            && !app.parties.contains_key(party)
        {
            return Err(no_such_party(party));
        }
        let prefix = query(request, "prefix").unwrap_or_default();
        let after = match query(request, "cursor") {
            None => None,
            Some(cursor) => match cursor.split_once('/') {
                Some((party, room)) if !party.is_empty() && !room.is_empty() => {
                    Some((party.to_owned(), room.to_owned()))
                }
                _ => {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "cursor is not one this API gave: pass next_cursor of the previous page",
                    ));
                }
            },
        };
        Ok(Self {
            limit,
            party,
            prefix,
            after,
        })
    }
}

/// The cursor after `room`.
pub(crate) fn cursor(party: &str, room: &str) -> String {
    format!("{party}/{room}")
}

/// `GET /__partykit/rooms` on one node: its live rooms, sorted by party and id, a page
/// at a time.
pub(crate) async fn list(app: &App, request: &Request) -> Result<RoomList, Refusal> {
    let ListQuery {
        limit,
        party,
        prefix,
        after,
    } = ListQuery::of(app, request)?;
    let node = app
        .cluster
        .as_ref()
        .map(|cluster| cluster.node_addr().to_owned());
    let mut rooms: Vec<Room> = app
        .parties
        .iter()
        .filter(|(name, _)| party.as_deref().is_none_or(|party| party == **name))
        .flat_map(|(_, entry)| entry.rooms.rooms())
        .filter(|room| room.id().starts_with(prefix.as_str()))
        .filter(|room| {
            after
                .as_ref()
                .is_none_or(|(party, id)| (room.name(), room.id()) > (party.as_str(), id.as_str()))
        })
        .collect();
    rooms.sort_by(|a, b| (a.name(), a.id()).cmp(&(b.name(), b.id())));
    let more = rooms.len() > limit;
    rooms.truncate(limit);
    let next_cursor = more
        .then(|| rooms.last().map(|room| cursor(room.name(), room.id())))
        .flatten();
    let mut summaries = Vec::with_capacity(rooms.len());
    for room in rooms {
        summaries.push(summary(&room, node.clone()).await);
    }
    Ok(RoomList {
        rooms: summaries,
        next_cursor,
    })
}

async fn summary(room: &Room, node: Option<String>) -> RoomSummary {
    let read = room
        .storage()
        .inspect(|entries, alarm| (size(entries), alarm))
        .await;
    let (storage, alarm) = match read {
        Ok((size, alarm)) => (Some(size), alarm),
        Err(failure) => {
            tracing::debug!(party = room.name(), room = room.id(), %failure, "cannot read a room's storage to inspect it");
            (None, None)
        }
    };
    RoomSummary {
        party: room.name().to_owned(),
        id: room.id().to_owned(),
        connections: room.connection_count(),
        hibernating: room.is_hibernating(),
        storage,
        alarm,
        node,
    }
}

fn size(entries: &BTreeMap<String, Bytes>) -> StorageSize {
    StorageSize {
        keys: entries.len(),
        bytes: entries
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum(),
    }
}

#[derive(Serialize)]
struct RoomDetail {
    party: &'static str,
    id: String,
    live: bool,
    hibernating: bool,
    node: Option<String>,
    alarm: Option<i64>,
    connections: Vec<ConnectionInfo>,
    storage: StoragePage,
}

#[derive(Serialize)]
struct ConnectionInfo {
    id: String,
    uri: String,
    tags: Vec<String>,
    state_bytes: usize,
    connected_at: u64,
    queued_bytes: usize,
}

#[derive(Serialize)]
struct StoragePage {
    keys: usize,
    bytes: usize,
    entries: Vec<KeySize>,
    next_key: Option<String>,
}

#[derive(Serialize)]
struct KeySize {
    key: String,
    bytes: usize,
}

/// `GET /__partykit/rooms/{party}/{room}`: a live room's connections, and a page of its
/// keys; a room that is not live shows what it stored.
async fn detail(entry: &PartyEntry, room_id: &str, request: &Request) -> Response {
    let limit = match page_size(request, "keys_limit") {
        Ok(limit) => limit,
        Err(refusal) => return refusal.into_response(),
    };
    let prefix = query(request, "key_prefix").unwrap_or_default();
    let after = query(request, "keys_after");
    let page = |entries: &BTreeMap<String, Bytes>, alarm: Option<i64>| {
        let StorageSize { keys, bytes } = size(entries);
        let lower = match &after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Included(prefix.clone()),
        };
        let mut matching = entries
            .range((lower, std::ops::Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix.as_str()));
        let entries: Vec<KeySize> = matching
            .by_ref()
            .take(limit)
            .map(|(key, value)| KeySize {
                key: key.clone(),
                bytes: value.len(),
            })
            .collect();
        let next_key = matching
            .next()
            .and_then(|_| entries.last().map(|last| last.key.clone()));
        let page = StoragePage {
            keys,
            bytes,
            entries,
            next_key,
        };
        (page, alarm)
    };
    let live = entry.rooms.room(room_id);
    let read = match &live {
        Some(room) => room.storage().inspect(page).await,
        None => {
            let key = RoomKey::new(entry.rooms.name(), room_id);
            crate::storage::inspect_stored(&**entry.rooms.backend(), &key, page).await
        }
    };
    let (storage, alarm) = match read {
        Ok(read) => read,
        Err(failure) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot read the room's storage: {failure}"),
            );
        }
    };
    let connections = live
        .as_ref()
        .map(|room| {
            room.get_connections(None)
                .iter()
                .map(|connection| ConnectionInfo {
                    id: connection.id().to_owned(),
                    uri: connection.uri().to_owned(),
                    tags: connection.tags().to_vec(),
                    state_bytes: connection.state_len(),
                    connected_at: millis(connection.connected_at()),
                    queued_bytes: connection.queued_bytes(),
                })
                .collect()
        })
        .unwrap_or_default();
    let detail = RoomDetail {
        party: entry.rooms.name(),
        id: room_id.to_owned(),
        live: live.is_some(),
        hibernating: live.as_ref().is_some_and(Room::is_hibernating),
        node: entry
            .rooms
            .cluster()
            .map(|cluster| cluster.node_addr().to_owned()),
        alarm,
        connections,
        storage,
    };
    json(StatusCode::OK, &detail)
}

#[derive(Serialize)]
struct Value {
    key: String,
    bytes: usize,
    json: Option<serde_json::Value>,
    base64: String,
}

/// `GET /__partykit/rooms/{party}/{room}/value?key=K`: one stored value.
async fn value(entry: &PartyEntry, room_id: &str, request: &Request) -> Response {
    let Some(key) = query(request, "key") else {
        return error(
            StatusCode::BAD_REQUEST,
            "which value? pass its key: ?key=<key>",
        );
    };
    let find = |entries: &BTreeMap<String, Bytes>, _alarm: Option<i64>| entries.get(&key).cloned();
    let read = match entry.rooms.room(room_id) {
        Some(room) => room.storage().inspect(find).await,
        None => {
            let room = RoomKey::new(entry.rooms.name(), room_id);
            crate::storage::inspect_stored(&**entry.rooms.backend(), &room, find).await
        }
    };
    match read {
        Ok(Some(bytes)) => json(
            StatusCode::OK,
            &Value {
                json: serde_json::from_slice(&bytes).ok(),
                base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
                bytes: bytes.len(),
                key,
            },
        ),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            &format!("the room stores no key {key:?}"),
        ),
        Err(failure) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot read the room's storage: {failure}"),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    #[serde(default = "normal")]
    code: u16,
    #[serde(default)]
    reason: String,
}

fn normal() -> u16 {
    crate::close_code::NORMAL
}

/// `POST …/connections/{id}/close`: closes one socket with the code and reason given.
async fn close(entry: &PartyEntry, room_id: &str, id: &str, request: &Request) -> Response {
    let body = request.body();
    let CloseBody { code, reason } = if body.iter().all(u8::is_ascii_whitespace) {
        CloseBody {
            code: normal(),
            reason: String::new(),
        }
    } else {
        // An object only: serde would read the struct from a JSON array (`[]`) too.
        let parsed = match body.trim_ascii_start().first() {
            Some(b'{') => serde_json::from_slice(body).map_err(|failure| failure.to_string()),
            _ => Err("it is not a JSON object".to_owned()),
        };
        match parsed {
            Ok(body) => body,
            Err(failure) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("the body must be {{\"code\": 1000, \"reason\": \"…\"}}: {failure}"),
                );
            }
        }
    };
    if code != crate::close_code::NORMAL && !(3000..=4999).contains(&code) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("close code {code} is not an operator's: use 1000, or 3000-4999"),
        );
    }
    if reason.len() > crate::MAX_CLOSE_REASON {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "the reason is {} bytes; a close reason is at most {} bytes",
                reason.len(),
                crate::MAX_CLOSE_REASON
            ),
        );
    }
    let id = percent_decode_str(id).decode_utf8_lossy();
    let connection = entry
        .rooms
        .room(room_id)
        .and_then(|room| room.get_connection(&id));
    match connection {
        Some(connection) => match connection.close(code, &reason) {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({ "closed": true })),
            Err(failure) => error(StatusCode::BAD_REQUEST, &failure.to_string()),
        },
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no connection {id:?} is open in the room"),
        ),
    }
}

/// `POST …/evict`: closes the room's sockets and lets it leave memory.
async fn evict(entry: &PartyEntry, room_id: &str) -> Response {
    if entry.rooms.room(room_id).is_none() {
        return not_live(room_id);
    }
    let (reply, evicted) = oneshot::channel();
    let event = Event::Admin(Admin::Evict { reply });
    if let Err(refused) = entry.rooms.send(room_id, event).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, &refused.to_string());
    }
    match evicted.await {
        Ok(connections) => json(
            StatusCode::OK,
            &serde_json::json!({ "evicted": true, "connections": connections }),
        ),
        // The room stopped on its own meanwhile: it is out of memory either way.
        Err(_) => json(
            StatusCode::OK,
            &serde_json::json!({ "evicted": true, "connections": 0 }),
        ),
    }
}

/// `DELETE …/alarm`: deletes the room's alarm, durably. A room that is not live and
/// has an alarm stored gets its actor started (not its value) to delete it: its writes
/// are its own. One with none is answered without starting anything.
async fn delete_alarm(entry: &PartyEntry, room_id: &str) -> Response {
    if entry.rooms.room(room_id).is_none() {
        let key = RoomKey::new(entry.rooms.name(), room_id);
        let stored =
            crate::storage::inspect_stored(&**entry.rooms.backend(), &key, |_, alarm| alarm);
        match stored.await {
            Ok(None) => return json(StatusCode::OK, &serde_json::json!({ "deleted": false })),
            Ok(Some(_)) => {}
            Err(failure) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("cannot read the room's alarm: {failure}"),
                );
            }
        }
    }
    let (reply, deleted) = oneshot::channel();
    let event = Event::Admin(Admin::DeleteAlarm { reply });
    if let Err(refused) = entry.rooms.send(room_id, event).await {
        let failure = refused.into_error();
        return error(failure.status(), &failure.to_string());
    }
    match deleted.await {
        Ok(Ok(deleted)) => json(StatusCode::OK, &serde_json::json!({ "deleted": deleted })),
        Ok(Err(failure)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot delete the alarm: {failure}"),
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the room stopped before deleting its alarm; try again",
        ),
    }
}

fn not_live(room_id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("room {room_id:?} is not live"),
    )
}

/// A page size parameter: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when absent.
fn page_size(request: &Request, name: &str) -> Result<usize, Refusal> {
    let Some(given) = query(request, name) else {
        return Ok(DEFAULT_PAGE);
    };
    match given.parse::<usize>() {
        Ok(size) if (1..=MAX_PAGE).contains(&size) => Ok(size),
        _ => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("{name} must be a whole number from 1 to {MAX_PAGE}, not {given:?}"),
        )),
    }
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}
