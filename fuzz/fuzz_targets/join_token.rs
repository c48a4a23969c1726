//! Fuzzes the join token reader; the same entry point runs in the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mediamesh_hub::fuzz::join_token(data);
});
