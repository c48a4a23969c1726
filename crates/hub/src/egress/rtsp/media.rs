//! Sending a stream to one RTSP viewer. Every viewer of a stream is sent the same RTP packets
//! (one SSRC, sequence space and timestamp offset per stream track, [`RtpIdentity`], made by
//! the stream's RTP packager; each viewer learns where it starts from `RTP-Info`). So a
//! frame's packets, interleaved on its
//! track's usual channel, are built once and written by every TCP viewer on that channel as
//! one slice ([`interleaved`]). A viewer on another channel, or on UDP, writes its own 4-byte
//! interleaved prefix and RTP header before each shared payload.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use mediamesh_media::StreamHeader;
use mediamesh_media::rtp::{self, RtpPayload, rtcp};

use super::packager::{RtpFrame, RtpIdentity, RtpPackager, RtpShared};
use super::transport::Dest;
use crate::session::Viewer;
use crate::session::log::{Attached, Packaged};

/// A frame and its RTP packets, as a viewer's batch holds it.
pub(crate) type RtpItem = Arc<Packaged<RtpFrame>>;

/// How often a sender report goes out per track.
const SR_INTERVAL_US: u64 = 5_000_000;

/// One track as this viewer receives it.
#[derive(Debug)]
pub(crate) struct TrackOut {
    pub id: u8,
    pub payload_type: u8,
    pub dest: Dest,
    pub ssrc: u32,
    pub ts_offset: u32,
    packets: u32,
    octets: u32,
    /// When the last sender report was planned: the hub receive time (µs) of the frame it
    /// went with. Frames carry that time, so planning reads no clock per viewer.
    last_sr_us: Option<u64>,
}

impl TrackOut {
    /// Track `id` of a stream with `rtp`, sent to `dest`.
    pub(crate) fn new(id: u8, payload_type: u8, dest: Dest, rtp: RtpIdentity) -> Self {
        Self {
            id,
            payload_type,
            dest,
            ssrc: rtp.ssrc,
            ts_offset: rtp.ts_offset,
            packets: 0,
            octets: 0,
            last_sr_us: None,
        }
    }
}

/// The interleaved channel clients pick for a track: 0 for the first, 2 for the second, …
/// (ffmpeg, GStreamer and VLC set up tracks in SDP order, each on the next pair).
pub(crate) fn usual_channel(header: &StreamHeader, track: u8) -> Option<u8> {
    let i = header.tracks.iter().position(|t| t.id == track)?;
    u8::try_from(2 * i).ok()
}

/// The bytes before an RTP payload's body, and how many: on TCP the 4-byte interleaved prefix
/// on `channel` (on UDP, `None`: 4 unused bytes), the RTP header and the payload's own prefix.
/// `None` when the packet does not fit interleaved framing's 16-bit length: the packetizers
/// stay far below it, but a packet that did not would break the framing for everything after.
fn packet_head(
    channel: Option<u8>,
    p: &RtpPayload,
    payload_type: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
) -> Option<([u8; 20], u8)> {
    let mut h = [0u8; 20];
    if let Some(ch) = channel {
        let len16 = u16::try_from(12 + p.len()).ok()?;
        h[0] = b'$';
        h[1] = ch;
        h[2..4].copy_from_slice(&len16.to_be_bytes());
    }
    // Bytes 4..16 of the head, as an array (the pattern cannot fail).
    let [_, _, _, _, rtp_header @ .., _, _, _, _] = &mut h;
    rtp::write_header(rtp_header, payload_type, p.marker, seq, ts, ssrc);
    let prefix = p.prefix();
    h[16..16 + prefix.len()].copy_from_slice(prefix);
    Some((h, (16 + prefix.len()) as u8))
}

/// Frame `f`'s RTP packets, each with its 4-byte interleaved prefix on the track's usual
/// channel, in one buffer built by the first viewer that needs it (a copy of the frame, made
/// once per stream, in the packager's chunks).
pub(crate) fn interleaved<'e>(f: &'e Packaged<RtpFrame>, shared: &RtpShared) -> &'e Bytes {
    f.out.interleaved.get_or_init(|| {
        let e = &f.entry;
        let header = &e.header.header;
        let (Some(channel), Some(track)) = (usual_channel(header, e.frame.track), header.track(e.frame.track)) else {
            return Bytes::new();
        };
        let rtp = shared.identity;
        let payload_type = rtp::sdp::payload_type(track);
        let base = (e.frame.pts as u32).wrapping_add(rtp.ts_offset);
        let len: usize = f.out.payloads.iter().map(|p| 16 + p.len()).sum();
        shared.shared_copy(len, |b| {
            for (i, p) in f.out.payloads.iter().enumerate() {
                let (seq, ts) = (f.out.first_seq.wrapping_add(i as u16), base.wrapping_add(p.timestamp_delta));
                let Some((head, n)) = packet_head(Some(channel), p, payload_type, seq, ts, rtp.ssrc) else { continue };
                b.put_slice(&head[..usize::from(n)]);
                b.put_slice(&p.body);
            }
        })
    })
}

/// A viewer's hold on the stream's RTP packager, from its first SETUP on.
#[derive(Debug, Clone)]
pub(crate) struct RtpOut {
    pub attached: Attached<RtpPackager>,
    pub shared: Arc<RtpShared>,
}

/// A playing viewer: its place in the stream and its tracks.
#[derive(Debug)]
pub(crate) struct MediaOut {
    pub viewer: Viewer,
    pub tracks: Vec<TrackOut>,
    pub rtp: RtpOut,
}

/// What one batch sends to one viewer, in order.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The frames and RTP packets, in order.
    pub packets: Vec<Out>,
    /// RTCP packets to send before the item with this index (so after the frame they report
    /// on), with the track.
    pub rtcp: Vec<(usize, usize, Vec<u8>)>,
    pub bytes: u64,
    pub frames: u64,
}

/// One item of a plan.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Out {
    /// A whole frame: the batch entry's shared interleaved copy ([`interleaved`]).
    Frame {
        /// Index of the log entry in the batch.
        entry: u32,
    },
    /// One RTP packet built for this viewer.
    Packet(Packet),
}

/// One RTP packet to one viewer: which shared payload it carries, and the bytes before that
/// payload's body: the interleaved prefix (TCP), the RTP header and the payload's own prefix
/// (FU indicator and header, …), contiguous so that a packet costs two slices of a vectored
/// write, not three. 28 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packet {
    /// Index of the log entry in the batch.
    pub entry: u32,
    /// Index of the payload among the entry's RTP payloads.
    pub payload: u16,
    /// Index of the track in [`MediaOut::tracks`].
    pub track: u8,
    head_len: u8,
    head: [u8; 4 + 12 + 4],
}

impl Packet {
    /// Interleaved prefix, RTP header, payload prefix (RTP over the RTSP connection).
    pub fn tcp_head(&self) -> &[u8] {
        &self.head[..usize::from(self.head_len)]
    }

    /// RTP header and payload prefix (RTP over UDP).
    pub fn udp_head(&self) -> &[u8] {
        &self.head[4..usize::from(self.head_len)]
    }
}

impl Plan {
    fn clear(&mut self) {
        self.packets.clear();
        self.packets.shrink_to(PLAN_KEEP);
        self.rtcp.clear();
        self.bytes = 0;
        self.frames = 0;
    }
}

/// Largest batch of media taken from the log at once. One `writev` carries at most
/// [`MAX_SLICES`](crate::egress::io::MAX_SLICES) slices (about 21 RTP packets, 29 KB), so a
/// bigger batch saves no system call; it would only make the plan, which each viewer keeps,
/// grow with the GOP a viewer joins in (a 2 s GOP at 2 Mbit/s: 360 packets, 14 KB of plan and
/// 17 KB of slices per viewer).
const BATCH_BYTES: usize = 64 * 1024;
/// Items a plan keeps room for between batches (256 bytes); a bigger batch's room is given
/// back. A viewer on a track's usual channel plans one item per frame; on another channel or
/// UDP, a 2 Mbit/s P-frame is about 8 packets, so only keyframes (once per GOP) and catch-up
/// batches allocate.
pub(crate) const PLAN_KEEP: usize = 8;

impl MediaOut {
    /// Reads the next batch from the log into `batch` (replacing it), accounts the read, and
    /// plans its packets. `Err` is why the viewer must go (it keeps falling behind).
    pub(crate) fn next_batch(
        &mut self,
        batch: &mut Vec<RtpItem>,
        plan: &mut Plan,
    ) -> Result<crate::session::log::ReadStatus, String> {
        batch.clear();
        let status =
            self.viewer.session.log.read_packaged(&self.rtp.attached, &mut self.viewer.cursor, BATCH_BYTES, batch);
        let pending: u64 = batch.iter().map(|f| f.entry.frame.payload.len() as u64).sum();
        self.viewer.account_read(&status, pending)?;
        self.plan(batch, plan);
        Ok(status)
    }

    /// Plans the packets of `batch` for this viewer (frames of tracks it did not set up are
    /// skipped).
    pub(crate) fn plan(&mut self, batch: &[RtpItem], plan: &mut Plan) {
        plan_tracks(&mut self.tracks, batch, plan);
    }

    /// RTCP BYE for every track (the stream ended).
    pub(crate) fn byes(&self) -> Vec<(usize, Vec<u8>)> {
        self.tracks.iter().enumerate().map(|(i, t)| (i, rtcp::bye(t.ssrc).to_vec())).collect()
    }
}

/// Plans the packets of `batch` for a viewer of `tracks`.
fn plan_tracks(tracks: &mut [TrackOut], batch: &[RtpItem], plan: &mut Plan) {
    plan.clear();
    for (ei, f) in batch.iter().enumerate() {
        let (e, rtp) = (&f.entry, &f.out);
        let Some(ti) = tracks.iter().position(|t| t.id == e.frame.track) else { continue };
        let t = &mut tracks[ti];
        let base = (e.frame.pts as u32).wrapping_add(t.ts_offset);
        let channel = match t.dest {
            Dest::Tcp { rtp: ch, .. } => Some(ch),
            Dest::Udp { .. } => None,
        };
        // Batches hold at most BATCH_BYTES (frames, payloads and tracks far fewer than these
        // types count).
        if channel.is_some() && channel == usual_channel(&e.header.header, t.id) {
            // On the track's usual channel (as the frame's header has it): the shared copy.
            plan.packets.push(Out::Frame { entry: ei as u32 });
            t.packets = t.packets.wrapping_add(rtp.payloads.len() as u32);
            t.octets = t.octets.wrapping_add(rtp.bytes);
        } else {
            for (pi, p) in rtp.payloads.iter().enumerate() {
                let (seq, ts) = (rtp.first_seq.wrapping_add(pi as u16), base.wrapping_add(p.timestamp_delta));
                let Some((head, head_len)) = packet_head(channel, p, t.payload_type, seq, ts, t.ssrc) else { continue };
                t.packets = t.packets.wrapping_add(1);
                t.octets = t.octets.wrapping_add(p.len() as u32);
                plan.packets.push(Out::Packet(Packet {
                    entry: ei as u32,
                    payload: pi as u16,
                    track: ti as u8,
                    head_len,
                    head,
                }));
            }
        }
        plan.bytes += e.frame.payload.len() as u64;
        plan.frames += 1;
        // `abs_diff`: a wall clock stepped back sends a report at once rather than none.
        if t.last_sr_us.is_none_or(|at| e.hub_us.abs_diff(at) >= SR_INTERVAL_US) {
            t.last_sr_us = Some(e.hub_us);
            let sr = rtcp::sender_report(
                t.ssrc,
                rtcp::ntp_from_unix_micros(e.frame.capture_us),
                base,
                t.packets,
                t.octets,
                "mediamesh",
            );
            plan.rtcp.push((plan.packets.len(), ti, sr));
        }
    }
}

/// The shared payload a packet carries.
pub(crate) fn packet_payload<'a>(batch: &'a [RtpItem], packet: &Packet) -> &'a RtpPayload {
    &batch[packet.entry as usize].out.payloads[usize::from(packet.payload)]
}

/// The slices of a planned batch on a TCP connection, in order: whole frames (the shared
/// interleaved copy), RTP packets (this viewer's head, the shared body) and interleaved RTCP.
/// The vector is allocated per write: glibc's thread cache hands every viewer the same hot
/// block, which measured faster than a vector kept per viewer (docs/benchmarks.md).
pub(crate) fn tcp_slices<'a>(
    batch: &'a [RtpItem],
    plan: &'a Plan,
    tracks: &[TrackOut],
    shared: &RtpShared,
    rtcp_frames: &'a mut Vec<Vec<u8>>,
) -> Vec<IoSlice<'a>> {
    rtcp_frames.clear();
    for (_, ti, sr) in &plan.rtcp {
        let ch = match tracks[*ti].dest {
            Dest::Tcp { rtcp, .. } => rtcp,
            Dest::Udp { .. } => continue,
        };
        let mut f = vec![b'$', ch];
        f.extend_from_slice(&(sr.len() as u16).to_be_bytes());
        f.extend_from_slice(sr);
        rtcp_frames.push(f);
    }
    let mut slices = Vec::with_capacity(plan.packets.len() * 2 + rtcp_frames.len());
    let mut next_rtcp = 0;
    for (i, out) in plan.packets.iter().enumerate() {
        while next_rtcp < plan.rtcp.len() && plan.rtcp[next_rtcp].0 == i {
            slices.push(IoSlice::new(&rtcp_frames[next_rtcp]));
            next_rtcp += 1;
        }
        match out {
            Out::Frame { entry } => slices.push(IoSlice::new(interleaved(&batch[*entry as usize], shared))),
            Out::Packet(packet) => {
                slices.push(IoSlice::new(packet.tcp_head()));
                slices.push(IoSlice::new(&packet_payload(batch, packet).body));
            }
        }
    }
    while next_rtcp < rtcp_frames.len() {
        slices.push(IoSlice::new(&rtcp_frames[next_rtcp]));
        next_rtcp += 1;
    }
    slices
}

#[cfg(test)]
mod tests;
