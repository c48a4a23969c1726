//! The server side of RFC 6455, as much as a viewer connection needs, without I/O.
//!
//! The hub writes WebSocket frames itself so a frame's bytes can be built once and written to
//! every viewer with vectored writes (a WebSocket library copies each message into a
//! per-connection buffer). Viewers only ever send control frames and small messages, which
//! [`ClientFrames`] parses with a size cap.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

/// Opcode of a continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xa;

/// Status code of a normal close.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: the server is restarting (RFC 6455 registry, 1012); reconnect.
pub const CLOSE_SERVICE_RESTART: u16 = 1012;
/// Status code for a message too big to process.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Status code for a protocol error.
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Close code: policy violation (RFC 6455 §7.4.1), here a viewer too slow for its stream.
pub const CLOSE_POLICY: u16 = 1008;

/// Why an upgrade request is not a valid WebSocket handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WebSocket upgrade: {0}")]
pub struct UpgradeError(pub &'static str);

/// Checks the upgrade headers of a request; returns the `Sec-WebSocket-Accept` value.
pub fn accept_key(headers: &HeaderMap) -> Result<String, UpgradeError> {
    let has_token = |name: &str, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("connection", "upgrade") {
        return Err(UpgradeError("missing `Connection: upgrade`"));
    }
    if !has_token("upgrade", "websocket") {
        return Err(UpgradeError("missing `Upgrade: websocket`"));
    }
    if headers.get("sec-websocket-version").and_then(|v| v.to_str().ok()) != Some("13") {
        return Err(UpgradeError("`Sec-WebSocket-Version` must be 13"));
    }
    let key = headers.get("sec-websocket-key").ok_or(UpgradeError("missing `Sec-WebSocket-Key`"))?;
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// The header of a final, unmasked server frame carrying `len` payload bytes.
pub fn frame_header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | (opcode & 0x0f);
    let n = if len < 126 {
        h[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, n)
}

/// A whole server frame (header and payload) in one buffer, for small messages.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let (h, n) = frame_header(opcode, payload.len());
    let mut b = BytesMut::with_capacity(n + payload.len());
    b.extend_from_slice(&h[..n]);
    b.extend_from_slice(payload);
    b.freeze()
}

/// A close frame with a status code and a reason (cut to the 123 bytes RFC 6455 allows).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OP_CLOSE, &payload)
}

/// A frame received from a client, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    /// The opcode.
    pub opcode: u8,
    /// Whether it is the last frame of its message.
    pub fin: bool,
    /// The unmasked payload.
    pub payload: Bytes,
}

/// Why a client's bytes are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientFrameError {
    /// Client frames must be masked (RFC 6455 §5.1).
    #[error("client frame is not masked")]
    Unmasked,
    /// Reserved bits set without an extension.
    #[error("reserved bits set")]
    Reserved,
    /// A payload over the cap.
    #[error("client frame of {len} bytes exceeds the cap of {cap}")]
    TooBig {
        /// Declared length.
        len: u64,
        /// The cap.
        cap: usize,
    },
    /// Control frames must be final and at most 125 bytes.
    #[error("invalid control frame")]
    BadControl,
    /// Opcodes 3–7 and 0xB–0xF are reserved.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
}

/// Incremental parser of client frames with a payload cap, checked before buffering.
#[derive(Debug)]
pub struct ClientFrames {
    buf: BytesMut,
    max_payload: usize,
}

impl ClientFrames {
    /// A parser accepting payloads up to `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self { buf: BytesMut::new(), max_payload }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, if buffered.
    pub fn next_frame(&mut self) -> Result<Option<ClientFrame>, ClientFrameError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0f);
        if rsv != 0 {
            return Err(ClientFrameError::Reserved);
        }
        if matches!(opcode, 0x3..=0x7 | 0xb..=0xf) {
            return Err(ClientFrameError::ReservedOpcode(opcode));
        }
        if b[1] & 0x80 == 0 {
            return Err(ClientFrameError::Unmasked);
        }
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (u64::from_be_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]), 10),
            126 | 127 => return Ok(None),
            n => (u64::from(n), 2),
        };
        if len > self.max_payload as u64 {
            return Err(ClientFrameError::TooBig { len, cap: self.max_payload });
        }
        if opcode >= OP_CLOSE && (!fin || len > 125) {
            return Err(ClientFrameError::BadControl);
        }
        let len = len as usize;
        if b.len() < at + 4 + len {
            self.buf.reserve(at + 4 + len - b.len());
            return Ok(None);
        }
        let mask = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        at += 4;
        self.buf.advance(at);
        let mut payload = self.buf.split_to(len);
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        Ok(Some(ClientFrame { opcode, fin, payload: payload.freeze() }))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut v = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => v.push(0x80 | n as u8),
            n => {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("sec-websocket-version", HeaderValue::from_static("13"));
        h.insert("sec-websocket-key", HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(accept_key(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        h.remove("upgrade");
        assert!(accept_key(&h).is_err());
    }

    #[test]
    fn header_lengths() {
        assert_eq!(frame_header(OP_BINARY, 125), ([0x82, 125, 0, 0, 0, 0, 0, 0, 0, 0], 2));
        let (h, n) = frame_header(OP_BINARY, 126);
        assert_eq!((&h[..n], n), (&[0x82, 126, 0, 126][..], 4));
        let (h, n) = frame_header(OP_TEXT, 70_000);
        assert_eq!(n, 10);
        assert_eq!(h[0], 0x81);
        assert_eq!(u64::from_be_bytes(h[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn parses_masked_frames_split_anywhere() {
        let mut bytes = masked(OP_PING, b"hi");
        bytes.extend(masked(OP_TEXT, &[b'x'; 300]));
        bytes.extend(masked(OP_CLOSE, &[0x03, 0xe8]));
        for cut in 0..=bytes.len() {
            let mut p = ClientFrames::new(1024);
            let mut got = Vec::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                p.extend(part);
                while let Some(f) = p.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 3, "cut {cut}");
            assert_eq!(&got[0].payload[..], b"hi");
            assert_eq!(got[1].payload.len(), 300);
            assert_eq!(got[2].opcode, OP_CLOSE);
        }
    }

    #[test]
    fn hostile_frames_are_errors_before_buffering() {
        let mut p = ClientFrames::new(64);
        p.extend(&[0x82, 0x80 | 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(p.next_frame(), Err(ClientFrameError::TooBig { .. })));
        let mut p = ClientFrames::new(64);
        p.extend(&[0x82, 0x01, 0x00]);
        assert_eq!(p.next_frame(), Err(ClientFrameError::Unmasked));
        let mut p = ClientFrames::new(1024);
        p.extend(&masked(OP_PING, &[0; 126]));
        assert_eq!(p.next_frame(), Err(ClientFrameError::BadControl));
        let mut p = ClientFrames::new(1024);
        p.extend(&masked(0x3, b"x"));
        assert_eq!(p.next_frame(), Err(ClientFrameError::ReservedOpcode(3)));
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let f = close_frame(CLOSE_NORMAL, &"é".repeat(100));
        assert!(f.len() <= 2 + 125);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
