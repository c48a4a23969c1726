//! The RTP packetiser: one H.264 access unit into RTP payloads (FU-A fragments sharing the
//! frame's buffer), once per frame for every RTSP viewer. `cargo bench -p mediamesh-media`.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mediamesh_media::rtp::{DEFAULT_MAX_PAYLOAD, packetize};
use mediamesh_media::{Frame, FrameFlags, TrackInfo};

fn access_unit(slice_len: usize) -> Bytes {
    let mut au = b"\x00\x00\x00\x01\x67\x42\xc0\x1f\xda\x01\x40\x16\xe8\x40\x00\x00\x00\x01\x68\xce\x3c\x80".to_vec();
    au.extend_from_slice(&[0, 0, 0, 1, 0x65]);
    au.extend((0..slice_len).map(|i| (i % 251) as u8 | 1));
    Bytes::from(au)
}

fn rtp(c: &mut Criterion) {
    let track = TrackInfo::h264(
        0,
        Bytes::from_static(b"\x67\x42\xc0\x1f\xda\x01\x40\x16\xe8\x40"),
        Bytes::from_static(b"\x68\xce\x3c\x80"),
    );
    let mut g = c.benchmark_group("rtp_packetize_h264");
    for len in [10_000usize, 60_000] {
        let frame = Frame {
            track: 0,
            flags: FrameFlags::keyframe(true),
            seq: 1,
            pts: 90_000,
            dts: 90_000,
            capture_us: 0,
            payload: access_unit(len),
        };
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &frame, |b, f| {
            b.iter(|| std::hint::black_box(packetize(&track, f, DEFAULT_MAX_PAYLOAD).len()));
        });
    }
    g.finish();
}

criterion_group!(benches, rtp);
criterion_main!(benches);
