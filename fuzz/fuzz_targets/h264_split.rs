//! Fuzzes the Annex-B access-unit splitter (H.264 and H.265) and the SEI reader with arbitrary
//! byte streams; the same entry point runs in the property tests and replays the corpus in CI.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mediamesh_media::fuzz::split_any(data);
});
