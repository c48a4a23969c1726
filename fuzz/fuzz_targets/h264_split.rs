//! Fuzzes the H.264 access-unit splitter and the SEI reader with arbitrary byte streams.
#![no_main]

use mediamesh_media::h264::{AccessUnitSplitter, sei::read_stamp};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut splitter = AccessUnitSplitter::new(4096);
    let mut out = Vec::new();
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let _ = splitter.push(&data[..cut], &mut out);
    let _ = splitter.push(&data[cut..], &mut out);
    let _ = splitter.flush(&mut out);
    for au in &out {
        assert!(au.data.len() <= 4096);
        let _ = read_stamp(&au.data);
    }
});
