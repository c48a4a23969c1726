//! RTSP's packager: each frame packetized into RTP once, for every RTSP viewer of the stream.
//!
//! Every viewer is sent the same packets: one SSRC, sequence space and timestamp offset per
//! stream track ([`RtpIdentity`], chosen when the first RTSP viewer attaches); each viewer
//! learns where it starts from `RTP-Info` (RFC 2326 §12.33).

use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use mediamesh_media::TrackId;
use mediamesh_media::rtp::{DEFAULT_MAX_PAYLOAD, RtpPayload};

use crate::payloads::PayloadChunks;
use crate::session::log::{Attached, FrameFormat, FrameLog, LogEntry, PerFrame};

/// What a stream's RTP packets share, whichever viewer they go to: sending every viewer the
/// same packets is what lets RTSP viewers share whole interleaved frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpIdentity {
    /// The SSRC of every track's packets (each track has its own RTP session).
    pub ssrc: u32,
    /// Added to a frame's pts for its RTP timestamp.
    pub ts_offset: u32,
    /// The sequence number of each track's first packet.
    pub first_seq: u16,
}

impl RtpIdentity {
    /// Random values (RFC 3550 §5.1: SSRC, initial sequence number and timestamp are random).
    fn random() -> Self {
        let (a, b) = (crate::random_u64(), crate::random_u64());
        Self { ssrc: a as u32, ts_offset: (a >> 32) as u32, first_seq: b as u16 }
    }
}

/// What the RTSP viewers of a stream share besides the packets.
#[derive(Debug)]
pub(crate) struct RtpShared {
    /// The stream's RTP identity.
    pub identity: RtpIdentity,
    /// Chunks for the frames' shared interleaved copies (built by the first viewer that needs
    /// one), so that they, like the payloads, leave no holes in the allocator's arena.
    copies: Mutex<PayloadChunks>,
}

impl RtpShared {
    /// What `fill` writes (at most `n` bytes) in the chunks for shared frame copies.
    pub(crate) fn shared_copy(&self, n: usize, fill: impl FnOnce(&mut BytesMut)) -> Bytes {
        // A panic while filling leaves the chunks consistent (the next build starts the chunk
        // being filled afresh), so a poisoned lock is still safe to use.
        self.copies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).build(n, fill)
    }
}

/// RTSP's packaging of a stream: its identity and, per track, the next sequence number.
#[derive(Debug)]
pub(crate) struct RtpFormat {
    shared: Arc<RtpShared>,
    next_seq: Vec<(TrackId, u16)>,
}

/// The attached RTP packager of a stream.
pub(crate) type RtpPackager = PerFrame<RtpFormat>;

/// A frame as RTP.
#[derive(Debug)]
pub(crate) struct RtpFrame {
    /// The frame's RTP payloads.
    pub payloads: Vec<RtpPayload>,
    /// Their bytes (for RTCP sender reports' octet count).
    pub bytes: u32,
    /// The sequence number of the frame's first packet, in its track's sequence space.
    pub first_seq: u16,
    /// The whole frame as RTP packets interleaved on an RTSP connection (RFC 2326 §10.12) on
    /// its track's usual channel, built by the first viewer that needs it and written as one
    /// slice by all of them.
    pub interleaved: OnceLock<Bytes>,
}

impl RtpFormat {
    fn new() -> Self {
        let identity = RtpIdentity::random();
        Self {
            shared: Arc::new(RtpShared { identity, copies: Mutex::new(PayloadChunks::new()) }),
            next_seq: Vec::new(),
        }
    }

    /// Attaches the stream's RTP packager to `log` (making it if this is its first RTSP viewer).
    pub(crate) fn attach(log: &Arc<FrameLog>) -> (Attached<RtpPackager>, Arc<RtpShared>) {
        log.attach_with(|| PerFrame::new(RtpFormat::new()), |p| p.format.shared.clone())
    }

    /// The sequence number `track`'s next packet gets.
    fn next(&self, track: TrackId) -> u16 {
        self.next_seq.iter().find(|(t, _)| *t == track).map_or(self.shared.identity.first_seq, |(_, s)| *s)
    }
}

impl FrameFormat for RtpFormat {
    type Out = RtpFrame;

    fn package(&mut self, e: &LogEntry) -> RtpFrame {
        let payloads = match e.header.header.track(e.frame.track) {
            Some(t) => mediamesh_media::rtp::packetize(t, &e.frame, DEFAULT_MAX_PAYLOAD),
            None => Vec::new(),
        };
        let first_seq = self.next(e.frame.track);
        // Sequence numbers wrap at 16 bits (RFC 3550 §5.1).
        let next = first_seq.wrapping_add(payloads.len() as u16);
        match self.next_seq.iter_mut().find(|(t, _)| *t == e.frame.track) {
            Some((_, s)) => *s = next,
            None => self.next_seq.push((e.frame.track, next)),
        }
        RtpFrame {
            bytes: payloads.iter().map(|p| p.len() as u32).fold(0, u32::wrapping_add),
            payloads,
            first_seq,
            interleaved: OnceLock::new(),
        }
    }
}

/// Where an RTSP viewer reading from `position` starts on `track`: the RTP sequence number
/// of its first packet, and the pts of its first frame if the log holds one yet.
pub(crate) fn first_rtp_from(p: &RtpPackager, position: u64, track: TrackId) -> (u16, Option<i64>) {
    let first = p.since(position).find(|f| f.entry.frame.track == track);
    first.map_or_else(|| (p.format.next(track), None), |f| (f.out.first_seq, Some(f.entry.frame.pts)))
}
