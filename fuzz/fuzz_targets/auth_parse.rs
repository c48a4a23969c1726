//! Fuzzes the authentication parsers: `Authorization` headers, `?token=`, permissions, JWT headers
//! and JWKS documents; the same entry point runs in the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mediamesh_auth::fuzz::auth_parse(data);
});
