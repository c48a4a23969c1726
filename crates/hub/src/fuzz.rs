//! Fuzzing entry points, shared by `fuzz/fuzz_targets/` (cargo fuzz) and the property tests, so
//! CI exercises the same code the fuzzer does.

use bytes::BytesMut;

use crate::egress::rtsp::request::{self, Incoming, MAX_BODY, MAX_HEAD, MAX_INTERLEAVED};
use crate::state::JoinToken;

/// The RTSP request and interleaved-frame reader on `data` (its first byte picks where the
/// bytes split, as partial TCP reads arrive). Panics only on a real bug: a parse that takes
/// nothing and yet returns something, or an item over the caps.
pub fn rtsp_request(data: &[u8]) {
    let Some((&first, data)) = data.split_first() else { return };
    let cut = usize::from(first).min(data.len());
    let mut buf = BytesMut::new();
    for part in [&data[..cut], &data[cut..]] {
        buf.extend_from_slice(part);
        // Each item consumes bytes, so this ends; the bound is a guard against a bug.
        for _ in 0..=data.len() {
            let before = buf.len();
            match request::parse(&mut buf) {
                Ok(Some(item)) => {
                    assert!(buf.len() < before, "an item was parsed from no bytes");
                    match item {
                        Incoming::Request(r) => {
                            assert!(r.body.len() <= MAX_BODY, "a body over the cap");
                            assert!(r.uri.len() <= MAX_HEAD, "a URI over the head cap");
                        }
                        Incoming::Interleaved { data, .. } => {
                            assert!(data.len() <= MAX_INTERLEAVED, "a frame over the cap");
                        }
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// What an MSE viewer sends, from its WebSocket frames to its messages: the frame reader on
/// `data` (masked client frames, split where its first byte says), then each data frame's
/// message. Panics only on a real bug: a message accepted that is not a whole, small text
/// frame.
pub fn mse_client(data: &[u8]) {
    use crate::egress::mse::client::{self, MAX_MESSAGE};
    use crate::egress::ws::wire::{ClientFrames, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

    let Some((&first, data)) = data.split_first() else { return };
    let cut = usize::from(first).min(data.len());
    let mut frames = ClientFrames::new(64 * 1024);
    for part in [&data[..cut], &data[cut..]] {
        frames.extend(part);
        while let Ok(Some(f)) = frames.next_frame() {
            if matches!(f.opcode, OP_PING | OP_PONG | OP_CLOSE) {
                continue;
            }
            if client::parse(f.opcode, f.fin, &f.payload).is_ok() {
                assert!(f.opcode == OP_TEXT && f.fin && f.payload.len() <= MAX_MESSAGE, "accepted {f:?}");
            }
        }
    }
}

/// The LL-HLS request reader on `data`: the bytes up to the first `?` as a file name, the rest
/// as a query. Panics only on a real bug: a file name that parses but does not print back the
/// same (leading zeros aside), a token carried with a character a URL cannot hold, or block
/// parameters that `_HLS_part` alone could produce.
pub fn hls_request(data: &[u8]) {
    use crate::egress::hls::request::{HlsQuery, Resource};

    let text = String::from_utf8_lossy(data);
    let (name, query) = text.split_once('?').unwrap_or((&text, ""));
    if let Ok(r) = Resource::parse(name) {
        let printed = r.to_string();
        assert_eq!(Resource::parse(&printed), Ok(r), "{name:?} printed as {printed:?}");
        assert!(printed.len() <= name.len(), "{name:?} printed longer as {printed:?}");
    }
    if let Ok(q) = HlsQuery::parse(query) {
        if let Some(t) = &q.token {
            assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%+".contains(&b)), "token {t:?}");
        }
        if q.block.is_none() {
            assert!(!query.contains("_HLS_part=") || !query.split('&').any(|p| p.starts_with("_HLS_part=")));
        }
    }
}

/// The join token reader: whatever parses prints back to the same text.
pub fn join_token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = JoinToken::parse(&text) {
        assert_eq!(JoinToken::parse(&t.to_string()), Ok(t.clone()), "a token must print back as itself");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_rtsp_reader_survives_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            super::rtsp_request(&data);
        }

        #[test]
        fn the_rtsp_reader_survives_mutated_requests(
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..8),
            cut in any::<u8>(),
        ) {
            let mut req = b"DESCRIBE rtsp://h/edge-1/cam1 RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 4\r\nAuthorization: Basic YTpi\r\n\r\nabcd$\x00\x00\x04rtcp".to_vec();
            for (at, b) in flips {
                let i = at % req.len();
                req[i] = b;
            }
            req.insert(0, cut);
            super::rtsp_request(&req);
        }

        #[test]
        fn the_hls_request_reader_survives_any_text(text in ".{0,120}") {
            super::hls_request(text.as_bytes());
        }

        #[test]
        fn the_hls_request_reader_survives_mutated_requests(
            flips in proptest::collection::vec((0usize..60, any::<u8>()), 0..6),
        ) {
            let mut data = b"video-part-12.3.mp4?_HLS_msn=12&_HLS_part=4&token=ey.J_x".to_vec();
            for (at, b) in flips {
                let i = at % data.len();
                data[i] = b;
            }
            super::hls_request(&data);
        }

        #[test]
        fn the_mse_client_reader_survives_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            super::mse_client(&data);
        }

        #[test]
        fn the_mse_client_reader_survives_mutated_messages(
            flips in proptest::collection::vec((0usize..40, any::<u8>()), 0..6),
            cut in any::<u8>(),
        ) {
            // A masked text frame {"type":"resync"} (mask 0), then a masked ping.
            let mut data = vec![cut, 0x81, 0x91, 0, 0, 0, 0];
            data.extend_from_slice(br#"{"type":"resync"}"#);
            data.extend_from_slice(&[0x89, 0x80, 0, 0, 0, 0]);
            for (at, b) in flips {
                let i = 1 + at % (data.len() - 1);
                data[i] = b;
            }
            super::mse_client(&data);
        }

        #[test]
        fn the_join_token_reader_survives_any_text(text in ".{0,200}") {
            super::join_token(text.as_bytes());
            super::join_token(format!("mmj1.{text}").as_bytes());
        }
    }
}
