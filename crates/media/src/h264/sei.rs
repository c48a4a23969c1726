//! The SEI message mediamesh's test pattern stamps on every frame.
//!
//! A `user_data_unregistered` SEI (payload type 5) with the UUID [`TEST_PATTERN_UUID`] carries
//! the frame counter and the capture wall-clock time (microseconds since the Unix epoch), both
//! big-endian `u64`. Any viewer can read them from the payload to check order, gaps and latency;
//! decoders ignore the message.

use super::{NAL_SEI, START_CODE, escape_rbsp, is_vcl, nal_type, nals, unescape_rbsp};

/// The UUID identifying mediamesh's test-pattern SEI.
pub const TEST_PATTERN_UUID: [u8; 16] = *b"mediamesh:tp:v1\0";

const USER_DATA_UNREGISTERED: u32 = 5;
const BODY_LEN: usize = 16 + 8 + 8;

/// What a test-pattern frame says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestPatternStamp {
    /// The frame counter, starting at 0 when the source starts.
    pub counter: u64,
    /// Capture time, microseconds since the Unix epoch.
    pub capture_us: u64,
}

/// Appends the stamp as a complete SEI NAL unit (with a 4-byte start code) to `out`.
pub fn write_stamp(stamp: TestPatternStamp, out: &mut Vec<u8>) {
    let mut rbsp = Vec::with_capacity(BODY_LEN + 4);
    rbsp.push(USER_DATA_UNREGISTERED as u8);
    rbsp.push(BODY_LEN as u8);
    rbsp.extend_from_slice(&TEST_PATTERN_UUID);
    rbsp.extend_from_slice(&stamp.counter.to_be_bytes());
    rbsp.extend_from_slice(&stamp.capture_us.to_be_bytes());
    rbsp.push(0x80); // rbsp_trailing_bits
    out.extend_from_slice(&START_CODE);
    out.push(NAL_SEI); // forbidden_zero 0, nal_ref_idc 0, type 6
    escape_rbsp(&rbsp, out);
}

/// Writes `access_unit` to `out` with `stamp` as its only test-pattern SEI: stamps it carried
/// are left out, and the new one goes just before the first coded slice (after parameter sets
/// and other SEI, where H.264 wants SEI). A looping clip source uses this to stamp each frame
/// as it goes out, so viewers can measure latency and count gaps on a replayed stream.
pub fn restamp(access_unit: &[u8], stamp: TestPatternStamp, out: &mut Vec<u8>) {
    out.reserve(access_unit.len() + 48);
    let mut stamped = false;
    for n in nals(access_unit) {
        let Some(t) = nal_type(n) else { continue };
        if t == NAL_SEI && parse_sei_nal(&n[1..]).is_some() {
            continue;
        }
        if is_vcl(t) && !stamped {
            write_stamp(stamp, out);
            stamped = true;
        }
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(n);
    }
    if !stamped {
        write_stamp(stamp, out);
    }
}

/// Finds the test-pattern stamp in an Annex-B access unit, if it carries one.
pub fn read_stamp(access_unit: &[u8]) -> Option<TestPatternStamp> {
    nals(access_unit).filter(|n| nal_type(n) == Some(NAL_SEI)).find_map(|n| parse_sei_nal(&n[1..]))
}

fn parse_sei_nal(ebsp: &[u8]) -> Option<TestPatternStamp> {
    let rbsp = unescape_rbsp(ebsp);
    let mut rest = &rbsp[..];
    // sei_message()s until rbsp_trailing_bits.
    while rest.len() > 1 {
        let (ptype, r) = read_ff_coded(rest)?;
        let (size, r) = read_ff_coded(r)?;
        let size = usize::try_from(size).ok()?;
        if size > r.len() {
            return None;
        }
        let (body, r) = r.split_at(size);
        if ptype == USER_DATA_UNREGISTERED && body.len() >= BODY_LEN && body[..16] == TEST_PATTERN_UUID {
            let counter = u64::from_be_bytes(body[16..24].try_into().ok()?);
            let capture_us = u64::from_be_bytes(body[24..32].try_into().ok()?);
            return Some(TestPatternStamp { counter, capture_us });
        }
        rest = r;
    }
    None
}

/// Reads an SEI payload type or size: a run of 0xFF bytes (255 each) plus a final byte.
fn read_ff_coded(mut data: &[u8]) -> Option<(u32, &[u8])> {
    let mut v: u32 = 0;
    loop {
        let (&b, r) = data.split_first()?;
        v = v.checked_add(u32::from(b))?;
        data = r;
        if b != 0xff {
            return Some((v, data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_roundtrip_with_escaping() {
        // Zeros in the counter force emulation-prevention bytes.
        for stamp in [
            TestPatternStamp { counter: 0, capture_us: 0 },
            TestPatternStamp { counter: 1, capture_us: 0x0000_0300_0000_0001 },
            TestPatternStamp { counter: u64::MAX, capture_us: 1_700_000_000_000_000 },
        ] {
            let mut au = Vec::new();
            write_stamp(stamp, &mut au);
            au.extend_from_slice(b"\x00\x00\x00\x01\x65\x88");
            assert_eq!(read_stamp(&au), Some(stamp));
        }
    }

    #[test]
    fn restamp_replaces_the_stamp_before_the_first_slice() {
        let old = TestPatternStamp { counter: 7, capture_us: 1 };
        let new = TestPatternStamp { counter: 9_000, capture_us: 1_700_000_000_123_456 };
        let mut au = b"\x00\x00\x00\x01\x67\x42\x00\x1f\x00\x00\x00\x01\x68\xce".to_vec();
        write_stamp(old, &mut au);
        au.extend_from_slice(b"\x00\x00\x01\x65\x88\x84\x00\x00\x00\x01\x65\x11");
        let mut out = Vec::new();
        restamp(&au, new, &mut out);
        assert_eq!(read_stamp(&out), Some(new));
        let types: Vec<u8> = nals(&out).filter_map(nal_type).collect();
        assert_eq!(types, vec![7, 8, 6, 5, 5], "one SEI, after the parameter sets, before the slices");
        // An access unit without slices still gets its stamp.
        let mut out = Vec::new();
        restamp(b"\x00\x00\x00\x01\x67\x42", new, &mut out);
        assert_eq!(read_stamp(&out), Some(new));
    }

    #[test]
    fn foreign_or_truncated_sei_is_ignored() {
        // x264's version SEI (user_data_unregistered with another UUID) and a truncated one.
        let mut au = b"\x00\x00\x00\x01\x06\x05\x20".to_vec();
        au.extend_from_slice(&[0x11; 32]);
        au.push(0x80);
        au.extend_from_slice(b"\x00\x00\x00\x01\x06\x05\xff\xff\x10");
        assert_eq!(read_stamp(&au), None);
    }
}
