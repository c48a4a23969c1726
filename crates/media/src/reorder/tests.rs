#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn the_poc_high_part_steps_when_the_low_part_wraps() {
    // 4-bit low part: 14 → 2 wraps forward, 2 → 14 wraps back, small moves do not.
    assert_eq!(poc_msb(0, 14, 2, 16), 16);
    assert_eq!(poc_msb(16, 2, 14, 16), 0);
    assert_eq!(poc_msb(32, 6, 10, 16), 32);
    assert_eq!(poc_msb(32, 10, 4, 16), 32);
}

#[test]
fn what_cannot_be_read_keeps_the_known_time_for_both() {
    let mut r = Reorder::new(Codec::H264, 90_000);
    for (i, au) in [&b"\x00\x00\x00\x01\x65\xff\xff"[..], b"", b"\x00\x00\x01\x41\x9a"].iter().enumerate() {
        let t = i as i64 * 3600;
        assert_eq!(r.times(au, Known::Pts(t)), Times { pts: t, dts: t });
        assert_eq!(r.times(au, Known::Dts(t + 1)), Times { pts: t + 1, dts: t + 1 });
    }
    let mut audio = Reorder::new(Codec::Aac, 48_000);
    assert_eq!(audio.times(b"\x21\x10", Known::Pts(1024)), Times { pts: 1024, dts: 1024 });
}

#[test]
fn the_step_is_the_common_divisor_of_the_pocs() {
    assert_eq!(gcd(6, 4), 2);
    assert_eq!(gcd(0, 3), 3);
    assert_eq!(gcd(5, 0), 5);
}
