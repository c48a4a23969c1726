//! The fuzzing entry point, shared by `fuzz/fuzz_targets/tunnel_decode.rs` (cargo fuzz) and the
//! property tests, so CI exercises the same code the fuzzer does.

use bytes::{Bytes, BytesMut};

use crate::wire::{Limits, StreamDecoder, decode_message, encoded};

/// Decodes `data` every way the protocol can arrive (one transport frame; a byte stream split
/// at every position of the length prefix and type byte, and at a few points beyond) and checks
/// that whatever decodes re-encodes to the same bytes.
///
/// Panics only on a real bug: a decode that does not round-trip.
pub fn decode_any(data: &[u8]) {
    let limits = Limits { max_frame_bytes: 64 * 1024 };
    if let Ok(m) = decode_message(Bytes::copy_from_slice(data), &limits) {
        assert_eq!(&encoded(&m)[..], data, "decode→encode must reproduce the input");
    }
    let whole = stream_decode(data, data.len(), &limits);
    // Past the first few bytes a split only moves where the body resumes: three more cuts find
    // that, where every position up to 64 made each input cost 65 decodes.
    let n = data.len();
    for cut in (0..n.min(8)).chain([n / 3, n / 2, n.saturating_sub(1)]) {
        assert_eq!(stream_decode(data, cut, &limits), whole, "split at {cut}");
    }
}

fn stream_decode(data: &[u8], cut: usize, limits: &Limits) -> Vec<Result<Bytes, String>> {
    let mut dec = StreamDecoder::new(*limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for part in [&data[..cut], &data[cut..]] {
        buf.extend_from_slice(part);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => out.push(Ok(encoded(&m))),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}
