//! RTP payload formats: packetizing frames for RTSP viewers and depacketizing what cameras send.
//!
//! Packetizing ([`packetize`]) turns one frame into [`RtpPayload`]s: everything after the
//! 12-byte RTP header. The hub does it once per frame and shares the result with every RTSP
//! viewer, with the RTP headers before the payloads. A payload's `body` is a zero-copy slice of
//! the frame where the format allows.
//!
//! Depacketizing ([`Depacketizer`]) turns a camera's RTP packets back into frames, checking
//! every length and dropping what a lost packet damaged.
//!
//! | codec | format | packetizing | depacketizing |
//! |---|---|---|---|
//! | H.264 | RFC 6184, packetization-mode 1 | single NAL, STAP-A, FU-A | single NAL, STAP-A, FU-A |
//! | H.265 | RFC 7798 | single NAL, AP, FU | single NAL, AP, FU |
//! | AAC | RFC 3640 mpeg4-generic AAC-hbr | one AU per packet, fragmented if needed | AU headers (13/3 bits), fragments |
//! | G.711, Opus | RFC 3551, RFC 7587 | one frame per packet | one packet per frame |

mod aac;
mod h26x;
pub mod rtcp;
pub mod sdp;
mod simple;
#[cfg(test)]
mod tests;

use bytes::Bytes;

use crate::{Codec, Frame, TrackInfo};

/// Largest RTP payload the packetizers produce: fits a 1500-byte Ethernet MTU with IPv6, UDP
/// and the RTP header, and the 4-byte interleaved header on TCP.
pub const DEFAULT_MAX_PAYLOAD: usize = 1400;

/// The part of an RTP packet after its 12-byte header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPayload {
    prefix: [u8; 4],
    prefix_len: u8,
    /// The payload data after the prefix; usually a slice of the frame.
    pub body: Bytes,
    /// The RTP marker bit (last packet of a video access unit).
    pub marker: bool,
    /// Added to the frame's RTP timestamp (audio frames split over packets).
    pub timestamp_delta: u32,
}

impl RtpPayload {
    fn new(prefix: &[u8], body: Bytes, marker: bool) -> Self {
        let mut p = [0u8; 4];
        p[..prefix.len()].copy_from_slice(prefix);
        Self { prefix: p, prefix_len: prefix.len() as u8, body, marker, timestamp_delta: 0 }
    }

    /// Payload-format bytes before `body` (FU indicator and header, AU header, …).
    pub fn prefix(&self) -> &[u8] {
        &self.prefix[..usize::from(self.prefix_len)]
    }

    /// Total payload length.
    pub fn len(&self) -> usize {
        usize::from(self.prefix_len) + self.body.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Packetizes one frame of `track` into payloads of at most `max_payload` bytes.
pub fn packetize(track: &TrackInfo, frame: &Frame, max_payload: usize) -> Vec<RtpPayload> {
    let max_payload = max_payload.max(64);
    match track.codec {
        Codec::H264 => h26x::packetize(h26x::Syntax::H264, &frame.payload, max_payload),
        Codec::H265 => h26x::packetize(h26x::Syntax::H265, &frame.payload, max_payload),
        Codec::Aac => aac::packetize(&frame.payload, max_payload),
        Codec::Pcma | Codec::Pcmu => simple::packetize_g711(&frame.payload, track.channels, max_payload),
        Codec::Opus => vec![RtpPayload::new(&[], frame.payload.clone(), true)],
    }
}

/// Writes a 12-byte RTP header (version 2, no padding, extension or CSRC).
pub fn write_header(out: &mut [u8; 12], payload_type: u8, marker: bool, sequence: u16, timestamp: u32, ssrc: u32) {
    out[0] = 0x80;
    out[1] = (payload_type & 0x7f) | if marker { 0x80 } else { 0 };
    out[2..4].copy_from_slice(&sequence.to_be_bytes());
    out[4..8].copy_from_slice(&timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// One received RTP packet, as a depacketizer needs it.
#[derive(Debug, Clone)]
pub struct RtpPacketIn {
    /// Sequence number.
    pub sequence: u16,
    /// Timestamp, extended to 64 bits by the receiver (wrap-around handled).
    pub timestamp: i64,
    /// Marker bit.
    pub marker: bool,
    /// The payload (after the RTP header, extension and padding).
    pub payload: Bytes,
}

/// A frame recovered from RTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepacketizedFrame {
    /// RTP timestamp (extended).
    pub timestamp: i64,
    /// Annex-B access unit (video) or raw audio frame.
    pub data: Bytes,
    /// A video keyframe, or any audio frame.
    pub keyframe: bool,
    /// Frames were lost just before this one.
    pub discontinuity: bool,
    /// Parameter sets found in band (video): VPS (H.265), SPS, PPS.
    pub vps: Option<Bytes>,
    /// SPS found in band.
    pub sps: Option<Bytes>,
    /// PPS found in band.
    pub pps: Option<Bytes>,
}

/// Why a packet could not be depacketized. The damaged frame is dropped; the next one is fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RTP packet {sequence}: {reason}")]
pub struct DepacketizeError {
    /// Sequence number of the offending packet.
    pub sequence: u16,
    /// What was wrong.
    pub reason: String,
}

/// Turns RTP packets of one stream back into frames.
#[derive(Debug)]
pub struct Depacketizer(Inner);

#[derive(Debug)]
enum Inner {
    H26x(Box<h26x::Depacketizer>),
    Aac(aac::Depacketizer),
    Simple(simple::Depacketizer),
}

impl Depacketizer {
    /// A depacketizer for `codec`; `max_frame` caps the size of a reassembled frame.
    pub fn new(codec: Codec, max_frame: usize) -> Self {
        Self(match codec {
            Codec::H264 => Inner::H26x(Box::new(h26x::Depacketizer::new(h26x::Syntax::H264, max_frame))),
            Codec::H265 => Inner::H26x(Box::new(h26x::Depacketizer::new(h26x::Syntax::H265, max_frame))),
            Codec::Aac => Inner::Aac(aac::Depacketizer::new(max_frame)),
            Codec::Pcma | Codec::Pcmu | Codec::Opus => Inner::Simple(simple::Depacketizer::default()),
        })
    }

    /// Feeds a packet; completed frames go to `out`.
    pub fn push(&mut self, pkt: RtpPacketIn, out: &mut Vec<DepacketizedFrame>) -> Result<(), DepacketizeError> {
        match &mut self.0 {
            Inner::H26x(d) => d.push(pkt, out),
            Inner::Aac(d) => d.push(pkt, out),
            Inner::Simple(d) => d.push(pkt, out),
        }
    }
}

/// Sequence-number bookkeeping shared by the depacketizers.
#[derive(Debug, Default)]
struct Sequence {
    last: Option<u16>,
}

impl Sequence {
    /// Records `seq`; true if packets were lost since the previous one.
    fn lost_before(&mut self, seq: u16) -> bool {
        let lost = self.last.is_some_and(|l| seq != l.wrapping_add(1));
        self.last = Some(seq);
        lost
    }
}
