//! The fan-out step: one frame pushed to a stream's log (and packaged once by the WebSocket
//! packager), then every viewer reads it and builds
//! its vectored write (shared prefix and payload, no copy), written to a sink. The time per
//! viewer is the hub's own per-viewer cost, without the kernel. `cargo bench -p mediamesh-hub`.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::io::{IoSlice, Write};
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mediamesh_hub::egress::ws::format::frame_slices;
use mediamesh_hub::egress::ws::packager::{WsFormat, WsFrame};
use mediamesh_hub::session::StreamKey;
use mediamesh_hub::session::log::{FrameLog, HeaderEntry, LogConfig, OutageTimeline, Packaged, PerFrame};
use mediamesh_media::{Frame, FrameFlags, StreamHeader, TrackInfo};

fn fanout(c: &mut Criterion) {
    // `fanout_ws_frame`: what the hub does, a slice vector allocated per viewer per frame;
    // `fanout_ws_frame_recycled`: each viewer reusing its own vector instead, for comparison.
    for (name, recycled) in [("fanout_ws_frame", false), ("fanout_ws_frame_recycled", true)] {
        group(c, name, recycled);
    }
}

/// Empties a vector of slices and hands its allocation on with a new lifetime (collected in
/// place: `IoSlice`s of any lifetime have one layout).
fn recycle<'b>(mut v: Vec<IoSlice<'_>>) -> Vec<IoSlice<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

fn group(c: &mut Criterion, name: &str, recycled: bool) {
    let mut g = c.benchmark_group(name);
    for viewers in [10usize, 100, 1000] {
        let log = Arc::new(FrameLog::new(LogConfig {
            max_frames: 256,
            max_bytes: 64 << 20,
            viewer_max_lag_bytes: 8 << 20,
            viewer_max_lag_us: 10_000_000,
            timeline: OutageTimeline::WallClock,
        }));
        let sps = Bytes::from_static(
            b"\x67\x42\xc0\x0d\xda\x05\x07\xec\x04\x40\x00\x00\x03\x00\x40\x00\x00\x0c\x83\xc5\x0a\xa8",
        );
        let header = StreamHeader { tracks: vec![TrackInfo::h264(0, sps, Bytes::from_static(b"\x68\xce\x3c\x80"))] };
        // The SPS is a real one (the frame log's own tests use it), so the header validates.
        log.set_header(header).expect("valid header");
        let payload = Bytes::from(vec![0x5au8; 10_000]);
        let ws = log.attach(|| PerFrame::new(WsFormat::new(StreamKey::new("node", "cam"))));
        let mut cursors: Vec<_> = (0..viewers).map(|_| log.subscribe()).collect();
        let mut headers: Vec<Option<Arc<HeaderEntry>>> = vec![None; viewers];
        let mut batch: Vec<Arc<Packaged<WsFrame>>> = Vec::new();
        // Each viewer keeps its slice vector, as the hub's writers do.
        let mut stores: Vec<Vec<IoSlice<'static>>> = vec![Vec::new(); viewers];
        let mut seq = 0u64;
        g.throughput(Throughput::Elements(viewers as u64));
        g.bench_function(BenchmarkId::from_parameter(viewers), |b| {
            b.iter(|| {
                let frame = Frame {
                    track: 0,
                    flags: FrameFlags::keyframe(seq.is_multiple_of(50)),
                    seq,
                    pts: seq as i64 * 3_600,
                    dts: seq as i64 * 3_600,
                    capture_us: seq,
                    payload: payload.clone(),
                };
                seq += 1;
                let _ = log.push(frame, seq);
                let mut sink = std::io::sink();
                for ((cursor, header), store) in cursors.iter_mut().zip(&mut headers).zip(&mut stores) {
                    batch.clear();
                    log.read_packaged(&ws, cursor, 1 << 20, &mut batch);
                    if recycled {
                        let mut slices = recycle(std::mem::take(store));
                        frame_slices(&batch, header, &mut slices);
                        let _ = sink.write_vectored(&slices);
                        *store = recycle(slices);
                    } else {
                        let mut slices = Vec::with_capacity(2 * batch.len() + 4);
                        frame_slices(&batch, header, &mut slices);
                        let _ = sink.write_vectored(&slices);
                    }
                }
            });
        });
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
