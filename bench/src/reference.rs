//! The reference: the chat room written directly on axum, as a competent engineer would
//! in an afternoon, to measure partykit-rs against.
//!
//! Same semantics as `partykit_examples::chat`: on `/parties/main/<room>` a WebSocket's
//! messages go to everyone else in the room, and `GET` answers
//! `{"room":"<room>","connections":<n>}`.
//!
//! Rooms live in a map behind a mutex; each room is a list of members behind its own
//! mutex. Each connection has an unbounded queue and a writer task; a broadcast clones
//! the received [`Message`] (its payload is shared `Bytes`) into every other member's
//! queue. Sockets get `TCP_NODELAY`, as a real-time server should.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Serves the reference on `listener` until the process ends.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, router()).await
}

/// The reference's routes.
pub fn router() -> axum::Router {
    axum::Router::new()
        .route("/parties/main/{room}", get(room))
        .with_state(Arc::new(Rooms::default()))
}

#[derive(Default)]
struct Rooms {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    next_member: AtomicU64,
}

#[derive(Default)]
struct Room {
    members: Mutex<Vec<Member>>,
}

struct Member {
    id: u64,
    outbox: mpsc::UnboundedSender<Message>,
}

#[derive(Serialize)]
struct RoomInfo {
    room: String,
    connections: usize,
}

async fn room(
    State(rooms): State<Arc<Rooms>>,
    Path(room_id): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => upgrade.on_upgrade(move |socket| connection(socket, rooms, room_id)),
        Err(_) => {
            let connections = rooms.count(&room_id);
            Json(RoomInfo {
                room: room_id,
                connections,
            })
            .into_response()
        }
    }
}

async fn connection(socket: WebSocket, rooms: Arc<Rooms>, room_id: String) {
    let id = rooms.next_member.fetch_add(1, Ordering::Relaxed);
    let (outbox, mut inbox) = mpsc::unbounded_channel();
    let room = rooms.join(&room_id, Member { id, outbox });
    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        while let Some(message) = inbox.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Text(_) | Message::Binary(_) => room.broadcast(id, &message),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    rooms.leave(&room_id, &room, id);
    writer.abort();
}

impl Rooms {
    fn join(&self, room_id: &str, member: Member) -> Arc<Room> {
        // The map stays locked until the member is in, so `leave` cannot drop the room
        // in between.
        let mut rooms = lock(&self.rooms);
        let room = Arc::clone(rooms.entry(room_id.to_owned()).or_default());
        lock(&room.members).push(member);
        room
    }

    fn leave(&self, room_id: &str, room: &Arc<Room>, id: u64) {
        let mut rooms = lock(&self.rooms);
        let mut members = lock(&room.members);
        members.retain(|member| member.id != id);
        let current = rooms
            .get(room_id)
            .is_some_and(|live| Arc::ptr_eq(live, room));
        if members.is_empty() && current {
            rooms.remove(room_id);
        }
    }

    fn count(&self, room_id: &str) -> usize {
        let room = lock(&self.rooms).get(room_id).cloned();
        room.map_or(0, |room| lock(&room.members).len())
    }
}

impl Room {
    fn broadcast(&self, from: u64, message: &Message) {
        for member in lock(&self.members)
            .iter()
            .filter(|member| member.id != from)
        {
            let _ = member.outbox.send(message.clone());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
