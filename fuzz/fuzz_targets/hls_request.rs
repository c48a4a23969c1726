//! Fuzzes the LL-HLS request reader (file names and `_HLS_msn` / `_HLS_part` / `token`); the
//! same entry point runs in the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mediamesh_hub::fuzz::hls_request(data);
});
