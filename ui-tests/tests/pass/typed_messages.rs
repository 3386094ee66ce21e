//! `on_message` taking typed JSON: `Json<T>`, destructured or not, and
//! `Result<Json<T>, JsonRejection>`, in class and in object style.
#![allow(deprecated)]

use partykit_runtime::{Connection, Json, JsonRejection, Room, Server, party};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vote {
    option: u32,
}

#[party(name = "class")]
#[derive(Default)]
struct Class {
    votes: Vec<u32>,
}

#[party]
impl Class {
    fn on_message(&mut self, Json(vote): Json<Vote>, sender: &Connection) {
        self.votes.push(vote.option);
        let _ = sender.send_json(&self.votes);
    }
}

#[party(name = "lenient")]
#[derive(Default)]
struct Lenient;

#[party]
impl Lenient {
    async fn on_message(&mut self, vote: Result<Json<Vote>, JsonRejection>) {
        let _ = vote.map(|Json(vote)| vote.option);
    }
}

#[party(name = "object")]
struct Object;

#[party]
impl Object {
    fn on_message(vote: Json<Vote>, _sender: &Connection, room: &Room) {
        let _ = room.broadcast_json(&vote.0.option, &[]);
    }
}

fn main() {
    let _ = Server::new()
        .party::<Class>()
        .party::<Lenient>()
        .party::<Object>();
}
