//! Fuzzing entry points, shared by `fuzz/fuzz_targets/` (cargo fuzz) and the property tests, so
//! CI exercises the same code the fuzzer does.

/// The H.264 and H.265 sequence parameter set parsers and the AAC AudioSpecificConfig parser.
/// Panics only on a real bug.
pub fn codec_config(data: &[u8]) {
    if let Ok(p) = crate::h264::parse_sps(data) {
        assert!(p.width > 0 && p.height > 0, "an H.264 SPS must not parse to an empty picture");
    }
    if let Ok(p) = crate::h265::parse_sps(data) {
        assert!(p.width > 0 && p.height > 0, "an H.265 SPS must not parse to an empty picture");
    }
    let _ = crate::aac::parse_config(data);
}

/// The Annex-B access-unit splitter (H.264 or H.265, by the first byte, which also picks where
/// the bytes split), the SEI stamp reader and the picture-order reader that derives B-frame
/// times ([`crate::reorder`]). Panics only on a real bug: an access unit over the cap, or times
/// that do not keep their known half.
pub fn split_any(data: &[u8]) {
    use crate::annexb::{AccessUnitSplitter, VideoCodec};
    use crate::reorder::{Known, Reorder};
    let Some((&first, data)) = data.split_first() else { return };
    let codec = if first & 1 == 0 { VideoCodec::H264 } else { VideoCodec::H265 };
    let mut splitter = AccessUnitSplitter::new(codec, 4096);
    let mut out = Vec::new();
    let cut = usize::from(first >> 1).min(data.len());
    let _ = splitter.push(&data[..cut], &mut out);
    let _ = splitter.push(&data[cut..], &mut out);
    let _ = splitter.flush(&mut out);
    let media_codec = if codec == VideoCodec::H264 { crate::Codec::H264 } else { crate::Codec::H265 };
    let (mut from_dts, mut from_pts) = (Reorder::new(media_codec, 90_000), Reorder::new(media_codec, 90_000));
    for (i, au) in out.iter().enumerate() {
        assert!(au.data.len() <= 4096, "an access unit over the cap");
        let _ = crate::h264::sei::read_stamp(&au.data);
        let t = i as i64 * 3600;
        assert_eq!(from_dts.times(&au.data, Known::Dts(t)).dts, t, "the known decode time is kept");
        assert_eq!(from_pts.times(&au.data, Known::Pts(t)).pts, t, "the known presentation time is kept");
    }
}

/// The RTP depacketizers (the codec picked by the first byte) on a packet sequence: each
/// packet is `[len][flags][payload]`, flags bit 0 the marker, bit 1 a lost packet before it.
/// Panics only on a real bug: a frame over the cap.
pub fn depacketize_any(data: &[u8]) {
    use crate::Codec;
    use crate::rtp::{Depacketizer, RtpPacketIn};
    let Some((&sel, mut rest)) = data.split_first() else { return };
    let codec = [Codec::H264, Codec::H265, Codec::Aac, Codec::Pcma, Codec::Opus][usize::from(sel) % 5];
    let mut d = Depacketizer::new(codec, 8192);
    let mut out = Vec::new();
    let mut seq: u16 = 0;
    while rest.len() >= 2 {
        let (len, flags) = (usize::from(rest[0]), rest[1]);
        let end = (2 + len).min(rest.len());
        seq = seq.wrapping_add(1 + u16::from(flags >> 1 & 1));
        let pkt = RtpPacketIn {
            sequence: seq,
            timestamp: i64::from(flags >> 2),
            marker: flags & 1 == 1,
            payload: rest[2..end].to_vec().into(),
        };
        let _ = d.push(pkt, &mut out);
        rest = &rest[end..];
    }
    assert!(out.iter().all(|f| f.data.len() <= 8192), "a frame over the cap");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_splitter_and_depacketizers_survive_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            super::split_any(&data);
            super::depacketize_any(&data);
        }

        #[test]
        fn the_codec_config_parsers_survive_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            super::codec_config(&data);
        }

        #[test]
        fn the_sps_parsers_survive_mutated_parameter_sets(flips in proptest::collection::vec((0usize..64, any::<u8>()), 0..6)) {
            let mut sps = b"\x67\x42\xc0\x0d\xda\x05\x07\xec\x04\x40\x00\x00\x03\x00\x40\x00\x00\x0c\x83\xc5\x0a\xa8".to_vec();
            for (at, b) in flips {
                let i = at % sps.len();
                sps[i] = b;
            }
            super::codec_config(&sps);
            super::codec_config(&sps[1..]);
        }
    }
}
