//! Fuzzes the hub's RTSP request and interleaved-frame reader, with the bytes split at a point the
//! first byte picks; the same entry point runs in the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mediamesh_hub::fuzz::rtsp_request(data);
});
