//! Test harness for mediamesh (dev only): real hubs and edges in-process on port 0 with real
//! mutual TLS, viewers, a tiny HTTP client, and helpers to wait on conditions without sleeping
//! blindly.
//!
//! ```no_run
//! # async fn f() {
//! let fx = mediamesh_testkit::Fixture::builder().start().await;
//! let mut viewer = fx.viewer("edge-1", "cam1").await.unwrap();
//! # }
//! ```

#![forbid(unsafe_code)]
// Test-only code: a failed fixture step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod camera;
mod fixture;
pub mod http;
pub mod impair;
mod pki;
pub mod rtsp_player;

use std::time::{Duration, Instant};

pub use fixture::{Fixture, FixtureBuilder, test_pattern};
use mediamesh_hub::client::{ViewerClient, ViewerItem};
use mediamesh_hub::egress::ws_format::ViewerFrame;
pub use pki::TestPki;

/// Installs a log subscriber writing to the test's captured output (once per process).
pub fn init_tracing() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads until `n` frames arrived (panics on error, end or a 10 s silence); returns them.
pub async fn read_frames(v: &mut ViewerClient, n: usize) -> Vec<ViewerFrame> {
    let mut frames = Vec::with_capacity(n);
    while frames.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), v.next()).await {
            Err(_) => panic!("no frame within 10 s (after {} frames)", frames.len()),
            Ok(Err(e)) => panic!("viewer error after {} frames: {e}", frames.len()),
            Ok(Ok(None)) => panic!("viewer closed after {} frames", frames.len()),
            Ok(Ok(Some(ViewerItem::Frame(f)))) => frames.push(f),
            Ok(Ok(Some(ViewerItem::End(r)))) => panic!("stream ended after {} frames: {r}", frames.len()),
            Ok(Ok(Some(ViewerItem::Header(_) | ViewerItem::Skip(_)))) => {}
        }
    }
    frames
}

/// The test-pattern counters of frames, panicking if one has none.
pub fn counters(frames: &[ViewerFrame]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| mediamesh_media::h264::sei::read_stamp(&f.payload).expect("test-pattern stamp").counter)
        .collect()
}

/// Panics unless the counters increase by exactly one each frame.
pub fn assert_consecutive(counters: &[u64]) {
    for w in counters.windows(2) {
        assert_eq!(w[1], w[0] + 1, "counter gap or reorder in {counters:?}");
    }
}

/// Microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
