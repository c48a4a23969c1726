//! Fuzzes the RTP depacketizers with arbitrary packet sequences: they must never panic, and
//! never give out a frame larger than their cap. The same entry point runs in the property
//! tests and replays the corpus in CI.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mediamesh_media::fuzz::depacketize_any(data);
});
