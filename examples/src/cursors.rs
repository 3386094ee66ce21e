//! Live cursors: a web page (served by the same server) shows the pointer of everyone
//! who has it open.
//!
//! - `http://127.0.0.1:1999/` serves `examples/cursors/index.html`, a plain HTML page
//!   whose script uses the `partysocket` npm client (its built ESM files are shipped in
//!   `examples/cursors/vendor/partysocket/`, with their license). `?room=<name>` picks the
//!   room (default `lobby`).
//! - The page connects to `ws://127.0.0.1:1999/parties/main/<room>` and sends its pointer
//!   as fractions of the window, `{"x":0.25,"y":0.5}`, or `{"x":null,"y":null}` when the
//!   pointer leaves.
//! - It receives `{"type":"sync","self":"<id>","cursors":{"<id>":{"x":…,"y":…,"color":…}}}`
//!   when it connects (everyone else's cursor), then
//!   `{"type":"update","id":…,"x":…,"y":…,"color":…}` and `{"type":"remove","id":…}`.
//!
//! The party keeps nothing in its struct: each cursor is its connection's state, so the
//! party can hibernate (`#[party(hibernate)]`): between events the runtime drops the
//! party's value, the sockets stay open, and the cursors are still there when the next
//! message wakes it.

use std::path::PathBuf;

use partykit_runtime::{Connection, Error, Message, Room, party};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The directory of the page: `examples/cursors`, wherever the binary is started from.
pub fn assets_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/cursors"))
}

/// The cursors party (`main`).
#[party(hibernate)]
#[derive(Debug)]
pub struct Cursors {
    room: Room,
}

/// A connection's state: its color, and where its pointer is (if on the page).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cursor {
    color: String,
    position: Option<Position>,
}

/// A pointer position, as fractions of the window (0 to 1).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Position {
    x: f64,
    y: f64,
}

/// What a page sends: a position, or nulls when the pointer left.
#[derive(Debug, Deserialize)]
struct Move {
    x: Option<f64>,
    y: Option<f64>,
}

#[party]
impl Cursors {
    fn new(room: Room) -> Self {
        Cursors { room }
    }

    fn on_connect(&mut self, connection: &Connection) -> Result<(), Error> {
        connection.set_state(&Cursor {
            color: color_of(connection.id()),
            position: None,
        })?;
        // Everyone else's cursor, from their connections' state.
        let mut cursors = Map::new();
        for other in self.room.get_connections(None) {
            if other.id() == connection.id() {
                continue;
            }
            if let Some(cursor) = other.state::<Cursor>()?
                && let Some(position) = cursor.position
            {
                cursors.insert(other.id().to_owned(), point(&cursor.color, position));
            }
        }
        let sync = json!({ "type": "sync", "self": connection.id(), "cursors": cursors });
        connection.send(sync.to_string())?;
        Ok(())
    }

    fn on_message(&mut self, message: Message, sender: &Connection) -> Result<(), Error> {
        let Some(mut cursor) = sender.state::<Cursor>()? else {
            return Ok(());
        };
        let moved: Move = message.json()?;
        cursor.position = match (moved.x, moved.y) {
            (Some(x), Some(y)) if is_fraction(x) && is_fraction(y) => Some(Position { x, y }),
            _ => None,
        };
        sender.set_state(&cursor)?;
        let out = match cursor.position {
            Some(position) => {
                let mut update = point(&cursor.color, position);
                update["type"] = json!("update");
                update["id"] = json!(sender.id());
                update
            }
            None => json!({ "type": "remove", "id": sender.id() }),
        };
        self.room.broadcast(out.to_string(), &[sender.id()]);
        Ok(())
    }

    fn on_close(&mut self, connection: &Connection) {
        let remove = json!({ "type": "remove", "id": connection.id() });
        self.room.broadcast(remove.to_string(), &[]);
    }
}

fn point(color: &str, position: Position) -> Value {
    json!({ "x": position.x, "y": position.y, "color": color })
}

fn is_fraction(value: f64) -> bool {
    (0.0..=1.0).contains(&value)
}

/// A color of its own for every connection, from its id: a hue on the color wheel.
fn color_of(id: &str) -> String {
    // FNV-1a: stable across runs and platforms.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("hsl({}, 80%, 45%)", hash % 360)
}
