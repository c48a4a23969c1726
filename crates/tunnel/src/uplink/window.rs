//! The send window of one uplink, without I/O or a clock: how many bytes may be on the path
//! (handed to the socket and not yet acknowledged by the hub's Feedback).
//!
//! The path gate ([`super::congestion`]) stops sending once a queue has built on the path. The
//! window keeps the edge from building a long one in the first place, and from emptying its
//! whole backlog into the socket the moment the gate reopens. A slow link then holds a few
//! frames rather than a second of them, and what waits does so in the outbox, where it ages and
//! can still be dropped codec-aware. A socket can not take a frame back, and a link that stalls
//! (a TCP retransmission timeout) delays everything in it.
//!
//! It is delay-based AIMD, as in LEDBAT (RFC 6817) and TCP Vegas:
//!
//! - **cut**: while the path delay exceeds its limit, the window falls to half of what is in
//!   flight (never below [`MIN_WINDOW`]), at most once per base delay plus limit, so one queue
//!   is answered by one cut;
//! - **growth**: when Feedback acknowledges bytes while the path is clear and the window was at
//!   least half used, it grows by half of what was acknowledged (at most 1.5 times per
//!   acknowledgement), up to [`MAX_WINDOW`]. An uplink that does not use its window (its stream
//!   is slower than its link) does not grow it, as RFC 7661 asks of TCP;
//! - one frame may always go when nothing is in flight, however large it is.

use std::time::{Duration, Instant};

/// The window of a new data tunnel: large enough not to limit a camera on a good link.
pub const INITIAL_WINDOW: usize = 256 * 1024;
/// The smallest window a cut leaves.
pub const MIN_WINDOW: usize = 4 * 1024;
/// The largest window (the outbox's default byte bound).
pub const MAX_WINDOW: usize = 8 * 1024 * 1024;

/// Bytes one uplink may have on the path.
#[derive(Debug)]
pub struct SendWindow {
    bytes: usize,
    last_cut: Option<Instant>,
    /// Times the window was cut.
    pub cuts: u64,
}

impl Default for SendWindow {
    fn default() -> Self {
        Self { bytes: INITIAL_WINDOW, last_cut: None, cuts: 0 }
    }
}

impl SendWindow {
    /// The window, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a frame of `next` bytes may go with `in_flight` bytes on the path.
    pub fn allows(&self, in_flight: usize, next: usize) -> bool {
        in_flight == 0 || in_flight + next <= self.bytes
    }

    /// The path delay is `delay` over its `base` at `now`, with `in_flight` bytes on the path;
    /// above `limit` the window is cut.
    pub fn on_delay(&mut self, now: Instant, delay: Duration, limit: Duration, base: Duration, in_flight: usize) {
        if delay <= limit || self.last_cut.is_some_and(|t| now.saturating_duration_since(t) < base + limit) {
            return;
        }
        self.bytes = (self.bytes.min(in_flight) / 2).max(MIN_WINDOW);
        self.last_cut = Some(now);
        self.cuts += 1;
    }

    /// Feedback acknowledged `acked` bytes out of `in_flight` (counted before it); `clear` when
    /// the path delay is below the level at which the link counts as clear.
    pub fn on_ack(&mut self, acked: usize, in_flight: usize, clear: bool) {
        if clear && in_flight.saturating_mul(2) >= self.bytes {
            self.bytes = (self.bytes + acked / 2).min(MAX_WINDOW);
        }
    }

    /// A new tunnel starts with the initial window.
    pub fn reset(&mut self) {
        *self = Self { cuts: self.cuts, ..Self::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const LIMIT: Duration = Duration::from_millis(150);

    #[test]
    fn a_queue_on_the_path_halves_what_is_in_flight_once_per_round() {
        let t0 = Instant::now();
        let mut w = SendWindow::default();
        assert!(w.allows(200 * 1024, 50 * 1024) && !w.allows(200 * 1024, 60 * 1024));
        // Below the limit: nothing happens.
        w.on_delay(t0, 100 * MS, LIMIT, 20 * MS, 30_000);
        assert_eq!(w.bytes(), INITIAL_WINDOW);
        // Above it: half of what is in flight.
        w.on_delay(t0, 200 * MS, LIMIT, 20 * MS, 30_000);
        assert_eq!((w.bytes(), w.cuts), (15_000, 1));
        // The same queue, seen again within base + limit, is not cut for twice.
        w.on_delay(t0 + 169 * MS, 300 * MS, LIMIT, 20 * MS, 14_000);
        assert_eq!(w.bytes(), 15_000);
        w.on_delay(t0 + 170 * MS, 300 * MS, LIMIT, 20 * MS, 14_000);
        assert_eq!((w.bytes(), w.cuts), (7_000, 2));
        // Never below the floor.
        w.on_delay(t0 + 400 * MS, 300 * MS, LIMIT, 20 * MS, 1_000);
        assert_eq!(w.bytes(), MIN_WINDOW);
        // One frame may go when nothing is in flight, however large; a second may not.
        assert!(w.allows(0, 50_000));
        assert!(!w.allows(1_000, 3_500));
        assert!(w.allows(1_000, 3_000));
    }

    #[test]
    fn grows_only_while_clear_and_used() {
        let mut w = SendWindow::default();
        let t0 = Instant::now();
        w.on_delay(t0, 400 * MS, LIMIT, MS, 20_000);
        assert_eq!(w.bytes(), 10_000);
        // Clear and at least half used: grows by half of what was acknowledged.
        w.on_ack(4_000, 6_000, true);
        assert_eq!(w.bytes(), 12_000);
        // Not clear: holds.
        w.on_ack(4_000, 12_000, false);
        assert_eq!(w.bytes(), 12_000);
        // Clear, but the stream does not use the window: holds.
        w.on_ack(2_000, 5_000, true);
        assert_eq!(w.bytes(), 12_000);
        // Growth stops at the cap.
        for _ in 0..1000 {
            w.on_ack(MAX_WINDOW, MAX_WINDOW, true);
        }
        assert_eq!(w.bytes(), MAX_WINDOW);
        w.reset();
        assert_eq!((w.bytes(), w.cuts), (INITIAL_WINDOW, 1));
    }
}
