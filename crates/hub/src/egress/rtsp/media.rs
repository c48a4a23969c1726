//! Sending a stream to one RTSP viewer: the frame's RTP payloads are built once per frame and
//! shared (cached on the log entry); this viewer only writes its own 12-byte RTP headers (its
//! SSRC, sequence numbers and timestamp offset), plus the 4-byte interleaved prefix on TCP.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mediamesh_media::rtp::{self, DEFAULT_MAX_PAYLOAD, RtpPayload, rtcp};

use super::transport::Dest;
use crate::session::Viewer;
use crate::session::log::LogEntry;

/// How often a sender report goes out per track.
const SR_INTERVAL: Duration = Duration::from_secs(5);

/// One track as this viewer receives it.
#[derive(Debug)]
pub(crate) struct TrackOut {
    pub id: u8,
    pub payload_type: u8,
    pub dest: Dest,
    pub ssrc: u32,
    /// The next sequence number.
    pub seq: u16,
    pub ts_offset: u32,
    packets: u32,
    octets: u32,
    last_sr: Option<Instant>,
}

impl TrackOut {
    pub(crate) fn new(id: u8, payload_type: u8, dest: Dest, ssrc: u32, seq: u16, ts_offset: u32) -> Self {
        Self { id, payload_type, dest, ssrc, seq, ts_offset, packets: 0, octets: 0, last_sr: None }
    }
}

/// A playing viewer: its place in the stream and its tracks.
#[derive(Debug)]
pub(crate) struct MediaOut {
    pub viewer: Viewer,
    pub tracks: Vec<TrackOut>,
}

/// What one batch sends to one viewer, in order.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The RTP packets, in order.
    pub packets: Vec<Packet>,
    /// RTCP packets to send after the packet with this index, with the track.
    pub rtcp: Vec<(usize, usize, Vec<u8>)>,
    pub bytes: u64,
    pub frames: u64,
}

/// One RTP packet to one viewer: which shared payload it carries, and the bytes before that
/// payload's body: the interleaved prefix (TCP), this viewer's RTP header and the payload's own
/// prefix (FU indicator and header, …), contiguous so that a packet costs two slices of a
/// vectored write, not three. 28 bytes.
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

/// The shared RTP payloads of a frame, built by the first RTSP viewer that needs them.
pub(crate) fn payloads(e: &LogEntry) -> &[RtpPayload] {
    e.rtp.get_or_init(|| match e.header.header.track(e.frame.track) {
        Some(t) => rtp::packetize(t, &e.frame, DEFAULT_MAX_PAYLOAD),
        None => Vec::new(),
    })
}

/// Largest batch of media taken from the log at once. One `writev` carries at most
/// [`MAX_SLICES`](crate::egress::io::MAX_SLICES) slices (about 21 RTP packets, 29 KB), so a
/// bigger batch saves no system call; it would only make the plan, which each viewer keeps,
/// grow with the GOP a viewer joins in (a 2 s GOP at 2 Mbit/s: 360 packets, 14 KB of plan and
/// 17 KB of slices per viewer).
const BATCH_BYTES: usize = 64 * 1024;
/// Packets a plan keeps room for between batches (448 bytes); a bigger batch's room is given
/// back. A 2 Mbit/s P-frame is about 8 packets, so only keyframes (once per GOP) and catch-up
/// batches allocate.
pub(crate) const PLAN_KEEP: usize = 16;

impl MediaOut {
    /// Reads the next batch from the log into `batch` (replacing it), accounts the read, and
    /// plans its packets. `Err` is why the viewer must go (it keeps falling behind).
    pub(crate) fn next_batch(
        &mut self,
        batch: &mut Vec<Arc<LogEntry>>,
        plan: &mut Plan,
    ) -> Result<crate::session::log::ReadStatus, String> {
        batch.clear();
        let status = self.viewer.session.log.read(&mut self.viewer.cursor, BATCH_BYTES, batch);
        let pending: u64 = batch.iter().map(|e| e.frame.payload.len() as u64).sum();
        self.viewer.account_read(&status, pending)?;
        self.plan(batch, plan);
        Ok(status)
    }

    /// Plans the packets of `batch` for this viewer (frames of tracks it did not set up are
    /// skipped).
    pub(crate) fn plan(&mut self, batch: &[Arc<LogEntry>], plan: &mut Plan) {
        plan.clear();
        for (ei, e) in batch.iter().enumerate() {
            let Some(ti) = self.tracks.iter().position(|t| t.id == e.frame.track) else { continue };
            let t = &mut self.tracks[ti];
            let base = (e.frame.pts as u32).wrapping_add(t.ts_offset);
            for (pi, p) in payloads(e).iter().enumerate() {
                let mut h = [0u8; 20];
                let len = 12 + p.len();
                if let Dest::Tcp { rtp: ch, .. } = t.dest {
                    // Interleaved framing has a 16-bit length; the packetizers stay far below it,
                    // but a packet that did not would break the framing for everything after.
                    let Ok(len16) = u16::try_from(len) else { continue };
                    h[0] = b'$';
                    h[1] = ch;
                    h[2..4].copy_from_slice(&len16.to_be_bytes());
                }
                // Bytes 4..16 of the head, as an array (the pattern cannot fail).
                let [_, _, _, _, rtp_header @ .., _, _, _, _] = &mut h;
                rtp::write_header(
                    rtp_header,
                    t.payload_type,
                    p.marker,
                    t.seq,
                    base.wrapping_add(p.timestamp_delta),
                    t.ssrc,
                );
                let prefix = p.prefix();
                h[16..16 + prefix.len()].copy_from_slice(prefix);
                t.seq = t.seq.wrapping_add(1);
                t.packets = t.packets.wrapping_add(1);
                t.octets = t.octets.wrapping_add(p.len() as u32);
                // Batches hold at most BATCH_BYTES (frames, payloads and tracks far fewer than
                // these types count).
                plan.packets.push(Packet {
                    entry: ei as u32,
                    payload: pi as u16,
                    track: ti as u8,
                    head_len: (16 + prefix.len()) as u8,
                    head: h,
                });
            }
            plan.bytes += e.frame.payload.len() as u64;
            plan.frames += 1;
            if t.last_sr.is_none_or(|at| at.elapsed() >= SR_INTERVAL) {
                t.last_sr = Some(Instant::now());
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

    /// RTCP BYE for every track (the stream ended).
    pub(crate) fn byes(&self) -> Vec<(usize, Vec<u8>)> {
        self.tracks.iter().enumerate().map(|(i, t)| (i, rtcp::bye(t.ssrc).to_vec())).collect()
    }
}

/// The shared payload a packet carries.
pub(crate) fn packet_payload<'a>(batch: &'a [Arc<LogEntry>], packet: &Packet) -> &'a RtpPayload {
    &payloads(&batch[packet.entry as usize])[usize::from(packet.payload)]
}

/// The slices of a planned batch on a TCP connection, in order: RTP packets (this viewer's head,
/// the shared body) and interleaved RTCP. The vector is allocated per write: glibc's thread
/// cache hands every viewer the same hot block, which measured faster than a vector kept per
/// viewer (docs/benchmarks.md).
pub(crate) fn tcp_slices<'a>(
    batch: &'a [Arc<LogEntry>],
    plan: &'a Plan,
    tracks: &[TrackOut],
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
    for (i, packet) in plan.packets.iter().enumerate() {
        while next_rtcp < plan.rtcp.len() && plan.rtcp[next_rtcp].0 == i {
            slices.push(IoSlice::new(&rtcp_frames[next_rtcp]));
            next_rtcp += 1;
        }
        slices.push(IoSlice::new(packet.tcp_head()));
        slices.push(IoSlice::new(&packet_payload(batch, packet).body));
    }
    while next_rtcp < rtcp_frames.len() {
        slices.push(IoSlice::new(&rtcp_frames[next_rtcp]));
        next_rtcp += 1;
    }
    slices
}
