//! WebSocket messages.

use axum::extract::ws;
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

pub use ws::Utf8Bytes;

use crate::Error;

/// One WebSocket message: a text frame or a binary frame.
///
/// Cloning is cheap: both variants share their buffer, which is how a broadcast encodes a
/// message once for every recipient.
///
/// ```
/// use partykit_runtime::Message;
///
/// let text = Message::from("hello");
/// assert_eq!(text.as_text(), Some("hello"));
///
/// let binary = Message::from(vec![1u8, 2, 3]);
/// assert_eq!(binary.as_binary(), Some(&[1u8, 2, 3][..]));
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Move { x: i32, y: i32 }
/// let json = Message::from_json(&Move { x: 1, y: 2 }).unwrap();
/// assert_eq!(json.as_text(), Some(r#"{"x":1,"y":2}"#));
/// assert_eq!(json.json::<Move>().unwrap(), Move { x: 1, y: 2 });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text frame (always valid UTF-8).
    Text(Utf8Bytes),
    /// A binary frame.
    Binary(Bytes),
}

impl Message {
    /// A text message holding `value` serialized as JSON.
    pub fn from_json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        Ok(Self::Text(serde_json::to_string(value)?.into()))
    }

    /// Parses the message (text or binary) as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(self.as_bytes())?)
    }

    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text.as_str()),
            Self::Binary(_) => None,
        }
    }

    /// The bytes, if this is a binary message.
    pub fn as_binary(&self) -> Option<&[u8]> {
        match self {
            Self::Text(_) => None,
            Self::Binary(bytes) => Some(bytes),
        }
    }

    /// The payload's bytes, whatever the frame type.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(text) => text.as_str().as_bytes(),
            Self::Binary(bytes) => bytes,
        }
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text(_))
    }

    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        matches!(self, Self::Binary(_))
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn into_frame(self) -> ws::Message {
        match self {
            Self::Text(text) => ws::Message::Text(text),
            Self::Binary(bytes) => ws::Message::Binary(bytes),
        }
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self::Text(text.into())
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Self::Text(text.into())
    }
}

impl From<Utf8Bytes> for Message {
    fn from(text: Utf8Bytes) -> Self {
        Self::Text(text)
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Binary(bytes.into())
    }
}

impl From<&[u8]> for Message {
    fn from(bytes: &[u8]) -> Self {
        Self::Binary(Bytes::copy_from_slice(bytes))
    }
}

impl From<Bytes> for Message {
    fn from(bytes: Bytes) -> Self {
        Self::Binary(bytes)
    }
}

/// Why a message did not decode as the JSON `on_message` takes in
/// `Result<Json<T>, JsonRejection>`: serde's error, with the line and column in the frame.
///
/// ```
/// use partykit_runtime::{JsonRejection, Message};
///
/// let rejection = JsonRejection::decode::<u32>(&Message::from("\"seven\"")).unwrap_err();
/// assert!(rejection.to_string().starts_with("invalid type: string"));
/// ```
#[derive(Debug)]
pub struct JsonRejection {
    error: serde_json::Error,
}

impl JsonRejection {
    /// Decodes `message` (text or binary) as JSON of type `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(message: &Message) -> Result<T, JsonRejection> {
        serde_json::from_slice(message.as_bytes()).map_err(|error| JsonRejection { error })
    }

    /// serde's error.
    pub fn error(&self) -> &serde_json::Error {
        &self.error
    }
}

impl std::fmt::Display for JsonRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for JsonRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
