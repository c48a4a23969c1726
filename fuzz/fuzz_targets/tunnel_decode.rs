//! Fuzzes the tunnel decoder: one WebSocket message, and a byte stream split at every point;
//! whatever decodes must re-encode to the same bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mediamesh_tunnel::fuzz::decode_any(data);
});
