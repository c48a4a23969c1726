//! Fuzzes the Annex-B access-unit splitter (H.264 and H.265) and the SEI reader with arbitrary
//! byte streams.
#![no_main]

use mediamesh_media::annexb::{AccessUnitSplitter, VideoCodec};
use mediamesh_media::h264::sei::read_stamp;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else { return };
    let codec = if first & 1 == 0 { VideoCodec::H264 } else { VideoCodec::H265 };
    let mut splitter = AccessUnitSplitter::new(codec, 4096);
    let mut out = Vec::new();
    let cut = usize::from(first >> 1).min(data.len());
    let _ = splitter.push(&data[..cut], &mut out);
    let _ = splitter.push(&data[cut..], &mut out);
    let _ = splitter.flush(&mut out);
    for au in &out {
        assert!(au.data.len() <= 4096);
        let _ = read_stamp(&au.data);
    }
});
