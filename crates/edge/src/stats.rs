//! Counters of the edge agent, readable while it runs (its `/metrics`, tests, logs): the
//! edge's own ([`EdgeStats`]) and each stream's ([`StreamStats`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

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
    /// Why the last attempt to reach the hub failed, while not connected.
    pub last_dial_error: Mutex<Option<String>>,
    /// Each stream's counters, by name (created when the stream first starts).
    streams: Mutex<BTreeMap<String, Arc<StreamStats>>>,
}

/// What a stream's source is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceState {
    /// Not wanted.
    Idle = 0,
    /// Started; no frame yet.
    Starting = 1,
    /// Producing frames.
    Running = 2,
    /// Its last start failed; the next waits ([`crate::starts`]).
    Failed = 3,
}

impl SourceState {
    /// Every state, in metric order.
    pub const ALL: [SourceState; 4] =
        [SourceState::Idle, SourceState::Starting, SourceState::Running, SourceState::Failed];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            SourceState::Idle => "idle",
            SourceState::Starting => "starting",
            SourceState::Running => "running",
            SourceState::Failed => "failed",
        }
    }
}

/// Counters of one stream, over every session of it.
#[derive(Debug, Default)]
pub struct StreamStats {
    state: AtomicU8,
    /// Frames the source produced.
    pub frames_in: AtomicU64,
    /// Payload bytes the source produced.
    pub bytes_in: AtomicU64,
    /// Frames sent on the data tunnel.
    pub frames_out: AtomicU64,
    /// Payload bytes sent on the data tunnel.
    pub bytes_out: AtomicU64,
    /// Frames dropped, by reason ([`DropReason::ALL`] order).
    drops: [AtomicU64; DropReason::ALL.len()],
    /// Age of the oldest frame waiting in the uplink's queue, µs.
    pub queue_delay_us: AtomicU64,
    /// Smoothed round trip of the data tunnel, µs (0: none).
    pub rtt_us: AtomicU64,
    /// Data tunnels opened.
    pub tunnel_connects: AtomicU64,
    /// Data tunnels lost while the stream was wanted (each is redialled).
    pub tunnel_lost: AtomicU64,
    /// Starts of the source.
    pub starts: AtomicU64,
    /// Starts that failed.
    pub start_failures: AtomicU64,
}

impl StreamStats {
    /// The source's state.
    pub fn state(&self) -> SourceState {
        let v = self.state.load(Relaxed);
        SourceState::ALL.into_iter().find(|s| *s as u8 == v).unwrap_or(SourceState::Idle)
    }

    /// Sets the source's state.
    pub fn set_state(&self, s: SourceState) {
        self.state.store(s as u8, Relaxed);
    }

    /// Counts `n` frames dropped for `reason`.
    pub fn add_drop(&self, reason: DropReason, n: u64) {
        self.drops[reason.index()].fetch_add(n, Relaxed);
    }

    /// Frames dropped for `reason` so far.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Relaxed)
    }
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

    /// The counters of `stream` (created on first use; bounded by the catalog).
    pub fn stream(&self, stream: &str) -> Arc<StreamStats> {
        let mut streams = self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        streams.entry(stream.to_owned()).or_default().clone()
    }

    /// Every stream's counters, by name.
    pub fn streams(&self) -> Vec<(String, Arc<StreamStats>)> {
        let streams = self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        streams.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
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
