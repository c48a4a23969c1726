//! Fuzzes what an MSE viewer sends (WebSocket frames, then its messages); the same entry point
//! runs in the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mediamesh_hub::fuzz::mse_client(data);
});
