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

pub mod browser;
pub mod camera;
pub mod etcd;
mod fixture;
pub mod http;
pub mod impair;
pub mod netlab;
pub mod observe;
mod pki;
pub mod process;
pub mod require;
pub mod rtsp_player;

use std::time::{Duration, Instant};

pub use fixture::{Fixture, FixtureBuilder, b_frame_camera, test_pattern};
use mediamesh_hub::client::{ViewerClient, ViewerItem};
use mediamesh_hub::egress::ws::format::ViewerFrame;
pub use pki::TestPki;

/// Installs a log subscriber writing to the test's captured output (once per process), and
/// keeping the last lines in memory for [`logged`].
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(filter))
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(|| CaptureWriter))
        .try_init();
}

/// The log lines kept for [`logged`] (the last 4 MiB).
static CAPTURED: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
const CAPTURE_LIMIT: usize = 4 << 20;

struct CaptureWriter;

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut c = CAPTURED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.push_str(&String::from_utf8_lossy(buf));
        if c.len() > CAPTURE_LIMIT {
            let cut = c.len() - CAPTURE_LIMIT / 2;
            let cut = (cut..c.len()).find(|i| c.is_char_boundary(*i)).unwrap_or(c.len());
            c.drain(..cut);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured log lines (of this test process) that contain every one of `needles`.
pub fn logged(needles: &[&str]) -> Vec<String> {
    let c = CAPTURED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    c.lines().filter(|l| needles.iter().all(|n| l.contains(n))).map(str::to_owned).collect()
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

/// Sends `signal` to process `pid` (no external `kill` program needed).
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
    nix::sys::signal::kill(pid, signal).expect("signal the process");
}

pub use nix::sys::signal::Signal;

/// Microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
