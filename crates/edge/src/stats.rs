//! Counters of the edge agent, readable while it runs (API, tests, logs).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use mediamesh_tunnel::wire::DropReason;

/// Counters of one edge agent.
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Control channels established (1 + reconnects).
    pub control_connects: AtomicU64,
    /// Whether the control channel is up.
    pub connected: AtomicBool,
    /// AddVideo messages received.
    pub add_video: AtomicU64,
    /// RemoveVideo messages received.
    pub remove_video: AtomicU64,
    /// Sources started (a restarted ffmpeg counts again).
    pub sources_started: AtomicU64,
    /// Sources stopped and reaped.
    pub sources_stopped: AtomicU64,
    /// Uplinks (source + data tunnel) currently running.
    pub uplinks_active: AtomicU64,
    /// Frames sent on data tunnels.
    pub frames_sent: AtomicU64,
    /// Payload bytes sent on data tunnels.
    pub bytes_sent: AtomicU64,
    /// Data tunnels established (first connections and reconnects).
    pub data_connects: AtomicU64,
    /// Data tunnels lost while their stream was wanted (each is redialled).
    pub data_lost: AtomicU64,
    /// Frames dropped, by reason ([`DropReason::ALL`] order).
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl EdgeStats {
    /// Counts `n` frames dropped for `reason`.
    pub fn add_drop(&self, reason: DropReason, n: u64) {
        self.drops[reason.index()].fetch_add(n, Relaxed);
    }

    /// Frames dropped for `reason` so far.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Relaxed)
    }

    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}
