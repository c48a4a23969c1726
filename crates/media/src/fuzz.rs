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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
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
