//! WebRTC's packager: each frame packetized into RTP payloads once, for every WebRTC viewer of
//! the stream. A viewer's peer connection only puts its own header (SSRC, payload type,
//! sequence number, timestamp) before them and encrypts; the payload bytes are shared
//! (`Arc<[u8]>`, which str0m keeps for retransmissions without copying).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mediamesh_media::Codec;

use crate::session::log::{FrameFormat, LogEntry, PerFrame};

/// Largest RTP payload: what leaves room in a 1,200-byte datagram for the RTP header, its
/// extensions and the SRTP tag (browsers' own senders keep to about that).
pub(crate) const MAX_PAYLOAD: usize = 1100;

/// Frames packetized since start, for `/metrics` (proof that the work is once per frame).
pub(crate) static FRAMES_PACKETIZED: AtomicU64 = AtomicU64::new(0);

/// One RTP payload of a frame.
#[derive(Debug)]
pub(crate) struct RtcPacket {
    /// The payload (after the RTP header).
    pub payload: Arc<[u8]>,
    /// The marker bit: the last packet of a video frame.
    pub marker: bool,
}

/// A frame as RTP payloads (none for a codec WebRTC cannot carry).
#[derive(Debug)]
pub(crate) struct RtcFrame {
    /// The payloads, in order.
    pub packets: Vec<RtcPacket>,
}

/// WebRTC's packaging of a stream (stateless: sequence numbers are each viewer's).
#[derive(Debug, Default)]
pub(crate) struct WebRtcFormat;

/// The attached WebRTC packager of a stream.
pub(crate) type WebRtcPackager = PerFrame<WebRtcFormat>;

impl FrameFormat for WebRtcFormat {
    type Out = RtcFrame;

    fn package(&mut self, e: &LogEntry) -> RtcFrame {
        let Some(track) = e.header.header.track(e.frame.track) else { return RtcFrame { packets: Vec::new() } };
        if !matches!(track.codec, Codec::H264 | Codec::H265 | Codec::Opus | Codec::Pcma | Codec::Pcmu) {
            return RtcFrame { packets: Vec::new() };
        }
        FRAMES_PACKETIZED.fetch_add(1, Ordering::Relaxed);
        let packets = mediamesh_media::rtp::packetize(track, &e.frame, MAX_PAYLOAD)
            .into_iter()
            .map(|p| {
                let mut bytes = Vec::with_capacity(p.len());
                bytes.extend_from_slice(p.prefix());
                bytes.extend_from_slice(&p.body);
                RtcPacket { payload: bytes.into(), marker: p.marker }
            })
            .collect();
        RtcFrame { packets }
    }
}
