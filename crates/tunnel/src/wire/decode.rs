//! Decoding bytes to messages, with every length checked before allocation.

use bytes::{Buf, Bytes, BytesMut};
use mediamesh_media::{Frame, FrameFlags, StreamHeader, TrackInfo};

use super::primitives::Reader;
use super::{
    CatalogEntry, Channel, CongestionLevel, DecodeError, DropReason, ErrorCode, ErrorMsg, FRAME_HEADER_LEN, Feedback,
    Hello, Limits, MAGIC, MAX_CATALOG_ENTRIES, MAX_CONTROL_MESSAGE, MAX_PARAMETER_SET_LEN, MAX_PARAMETER_SETS,
    MAX_TEXT_LEN, MAX_TRACKS, Message, RunningStream, UplinkReport, Welcome, codec_id, msg_type, type_name,
};

/// Decodes one message that fills `buf` exactly (length prefix included), as carried in one
/// WebSocket binary message.
pub fn decode_message(mut buf: Bytes, limits: &Limits) -> Result<Message, DecodeError> {
    if buf.len() < 4 {
        return Err(DecodeError::Truncated { field: "length prefix", need: 4, have: buf.len() });
    }
    let declared = buf.get_u32() as usize;
    check_len(declared, limits)?;
    if declared != buf.len() {
        return Err(DecodeError::LengthMismatch { declared, actual: buf.len() });
    }
    decode_body(buf, limits)
}

/// Decodes length-prefixed messages from a byte stream (TCP, QUIC), buffering partial ones.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    limits: Limits,
}

/// How much of a declared body [`StreamDecoder::decode`] makes room for ahead of its bytes.
pub const RESERVE_AHEAD: usize = 64 * 1024;

impl StreamDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// The next whole message in `buf`, `Ok(None)` if more bytes are needed. The length is
    /// checked against the limits as soon as its 4 bytes arrive, before any body is buffered,
    /// and room is made for at most [`RESERVE_AHEAD`] bytes of it: a peer that sends a large
    /// length and stalls holds no more memory than that.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let declared = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        check_len(declared, &self.limits)?;
        if buf.len() < 4 + declared {
            buf.reserve((4 + declared - buf.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        buf.advance(4);
        let body = buf.split_to(declared).freeze();
        decode_body(body, &self.limits).map(Some)
    }
}

fn check_len(declared: usize, limits: &Limits) -> Result<(), DecodeError> {
    if declared == 0 {
        return Err(DecodeError::Truncated { field: "message type", need: 1, have: 0 });
    }
    let cap = limits.max_message_len();
    if declared > cap {
        return Err(DecodeError::TooLong { field: "message", len: declared, cap });
    }
    Ok(())
}

fn decode_body(body: Bytes, limits: &Limits) -> Result<Message, DecodeError> {
    let mut r = Reader::new(body);
    let t = r.u8("message type")?;
    if t != msg_type::FRAME && r.remaining() + 1 > MAX_CONTROL_MESSAGE {
        return Err(DecodeError::TooLong { field: type_name(t), len: r.remaining() + 1, cap: MAX_CONTROL_MESSAGE });
    }
    let msg = match t {
        msg_type::HELLO => Message::Hello(hello(&mut r)?),
        msg_type::WELCOME => Message::Welcome(Welcome {
            version: r.u16("welcome.version")?,
            hub: r.string("welcome.hub", MAX_TEXT_LEN)?,
            heartbeat_ms: r.u32("welcome.heartbeat_ms")?,
            max_frame_bytes: r.u32("welcome.max_frame_bytes")?,
            grace_ms: r.u32("welcome.grace_ms")?,
        }),
        msg_type::ADD_VIDEO => {
            Message::AddVideo { session: r.u64("add_video.session")?, stream: r.name("add_video.stream")? }
        }
        msg_type::REMOVE_VIDEO => {
            Message::RemoveVideo { session: r.u64("remove_video.session")?, stream: r.name("remove_video.stream")? }
        }
        msg_type::PING => Message::Ping { id: r.u64("ping.id")? },
        msg_type::PONG => Message::Pong { id: r.u64("pong.id")? },
        msg_type::GO_AWAY => Message::GoAway { reason: r.string("go_away.reason", MAX_TEXT_LEN)? },
        msg_type::ERROR => Message::Error(ErrorMsg {
            code: ErrorCode::from_u16(r.u16("error.code")?),
            session: r.u64("error.session")?,
            message: r.string("error.message", MAX_TEXT_LEN)?,
        }),
        msg_type::CATALOG => Message::Catalog { catalog: catalog(&mut r)? },
        msg_type::STREAM_HEADER => Message::StreamHeader(stream_header(&mut r)?),
        msg_type::FRAME => Message::Frame(frame(&mut r, limits)?),
        msg_type::FEEDBACK => Message::Feedback(Feedback {
            last_seq: r.u64("feedback.last_seq")?,
            frames: r.u64("feedback.frames")?,
            bytes: r.u64("feedback.bytes")?,
        }),
        msg_type::END_OF_STREAM => Message::EndOfStream { reason: r.string("end_of_stream.reason", MAX_TEXT_LEN)? },
        msg_type::UPLINK_REPORT => Message::UplinkReport(uplink_report(&mut r)?),
        msg_type::REDIRECT => Message::Redirect { target: r.string("redirect.target", MAX_TEXT_LEN)? },
        msg_type::KEYFRAME_REQUEST => Message::KeyframeRequest,
        other => return Err(DecodeError::UnknownType(other)),
    };
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes { message: type_name(t), extra: r.remaining() });
    }
    Ok(msg)
}

fn hello(r: &mut Reader) -> Result<Hello, DecodeError> {
    let mut magic = [0u8; 4];
    for b in &mut magic {
        *b = r.u8("hello.magic")?;
    }
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let min_version = r.u16("hello.min_version")?;
    let max_version = r.u16("hello.max_version")?;
    let node = r.name("hello.node")?;
    let agent = r.string("hello.agent", MAX_TEXT_LEN)?;
    let channel = match r.u8("hello.channel")? {
        1 => {
            let instance = r.u64("hello.instance")?;
            let catalog = catalog(r)?;
            let n = r.count("hello.running", MAX_CATALOG_ENTRIES)?;
            let mut running = Vec::with_capacity(n);
            for _ in 0..n {
                running.push(RunningStream { session: r.u64("running.session")?, stream: r.name("running.stream")? });
            }
            Channel::Control { instance, catalog, running }
        }
        2 => Channel::Data { session: r.u64("hello.session")?, stream: r.name("hello.stream")? },
        3 => Channel::Relay { node: r.name("hello.node")?, stream: r.name("hello.stream")? },
        v => return Err(DecodeError::InvalidValue { field: "hello.channel", value: v.into() }),
    };
    Ok(Hello { min_version, max_version, node, agent, channel })
}

fn catalog(r: &mut Reader) -> Result<Vec<CatalogEntry>, DecodeError> {
    let n = r.count("catalog", MAX_CATALOG_ENTRIES)?;
    let mut catalog = Vec::with_capacity(n);
    for _ in 0..n {
        catalog.push(CatalogEntry {
            name: r.name("catalog.name")?,
            description: r.string("catalog.description", MAX_TEXT_LEN)?,
        });
    }
    Ok(catalog)
}

fn uplink_report(r: &mut Reader) -> Result<UplinkReport, DecodeError> {
    let queue_frames = r.u32("uplink_report.queue_frames")?;
    let queue_bytes = r.u64("uplink_report.queue_bytes")?;
    let queue_delay_ms = r.u32("uplink_report.queue_delay_ms")?;
    let path_delay_ms = r.u32("uplink_report.path_delay_ms")?;
    let rtt_us = r.u32("uplink_report.rtt_us")?;
    let level_byte = r.u8("uplink_report.level")?;
    let level = CongestionLevel::from_u8(level_byte)
        .ok_or(DecodeError::InvalidValue { field: "uplink_report.level", value: level_byte.into() })?;
    let connects = r.u32("uplink_report.connects")?;
    let n = r.count("uplink_report.drops", DropReason::ALL.len())?;
    let mut drops = Vec::with_capacity(n);
    for _ in 0..n {
        let b = r.u8("drop.reason")?;
        let reason =
            DropReason::from_u8(b).ok_or(DecodeError::InvalidValue { field: "drop.reason", value: b.into() })?;
        drops.push((reason, r.u64("drop.count")?));
    }
    Ok(UplinkReport { queue_frames, queue_bytes, queue_delay_ms, path_delay_ms, rtt_us, level, connects, drops })
}

fn stream_header(r: &mut Reader) -> Result<StreamHeader, DecodeError> {
    let n = r.count("stream_header.tracks", MAX_TRACKS)?;
    let mut tracks = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.u8("track.id")?;
        let id_byte = r.u8("track.codec")?;
        let codec = codec_id::codec(id_byte)
            .ok_or(DecodeError::InvalidValue { field: "track.codec", value: id_byte.into() })?;
        let clock_rate = r.u32("track.clock_rate")?;
        let channels = r.u16("track.channels")?;
        let sets = r.count("track.parameter_sets", MAX_PARAMETER_SETS)?;
        let mut parameter_sets = Vec::with_capacity(sets);
        for _ in 0..sets {
            parameter_sets.push(r.bytes16("track.parameter_set", MAX_PARAMETER_SET_LEN)?);
        }
        tracks.push(TrackInfo { id, codec, clock_rate, channels, parameter_sets });
    }
    let header = StreamHeader { tracks };
    header.validate().map_err(|e| DecodeError::InvalidHeader(e.to_string()))?;
    Ok(header)
}

fn frame(r: &mut Reader, limits: &Limits) -> Result<Frame, DecodeError> {
    if r.remaining() < FRAME_HEADER_LEN {
        return Err(DecodeError::Truncated { field: "frame header", need: FRAME_HEADER_LEN, have: r.remaining() });
    }
    let track = r.u8("frame.track")?;
    let bits = r.u8("frame.flags")?;
    let flags =
        FrameFlags::from_bits(bits).ok_or(DecodeError::InvalidValue { field: "frame.flags", value: bits.into() })?;
    let seq = r.u64("frame.seq")?;
    let pts = r.i64("frame.pts")?;
    let dts = r.i64("frame.dts")?;
    let capture_us = r.u64("frame.capture_us")?;
    if r.remaining() > limits.max_frame_bytes as usize {
        return Err(DecodeError::FrameTooLarge { len: r.remaining(), cap: limits.max_frame_bytes });
    }
    let payload = r.rest();
    Ok(Frame { track, flags, seq, pts, dts, capture_us, payload })
}
