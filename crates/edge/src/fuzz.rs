//! The fuzzing entry point for what a camera sends the edge before any media: the SDP of its
//! DESCRIBE answer. retina parses it with `sdp-types`, and a camera on a site's network is as
//! untrusted as any peer, so the campaign covers that parser as the edge runs it. Shared by
//! `fuzz/fuzz_targets/camera_sdp.rs` and the property tests.

/// Parses `data` as a session description, as retina does with a DESCRIBE answer. Either
/// result is fine. A panic is contained, as the edge contains it (the DESCRIBE runs in a task of
/// its own: sdp-types 0.1.8 asserts on an indented media line, which this target found); what
/// remains a bug is what no task boundary contains: memory errors, runaway allocation, hangs.
pub fn camera_sdp(data: &[u8]) {
    let _ = sdp_parser_panics(data);
}

/// Whether `sdp-types` panics on `data` rather than answering.
pub fn sdp_parser_panics(data: &[u8]) -> bool {
    std::panic::catch_unwind(|| sdp_types::Session::parse(data)).is_err()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::camera_sdp;

    const CAMERA: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=cam\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\na=control:*\r\n\
        m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
        a=fmtp:96 packetization-mode=1;profile-level-id=42e01f;sprop-parameter-sets=Z0LgH9oBQBbpAQ==,aM4G4g==\r\n\
        a=control:trackID=0\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n\
        a=fmtp:97 streamtype=5;mode=AAC-hbr;config=1190;sizelength=13;indexlength=3\r\n";

    #[test]
    fn a_camera_answer_parses() {
        assert_eq!(sdp_types::Session::parse(CAMERA.as_bytes()).unwrap().medias.len(), 2);
        camera_sdp(CAMERA.as_bytes());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            camera_sdp(&data);
        }

        #[test]
        fn mutated_answers_never_panic(at in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>(), with in "[ -~\\r\\n]{0,8}") {
            let s = CAMERA.as_bytes();
            let i = at.index(s.len() + 1);
            let j = i + cut.index(s.len() - i + 1);
            let mut data = s[..i].to_vec();
            data.extend_from_slice(with.as_bytes());
            data.extend_from_slice(&s[j..]);
            camera_sdp(&data);
        }
    }
}
