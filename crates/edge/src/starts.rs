//! Starts of a stream whose source keeps failing are spaced out, so viewers' demand does not
//! hammer a camera (a camera answering 401 to a loop of viewers would otherwise see a login
//! attempt per viewer, and cameras lock accounts for far less).
//!
//! After a start fails, the stream's next start is allowed only after a delay that doubles with
//! each failure in a row, from [`StartsConfig::initial`] up to [`StartsConfig::max`], with jitter
//! (half the delay fixed, half random, so a camera is never retried at once and a fleet does not
//! retry in step). An AddVideo arriving meanwhile is answered at once with the last failure and
//! how long until the next try. A start that delivers a frame clears the stream's record.
//!
//! No I/O and no clock: the caller passes `now` and the random fraction.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How starts are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartsConfig {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for StartsConfig {
    fn default() -> Self {
        Self { initial: Duration::from_secs(2), max: Duration::from_secs(60) }
    }
}

/// A start refused because the last one failed too recently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Why the last start failed.
    pub reason: String,
    /// How long until a start is allowed.
    pub retry_in: Duration,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (the source failed to start; next attempt in {:.0} s)",
            self.reason,
            self.retry_in.as_secs_f64().ceil()
        )
    }
}

#[derive(Debug, Clone)]
struct Failed {
    /// Failures in a row.
    count: u32,
    /// The last one's reason.
    reason: String,
    /// When a start is allowed again.
    until: Instant,
}

/// The start records of a node's streams.
#[derive(Debug, Default)]
pub struct Starts {
    config: StartsConfig,
    failed: HashMap<String, Failed>,
}

impl Starts {
    /// No failures yet.
    pub fn new(config: StartsConfig) -> Self {
        Self { config, failed: HashMap::new() }
    }

    /// Whether `stream` may start at `now`.
    pub fn check(&self, stream: &str, now: Instant) -> Result<(), Refused> {
        match self.failed.get(stream) {
            Some(f) if now < f.until => Err(Refused { reason: f.reason.clone(), retry_in: f.until - now }),
            _ => Ok(()),
        }
    }

    /// A start of `stream` failed at `now` because of `reason`; `random` in `[0, 1)` places the
    /// next allowed start within the jittered half of the delay. Returns that delay.
    pub fn failed(&mut self, stream: &str, now: Instant, reason: &str, random: f64) -> Duration {
        let count = self.failed.get(stream).map_or(0, |f| f.count).saturating_add(1);
        let base = self.config.initial.saturating_mul(1 << (count - 1).min(16)).min(self.config.max);
        let delay = base / 2 + base.mul_f64(random.clamp(0.0, 1.0) / 2.0);
        self.failed.insert(stream.to_owned(), Failed { count, reason: reason.to_owned(), until: now + delay });
        delay
    }

    /// `stream` delivered: its failures are forgotten.
    pub fn started(&mut self, stream: &str) {
        self.failed.remove(stream);
    }

    /// Forgets streams no longer in the catalog.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.failed.retain(|s, _| keep(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn failed_starts_are_spaced_out_doubling_to_the_cap_and_a_delivery_clears_them() {
        let t0 = Instant::now();
        let mut s = Starts::new(StartsConfig { initial: 2 * S, max: 10 * S });
        assert_eq!(s.check("cam", t0), Ok(()));
        let d1 = s.failed("cam", t0, "401 Unauthorized", 0.0);
        assert_eq!(d1, S, "half the first delay, at the least");
        let refused = s.check("cam", t0 + S / 2).unwrap_err();
        assert_eq!(refused.reason, "401 Unauthorized");
        assert_eq!(refused.retry_in, S / 2);
        assert!(refused.to_string().starts_with("401 Unauthorized (the source failed to start; next attempt in 1 s)"));
        assert_eq!(s.check("other", t0), Ok(()), "per stream");
        assert_eq!(s.check("cam", t0 + S), Ok(()));
        let delays: Vec<Duration> = (0..5).map(|_| s.failed("cam", t0, "401", 0.999)).collect();
        assert!(delays[0] > 3 * S && delays[0] < 4 * S, "{delays:?}");
        assert!(delays[3] < 10 * S && delays[3] > 9 * S, "capped: {delays:?}");
        s.started("cam");
        assert_eq!(s.check("cam", t0), Ok(()));
        assert_eq!(s.failed("cam", t0, "x", 0.0), S, "the doubling starts over");
    }

    #[test]
    fn a_loop_of_viewers_reaches_the_camera_a_handful_of_times() {
        // A viewer every 100 ms for 60 s, each asking for the stream: the source is started
        // only when allowed, and each start fails.
        let t0 = Instant::now();
        let mut s = Starts::new(StartsConfig::default());
        let mut attempts = 0;
        for i in 0..600u32 {
            let now = t0 + Duration::from_millis(100) * i;
            if s.check("cam", now).is_ok() {
                attempts += 1;
                s.failed("cam", now, "401", f64::from(i % 7) / 7.0);
            }
        }
        assert!(attempts <= 8, "{attempts} logins in a minute");
    }
}
