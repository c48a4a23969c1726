//! Congestion detection for one uplink, without I/O or a clock: how late frames are, and so how
//! hard to shed.
//!
//! Two delays are measured:
//!
//! - **queue delay**: how long the oldest frame has waited in the uplink's own queue (the
//!   socket would not take more, so frames wait here, where they can still be dropped wisely);
//! - **path delay**: how much longer than usual frames take to be acknowledged by the hub's
//!   Feedback. That is queueing beyond our socket (a modem, a router, a proxy buffer). The
//!   base is the smallest acknowledgement delay seen in the last 10 s, as LEDBAT does.
//!
//! The larger of the two sets the level. It rises at once; it falls one step after the delay
//! has stayed low for `clear_after`, so a link that recovers is trusted gradually.
//!
//! The path delay also gates sending: while it exceeds `path_delay_limit`, nothing more is
//! handed to the socket. Frames then wait (and age, and are dropped) at the edge instead of in
//! a queue on the path that nobody can drop from, so what does arrive is fresh. How much may
//! be on the path at once is the send window's business ([`super::window`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::CongestionLevel;

/// Thresholds of the shedding levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CongestionConfig {
    /// Delay at which non-reference frames are dropped.
    pub non_reference_at: Duration,
    /// Delay at which only keyframes are sent (whole groups of pictures are dropped).
    pub gop_at: Duration,
    /// Delay below which the link counts as clear.
    pub clear_below: Duration,
    /// How long the delay must stay clear before the level steps down.
    pub clear_after: Duration,
    /// A frame that waited longer than this is not sent at all.
    pub max_frame_age: Duration,
    /// Path delay above which nothing more is sent until it falls.
    pub path_delay_limit: Duration,
}

impl Default for CongestionConfig {
    fn default() -> Self {
        Self {
            non_reference_at: Duration::from_millis(200),
            gop_at: Duration::from_millis(500),
            clear_below: Duration::from_millis(100),
            clear_after: Duration::from_secs(2),
            max_frame_age: Duration::from_secs(1),
            path_delay_limit: Duration::from_millis(150),
        }
    }
}

/// Window of the path delay's base (the minimum acknowledgement delay).
const BASE_WINDOW: Duration = Duration::from_secs(10);
/// Frames remembered for matching Feedback (at 60 fps, 8 s).
const MAX_SENT: usize = 512;

/// Acknowledgement delays from the hub's Feedback, and the bytes still on the path.
#[derive(Debug, Default)]
pub struct PathEstimator {
    /// (seq, when it was handed to the socket, payload bytes), oldest first.
    sent: VecDeque<(u64, Instant, usize)>,
    /// Sum of the bytes in `sent`.
    in_flight: usize,
    /// (when measured, delay) minima, for the windowed base.
    base: VecDeque<(Instant, Duration)>,
    latest: Option<Duration>,
}

impl PathEstimator {
    /// A frame of `bytes` went to the socket at `now`.
    pub fn on_sent(&mut self, seq: u64, bytes: usize, now: Instant) {
        if self.sent.len() == MAX_SENT
            && let Some((_, _, b)) = self.sent.pop_front()
        {
            self.in_flight -= b;
        }
        self.sent.push_back((seq, now, bytes));
        self.in_flight += bytes;
    }

    /// Bytes sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The smallest acknowledgement delay of the window: the path's delay when nothing queues.
    pub fn base(&self) -> Duration {
        self.base.front().map_or(Duration::ZERO, |(_, d)| *d)
    }

    /// The hub has received everything up to `last_seq`, as of `now`; returns the bytes this
    /// acknowledged.
    pub fn on_feedback(&mut self, last_seq: u64, now: Instant) -> usize {
        let mut acked = None;
        let mut bytes = 0;
        while let Some(&(seq, at, b)) = self.sent.front() {
            if seq > last_seq {
                break;
            }
            acked = Some(at);
            bytes += b;
            self.sent.pop_front();
        }
        self.in_flight -= bytes;
        let Some(at) = acked else { return 0 };
        let sample = now.saturating_duration_since(at);
        self.latest = Some(sample);
        // Monotonic deque of minima over the window.
        while self.base.back().is_some_and(|(_, d)| *d >= sample) {
            self.base.pop_back();
        }
        self.base.push_back((now, sample));
        while self.base.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > BASE_WINDOW) {
            self.base.pop_front();
        }
        bytes
    }

    /// How much longer than the base frames take now; also counts frames sent long ago and
    /// still not acknowledged (a path that stopped delivering shows up before any Feedback).
    /// Once everything sent has been acknowledged, nothing is queued on the path: zero.
    pub fn excess(&self, now: Instant) -> Duration {
        if self.sent.is_empty() {
            return Duration::ZERO;
        }
        let base = self.base();
        let latest = self.latest.map_or(Duration::ZERO, |d| d.saturating_sub(base));
        let oldest_unacked = self
            .sent
            .front()
            .map_or(Duration::ZERO, |(_, at, _)| now.saturating_duration_since(*at).saturating_sub(base));
        // The oldest unacknowledged frame only counts once it is clearly late: Feedback comes
        // every 50 ms while frames flow.
        let unacked = oldest_unacked.saturating_sub(Duration::from_millis(100));
        latest.max(unacked)
    }

    /// Forgets everything (a new tunnel).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The shedding level of one uplink.
#[derive(Debug)]
pub struct Congestion {
    config: CongestionConfig,
    level: CongestionLevel,
    /// Since when the delay has been clear, while above `Clear`.
    clear_since: Option<Instant>,
    /// Times the level rose.
    pub escalations: u64,
}

impl Congestion {
    /// A clear uplink.
    pub fn new(config: CongestionConfig) -> Self {
        Self { config, level: CongestionLevel::Clear, clear_since: None, escalations: 0 }
    }

    /// The configuration.
    pub fn config(&self) -> &CongestionConfig {
        &self.config
    }

    /// The current level.
    pub fn level(&self) -> CongestionLevel {
        self.level
    }

    /// Feeds the current delay (the larger of queue and path delay); returns the level.
    pub fn update(&mut self, now: Instant, delay: Duration) -> CongestionLevel {
        let c = &self.config;
        let wanted = if delay >= c.gop_at {
            CongestionLevel::DropGop
        } else if delay >= c.non_reference_at {
            CongestionLevel::DropNonReference
        } else {
            CongestionLevel::Clear
        };
        if rank(wanted) > rank(self.level) {
            self.level = wanted;
            self.clear_since = None;
            self.escalations += 1;
            return self.level;
        }
        if delay >= c.clear_below {
            self.clear_since = None;
            return self.level;
        }
        match self.clear_since {
            None => self.clear_since = Some(now),
            Some(since) if now.saturating_duration_since(since) >= c.clear_after => {
                self.level = match self.level {
                    CongestionLevel::DropGop => CongestionLevel::DropNonReference,
                    _ => CongestionLevel::Clear,
                };
                self.clear_since = (self.level != CongestionLevel::Clear).then_some(now);
            }
            Some(_) => {}
        }
        self.level
    }

    /// Back to clear (a new tunnel starts without history).
    pub fn reset(&mut self) {
        self.level = CongestionLevel::Clear;
        self.clear_since = None;
    }
}

fn rank(l: CongestionLevel) -> u8 {
    l.to_u8()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rises_at_once_and_falls_one_step_per_clear_period() {
        let t0 = Instant::now();
        let mut c = Congestion::new(CongestionConfig::default());
        assert_eq!(c.update(t0, 50 * MS), CongestionLevel::Clear);
        assert_eq!(c.update(t0, 250 * MS), CongestionLevel::DropNonReference);
        assert_eq!(c.update(t0 + 10 * MS, 700 * MS), CongestionLevel::DropGop);
        // Between the thresholds: no change either way.
        assert_eq!(c.update(t0 + 20 * MS, 300 * MS), CongestionLevel::DropGop);
        // Clear, but not for long enough.
        assert_eq!(c.update(t0 + 1000 * MS, 50 * MS), CongestionLevel::DropGop);
        assert_eq!(c.update(t0 + 2500 * MS, 50 * MS), CongestionLevel::DropGop);
        assert_eq!(c.update(t0 + 3000 * MS, 50 * MS), CongestionLevel::DropNonReference);
        // A blip of delay restarts the clear period.
        assert_eq!(c.update(t0 + 3500 * MS, 150 * MS), CongestionLevel::DropNonReference);
        assert_eq!(c.update(t0 + 4000 * MS, 50 * MS), CongestionLevel::DropNonReference);
        assert_eq!(c.update(t0 + 5900 * MS, 50 * MS), CongestionLevel::DropNonReference);
        assert_eq!(c.update(t0 + 6000 * MS, 50 * MS), CongestionLevel::Clear);
        assert_eq!(c.escalations, 2);
    }

    #[test]
    fn path_delay_is_measured_above_the_base() {
        let t0 = Instant::now();
        let mut p = PathEstimator::default();
        // Frames every 40 ms, acknowledged 30 ms later: the base.
        for i in 0..10u64 {
            p.on_sent(i, 1000, t0 + i as u32 * 40 * MS);
            p.on_feedback(i, t0 + i as u32 * 40 * MS + 30 * MS);
        }
        assert_eq!(p.excess(t0 + 400 * MS), Duration::ZERO);
        // A queue builds: the next acknowledgements take 330 ms.
        for i in 10..15u64 {
            p.on_sent(i, 1000, t0 + i as u32 * 40 * MS);
        }
        p.on_feedback(12, t0 + 480 * MS + 330 * MS);
        assert_eq!(p.excess(t0 + 810 * MS), 300 * MS);
        // Everything acknowledged: the path is empty, whatever the last sample said.
        p.on_feedback(14, t0 + 900 * MS);
        assert_eq!(p.excess(t0 + 900 * MS), Duration::ZERO);
    }

    #[test]
    fn a_path_that_stops_acknowledging_counts_as_delay() {
        let t0 = Instant::now();
        let mut p = PathEstimator::default();
        p.on_sent(1, 1000, t0);
        p.on_feedback(1, t0 + 20 * MS);
        p.on_sent(2, 1000, t0 + 40 * MS);
        assert_eq!(p.excess(t0 + 100 * MS), Duration::ZERO, "not late yet");
        assert_eq!(p.excess(t0 + 1040 * MS), 880 * MS, "1 s unacknowledged, minus base and slack");
    }

    #[test]
    fn the_base_forgets_old_minima() {
        let t0 = Instant::now();
        let mut p = PathEstimator::default();
        p.on_sent(1, 1000, t0);
        p.on_feedback(1, t0 + 10 * MS);
        // The route changed: 100 ms is the new normal.
        for i in 2..300u64 {
            let at = t0 + i as u32 * 50 * MS;
            p.on_sent(i, 1000, at);
            p.on_feedback(i, at + 100 * MS);
        }
        assert_eq!(p.excess(t0 + 299 * 50 * MS + 100 * MS), Duration::ZERO);
    }
}
