//! What an MSE viewer may send: one kind of text message, `{"type":"resync"}`, which asks the
//! hub to start it again at the newest keyframe with a fresh init segment (a player does this
//! after its `SourceBuffer` failed or it dropped its buffer while hidden, without reconnecting).
//! Anything else is refused with a close code that says why (`docs/protocol.md`, "MSE").

use serde::Deserialize;

use crate::egress::ws::wire::{OP_BINARY, OP_CONTINUATION, OP_TEXT};

/// The longest text message a viewer may send.
pub const MAX_MESSAGE: usize = 256;

/// A message from an MSE viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMessage {
    /// Start again at the newest keyframe, init segment first.
    Resync,
}

/// Why a viewer's message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientMessageError {
    /// Viewers send no media.
    #[error("MSE viewers send no binary messages")]
    Binary,
    /// A message in several frames.
    #[error("fragmented messages are not accepted")]
    Fragmented,
    /// Over [`MAX_MESSAGE`] bytes.
    #[error("a message of {len} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Not a JSON object with a known `type`.
    #[error("not a viewer message: {reason}")]
    Invalid {
        /// What the JSON parser said.
        reason: String,
    },
}

impl ClientMessageError {
    /// The WebSocket close code that answers it (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            // 1003: a type of data the endpoint cannot accept.
            Self::Binary => 1003,
            Self::Fragmented | Self::Invalid { .. } => 1008,
            Self::TooLong { .. } => 1009,
        }
    }
}

#[derive(Deserialize)]
// Other fields are ignored: a newer page may say more than this hub understands.
#[serde(tag = "type", rename_all = "camelCase")]
enum Wire {
    Resync,
}

/// Reads one data frame a viewer sent: `opcode` and `fin` from its WebSocket header, `payload`
/// unmasked. Control frames (ping, pong, close) are not data and are handled by the caller.
pub fn parse(opcode: u8, fin: bool, payload: &[u8]) -> Result<ClientMessage, ClientMessageError> {
    match opcode {
        OP_BINARY => return Err(ClientMessageError::Binary),
        OP_CONTINUATION => return Err(ClientMessageError::Fragmented),
        OP_TEXT if !fin => return Err(ClientMessageError::Fragmented),
        _ => {}
    }
    if payload.len() > MAX_MESSAGE {
        return Err(ClientMessageError::TooLong { len: payload.len() });
    }
    match serde_json::from_slice::<Wire>(payload) {
        Ok(Wire::Resync) => Ok(ClientMessage::Resync),
        Err(e) => Err(ClientMessageError::Invalid { reason: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_is_the_one_message() {
        assert_eq!(parse(OP_TEXT, true, br#"{"type":"resync"}"#), Ok(ClientMessage::Resync));
        assert_eq!(parse(OP_TEXT, true, br#" { "type" : "resync" } "#), Ok(ClientMessage::Resync));
        assert_eq!(parse(OP_TEXT, true, br#"{"type":"resync","since":3}"#), Ok(ClientMessage::Resync));
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        assert_eq!(parse(OP_BINARY, true, b"\x00\x01"), Err(ClientMessageError::Binary));
        assert_eq!(parse(OP_TEXT, false, b"{"), Err(ClientMessageError::Fragmented));
        assert_eq!(parse(OP_CONTINUATION, true, b"}"), Err(ClientMessageError::Fragmented));
        let long = vec![b' '; MAX_MESSAGE + 1];
        assert_eq!(parse(OP_TEXT, true, &long), Err(ClientMessageError::TooLong { len: MAX_MESSAGE + 1 }));
        for bad in [&b"hello"[..], br#"{"type":"play"}"#, br#"{"kind":"resync"}"#, b"\xff\xfe", b""] {
            let e = parse(OP_TEXT, true, bad).unwrap_err();
            assert_eq!(e.close_code(), 1008, "{e}");
        }
        assert_eq!(ClientMessageError::Binary.close_code(), 1003);
    }
}
