//! A viewer attached to a stream session: its cursor, its place in the admission counts, the
//! policy for one that keeps falling behind, and why it left.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::admission::Admission;
use super::log::{self, Cursor};
use super::stats::ViewerStats;
use super::{Session, lock};

/// A viewer resynchronised `max_resyncs` times within `window` cannot keep up with the stream
/// (its link is slower than the stream): it is disconnected, with that reason, rather than shown
/// a stutter of keyframes forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BehindPolicy {
    /// Resyncs allowed within `window` (the last one disconnects).
    pub max_resyncs: usize,
    /// The window.
    pub window: std::time::Duration,
}

impl BehindPolicy {
    /// Records a resync at `now` in `recent`; `Some(reason)` if the viewer must go.
    pub fn on_resync(&self, recent: &mut std::collections::VecDeque<Instant>, now: Instant) -> Option<String> {
        if self.max_resyncs == 0 {
            return None;
        }
        while recent.front().is_some_and(|t| now.saturating_duration_since(*t) > self.window) {
            recent.pop_front();
        }
        recent.push_back(now);
        (recent.len() >= self.max_resyncs).then(|| {
            format!(
                "too slow for the stream: resynchronised {} times in {:.0} s",
                recent.len(),
                self.window.as_secs_f64()
            )
        })
    }
}

/// Why a viewer left, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViewerEnd {
    /// The client closed or reset the connection.
    Left,
    /// Writes made no progress for `viewerWriteTimeout`: the client stopped reading.
    Stalled,
    /// Resynchronised too often: the client cannot keep up ([`BehindPolicy`]).
    Behind,
    /// The stream ended (its source, the grace period, the hub shutting down).
    Ended,
    /// An RTSP client sent nothing for its session or request timeout.
    Timeout,
    /// An operator disconnected it.
    Kicked,
}

impl ViewerEnd {
    /// The metric label value.
    pub fn name(self) -> &'static str {
        match self {
            ViewerEnd::Left => "left",
            ViewerEnd::Stalled => "stalled",
            ViewerEnd::Behind => "behind",
            ViewerEnd::Ended => "ended",
            ViewerEnd::Timeout => "timeout",
            ViewerEnd::Kicked => "kicked",
        }
    }

    /// The end a failed write means.
    pub fn of_write_error(e: &std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::TimedOut { ViewerEnd::Stalled } else { ViewerEnd::Left }
    }
}

/// A viewer attached to a session. Dropping it leaves the session.
#[derive(Debug)]
pub struct Viewer {
    /// The session.
    pub session: Arc<Session>,
    /// Where it is in the log.
    pub cursor: Cursor,
    /// Its counters.
    pub stats: Arc<ViewerStats>,
    /// Its recent resyncs, for the [`BehindPolicy`].
    pub(super) resyncs: std::collections::VecDeque<Instant>,
    /// Why it is leaving, once known.
    pub(super) end: Option<ViewerEnd>,
    /// Its place in the viewer counts, given back when it goes.
    pub(super) _admitted: Admitted,
}

/// A viewer's place in the counts of [`Admission`]; dropping it gives the place back.
#[derive(Debug)]
pub(super) struct Admitted {
    pub(super) admission: Arc<Mutex<Admission>>,
    pub(super) address: std::net::IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        lock(&self.admission).left(self.address);
    }
}

impl Viewer {
    /// Accounts a read from the log: the cursor's position, frames skipped to resync, and the
    /// payload bytes now waiting to be written. `Err` is why the viewer must go: it keeps
    /// falling behind ([`BehindPolicy`]).
    pub fn account_read(&mut self, status: &log::ReadStatus, pending_bytes: u64) -> Result<(), String> {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.position.store(self.cursor.position(), Relaxed);
        self.stats.pending_bytes.store(pending_bytes, Relaxed);
        if status.skipped > 0 {
            self.stats.skipped.add(status.skipped);
            self.stats.resyncs.add(1);
            self.session.stats.viewer_skipped.add(status.skipped);
            tracing::debug!(stream = %self.session.key, viewer = self.stats.id, skipped = status.skipped, "viewer resynchronised at a keyframe");
            if let Some(reason) = self.session.behind.on_resync(&mut self.resyncs, Instant::now()) {
                self.end = Some(ViewerEnd::Behind);
                return Err(reason);
            }
        }
        Ok(())
    }

    /// Records why the viewer is leaving (counted when it drops); the first reason given wins.
    pub fn set_end(&mut self, end: ViewerEnd) {
        self.end.get_or_insert(end);
    }

    /// Accounts frames written to the viewer.
    pub fn account_sent(&self, frames: u64, bytes: u64) {
        self.stats.pending_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
        // Only this viewer's counters: the session's totals add them up when asked, so the
        // fan-out does not make every viewer update one shared, contended counter per frame.
        self.stats.frames.add(frames);
        self.stats.bytes.add(bytes);
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        // An egress that ends by closing its connection (RTSP) learns of the kick only as a
        // closed socket: the token says why.
        let end = self.end.unwrap_or(if self.stats.kick.is_cancelled() {
            ViewerEnd::Kicked
        } else if self.session.log.is_closed() {
            ViewerEnd::Ended
        } else {
            ViewerEnd::Left
        });
        self.session.counters.viewer_ended(self.stats.protocol, end);
        self.session.remove_viewer(self.stats.id);
    }
}
