use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::{FrameFlags, TrackInfo};

fn frame(payload: Bytes) -> Frame {
    Frame { track: 0, flags: FrameFlags::keyframe(true), seq: 0, pts: 0, dts: 0, capture_us: 0, payload }
}

fn track(codec: Codec) -> TrackInfo {
    TrackInfo { id: 0, codec, clock_rate: 90_000, channels: 0, parameter_sets: vec![] }
}

/// Feeds payloads as packets with consecutive sequence numbers starting at `seq`.
fn depacketize(
    codec: Codec,
    payloads: &[RtpPayload],
    ts: i64,
    seq: &mut u16,
    d: &mut Depacketizer,
) -> Vec<DepacketizedFrame> {
    let mut out = Vec::new();
    for p in payloads {
        let mut payload = p.prefix().to_vec();
        payload.extend_from_slice(&p.body);
        let pkt = RtpPacketIn {
            sequence: *seq,
            timestamp: ts + i64::from(p.timestamp_delta),
            marker: p.marker,
            payload: payload.into(),
        };
        *seq = seq.wrapping_add(1);
        d.push(pkt, &mut out).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
    }
    out
}

/// NAL units as an encoder writes them: a header of the given type, then bytes that never
/// contain a start-code prefix (emulation prevention) and do not end in zero.
fn nal_strategy(h265: bool) -> impl Strategy<Value = Vec<u8>> {
    let types: Vec<u8> = if h265 { vec![1, 19, 32, 33, 34, 39] } else { vec![1, 5, 6, 7, 8] };
    (proptest::sample::select(types), proptest::collection::vec(1u8..=255, 1..4000)).prop_map(move |(t, body)| {
        let mut n = if h265 { vec![t << 1, 1] } else { vec![0x60 | t] };
        n.extend(body);
        n
    })
}

fn annex_b(nals: &[Vec<u8>]) -> Bytes {
    crate::annexb::to_annex_b(nals.iter().map(Vec::as_slice))
}

proptest! {
    #[test]
    fn h264_roundtrip(nals in proptest::collection::vec(nal_strategy(false), 1..8), max in 100usize..1500) {
        let au = annex_b(&nals);
        let payloads = packetize(&track(Codec::H264), &frame(au.clone()), max);
        prop_assert!(payloads.iter().all(|p| p.len() <= max));
        prop_assert_eq!(payloads.iter().filter(|p| p.marker).count(), 1);
        let mut d = Depacketizer::new(Codec::H264, 1 << 20);
        let out = depacketize(Codec::H264, &payloads, 1000, &mut 65_530, &mut d);
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(&out[0].data, &au);
        prop_assert_eq!(out[0].keyframe, nals.iter().any(|n| n[0] & 0x1f == 5));
    }

    #[test]
    fn h265_roundtrip(nals in proptest::collection::vec(nal_strategy(true), 1..8), max in 100usize..1500) {
        let au = annex_b(&nals);
        let payloads = packetize(&track(Codec::H265), &frame(au.clone()), max);
        prop_assert!(payloads.iter().all(|p| p.len() <= max));
        let mut d = Depacketizer::new(Codec::H265, 1 << 20);
        let out = depacketize(Codec::H265, &payloads, 0, &mut 7, &mut d);
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(&out[0].data, &au);
    }

    #[test]
    fn aac_roundtrip(au in proptest::collection::vec(any::<u8>(), 1..5000), max in 100usize..1500) {
        let au = Bytes::from(au);
        let t = TrackInfo::audio(1, Codec::Aac, 48_000, 2, Some(Bytes::from_static(&[0x11, 0x90])));
        let payloads = packetize(&t, &frame(au.clone()), max);
        let mut d = Depacketizer::new(Codec::Aac, 1 << 16);
        let out = depacketize(Codec::Aac, &payloads, 0, &mut 0, &mut d);
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(&out[0].data, &au);
    }

    #[test]
    fn a_lost_packet_drops_only_its_access_unit(
        a in proptest::collection::vec(nal_strategy(false), 1..4),
        b in proptest::collection::vec(nal_strategy(false), 1..4),
        drop_at in any::<prop::sample::Index>(),
    ) {
        let (au_a, au_b) = (annex_b(&a), annex_b(&b));
        let pa = packetize(&track(Codec::H264), &frame(au_a), 500);
        let pb = packetize(&track(Codec::H264), &frame(au_b.clone()), 500);
        let mut d = Depacketizer::new(Codec::H264, 1 << 20);
        // Number every packet as sent, then lose one after the first: the receiver sees a gap.
        // (Losing the very first packet of a stream is invisible to any receiver.)
        prop_assume!(pa.len() >= 2);
        let lost = 1 + drop_at.index(pa.len() - 1);
        let mut out = Vec::new();
        for (i, (p, ts)) in pa.iter().map(|p| (p, 0)).chain(pb.iter().map(|p| (p, 3600))).enumerate() {
            if i == lost {
                continue;
            }
            let mut payload = p.prefix().to_vec();
            payload.extend_from_slice(&p.body);
            let pkt = RtpPacketIn { sequence: i as u16, timestamp: ts, marker: p.marker, payload: payload.into() };
            let _ = d.push(pkt, &mut out);
        }
        // The damaged unit is gone; the next one is intact and flagged.
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(&out[0].data, &au_b);
        prop_assert!(out[0].discontinuity);
    }

    #[test]
    fn arbitrary_packets_never_panic(
        codec in proptest::sample::select(vec![Codec::H264, Codec::H265, Codec::Aac, Codec::Opus]),
        pkts in proptest::collection::vec((any::<u16>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20),
    ) {
        let mut d = Depacketizer::new(codec, 4096);
        let mut out = Vec::new();
        for (i, (seq, marker, payload)) in pkts.into_iter().enumerate() {
            let _ = d.push(RtpPacketIn { sequence: seq, timestamp: i as i64 / 3, marker, payload: payload.into() }, &mut out);
        }
        for f in out {
            prop_assert!(f.data.len() <= 4096);
        }
    }
}

#[test]
fn small_nal_units_are_aggregated_and_large_ones_fragmented_without_copies() {
    let sps = vec![0x67u8, 0x42, 0xc0, 0x1e, 0x99];
    let pps = vec![0x68u8, 0xce, 0x3c, 0x80];
    let idr: Vec<u8> = std::iter::once(0x65).chain((0..3000).map(|i| (i % 250 + 1) as u8)).collect();
    let au = annex_b(&[sps, pps, idr.clone()]);
    let payloads = packetize(&track(Codec::H264), &frame(au.clone()), 1400);
    assert_eq!(payloads[0].body[0] & 0x1f, 24, "SPS and PPS travel in one STAP-A");
    let fus = &payloads[1..];
    assert_eq!(fus.len(), 3);
    assert_eq!(fus[0].prefix(), &[0x7c, 0x85], "FU-A indicator and start header");
    assert_eq!(fus[2].prefix()[1], 0x45, "end bit on the last fragment");
    assert!(fus[2].marker && !fus[1].marker);
    // Fragment bodies point into the frame's own buffer.
    let range = au.as_ptr() as usize..au.as_ptr() as usize + au.len();
    assert!(fus.iter().all(|p| range.contains(&(p.body.as_ptr() as usize))));
}

#[test]
fn g711_splits_at_sample_boundaries() {
    let t = TrackInfo::audio(0, Codec::Pcma, 8000, 2, None);
    let payloads = packetize(&t, &frame(Bytes::from(vec![0u8; 3001])), 1000);
    assert!(payloads.iter().all(|p| p.len() % 2 == 0 || p.body.len() == 1));
    assert_eq!(payloads[1].timestamp_delta, 500, "1000 bytes of stereo are 500 samples");
}

#[test]
fn header_layout() {
    let mut h = [0u8; 12];
    write_header(&mut h, 96, true, 0x1234, 0xdead_beef, 0x0102_0304);
    assert_eq!(h, [0x80, 0xe0, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
}
