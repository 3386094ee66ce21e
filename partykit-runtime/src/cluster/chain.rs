//! The wait chain a call between rooms carries to another node, so that cycle detection
//! (508 Loop Detected) sees waits across nodes.
//!
//! A call from room X to a room owned by another node carries X and every room that
//! (transitively, in the caller's wait graph) waits for X. The owner records, while the
//! call runs, that each of them waits for the target room; a call from the target (or
//! from any room it calls, on any node) back to one of them then closes a cycle in the
//! owner's own graph and fails at once.
//!
//! On the wire (`x-partykit-wait-chain`) the chain is a JSON array of `[party, room]`
//! pairs in which every byte outside visible ASCII, and `%` itself, is percent-encoded:
//! a header value must be visible ASCII, and a room id may be any string.

use std::sync::Arc;

use http::HeaderValue;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode, utf8_percent_encode};

use crate::parties::{WaitGraph, Waiting};
use crate::storage::RoomKey;

/// The header carrying the chain.
pub(crate) const HEADER: &str = "x-partykit-wait-chain";

/// Control bytes, space and `%`; bytes outside ASCII are always encoded.
const ENCODED: &AsciiSet = &CONTROLS.add(b' ').add(b'%');

/// The rooms that wait on a call, the calling room first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Chain(pub(crate) Vec<RoomKey>);

impl Chain {
    /// No room waits on the call (it comes from a client or a hook).
    pub(crate) fn empty() -> Self {
        Self::default()
    }

    /// The chain of a call made by `caller`: the caller and every room waiting for it in
    /// `graph`.
    pub(crate) fn of(caller: Option<&RoomKey>, graph: &WaitGraph) -> Self {
        let Some(caller) = caller else {
            return Self::empty();
        };
        let mut rooms = vec![caller.clone()];
        rooms.extend(graph.waiting_on(caller));
        Self(rooms)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The header value.
    pub(crate) fn encode(&self) -> HeaderValue {
        let pairs: Vec<[&str; 2]> = self.0.iter().map(|key| [&*key.party, &*key.room]).collect();
        let json = serde_json::to_string(&pairs).expect("string pairs serialise");
        let encoded = utf8_percent_encode(&json, ENCODED).to_string();
        HeaderValue::try_from(encoded).expect("percent-encoded JSON is visible ASCII")
    }

    /// Parses a header value; the message says what is wrong with it.
    pub(crate) fn decode(value: &HeaderValue) -> Result<Self, String> {
        let bytes = value.as_bytes();
        if let Some(byte) = bytes.iter().find(|byte| !byte.is_ascii_graphic()) {
            return Err(format!(
                "{HEADER}: byte {byte:#04x} must be percent-encoded"
            ));
        }
        let json = percent_decode(bytes)
            .decode_utf8()
            .map_err(|error| format!("{HEADER}: not UTF-8 once percent-decoded: {error}"))?;
        let pairs: Vec<(String, String)> = serde_json::from_str(&json).map_err(|error| {
            format!("{HEADER}: not a JSON array of [party, room] pairs: {error}")
        })?;
        Ok(Self(
            pairs
                .into_iter()
                .map(|(party, room)| RoomKey::new(party, room))
                .collect(),
        ))
    }

    /// Records in `graph` that every room of the chain waits for `target`, for as long as
    /// the returned guards live; the cycle, if one of them is `target` or (transitively)
    /// waited for by it.
    pub(crate) fn install(
        &self,
        graph: &Arc<WaitGraph>,
        target: &RoomKey,
    ) -> Result<Vec<Waiting>, Vec<RoomKey>> {
        self.0
            .iter()
            .map(|waiting| graph.wait(waiting, target))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_any_room_id() {
        let chain = Chain(vec![
            RoomKey::new("main", "plain"),
            RoomKey::new("chat", "with space/and%percent"),
            RoomKey::new("chat", "ünïcødé ✓ \"quoted\" \\ \n\t\u{0}"),
            RoomKey::new("a", ""),
        ]);
        let value = chain.encode();
        assert!(
            value.as_bytes().iter().all(u8::is_ascii_graphic),
            "{value:?}"
        );
        assert_eq!(Chain::decode(&value).unwrap(), chain);
        assert_eq!(
            Chain::decode(&Chain::empty().encode()).unwrap(),
            Chain::empty()
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "[[\"main\"]]",
            "{\"main\":\"a\"}",
            "[[\"main\",1]]",
            "%FF%FE",
            "[[\"main\",\"a\"]",
            "[[\"main\",\"a b\"]]",
        ] {
            let value = HeaderValue::from_str(bad).unwrap();
            assert!(Chain::decode(&value).is_err(), "{bad:?} was accepted");
        }
    }
}
