//! The WebSocket viewer format (documented in `docs/protocol.md`, "Viewer WebSocket").
//!
//! Text messages are JSON events ([`ViewerEvent`]): a `header` with the codec parameters before
//! the first frame and whenever they change, `skip` when the viewer was resynchronised, `end`
//! before the hub closes. Binary messages are frames: a fixed [`FRAME_HEADER_LEN`]-byte header
//! then the Annex-B payload. The encoding of a frame does not depend on the viewer, so the hub
//! builds its prefix (WebSocket frame header and our fixed header) once per frame; every viewer
//! writes that prefix and the shared payload with one vectored write, copying nothing.

use std::io::IoSlice;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use mediamesh_media::{FrameFlags, TrackKind};
use serde::{Deserialize, Serialize};

use super::packager::WsFrame;
use super::wire::{OP_BINARY, OP_TEXT, frame, frame_header};
use crate::session::log::{HeaderEntry, LogEntry, Packaged};

/// First byte of a binary frame message.
pub const FRAME_MESSAGE: u8 = 0x01;
/// Bytes before the payload in a binary frame message.
pub const FRAME_HEADER_LEN: usize = 4 + 8 * 5;

/// Appends what a viewer is sent for `batch` to `slices`: a header event whenever the codec
/// parameters differ from `header` (the last one this viewer was sent, updated), then per frame
/// its prefix and payload, both shared with every other viewer and borrowed from the batch (no
/// copy, and no reference count touched: those counts are shared by every viewer of the
/// stream, so each touch would move a cache line between cores). Returns the payload bytes.
pub fn frame_slices<'a>(
    batch: &'a [Arc<Packaged<WsFrame>>],
    header: &mut Option<Arc<HeaderEntry>>,
    slices: &mut Vec<IoSlice<'a>>,
) -> u64 {
    let mut bytes = 0u64;
    for p in batch {
        let e = &p.entry;
        if header.as_ref().is_none_or(|h| !Arc::ptr_eq(h, &e.header)) {
            slices.push(IoSlice::new(&p.out.header));
            *header = Some(e.header.clone());
        }
        slices.push(IoSlice::new(&p.out.prefix));
        slices.push(IoSlice::new(&e.frame.payload));
        bytes += e.frame.payload.len() as u64;
    }
    bytes
}

/// A JSON event sent as a text message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ViewerEvent {
    /// Codec parameters for the frames that follow.
    Header {
        /// Node name.
        node: String,
        /// Stream name.
        stream: String,
        /// The tracks.
        tracks: Vec<TrackJson>,
    },
    /// The viewer fell behind and was moved to a keyframe, skipping this many frames.
    Skip {
        /// Frames skipped.
        frames: u64,
    },
    /// The stream ended; the hub closes the WebSocket next.
    End {
        /// Why.
        reason: String,
    },
}

/// One track in a header event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackJson {
    /// Track id, as in frames.
    pub id: u8,
    /// `"video"` or `"audio"`.
    pub kind: String,
    /// `"h264"`.
    pub codec: String,
    /// RFC 6381 codec string (`avc1.42c01f`) for MSE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec_string: Option<String>,
    /// Picture width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Picture height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Audio sample rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// Audio channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u16>,
    /// Timestamp units per second.
    pub clock_rate: u32,
    /// Codec configuration, base64: SPS and PPS (H.264), VPS, SPS and PPS (H.265) without
    /// start codes; the AudioSpecificConfig (AAC); nothing for G.711 and Opus.
    pub parameter_sets: Vec<String>,
}

impl TrackJson {
    /// Decoded parameter sets; invalid base64 entries are skipped.
    pub fn parameter_set_bytes(&self) -> Vec<Vec<u8>> {
        self.parameter_sets.iter().filter_map(|p| B64.decode(p).ok()).collect()
    }
}

/// The header event for a header entry, as a complete WebSocket text frame.
pub fn header_frame(node: &str, stream: &str, h: &HeaderEntry) -> Bytes {
    let tracks = h
        .header
        .tracks
        .iter()
        .map(|t| {
            let video = (t.codec.kind() == TrackKind::Video).then(|| t.video_params().ok()).flatten();
            let audio = (t.codec.kind() == TrackKind::Audio).then(|| t.audio_params().ok()).flatten();
            TrackJson {
                id: t.id,
                kind: t.codec.kind().name().into(),
                codec: t.codec.name().into(),
                codec_string: video
                    .as_ref()
                    .map(|v| v.codec_string.clone())
                    .or_else(|| audio.as_ref().and_then(|a| a.codec_string.clone())),
                width: video.as_ref().map(|v| v.width),
                height: video.as_ref().map(|v| v.height),
                sample_rate: audio.as_ref().map(|a| a.sample_rate),
                channels: audio.as_ref().map(|a| a.channels),
                clock_rate: t.clock_rate,
                parameter_sets: t.parameter_sets.iter().map(|p| B64.encode(p)).collect(),
            }
        })
        .collect();
    event_frame(&ViewerEvent::Header { node: node.into(), stream: stream.into(), tracks })
}

/// The bytes that precede a frame's payload on the wire: the WebSocket frame header of a
/// binary message, then the fixed [`FRAME_HEADER_LEN`]-byte header.
pub fn encode_frame_prefix(e: &LogEntry) -> Bytes {
    let f = &e.frame;
    let (ws, n) = frame_header(OP_BINARY, FRAME_HEADER_LEN + f.payload.len());
    let mut b = BytesMut::with_capacity(n + FRAME_HEADER_LEN);
    b.put_slice(&ws[..n]);
    b.put_u8(FRAME_MESSAGE);
    b.put_u8(f.track);
    b.put_u8(f.flags.bits());
    b.put_u8(0);
    b.put_u64(f.seq);
    b.put_i64(f.pts);
    b.put_i64(f.dts);
    b.put_u64(f.capture_us);
    b.put_u64(e.hub_us);
    b.freeze()
}

/// An event as a complete WebSocket text frame.
pub fn event_frame(ev: &ViewerEvent) -> Bytes {
    // Serialising a plain enum of strings and numbers cannot fail.
    frame(OP_TEXT, serde_json::to_string(ev).unwrap_or_default().as_bytes())
}

/// A frame as a viewer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerFrame {
    /// Track id.
    pub track: u8,
    /// Keyframe / discontinuity.
    pub flags: FrameFlags,
    /// The edge's frame sequence number.
    pub seq: u64,
    /// Presentation timestamp (track clock).
    pub pts: i64,
    /// Decoding timestamp (track clock).
    pub dts: i64,
    /// Capture time at the edge, µs since the Unix epoch.
    pub capture_us: u64,
    /// Receive time at the hub, µs since the Unix epoch.
    pub hub_us: u64,
    /// Annex-B payload.
    pub payload: Bytes,
}

/// Why a binary viewer message did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewerFormatError {
    /// Shorter than the fixed header.
    #[error("frame message of {0} bytes is shorter than the {FRAME_HEADER_LEN}-byte header")]
    Short(usize),
    /// Not a frame message.
    #[error("unknown binary message type {0:#04x}")]
    UnknownType(u8),
    /// Unknown flag bits.
    #[error("unknown frame flags {0:#04x}")]
    Flags(u8),
}

/// Parses a binary viewer message.
pub fn decode_frame(mut b: Bytes) -> Result<ViewerFrame, ViewerFormatError> {
    if b.len() < FRAME_HEADER_LEN {
        return Err(ViewerFormatError::Short(b.len()));
    }
    let t = b.get_u8();
    if t != FRAME_MESSAGE {
        return Err(ViewerFormatError::UnknownType(t));
    }
    let track = b.get_u8();
    let bits = b.get_u8();
    let flags = FrameFlags::from_bits(bits).ok_or(ViewerFormatError::Flags(bits))?;
    b.advance(1);
    Ok(ViewerFrame {
        track,
        flags,
        seq: b.get_u64(),
        pts: b.get_i64(),
        dts: b.get_i64(),
        capture_us: b.get_u64(),
        hub_us: b.get_u64(),
        payload: b,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_unknown_messages_are_errors() {
        assert_eq!(decode_frame(Bytes::from_static(&[1, 2, 3])), Err(ViewerFormatError::Short(3)));
        let mut b = vec![0u8; FRAME_HEADER_LEN];
        b[0] = 9;
        assert_eq!(decode_frame(b.into()), Err(ViewerFormatError::UnknownType(9)));
    }

    #[test]
    fn events_are_tagged_json() {
        let s = serde_json::to_string(&ViewerEvent::Skip { frames: 3 }).unwrap();
        assert_eq!(s, r#"{"type":"skip","frames":3}"#);
        let e: ViewerEvent = serde_json::from_str(r#"{"type":"end","reason":"x"}"#).unwrap();
        assert_eq!(e, ViewerEvent::End { reason: "x".into() });
    }
}
