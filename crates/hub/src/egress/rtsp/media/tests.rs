use bytes::Bytes;
use mediamesh_media::{Frame, FrameFlags, StreamHeader, TrackInfo};

use super::*;
use crate::egress::rtsp::packager::{RtpFormat, first_rtp_from};
use crate::session::log::{FrameLog, LogConfig};

const SPS: &[u8] = b"\x67\x42\xc0\x0d\xda\x05\x07\xec\x04\x40\x00\x00\x03\x00\x40\x00\x00\x0c\x83\xc5\x0a\xa8";
const PPS: &[u8] = b"\x68\xce\x0f\xc8";

fn header() -> StreamHeader {
    StreamHeader { tracks: vec![TrackInfo::h264(0, Bytes::from_static(SPS), Bytes::from_static(PPS))] }
}

/// Frame `seq`: an IDR slice of 3,000 bytes for the first (three FU-A packets), then P slices
/// of 2,000 (two packets).
fn frame(seq: u64) -> Frame {
    let (nal, len) = if seq == 0 { (0x65u8, 3000) } else { (0x41, 2000) };
    let mut payload = vec![0, 0, 0, 1, nal];
    payload.extend((0..len).map(|i| (i * 7 + seq as usize) as u8 | 1));
    Frame {
        track: 0,
        flags: FrameFlags::keyframe(seq == 0),
        seq,
        pts: 1000 + seq as i64 * 3600,
        dts: 1000 + seq as i64 * 3600,
        capture_us: 0,
        payload: Bytes::from(payload),
    }
}

/// A log of `n` frames with the RTP packager attached, and the batch a new viewer reads from it,
/// with where it starts.
fn batch(n: u64) -> (RtpOut, Vec<RtpItem>, u64) {
    let config = LogConfig {
        max_frames: 100,
        max_bytes: 1 << 24,
        viewer_max_lag_bytes: 1 << 24,
        viewer_max_lag_us: u64::MAX,
        timeline: crate::session::log::OutageTimeline::WallClock,
    };
    let log = Arc::new(FrameLog::new(config));
    log.set_header(header()).unwrap();
    let (attached, shared) = RtpFormat::attach(&log);
    for s in 0..n {
        log.push(frame(s), 0).unwrap();
    }
    let mut cursor = log.subscribe();
    let from = cursor.position();
    let mut out = Vec::new();
    log.read_packaged(&attached, &mut cursor, usize::MAX, &mut out);
    (RtpOut { attached, shared }, out, from)
}

fn track(rtp: &RtpOut, rtp_channel: u8) -> TrackOut {
    TrackOut::new(0, 96, Dest::Tcp { rtp: rtp_channel, rtcp: rtp_channel + 1 }, rtp.shared.identity)
}

/// What a viewer's connection carries for `batch`: (channel, data) of each interleaved frame.
fn sent(rtp: &RtpOut, batch: &[RtpItem], t: TrackOut) -> (Vec<(u8, Vec<u8>)>, usize) {
    let mut tracks = vec![t];
    let mut plan = Plan::default();
    plan_tracks(&mut tracks, batch, &mut plan);
    let mut rtcp = Vec::new();
    let slices = tcp_slices(batch, &plan, &tracks, &rtp.shared, &mut rtcp);
    let n = slices.len();
    let wire: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
    let mut packets = Vec::new();
    let mut rest = &wire[..];
    while !rest.is_empty() {
        assert_eq!(rest[0], b'$');
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        packets.push((rest[1], rest[4..4 + len].to_vec()));
        rest = &rest[4 + len..];
    }
    (packets, n)
}

#[test]
fn viewers_on_the_usual_channel_write_each_frame_as_one_shared_slice() {
    let (rtp, batch, _) = batch(4);
    assert_eq!(batch.len(), 4);
    let plan_of = |t| {
        let mut tracks = vec![t];
        let mut plan = Plan::default();
        plan_tracks(&mut tracks, &batch, &mut plan);
        (tracks, plan)
    };
    let (ta, a) = plan_of(track(&rtp, 0));
    let (tb, b) = plan_of(track(&rtp, 0));
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    let sa = tcp_slices(&batch, &a, &ta, &rtp.shared, &mut ra);
    let sb = tcp_slices(&batch, &b, &tb, &rtp.shared, &mut rb);
    // One slice per frame, and the first frame's sender report.
    assert_eq!(sa.len(), 4 + 1);
    let frames = |s: &[IoSlice<'_>]| s.iter().filter(|s| s[1] == 0).map(|s| s.as_ptr()).collect::<Vec<_>>();
    assert_eq!(frames(&sa), frames(&sb), "both viewers write the same memory");
    assert_eq!(frames(&sa).len(), 4);
}

#[test]
fn a_viewer_on_another_channel_is_sent_the_same_packets() {
    let (rtp, batch, _) = batch(3);
    let (usual, usual_slices) = sent(&rtp, &batch, track(&rtp, 0));
    let (other, other_slices) = sent(&rtp, &batch, track(&rtp, 4));
    assert_eq!(usual_slices, 3 + 1);
    assert!(other_slices > 2 * 7, "packet by packet: {other_slices} slices");
    let rtp =
        |p: &[(u8, Vec<u8>)], ch: u8| p.iter().filter(|(c, _)| *c == ch).map(|(_, d)| d.clone()).collect::<Vec<_>>();
    assert_eq!(rtp(&usual, 0), rtp(&other, 4));
    assert_eq!(rtp(&usual, 0).len(), 3 + 2 + 2);
    assert_eq!(rtp(&usual, 1).len(), 1, "one sender report");
    assert_eq!(rtp(&other, 5).len(), 1);
}

#[test]
fn sequence_numbers_run_on_from_the_one_rtp_info_names() {
    let (rtp, batch, from) = batch(5);
    let log = rtp.attached.log().clone();
    let (first_seq, first_pts) = log.with_packager(&rtp.attached, |p| first_rtp_from(p, from, 0)).unwrap();
    assert_eq!(first_pts, Some(1000));
    let id = rtp.shared.identity;
    let (packets, _) = sent(&rtp, &batch, track(&rtp, 0));
    let data: Vec<&Vec<u8>> = packets.iter().filter(|(c, _)| *c == 0).map(|(_, d)| d).collect();
    assert_eq!(data.len(), 3 + 4 * 2);
    let mut frame = 0;
    for (i, p) in data.iter().enumerate() {
        let seq = u16::from_be_bytes([p[2], p[3]]);
        assert_eq!(seq, first_seq.wrapping_add(i as u16), "packet {i}");
        assert_eq!(u32::from_be_bytes([p[8], p[9], p[10], p[11]]), id.ssrc);
        let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        assert_eq!(ts, (1000 + frame * 3600u32).wrapping_add(id.ts_offset), "packet {i}");
        let marker = p[1] & 0x80 != 0;
        if marker {
            frame += 1;
        }
    }
    assert_eq!(frame, 5, "one marker per frame");
    // A viewer joining later starts where the log's next packet will be numbered.
    let (next, pts) = log.with_packager(&rtp.attached, |p| first_rtp_from(p, u64::MAX, 0)).unwrap();
    assert_eq!((next, pts), (first_seq.wrapping_add(11), None));
}
