//! Formats with one frame per packet: G.711 (RFC 3551) and Opus (RFC 7587).

use bytes::Bytes;

use super::{DepacketizeError, DepacketizedFrame, RtpPacketIn, RtpPayload, Sequence};

/// G.711 frames split at sample boundaries (one byte per sample per channel).
pub(super) fn packetize_g711(frame: &Bytes, channels: u16, max: usize) -> Vec<RtpPayload> {
    let step = usize::from(channels.max(1));
    let chunk = (max / step * step).max(step);
    let mut out = Vec::with_capacity(frame.len() / chunk + 1);
    let mut pos = 0;
    while pos < frame.len() {
        let end = (pos + chunk).min(frame.len());
        let mut p = RtpPayload::new(&[], frame.slice(pos..end), true);
        p.timestamp_delta = (pos / step) as u32;
        out.push(p);
        pos = end;
    }
    out
}

#[derive(Debug, Default)]
pub(super) struct Depacketizer {
    seq: Sequence,
}

impl Depacketizer {
    pub(super) fn push(&mut self, pkt: RtpPacketIn, out: &mut Vec<DepacketizedFrame>) -> Result<(), DepacketizeError> {
        let discontinuity = self.seq.lost_before(pkt.sequence);
        if pkt.payload.is_empty() {
            return Err(DepacketizeError { sequence: pkt.sequence, reason: "empty audio payload".into() });
        }
        out.push(DepacketizedFrame {
            timestamp: pkt.timestamp,
            data: pkt.payload,
            keyframe: true,
            discontinuity,
            vps: None,
            sps: None,
            pps: None,
        });
        Ok(())
    }
}
