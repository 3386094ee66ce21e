//! The y-websocket wire protocol, as y-partykit's server speaks it.
//!
//! Every message is one binary frame whose first varuint is its type: `0` sync
//! (sub-type `0` SyncStep1 with a state vector, `1` SyncStep2 with an update, `2` Update),
//! `1` awareness. The server ignores the other types (`2` auth, `3` query-awareness).

use bytes::Bytes;
use yrs::encoding::read::{Cursor, Read};
use yrs::sync::{AwarenessUpdate, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact};

use crate::{Error, Result};

const MESSAGE_SYNC: u8 = 0;
const MESSAGE_AWARENESS: u8 = 1;

/// An inbound message the server acts on.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A client's state vector: answer with the updates it misses.
    SyncStep1(StateVector),
    /// The updates the server missed, in answer to its SyncStep1.
    SyncStep2(Vec<u8>),
    /// A document update.
    Update(Vec<u8>),
    /// Awareness states.
    Awareness(AwarenessUpdate),
    /// Another message type (auth, query-awareness): ignored, as y-partykit does.
    Ignored,
}

/// Decodes one inbound frame.
pub(crate) fn decode(frame: &[u8]) -> Result<Inbound> {
    let tag: u8 = Cursor::new(frame)
        .read_var()
        .map_err(|error| Error::msg(format!("malformed y-websocket message: {error}")))?;
    if tag != MESSAGE_SYNC && tag != MESSAGE_AWARENESS {
        return Ok(Inbound::Ignored);
    }
    let message = Message::decode_v1(frame)
        .map_err(|error| Error::msg(format!("malformed y-websocket message: {error}")))?;
    Ok(match message {
        Message::Sync(SyncMessage::SyncStep1(state_vector)) => Inbound::SyncStep1(state_vector),
        Message::Sync(SyncMessage::SyncStep2(update)) => Inbound::SyncStep2(update),
        Message::Sync(SyncMessage::Update(update)) => Inbound::Update(update),
        Message::Awareness(update) => Inbound::Awareness(update),
        _ => Inbound::Ignored,
    })
}

/// SyncStep1 with the document's state vector: what the server sends a new connection.
pub(crate) fn sync_step1(doc: &yrs::Doc) -> Bytes {
    let state_vector = doc.transact().state_vector();
    encode(&Message::Sync(SyncMessage::SyncStep1(state_vector)))
}

/// SyncStep2: what `doc` has that a peer with `state_vector` lacks.
pub(crate) fn sync_step2(doc: &yrs::Doc, state_vector: &StateVector) -> Bytes {
    let update = doc.transact().encode_state_as_update_v1(state_vector);
    encode(&Message::Sync(SyncMessage::SyncStep2(update)))
}

/// A document update, as broadcast to every connection.
pub(crate) fn update(update: Vec<u8>) -> Bytes {
    encode(&Message::Sync(SyncMessage::Update(update)))
}

/// Awareness states, as broadcast to every connection.
pub(crate) fn awareness(update: AwarenessUpdate) -> Bytes {
    encode(&Message::Awareness(update))
}

fn encode(message: &Message) -> Bytes {
    Bytes::from(message.encode_v1())
}

#[cfg(test)]
mod tests {
    use yrs::{GetString, Text};

    use super::*;

    #[test]
    fn sync_round_trip() {
        let server = yrs::Doc::new();
        let text = server.get_or_insert_text("t");
        text.insert(&mut server.transact_mut(), 0, "hello");

        // A fresh client sends SyncStep1 with an empty state vector...
        let client = yrs::Doc::new();
        let step1 = sync_step1(&client);
        assert_eq!(step1[..2], [MESSAGE_SYNC, 0]);
        let Inbound::SyncStep1(state_vector) = decode(&step1).unwrap() else {
            panic!("not a SyncStep1");
        };
        // ...and the server's SyncStep2 brings it up to date.
        let step2 = sync_step2(&server, &state_vector);
        let Inbound::SyncStep2(update) = decode(&step2).unwrap() else {
            panic!("not a SyncStep2");
        };
        let update = yrs::Update::decode_v1(&update).unwrap();
        client.transact_mut().apply_update(update).unwrap();
        let client_text = client.get_or_insert_text("t");
        assert_eq!(client_text.get_string(&client.transact()), "hello");
    }

    #[test]
    fn other_types_are_ignored_and_garbage_is_an_error() {
        assert!(matches!(decode(&[2, 0]).unwrap(), Inbound::Ignored));
        assert!(matches!(decode(&[3]).unwrap(), Inbound::Ignored));
        assert!(decode(&[]).is_err());
        assert!(decode(&[0, 9]).is_err());
        assert!(matches!(
            decode(&update(vec![0, 0])).unwrap(),
            Inbound::Update(bytes) if bytes == [0, 0]
        ));
    }
}
