//! Fuzzes the H.264 and H.265 SPS parsers and the AAC AudioSpecificConfig parser; the same entry point runs in the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mediamesh_media::fuzz::codec_config(data);
});
