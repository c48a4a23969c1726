//! When an RTSP connection must have sent its next request.
//!
//! A connection that is not playing must send each request within the request timeout of the
//! previous one (or of connecting). One that plays may stay silent, but a request it starts
//! must be complete within the timeout. Bytes that trickle in never move a deadline: it is per
//! request, not per read, so a client sending a byte every few seconds cannot hold a
//! connection.

use std::time::Duration;

use tokio::time::Instant;

/// The request deadline of one connection.
#[derive(Debug)]
pub(super) struct RequestClock {
    timeout: Duration,
    /// When the last complete request arrived (or the connection opened).
    last_request: Instant,
    /// Since when bytes of an incomplete request (or interleaved frame) wait in the buffer.
    partial_since: Option<Instant>,
}

impl RequestClock {
    pub(super) fn new(timeout: Duration, now: Instant) -> Self {
        Self { timeout, last_request: now, partial_since: None }
    }

    /// A complete request arrived at `now`.
    pub(super) fn request(&mut self, now: Instant) {
        self.last_request = now;
        self.partial_since = None;
    }

    /// After parsing what was read: whether bytes of something incomplete remain.
    pub(super) fn buffered(&mut self, pending: bool, now: Instant) {
        if !pending {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
    }

    /// When the connection is closed unless a request completes first.
    pub(super) fn deadline(&self, playing: bool) -> Option<Instant> {
        if playing { self.partial_since.map(|t| t + self.timeout) } else { Some(self.last_request + self.timeout) }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn trickled_bytes_do_not_move_the_deadline() {
        let t0 = Instant::now();
        let mut c = RequestClock::new(T, t0);
        for s in 1..9 {
            c.buffered(true, t0 + Duration::from_secs(s));
            assert_eq!(c.deadline(false), Some(t0 + T), "a byte at {s} s");
        }
    }

    #[test]
    fn each_complete_request_starts_a_new_deadline() {
        let t0 = Instant::now();
        let mut c = RequestClock::new(T, t0);
        c.request(t0 + Duration::from_secs(4));
        c.buffered(false, t0 + Duration::from_secs(4));
        assert_eq!(c.deadline(false), Some(t0 + Duration::from_secs(14)));
    }

    #[test]
    fn a_playing_connection_may_be_silent_but_must_finish_what_it_starts() {
        let t0 = Instant::now();
        let mut c = RequestClock::new(T, t0);
        c.request(t0);
        c.buffered(false, t0);
        assert_eq!(c.deadline(true), None, "silence is fine while playing");
        let started = t0 + Duration::from_secs(60);
        c.buffered(true, started);
        c.buffered(true, started + Duration::from_secs(5));
        assert_eq!(c.deadline(true), Some(started + T), "from the first byte of the request");
        c.request(started + Duration::from_secs(6));
        c.buffered(false, started + Duration::from_secs(6));
        assert_eq!(c.deadline(true), None);
    }
}
