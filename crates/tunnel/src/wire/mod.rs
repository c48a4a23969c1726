//! Tunnel protocol v2: message types and their binary encoding.
//!
//! Every message is `length: u32` (big-endian, counting what follows), `type: u8`, then the
//! body. All integers are big-endian; strings are `u16` length + UTF-8; lists are `u16` count +
//! elements. Each length is checked against its cap before anything is allocated, unknown
//! message types and unknown flag bits are errors, and a body must be consumed exactly.
//! `docs/protocol.md` is the normative description; this module and that file change together.

mod decode;
mod encode;
mod primitives;
mod report;

pub use decode::{RESERVE_AHEAD, StreamDecoder, decode_message};
pub use encode::{encode, encode_frame_header, encoded};
pub use report::{CongestionLevel, DropReason, UplinkReport};

use mediamesh_media::{Frame, StreamHeader};

/// The four bytes every Hello starts with.
pub const MAGIC: [u8; 4] = *b"MMTP";
/// The newest protocol version this implementation speaks. Version 3 added KeyframeRequest
/// and Redirect; version 2 the edge's instance id in the control Hello, the Catalog message and
/// the `duplicate-node` error; version 1 is no longer spoken (`docs/protocol.md` §1.6).
pub const PROTOCOL_VERSION: u16 = 3;
/// The oldest version still spoken: a v2 peer is served without the v3 messages.
pub const OLDEST_VERSION: u16 = 2;
/// The first version with [`Message::KeyframeRequest`] and [`Message::Redirect`].
pub const V3: u16 = 3;

/// Largest name (node or stream) in bytes.
pub const MAX_NAME_LEN: usize = 253;
/// Largest free-text field (agent, reason, error message) in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Most catalog entries in one Hello (and most running streams it re-announces).
pub const MAX_CATALOG_ENTRIES: usize = 256;
/// Most tracks in a stream header.
pub const MAX_TRACKS: usize = 8;
/// Most parameter sets per track.
pub const MAX_PARAMETER_SETS: usize = 16;
/// Largest parameter set in bytes.
pub const MAX_PARAMETER_SET_LEN: usize = 4096;
/// Largest non-frame message (type byte and body) in bytes.
pub const MAX_CONTROL_MESSAGE: usize = 512 * 1024;
/// Size of a Frame body before its payload.
pub const FRAME_HEADER_LEN: usize = 1 + 1 + 8 + 8 + 8 + 8;
/// Default cap on a frame payload (an access unit) in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 4 * 1024 * 1024;
/// Hard upper bound any configuration may choose for `max_frame_bytes`.
pub const MAX_FRAME_BYTES_LIMIT: u32 = 64 * 1024 * 1024;

/// Limits a decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload accepted, in bytes.
    pub max_frame_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_frame_bytes: DEFAULT_MAX_FRAME_BYTES }
    }
}

impl Limits {
    /// The largest whole message (type byte and body) these limits allow.
    pub fn max_message_len(&self) -> usize {
        MAX_CONTROL_MESSAGE.max(FRAME_HEADER_LEN + 1 + self.max_frame_bytes as usize)
    }
}

/// Message type bytes.
pub mod msg_type {
    /// [`super::Message::Hello`]
    pub const HELLO: u8 = 0x01;
    /// [`super::Message::Welcome`]
    pub const WELCOME: u8 = 0x02;
    /// [`super::Message::AddVideo`]
    pub const ADD_VIDEO: u8 = 0x10;
    /// [`super::Message::RemoveVideo`]
    pub const REMOVE_VIDEO: u8 = 0x11;
    /// [`super::Message::Ping`]
    pub const PING: u8 = 0x12;
    /// [`super::Message::Pong`]
    pub const PONG: u8 = 0x13;
    /// [`super::Message::GoAway`]
    pub const GO_AWAY: u8 = 0x14;
    /// [`super::Message::Error`]
    pub const ERROR: u8 = 0x15;
    /// [`super::Message::Catalog`]
    pub const CATALOG: u8 = 0x16;
    /// [`super::Message::Redirect`]
    pub const REDIRECT: u8 = 0x17;
    /// [`super::Message::StreamHeader`]
    pub const STREAM_HEADER: u8 = 0x20;
    /// [`super::Message::Frame`]
    pub const FRAME: u8 = 0x21;
    /// [`super::Message::Feedback`]
    pub const FEEDBACK: u8 = 0x22;
    /// [`super::Message::EndOfStream`]
    pub const END_OF_STREAM: u8 = 0x23;
    /// [`super::Message::UplinkReport`]
    pub const UPLINK_REPORT: u8 = 0x24;
    /// [`super::Message::KeyframeRequest`]
    pub const KEYFRAME_REQUEST: u8 = 0x25;
}

/// Codec ids on the wire.
pub mod codec_id {
    use mediamesh_media::Codec;

    /// H.264 / AVC.
    pub const H264: u8 = 1;
    /// H.265 / HEVC.
    pub const H265: u8 = 2;
    /// AAC.
    pub const AAC: u8 = 16;
    /// G.711 A-law.
    pub const PCMA: u8 = 17;
    /// G.711 µ-law.
    pub const PCMU: u8 = 18;
    /// Opus.
    pub const OPUS: u8 = 19;

    /// The wire id of a codec.
    pub fn of(codec: Codec) -> u8 {
        match codec {
            Codec::H264 => H264,
            Codec::H265 => H265,
            Codec::Aac => AAC,
            Codec::Pcma => PCMA,
            Codec::Pcmu => PCMU,
            Codec::Opus => OPUS,
        }
    }

    /// The codec of a wire id.
    pub fn codec(id: u8) -> Option<Codec> {
        Some(match id {
            H264 => Codec::H264,
            H265 => Codec::H265,
            AAC => Codec::Aac,
            PCMA => Codec::Pcma,
            PCMU => Codec::Pcmu,
            OPUS => Codec::Opus,
            _ => return None,
        })
    }
}

/// Identifies one upstream run of a stream, chosen by the hub in AddVideo.
pub type SessionId = u64;

/// A tunnel protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First message from the edge on every connection.
    Hello(Hello),
    /// The hub's answer to Hello: the connection is accepted.
    Welcome(Welcome),
    /// Hub → edge (control): start a stream and open a data tunnel for it.
    AddVideo {
        /// The session the data tunnel must name in its Hello.
        session: SessionId,
        /// Catalog name of the stream.
        stream: String,
    },
    /// Hub → edge (control): stop the stream of this session and close its tunnel.
    RemoveVideo {
        /// The session to stop.
        session: SessionId,
        /// Catalog name of the stream.
        stream: String,
    },
    /// Either direction: liveness probe; the peer answers with Pong carrying the same id.
    Ping {
        /// Opaque id echoed by the Pong.
        id: u64,
    },
    /// Answer to Ping.
    Pong {
        /// The Ping's id.
        id: u64,
    },
    /// Either direction: the sender is closing this connection on purpose.
    GoAway {
        /// Why, for logs.
        reason: String,
    },
    /// Either direction: something failed; fatal for the connection unless `session` is set.
    Error(ErrorMsg),
    /// Edge → hub (control): the node's catalog changed (a configuration reload); replaces the
    /// one its control Hello carried.
    Catalog {
        /// The streams this node now offers.
        catalog: Vec<CatalogEntry>,
    },
    /// Hub → edge (control, v3): connect to this hub instead; sent just before GoAway when the
    /// hub moves an edge off on purpose (it is over its share of the cluster's load).
    Redirect {
        /// The tunnel address (`host:port`) to dial first.
        target: String,
    },
    /// Edge → hub (data): the stream's tracks and codec parameters. Sent before the first frame
    /// and again whenever they change.
    StreamHeader(StreamHeader),
    /// Edge → hub (data): one access unit.
    Frame(Frame),
    /// Hub → edge (data): what the hub has received, for congestion control.
    Feedback(Feedback),
    /// Edge → hub (data): the source ended; no more frames will come on this tunnel.
    EndOfStream {
        /// Why, for logs.
        reason: String,
    },
    /// Edge → hub (data): the uplink's queue, delay, shedding level and drops.
    UplinkReport(UplinkReport),
    /// Receiver → sender (data or relay, v3): a keyframe is wanted as soon as the source can
    /// make one (the receiver's stream broke its picture chain).
    KeyframeRequest,
}

impl Message {
    /// The message's type byte.
    pub fn type_byte(&self) -> u8 {
        use msg_type::*;
        match self {
            Message::Hello(_) => HELLO,
            Message::Welcome(_) => WELCOME,
            Message::AddVideo { .. } => ADD_VIDEO,
            Message::RemoveVideo { .. } => REMOVE_VIDEO,
            Message::Ping { .. } => PING,
            Message::Pong { .. } => PONG,
            Message::GoAway { .. } => GO_AWAY,
            Message::Error(_) => ERROR,
            Message::Catalog { .. } => CATALOG,
            Message::StreamHeader(_) => STREAM_HEADER,
            Message::Frame(_) => FRAME,
            Message::Feedback(_) => FEEDBACK,
            Message::EndOfStream { .. } => END_OF_STREAM,
            Message::UplinkReport(_) => UPLINK_REPORT,
            Message::Redirect { .. } => REDIRECT,
            Message::KeyframeRequest => KEYFRAME_REQUEST,
        }
    }

    /// A short name for logs (`"AddVideo"`).
    pub fn name(&self) -> &'static str {
        type_name(self.type_byte())
    }
}

/// The name of a message type byte, for logs and errors.
pub fn type_name(t: u8) -> &'static str {
    use msg_type::*;
    match t {
        HELLO => "Hello",
        WELCOME => "Welcome",
        ADD_VIDEO => "AddVideo",
        REMOVE_VIDEO => "RemoveVideo",
        PING => "Ping",
        PONG => "Pong",
        GO_AWAY => "GoAway",
        ERROR => "Error",
        CATALOG => "Catalog",
        STREAM_HEADER => "StreamHeader",
        FRAME => "Frame",
        FEEDBACK => "Feedback",
        END_OF_STREAM => "EndOfStream",
        UPLINK_REPORT => "UplinkReport",
        REDIRECT => "Redirect",
        KEYFRAME_REQUEST => "KeyframeRequest",
        _ => "unknown",
    }
}

/// The opening message of every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Oldest protocol version the edge speaks.
    pub min_version: u16,
    /// Newest protocol version the edge speaks.
    pub max_version: u16,
    /// The node name the edge claims; must match its certificate.
    pub node: String,
    /// Agent name and version, e.g. `mediamesh-edge/0.1.0`.
    pub agent: String,
    /// What this connection is for.
    pub channel: Channel,
}

/// The purpose of a connection, declared in its Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// The node's control channel (one per node).
    Control {
        /// Identifies the edge process, random at its start: a new control connection with the
        /// same instance is that edge reconnecting; another instance with the same node name is
        /// a second edge using one identity.
        instance: u64,
        /// The streams this node can publish.
        catalog: Vec<CatalogEntry>,
        /// The sessions the edge is still running from an earlier control channel (after a
        /// reconnect), so the hub can re-bind them or tell the edge to stop them.
        running: Vec<RunningStream>,
    },
    /// A data tunnel carrying one stream session.
    Data {
        /// The session from the AddVideo that asked for it.
        session: SessionId,
        /// The stream's catalog name.
        stream: String,
    },
    /// Hub to hub: the dialling hub wants one stream that the dialled hub has (its node is
    /// connected there). The dialled hub answers Welcome, then sends StreamHeader and Frame
    /// messages as an edge's data tunnel does, for as long as the link stays open. Only a
    /// certificate that identifies a hub may open it.
    Relay {
        /// The node whose stream it is.
        node: String,
        /// The stream's catalog name.
        stream: String,
    },
}

/// One stream a node offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Stream name, unique on the node.
    pub name: String,
    /// Human-readable description of the source (e.g. `test pattern 1280x720@25`).
    pub description: String,
}

/// A session the edge is running, re-announced in a control Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningStream {
    /// The session id from its AddVideo.
    pub session: SessionId,
    /// The stream's catalog name.
    pub stream: String,
}

/// The hub's acceptance of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The protocol version chosen for this connection.
    pub version: u16,
    /// The hub's name, for logs.
    pub hub: String,
    /// How often each side should send Ping when otherwise idle, in milliseconds.
    pub heartbeat_ms: u32,
    /// The largest frame payload the hub accepts on data tunnels.
    pub max_frame_bytes: u32,
    /// How long the hub keeps a session (and its viewers) while the edge is away,
    /// milliseconds. An edge cut off longer than this may stop what it runs.
    pub grace_ms: u32,
}

/// An error report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    /// What kind of error.
    pub code: ErrorCode,
    /// The session it concerns, or 0 for the connection as a whole.
    pub session: SessionId,
    /// Human-readable detail.
    pub message: String,
}

/// Error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The peer sent something that does not decode or is not allowed in this state.
    Protocol,
    /// No protocol version in common.
    UnsupportedVersion,
    /// The peer's identity does not allow this (wrong node name, another node's session).
    Unauthorized,
    /// The stream is not in the node's catalog.
    UnknownStream,
    /// The session id is not known (or has ended).
    UnknownSession,
    /// A frame exceeded the negotiated `max_frame_bytes`.
    FrameTooLarge,
    /// The source could not be started or failed.
    SourceFailed,
    /// A failure inside the sender.
    Internal,
    /// Another edge holds this node's identity on a healthy control channel.
    DuplicateNode,
    /// The hub is draining: it takes no new control channels; dial another hub.
    Draining,
    /// A code this version does not know; carried through so it can be logged.
    Other(u16),
}

impl ErrorCode {
    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Protocol => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::Unauthorized => 3,
            ErrorCode::UnknownStream => 4,
            ErrorCode::UnknownSession => 5,
            ErrorCode::FrameTooLarge => 6,
            ErrorCode::SourceFailed => 7,
            ErrorCode::Internal => 8,
            ErrorCode::DuplicateNode => 9,
            ErrorCode::Draining => 10,
            ErrorCode::Other(v) => v,
        }
    }

    /// From the wire value.
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => ErrorCode::Protocol,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::Unauthorized,
            4 => ErrorCode::UnknownStream,
            5 => ErrorCode::UnknownSession,
            6 => ErrorCode::FrameTooLarge,
            7 => ErrorCode::SourceFailed,
            8 => ErrorCode::Internal,
            9 => ErrorCode::DuplicateNode,
            10 => ErrorCode::Draining,
            v => ErrorCode::Other(v),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Protocol => f.write_str("protocol"),
            ErrorCode::UnsupportedVersion => f.write_str("unsupported-version"),
            ErrorCode::Unauthorized => f.write_str("unauthorized"),
            ErrorCode::UnknownStream => f.write_str("unknown-stream"),
            ErrorCode::UnknownSession => f.write_str("unknown-session"),
            ErrorCode::FrameTooLarge => f.write_str("frame-too-large"),
            ErrorCode::SourceFailed => f.write_str("source-failed"),
            ErrorCode::Internal => f.write_str("internal"),
            ErrorCode::DuplicateNode => f.write_str("duplicate-node"),
            ErrorCode::Draining => f.write_str("draining"),
            ErrorCode::Other(v) => write!(f, "code-{v}"),
        }
    }
}

/// Hub → edge receive report on a data tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feedback {
    /// The highest frame `seq` received so far.
    pub last_seq: u64,
    /// Frames received on this tunnel so far.
    pub frames: u64,
    /// Payload bytes received on this tunnel so far.
    pub bytes: u64,
}

/// Why a message could not be decoded. Each variant names the field and the numbers involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The data ended inside a field.
    #[error("truncated {field}: need {need} bytes, have {have}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// A length exceeds its cap.
    #[error("{field} is {len} bytes, over the cap of {cap}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The declared length.
        len: usize,
        /// The cap.
        cap: usize,
    },
    /// A count exceeds its cap.
    #[error("{field}: {count} entries, over the cap of {cap}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// The declared count.
        count: usize,
        /// The cap.
        cap: usize,
    },
    /// A frame payload is larger than `max_frame_bytes`.
    #[error("frame payload of {len} bytes exceeds max_frame_bytes {cap}")]
    FrameTooLarge {
        /// Payload length.
        len: usize,
        /// The cap.
        cap: u32,
    },
    /// The type byte is not one this version knows.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// A Hello did not start with [`MAGIC`].
    #[error("bad magic {0:02x?}: not a mediamesh tunnel peer")]
    BadMagic([u8; 4]),
    /// A string is not valid UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A node or stream name has characters or a length outside the allowed set.
    #[error("invalid {field}: {reason}")]
    InvalidName {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An enumerated value is out of range.
    #[error("invalid {field} value {value}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// Bytes were left after the body was read.
    #[error("{extra} unexpected bytes after a {message} body")]
    TrailingBytes {
        /// The message type's name.
        message: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// The declared message length disagrees with the transport frame.
    #[error("message declares {declared} bytes but its transport frame holds {actual}")]
    LengthMismatch {
        /// From the length prefix.
        declared: usize,
        /// From the transport.
        actual: usize,
    },
    /// The stream header's codec configuration is unusable.
    #[error("invalid stream header: {0}")]
    InvalidHeader(String),
}

impl DecodeError {
    /// The error code to report to the peer for this decode error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            _ => ErrorCode::Protocol,
        }
    }
}

/// Checks a node or stream name: 1–253 bytes of ASCII letters, digits, `-`, `_` and `.`,
/// not starting with `.` or `-`. Names appear in URLs, logs and metrics labels unescaped.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("longer than 253 bytes");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    if name.starts_with(['.', '-']) {
        return Err("must not start with '.' or '-'");
    }
    Ok(())
}

/// Picks the protocol version for a connection: the highest both sides speak.
pub fn negotiate_version(min: u16, max: u16) -> Option<u16> {
    let v = max.min(PROTOCOL_VERSION);
    (v >= min && v >= OLDEST_VERSION).then_some(v)
}

#[cfg(test)]
mod tests;
