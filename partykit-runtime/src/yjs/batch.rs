//! y-partykit's chunking of messages over 1,000,000 bytes.
//!
//! A large binary message travels as a text start marker, binary chunks of at most
//! [`CHUNK_SIZE`] bytes, and a text end marker carrying the same fields:
//!
//! ```text
//! y-pk-batch#{"id":"k3j9","type":"start","size":2500000,"count":3}
//! <1,000,000 bytes> <1,000,000 bytes> <500,000 bytes>
//! y-pk-batch#{"id":"k3j9","type":"end","size":2500000,"count":3}
//! ```
//!
//! The receiver checks that both markers agree and that the chunks add up, then handles
//! the joined bytes as one message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::{Error, Message, Result};

/// The largest message sent whole; larger ones are chunked.
pub(crate) const CHUNK_SIZE: usize = 1_000_000;

/// What every marker starts with.
const SENTINEL: &str = "y-pk-batch";

/// A start or end marker, serialized in y-partykit's field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    id: String,
    #[serde(rename = "type")]
    kind: Kind,
    size: usize,
    count: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Start,
    End,
}

impl Marker {
    fn to_text(&self) -> String {
        // A struct of strings and integers always serializes.
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{SENTINEL}#{json}")
    }

    fn parse(text: &str) -> Result<Self> {
        let (sentinel, json) = text.split_once('#').unwrap_or((text, ""));
        if sentinel != SENTINEL {
            return Err(Error::msg(format!("unexpected batch marker: {text}")));
        }
        serde_json::from_str(json)
            .map_err(|error| Error::msg(format!("unexpected batch data: {text} ({error})")))
    }
}

/// Whether `text` is a batch marker (it starts with `y-pk-batch`), as y-partykit tests it.
pub(crate) fn is_marker(text: &str) -> bool {
    text.starts_with(SENTINEL)
}

/// `frame` as the messages to send: itself when it is at most [`CHUNK_SIZE`] bytes,
/// otherwise a start marker, the chunks and an end marker.
pub(crate) fn split(frame: Bytes) -> Vec<Message> {
    if frame.len() <= CHUNK_SIZE {
        return vec![Message::Binary(frame)];
    }
    let count = frame.len().div_ceil(CHUNK_SIZE);
    let marker = |kind| Marker {
        id: batch_id(),
        kind,
        size: frame.len(),
        count,
    };
    let start = marker(Kind::Start);
    let end = Marker {
        kind: Kind::End,
        ..start.clone()
    };
    let mut messages = Vec::with_capacity(count + 2);
    messages.push(Message::from(start.to_text()));
    messages.extend(
        (0..count)
            .map(|i| frame.slice(i * CHUNK_SIZE..frame.len().min((i + 1) * CHUNK_SIZE)))
            .map(Message::Binary),
    );
    messages.push(Message::from(end.to_text()));
    messages
}

/// A short unique id for a batch (y-partykit uses a base-36 string too).
fn batch_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let seed = (nanos as u64) ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(48);
    let mut value = seed;
    let mut id = String::new();
    while value > 0 && id.len() < 8 {
        let digit = (value % 36) as u32;
        id.push(char::from_digit(digit, 36).unwrap_or('0'));
        value /= 36;
    }
    if id.is_empty() {
        id.push('0');
    }
    id
}

/// One connection's batch in progress.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    start: Marker,
    buffer: BytesMut,
    chunks: usize,
}

/// What a frame meant to the reassembly.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A whole message, ready to handle.
    Message(Bytes),
    /// Part of a batch: nothing to handle yet.
    Pending,
}

impl Reassembly {
    /// Takes a binary frame: a whole message, or the next chunk of a batch.
    ///
    /// A batch that grows past its announced size, or past `max_size`, is dropped with
    /// an error.
    pub(crate) fn binary(&mut self, frame: Bytes, max_size: usize) -> Result<Step> {
        let Some(pending) = &mut self.pending else {
            return Ok(Step::Message(frame));
        };
        let size = pending.buffer.len() + frame.len();
        if size > pending.start.size || size > max_size {
            let announced = pending.start.size;
            self.pending = None;
            return Err(Error::msg(format!(
                "batch grew to {size} bytes; it announced {announced} and at most {max_size} are accepted"
            )));
        }
        pending.buffer.extend_from_slice(&frame);
        pending.chunks += 1;
        Ok(Step::Pending)
    }

    /// Takes a marker (a text frame for which [`is_marker`] holds). A start marker begins
    /// a batch (dropping one in progress); an end marker completes it.
    pub(crate) fn marker(&mut self, text: &str, max_size: usize) -> Result<Step> {
        let marker = Marker::parse(text)?;
        match marker.kind {
            Kind::Start => {
                if marker.size > max_size {
                    self.pending = None;
                    return Err(Error::msg(format!(
                        "batch of {} bytes refused; at most {max_size} are accepted",
                        marker.size
                    )));
                }
                self.pending = Some(Pending {
                    // Grown as chunks arrive: an announcement alone costs nothing.
                    buffer: BytesMut::new(),
                    start: marker,
                    chunks: 0,
                });
                Ok(Step::Pending)
            }
            Kind::End => {
                // An end marker without a batch is ignored, as y-partykit does.
                let Some(pending) = self.pending.take() else {
                    return Ok(Step::Pending);
                };
                let start = &pending.start;
                check("client id", &start.id, &marker.id)?;
                check("client counts", &start.count, &marker.count)?;
                check("client size", &start.size, &marker.size)?;
                check("received batch count", &marker.count, &pending.chunks)?;
                check("client size", &marker.size, &pending.buffer.len())?;
                Ok(Step::Message(pending.buffer.freeze()))
            }
        }
    }
}

fn check<T: PartialEq + std::fmt::Display>(label: &str, expected: &T, actual: &T) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "Mismatching {label}! Expected {expected}, got {actual}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024 * 1024;

    fn feed(reassembly: &mut Reassembly, message: Message) -> Result<Step> {
        match message {
            Message::Text(text) => reassembly.marker(text.as_str(), MAX),
            Message::Binary(bytes) => reassembly.binary(bytes, MAX),
        }
    }

    #[test]
    fn small_messages_are_sent_whole() {
        let frame = Bytes::from(vec![7u8; CHUNK_SIZE]);
        assert_eq!(split(frame.clone()), vec![Message::Binary(frame)]);
    }

    #[test]
    fn large_messages_round_trip() {
        let data: Vec<u8> = (0..2_500_001u32).map(|i| (i % 251) as u8).collect();
        let messages = split(Bytes::from(data.clone()));
        assert_eq!(messages.len(), 5);
        let start = messages[0].as_text().unwrap();
        assert!(start.starts_with(r#"y-pk-batch#{"id":""#), "{start}");
        assert!(
            start.ends_with(r#"","type":"start","size":2500001,"count":3}"#),
            "{start}"
        );
        assert_eq!(messages[1].len(), CHUNK_SIZE);
        assert_eq!(messages[3].len(), 500_001);
        let end = messages[4].as_text().unwrap();
        assert_eq!(end, start.replace(r#""start""#, r#""end""#));

        let mut reassembly = Reassembly::default();
        let mut whole = None;
        for message in messages {
            if let Step::Message(bytes) = feed(&mut reassembly, message).unwrap() {
                whole = Some(bytes);
            }
        }
        assert_eq!(whole.unwrap(), data);
    }

    #[test]
    fn mismatches_are_errors() {
        let mut reassembly = Reassembly::default();
        let start = r#"y-pk-batch#{"id":"a","type":"start","size":3,"count":2}"#;
        reassembly.marker(start, MAX).unwrap();
        reassembly.binary(Bytes::from_static(b"ab"), MAX).unwrap();
        reassembly.binary(Bytes::from_static(b"c"), MAX).unwrap();
        let end = r#"y-pk-batch#{"id":"b","type":"end","size":3,"count":2}"#;
        let error = reassembly.marker(end, MAX).unwrap_err();
        assert!(error.to_string().contains("client id"), "{error}");

        // Too many bytes for what the start marker announced.
        reassembly.marker(start, MAX).unwrap();
        assert!(reassembly.binary(Bytes::from_static(b"abcd"), MAX).is_err());
        // After an error, frames are whole messages again.
        assert_eq!(
            reassembly.binary(Bytes::from_static(b"x"), MAX).unwrap(),
            Step::Message(Bytes::from_static(b"x"))
        );

        // Over the limit.
        let huge = r#"y-pk-batch#{"id":"a","type":"start","size":99,"count":1}"#;
        assert!(reassembly.marker(huge, 10).is_err());
        assert!(reassembly.marker("y-pk-batch#not json", MAX).is_err());
        assert!(reassembly.marker("y-pk-batchX#{}", MAX).is_err());
    }

    #[test]
    fn markers_are_recognised_as_y_partykit_does() {
        assert!(is_marker("y-pk-batch#{}"));
        assert!(is_marker("y-pk-batch"));
        assert!(!is_marker("hello"));
        assert!(!is_marker(" y-pk-batch#"));
    }
}
