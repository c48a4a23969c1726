//! Heartbeat: when to send Ping, RTT from Pong, and when the peer counts as dead.
//!
//! Driven like str0m's `Rtc`: feed it what arrived with [`Heartbeat::on_receive`] /
//! [`Heartbeat::on_pong`], ask [`Heartbeat::poll`] what to do, and sleep until
//! [`Heartbeat::next_deadline`]. It never reads a clock; every call takes `now`.

use std::time::{Duration, Instant};

/// Heartbeat timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// How often to send Ping.
    pub interval: Duration,
    /// Silence (nothing received at all) after which the peer is dead.
    pub timeout: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self { interval: Duration::from_secs(1), timeout: Duration::from_secs(3) }
    }
}

/// What the driver should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatAction {
    /// Nothing until [`Heartbeat::next_deadline`].
    Wait,
    /// Send `Ping { id }`.
    SendPing {
        /// The id to put in the Ping.
        id: u64,
    },
    /// Nothing was received for longer than the timeout: close the connection.
    Dead {
        /// How long the peer has been silent.
        silent_for: Duration,
    },
}

/// Heartbeat state of one connection.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    config: HeartbeatConfig,
    last_received: Instant,
    next_ping_at: Instant,
    outstanding: Option<(u64, Instant)>,
    next_id: u64,
    srtt: Option<Duration>,
    latest_rtt: Option<Duration>,
}

impl Heartbeat {
    /// A heartbeat for a connection that was established at `now`.
    pub fn new(now: Instant, config: HeartbeatConfig) -> Self {
        Self {
            config,
            last_received: now,
            next_ping_at: now + config.interval,
            outstanding: None,
            next_id: 1,
            srtt: None,
            latest_rtt: None,
        }
    }

    /// Anything arrived from the peer: it is alive.
    pub fn on_receive(&mut self, now: Instant) {
        self.last_received = self.last_received.max(now);
    }

    /// The peer sent a Ping at `now` (and is answered): it is alive and checks the link both
    /// ways, so this side's own Ping can wait an interval. A side that calls this pings only
    /// when the peer stops (an edge's control channel: ten thousand idle edges cost a hub one
    /// Ping and one Pong each a second instead of two of each); it then measures no round trip.
    pub fn on_peer_ping(&mut self, now: Instant) {
        self.on_receive(now);
        self.next_ping_at = self.next_ping_at.max(now + self.config.interval);
    }

    /// A Pong arrived; returns the RTT sample if it answers the outstanding Ping.
    pub fn on_pong(&mut self, now: Instant, id: u64) -> Option<Duration> {
        self.on_receive(now);
        match self.outstanding {
            Some((sent_id, sent_at)) if sent_id == id => {
                self.outstanding = None;
                let sample = now.saturating_duration_since(sent_at);
                self.latest_rtt = Some(sample);
                // RFC 6298 smoothing: srtt = 7/8 srtt + 1/8 sample.
                self.srtt = Some(match self.srtt {
                    None => sample,
                    Some(s) => (s * 7 + sample) / 8,
                });
                Some(sample)
            }
            _ => None,
        }
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> HeartbeatAction {
        let silent_for = now.saturating_duration_since(self.last_received);
        if silent_for >= self.config.timeout {
            return HeartbeatAction::Dead { silent_for };
        }
        if now >= self.next_ping_at {
            let id = self.next_id;
            self.next_id += 1;
            self.outstanding = Some((id, now));
            self.next_ping_at = now + self.config.interval;
            return HeartbeatAction::SendPing { id };
        }
        HeartbeatAction::Wait
    }

    /// When [`Heartbeat::poll`] next has something to say.
    pub fn next_deadline(&self) -> Instant {
        self.next_ping_at.min(self.last_received + self.config.timeout)
    }

    /// Smoothed round-trip time, once a Pong has been seen.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The most recent round-trip sample.
    pub fn latest_rtt(&self) -> Option<Duration> {
        self.latest_rtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_side_that_hears_the_peers_pings_waits_with_its_own() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, HeartbeatConfig { interval: 1000 * MS, timeout: 3000 * MS });
        // The peer pings every second, a little before this side would.
        for s in 0..5u32 {
            hb.on_peer_ping(t0 + 900 * MS + 1000 * MS * s);
            assert_eq!(hb.poll(t0 + 1000 * MS * (s + 1)), HeartbeatAction::Wait, "second {s}");
        }
        // The peer falls silent: this side pings an interval after its last Ping.
        assert_eq!(hb.next_deadline(), t0 + 5900 * MS);
        assert!(matches!(hb.poll(t0 + 5900 * MS), HeartbeatAction::SendPing { .. }));
        assert!(matches!(hb.poll(t0 + 7900 * MS), HeartbeatAction::Dead { .. }));
    }

    #[test]
    fn pings_on_interval_and_measures_rtt() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, HeartbeatConfig { interval: 1000 * MS, timeout: 3000 * MS });
        assert_eq!(hb.poll(t0), HeartbeatAction::Wait);
        assert_eq!(hb.next_deadline(), t0 + 1000 * MS);
        let HeartbeatAction::SendPing { id } = hb.poll(t0 + 1000 * MS) else { panic!() };
        assert_eq!(hb.on_pong(t0 + 1040 * MS, id + 1), None, "a stale id gives no sample");
        assert_eq!(hb.on_pong(t0 + 1050 * MS, id), Some(50 * MS));
        assert_eq!(hb.srtt(), Some(50 * MS));
        let HeartbeatAction::SendPing { id: id2 } = hb.poll(t0 + 2000 * MS) else { panic!() };
        hb.on_pong(t0 + 2130 * MS, id2);
        assert_eq!(hb.latest_rtt(), Some(130 * MS));
        assert_eq!(hb.srtt(), Some((50 * MS * 7 + 130 * MS) / 8));
    }

    #[test]
    fn silence_is_death_within_the_timeout() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, HeartbeatConfig { interval: 1000 * MS, timeout: 3000 * MS });
        let mut pings = 0;
        let now = loop {
            let now = hb.next_deadline();
            match hb.poll(now) {
                HeartbeatAction::SendPing { .. } => pings += 1,
                HeartbeatAction::Dead { silent_for } => {
                    assert_eq!(silent_for, 3000 * MS);
                    break now;
                }
                HeartbeatAction::Wait => {}
            }
        };
        assert_eq!(now, t0 + 3000 * MS);
        assert_eq!(pings, 2);
    }

    #[test]
    fn traffic_keeps_it_alive() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, HeartbeatConfig::default());
        for s in 1..100 {
            hb.on_receive(t0 + Duration::from_secs(s));
            assert!(!matches!(hb.poll(t0 + Duration::from_secs(s)), HeartbeatAction::Dead { .. }));
        }
    }
}
