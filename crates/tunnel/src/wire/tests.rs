use bytes::{Bytes, BytesMut};
use mediamesh_media::{Frame, FrameFlags, StreamHeader, TrackInfo};
use proptest::prelude::*;

use super::*;

const SPS: &[u8] = b"\x67\x42\xc0\x0d\xda\x05\x07\xec\x04\x40\x00\x00\x03\x00\x40\x00\x00\x0c\x83\xc5\x0a\xa8";
const PPS: &[u8] = b"\x68\xce\x0f\xc8";

fn header() -> StreamHeader {
    StreamHeader {
        tracks: vec![
            TrackInfo::h264(0, Bytes::from_static(SPS), Bytes::from_static(PPS)),
            TrackInfo::audio(1, mediamesh_media::Codec::Aac, 48_000, 2, Some(Bytes::from_static(&[0x11, 0x90]))),
            TrackInfo::audio(2, mediamesh_media::Codec::Opus, 48_000, 2, None),
        ],
    }
}

fn sample_messages() -> Vec<Message> {
    vec![
        Message::Hello(Hello {
            min_version: 1,
            max_version: 1,
            node: "edge-1".into(),
            agent: "mediamesh-edge/0.1.0".into(),
            channel: Channel::Control {
                instance: 0x1234_5678_9abc_def0,
                catalog: vec![CatalogEntry { name: "cam1".into(), description: "test pattern".into() }],
                running: vec![RunningStream { session: 77, stream: "cam1".into() }],
            },
        }),
        Message::Catalog { catalog: vec![CatalogEntry { name: "cam2".into(), description: String::new() }] },
        Message::Error(ErrorMsg { code: ErrorCode::DuplicateNode, session: 0, message: "taken".into() }),
        Message::Hello(Hello {
            min_version: 1,
            max_version: 3,
            node: "edge-1".into(),
            agent: String::new(),
            channel: Channel::Data { session: 42, stream: "cam1".into() },
        }),
        Message::Hello(Hello {
            min_version: 3,
            max_version: 3,
            node: "hub-b".into(),
            agent: "mediamesh-hub/0.1.0".into(),
            channel: Channel::Relay { node: "edge-1".into(), stream: "cam1".into() },
        }),
        Message::Welcome(Welcome {
            version: 1,
            hub: "hub-a".into(),
            heartbeat_ms: 1000,
            max_frame_bytes: 1 << 20,
            grace_ms: 30_000,
        }),
        Message::AddVideo { session: 7, stream: "cam.1_x".into() },
        Message::RemoveVideo { session: 7, stream: "cam1".into() },
        Message::Ping { id: u64::MAX },
        Message::Pong { id: 0 },
        Message::GoAway { reason: "draining".into() },
        Message::Error(ErrorMsg { code: ErrorCode::Other(999), session: 3, message: "ünïcode".into() }),
        Message::StreamHeader(header()),
        Message::Frame(Frame {
            track: 0,
            flags: FrameFlags::keyframe(true),
            seq: 5,
            pts: -3,
            dts: i64::MIN,
            capture_us: 1_700_000_000_000_000,
            payload: Bytes::from_static(b"\x00\x00\x00\x01\x65\x88"),
        }),
        Message::Feedback(Feedback { last_seq: 9, frames: 10, bytes: 11 }),
        Message::EndOfStream { reason: "ffmpeg exited".into() },
        Message::Redirect { target: "hub-b.example:7443".into() },
        Message::KeyframeRequest,
        Message::UplinkReport(UplinkReport {
            queue_frames: 3,
            queue_bytes: 30_000,
            queue_delay_ms: 120,
            path_delay_ms: 40,
            rtt_us: 25_000,
            level: CongestionLevel::DropNonReference,
            connects: 2,
            drops: vec![(DropReason::CongestionNonReference, 12), (DropReason::Disconnected, 40)],
        }),
    ]
}

#[test]
fn every_message_roundtrips() {
    let limits = Limits::default();
    for m in sample_messages() {
        let bytes = encoded(&m);
        assert_eq!(decode_message(bytes.clone(), &limits).unwrap(), m, "{}", m.name());
    }
}

#[test]
fn stream_decoder_handles_every_split_point() {
    let limits = Limits::default();
    let mut all = BytesMut::new();
    for m in sample_messages() {
        encode(&m, &mut all);
    }
    let all = all.freeze();
    for cut in 0..=all.len() {
        let mut dec = StreamDecoder::new(limits);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for part in [&all[..cut], &all[cut..]] {
            buf.extend_from_slice(part);
            while let Some(m) = dec.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, sample_messages(), "split at {cut}");
        assert!(buf.is_empty());
    }
}

#[test]
fn frame_header_then_payload_equals_whole_encoding() {
    let frame = sample_messages().into_iter().find(|m| matches!(m, Message::Frame(_)));
    let Some(Message::Frame(f)) = &frame else { panic!() };
    let mut split = BytesMut::new();
    encode_frame_header(f, &mut split);
    split.extend_from_slice(&f.payload);
    assert_eq!(split.freeze(), encoded(&Message::Frame(f.clone())));
}

#[test]
fn oversized_frame_is_rejected_with_its_size() {
    let limits = Limits { max_frame_bytes: 100 };
    let f = Frame {
        track: 0,
        flags: FrameFlags::default(),
        seq: 0,
        pts: 0,
        dts: 0,
        capture_us: 0,
        payload: Bytes::from(vec![0u8; 101]),
    };
    let err = decode_message(encoded(&Message::Frame(f)), &limits).unwrap_err();
    assert_eq!(err, DecodeError::FrameTooLarge { len: 101, cap: 100 });
    assert_eq!(err.code(), ErrorCode::FrameTooLarge);
}

#[test]
fn declared_length_is_checked_before_buffering() {
    let limits = Limits { max_frame_bytes: 1000 };
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    let err = StreamDecoder::new(limits).decode(&mut buf).unwrap_err();
    assert!(matches!(err, DecodeError::TooLong { field: "message", .. }), "{err}");
    assert!(buf.capacity() < 1 << 20, "no allocation for the declared length");
}

#[test]
fn a_large_declared_length_reserves_a_bounded_amount_ahead() {
    let limits = Limits::default();
    let declared = u32::try_from(MAX_CONTROL_MESSAGE).unwrap();
    let mut buf = BytesMut::from(&declared.to_be_bytes()[..]);
    assert!(StreamDecoder::new(limits).decode(&mut buf).unwrap().is_none(), "more bytes needed");
    assert!(buf.capacity() <= 4 + RESERVE_AHEAD * 2, "{} bytes held for a header", buf.capacity());
}

#[test]
fn unknown_type_is_an_error() {
    let err = decode_message(Bytes::from_static(&[0, 0, 0, 1, 0x7f]), &Limits::default()).unwrap_err();
    assert_eq!(err, DecodeError::UnknownType(0x7f));
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut b = BytesMut::from(&encoded(&Message::Ping { id: 1 })[..]);
    b.extend_from_slice(&[0]);
    let len = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    let err = decode_message(b.freeze(), &Limits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::TrailingBytes { message: "Ping", extra: 1 }), "{err}");
}

#[test]
fn length_prefix_must_match_transport_frame() {
    let mut b = BytesMut::from(&encoded(&Message::Ping { id: 1 })[..]);
    b.extend_from_slice(&[0, 0]);
    let err = decode_message(b.freeze(), &Limits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::LengthMismatch { .. }), "{err}");
}

#[test]
fn bad_magic_and_bad_names_are_rejected() {
    let mut b = BytesMut::from(&encoded(&sample_messages()[0])[..]);
    b[5] = b'X';
    assert!(matches!(decode_message(b.freeze(), &Limits::default()), Err(DecodeError::BadMagic(_))));
    for bad in ["", "../etc", "a b", "-x", "ü"] {
        let m = Message::AddVideo { session: 1, stream: bad.into() };
        let err = decode_message(encoded(&m), &Limits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::InvalidName { field: "add_video.stream", .. }), "{bad:?}: {err}");
    }
}

#[test]
fn unknown_frame_flags_are_rejected() {
    let frame = sample_messages().into_iter().find(|m| matches!(m, Message::Frame(_))).unwrap();
    let mut b = BytesMut::from(&encoded(&frame)[..]);
    b[6] = 0x80; // length(4) type(1) track(1) flags
    let err = decode_message(b.freeze(), &Limits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::InvalidValue { field: "frame.flags", value: 0x80 }), "{err}");
}

#[test]
fn stream_header_with_bad_sps_is_rejected() {
    let h = StreamHeader { tracks: vec![TrackInfo::h264(0, Bytes::from_static(b"\x67\x00"), Bytes::from_static(PPS))] };
    let err = decode_message(encoded(&Message::StreamHeader(h)), &Limits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::InvalidHeader(_)), "{err}");
}

#[test]
fn long_text_is_cut_to_the_cap_and_still_decodes() {
    let m = Message::GoAway { reason: "é".repeat(MAX_TEXT_LEN) };
    let Message::GoAway { reason } = decode_message(encoded(&m), &Limits::default()).unwrap() else { panic!() };
    assert!(reason.len() <= MAX_TEXT_LEN && reason.chars().all(|c| c == 'é'));
}

#[test]
fn version_negotiation() {
    assert_eq!(negotiate_version(2, 2), Some(2), "a v2 peer is still served");
    assert_eq!(negotiate_version(2, 3), Some(3));
    assert_eq!(negotiate_version(1, 9), Some(3), "the highest both speak");
    assert_eq!(negotiate_version(1, 1), None, "version 1 is no longer spoken");
    assert_eq!(negotiate_version(4, 9), None);
    assert_eq!(negotiate_version(0, 0), None);
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,30}"
}

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(".{0,40}").unwrap()
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            name(),
            text(),
            (any::<u64>(), proptest::collection::vec((name(), text()), 0..4)),
            proptest::collection::vec((any::<u64>(), name()), 0..4)
        )
            .prop_map(|(min_version, max_version, node, agent, (instance, cat), run)| Message::Hello(Hello {
                min_version,
                max_version,
                node,
                agent,
                channel: Channel::Control {
                    instance,
                    catalog: cat.into_iter().map(|(name, description)| CatalogEntry { name, description }).collect(),
                    running: run.into_iter().map(|(session, stream)| RunningStream { session, stream }).collect(),
                },
            })),
        (name(), any::<u64>(), name()).prop_map(|(node, session, stream)| Message::Hello(Hello {
            min_version: 1,
            max_version: 1,
            node,
            agent: "a".into(),
            channel: Channel::Data { session, stream },
        })),
        (name(), name(), name()).prop_map(|(hub, node, stream)| Message::Hello(Hello {
            min_version: 1,
            max_version: 1,
            node: hub,
            agent: "h".into(),
            channel: Channel::Relay { node, stream },
        })),
        (any::<u16>(), text(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(version, hub, heartbeat_ms, max_frame_bytes, grace_ms)| {
                Message::Welcome(Welcome { version, hub, heartbeat_ms, max_frame_bytes, grace_ms })
            }
        ),
        (any::<u64>(), name()).prop_map(|(session, stream)| Message::AddVideo { session, stream }),
        (any::<u64>(), name()).prop_map(|(session, stream)| Message::RemoveVideo { session, stream }),
        any::<u64>().prop_map(|id| Message::Ping { id }),
        any::<u64>().prop_map(|id| Message::Pong { id }),
        text().prop_map(|reason| Message::GoAway { reason }),
        proptest::collection::vec((name(), text()), 0..4).prop_map(|cat| Message::Catalog {
            catalog: cat.into_iter().map(|(name, description)| CatalogEntry { name, description }).collect()
        }),
        (any::<u16>(), any::<u64>(), text()).prop_map(|(c, session, message)| Message::Error(ErrorMsg {
            code: ErrorCode::from_u16(c),
            session,
            message
        })),
        Just(Message::StreamHeader(header())),
        (
            any::<u8>(),
            0u8..4,
            any::<u64>(),
            any::<i64>(),
            any::<i64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(track, flags, seq, pts, dts, capture_us, payload)| Message::Frame(Frame {
                track,
                flags: FrameFlags::from_bits(flags).unwrap(),
                seq,
                pts,
                dts,
                capture_us,
                payload: payload.into(),
            })),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(last_seq, frames, bytes)| Message::Feedback(Feedback {
            last_seq,
            frames,
            bytes
        })),
        text().prop_map(|reason| Message::EndOfStream { reason }),
        text().prop_map(|target| Message::Redirect { target }),
        Just(Message::KeyframeRequest),
        (
            any::<(u32, u64, u32, u32, u32)>(),
            0u8..3,
            any::<u32>(),
            proptest::collection::vec((0usize..DropReason::ALL.len(), any::<u64>()), 0..7)
        )
            .prop_map(
                |((queue_frames, queue_bytes, queue_delay_ms, path_delay_ms, rtt_us), level, connects, drops)| {
                    Message::UplinkReport(UplinkReport {
                        queue_frames,
                        queue_bytes,
                        queue_delay_ms,
                        path_delay_ms,
                        rtt_us,
                        level: CongestionLevel::from_u8(level).unwrap(),
                        connects,
                        drops: drops.into_iter().map(|(i, n)| (DropReason::ALL[i], n)).collect(),
                    })
                }
            ),
    ]
}

proptest! {
    #[test]
    fn encode_decode_roundtrip(m in arb_message()) {
        let bytes = encoded(&m);
        prop_assert_eq!(decode_message(bytes.clone(), &Limits::default()).unwrap(), m.clone());
        // The same bytes through the stream decoder, split at an arbitrary point.
        let mut dec = StreamDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&bytes[..bytes.len() / 2]);
        prop_assert!(dec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&bytes[bytes.len() / 2..]);
        prop_assert_eq!(dec.decode(&mut buf).unwrap(), Some(m));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        crate::fuzz::decode_any(&data);
    }

    #[test]
    fn mutated_valid_messages_never_panic(idx in 0usize..14, pos in any::<usize>(), byte in any::<u8>()) {
        let mut b = encoded(&sample_messages()[idx]).to_vec();
        let pos = pos % b.len();
        b[pos] = byte;
        crate::fuzz::decode_any(&b);
    }
}
