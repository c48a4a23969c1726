//! The tunnel codec: encoding and decoding a frame message (a 10 KB P-frame and a 60 KB
//! keyframe of a 2 Mbit/s 720p stream). `cargo bench -p mediamesh-tunnel`.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mediamesh_media::{Frame, FrameFlags};
use mediamesh_tunnel::wire::{Limits, Message, StreamDecoder, encode};

fn frame(len: usize) -> Message {
    Message::Frame(Frame {
        track: 0,
        flags: FrameFlags::keyframe(len > 20_000),
        seq: 12_345,
        pts: 1_234_567,
        dts: 1_234_567,
        capture_us: 1_700_000_000_000_000,
        payload: Bytes::from(vec![0x5a; len]),
    })
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("tunnel_frame");
    for len in [10_000usize, 60_000] {
        let msg = frame(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("encode", len), &msg, |b, msg| {
            let mut out = BytesMut::with_capacity(len + 64);
            b.iter(|| {
                out.clear();
                encode(msg, &mut out);
                std::hint::black_box(out.len())
            });
        });
        let mut wire = BytesMut::new();
        encode(&msg, &mut wire);
        let wire = wire.freeze();
        g.bench_with_input(BenchmarkId::new("decode", len), &wire, |b, wire| {
            let mut dec = StreamDecoder::new(Limits::default());
            b.iter(|| {
                let mut buf = BytesMut::from(&wire[..]);
                std::hint::black_box(dec.decode(&mut buf).ok().flatten())
            });
        });
    }
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
