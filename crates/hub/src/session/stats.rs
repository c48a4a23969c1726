//! Counters of sessions and viewers, written on the media path with relaxed atomics and read by
//! the API.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// A rate over the last few whole seconds, fed with `now` by the caller.
#[derive(Debug)]
pub struct RateMeter {
    origin: Instant,
    /// (second since origin, frames, bytes) for the most recent seconds, oldest first.
    buckets: Mutex<[(u64, u64, u64); RateMeter::WINDOW + 1]>,
}

impl RateMeter {
    /// Seconds averaged over (the current, incomplete second is not counted).
    pub const WINDOW: usize = 4;

    /// A meter whose clock starts at `origin`.
    pub fn new(origin: Instant) -> Self {
        Self { origin, buckets: Mutex::new([(u64::MAX, 0, 0); Self::WINDOW + 1]) }
    }

    /// Records one frame of `bytes` at `now`.
    pub fn record(&self, now: Instant, bytes: usize) {
        let sec = now.saturating_duration_since(self.origin).as_secs();
        let mut b = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = &mut b[(sec % (Self::WINDOW as u64 + 1)) as usize];
        if slot.0 != sec {
            *slot = (sec, 0, 0);
        }
        slot.1 += 1;
        slot.2 += bytes as u64;
    }

    /// (frames per second, bits per second) over the complete seconds of the window.
    pub fn rates(&self, now: Instant) -> (f64, f64) {
        let elapsed = now.saturating_duration_since(self.origin);
        let sec = elapsed.as_secs();
        let complete = (sec as usize).min(Self::WINDOW);
        if complete == 0 {
            return (0.0, 0.0);
        }
        let b = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (frames, bytes) = b
            .iter()
            .filter(|(s, ..)| *s != u64::MAX && *s < sec && *s + complete as u64 >= sec)
            .fold((0, 0), |(f, by), (_, fr, bt)| (f + fr, by + bt));
        (frames as f64 / complete as f64, bytes as f64 * 8.0 / complete as f64)
    }
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Counters of one stream session.
#[derive(Debug)]
pub struct SessionStats {
    /// Frames received from the edge.
    pub frames_in: Counter,
    /// Payload bytes received from the edge.
    pub bytes_in: Counter,
    /// Frames the edge reports it dropped before sending (gaps in `seq`).
    pub edge_dropped: Counter,
    /// Frames delivered to viewers that have left (see [`Session::frames_out`](super::Session::frames_out)
    /// for the total).
    pub frames_out: Counter,
    /// Payload bytes delivered to viewers that have left (see
    /// [`Session::bytes_out`](super::Session::bytes_out) for the total).
    pub bytes_out: Counter,
    /// Frames viewers skipped to resynchronise (sum over viewers).
    pub viewer_skipped: Counter,
    /// Frames a new data tunnel sent before its first keyframe, dropped by the hub.
    pub resume_skipped: Counter,
    /// Data tunnels that attached (1 + reconnects).
    pub tunnel_connects: Counter,
    /// Keyframe requests sent to the upstream.
    pub keyframe_requests: Counter,
    /// Times the link to the edge was lost while the session ran.
    pub upstream_lost: Counter,
    /// Smoothed Ping/Pong round trip of the current data tunnel, microseconds (0 = none yet).
    pub tunnel_rtt_us: AtomicU64,
    /// The edge's latest report on its uplink.
    pub uplink: Mutex<Option<mediamesh_tunnel::wire::UplinkReport>>,
    /// Incoming rate.
    pub rate_in: RateMeter,
}

impl SessionStats {
    /// The edge's latest uplink report, if one arrived.
    pub fn uplink(&self) -> Option<mediamesh_tunnel::wire::UplinkReport> {
        self.uplink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Zeroed counters starting at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            frames_in: Counter::default(),
            bytes_in: Counter::default(),
            edge_dropped: Counter::default(),
            frames_out: Counter::default(),
            bytes_out: Counter::default(),
            viewer_skipped: Counter::default(),
            resume_skipped: Counter::default(),
            tunnel_connects: Counter::default(),
            keyframe_requests: Counter::default(),
            upstream_lost: Counter::default(),
            tunnel_rtt_us: AtomicU64::new(0),
            uplink: Mutex::new(None),
            rate_in: RateMeter::new(now),
        }
    }
}

/// Counters of one viewer.
#[derive(Debug)]
pub struct ViewerStats {
    /// Viewer id, unique in the hub.
    pub id: u64,
    /// Egress protocol (`"ws"`).
    pub protocol: &'static str,
    /// The viewer's address.
    pub remote: String,
    /// When it joined.
    pub joined: Instant,
    /// Frames written to it.
    pub frames: Counter,
    /// Payload bytes written to it.
    pub bytes: Counter,
    /// Frames it skipped to resynchronise.
    pub skipped: Counter,
    /// Times it was resynchronised.
    pub resyncs: Counter,
    /// Its cursor's position in the log (for lag reporting).
    pub position: AtomicU64,
    /// Payload bytes taken from the log and not yet written to its socket.
    pub pending_bytes: AtomicU64,
    /// Cancelled when an operator disconnects it (`DELETE /api/v1/viewers/{id}`).
    pub kick: tokio_util::sync::CancellationToken,
}

impl ViewerStats {
    /// Zeroed counters.
    pub fn new(id: u64, protocol: &'static str, remote: String, joined: Instant) -> Self {
        Self {
            id,
            protocol,
            remote,
            joined,
            frames: Counter::default(),
            bytes: Counter::default(),
            skipped: Counter::default(),
            resyncs: Counter::default(),
            position: AtomicU64::new(0),
            pending_bytes: AtomicU64::new(0),
            kick: tokio_util::sync::CancellationToken::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_over_complete_seconds() {
        let t0 = Instant::now();
        let m = RateMeter::new(t0);
        assert_eq!(m.rates(t0), (0.0, 0.0));
        for s in 0..10u64 {
            for f in 0..25u64 {
                m.record(t0 + Duration::from_secs(s) + Duration::from_millis(f * 40), 1000);
            }
        }
        let (fps, bps) = m.rates(t0 + Duration::from_millis(10_500));
        assert_eq!(fps, 25.0);
        assert_eq!(bps, 200_000.0);
        // Silence decays the rate.
        assert_eq!(m.rates(t0 + Duration::from_secs(30)), (0.0, 0.0));
    }
}
