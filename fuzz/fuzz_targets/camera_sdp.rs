//! Fuzzes the SDP parser the edge runs on a camera's DESCRIBE answer; the same entry point runs in the property tests.
//! The edge contains a panic of that parser (its DESCRIBE runs in a task of its own), so the
//! panic hook libfuzzer-sys installs, which aborts, is replaced by a silent one: what this
//! target hunts is what no task boundary contains.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
        mediamesh_edge::fuzz::camera_sdp(data);
    }
);
