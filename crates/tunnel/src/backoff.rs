//! Capped exponential backoff with full jitter, for redialling.
//!
//! The delay before attempt *n* is uniform in `[0, min(max, initial · 2ⁿ)]` ("full jitter", so a
//! fleet of edges cut at once does not come back in lockstep). A connection that stayed up for
//! `reset_after` resets the sequence. No clock and no global RNG: the caller passes `now` and a
//! seed.

use std::time::{Duration, Instant};

/// Backoff parameters, validated by [`BackoffConfig::try_new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
}

/// Why a backoff configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    /// `initial` must be positive.
    #[error("initial backoff must be greater than zero")]
    ZeroInitial,
    /// `max` must be at least `initial`.
    #[error("maximum backoff {:.3} s is below the initial backoff {:.3} s", max.as_secs_f64(), initial.as_secs_f64())]
    MaxBelowInitial {
        /// The initial delay.
        initial: Duration,
        /// The maximum delay.
        max: Duration,
    },
}

impl BackoffConfig {
    /// Validates and builds a configuration.
    pub fn try_new(initial: Duration, max: Duration, reset_after: Duration) -> Result<Self, BackoffError> {
        if initial.is_zero() {
            return Err(BackoffError::ZeroInitial);
        }
        if max < initial {
            return Err(BackoffError::MaxBelowInitial { initial, max });
        }
        Ok(Self { initial, max, reset_after })
    }

    /// The upper bound of the delay before attempt `n` (0-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self { initial: Duration::from_millis(200), max: Duration::from_secs(10), reset_after: Duration::from_secs(10) }
    }
}

/// The redial schedule of one connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    connected_at: Option<Instant>,
    rng: u64,
}

impl Backoff {
    /// A fresh schedule; `seed` feeds the jitter (any value; 0 is replaced).
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Self { config, attempt: 0, connected_at: None, rng: seed | 1 }
    }

    /// The delay to wait before the next attempt; advances the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.config.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.next_random() % nanos.saturating_add(1))
    }

    /// How many attempts have failed since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A connection came up at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The connection went down at `now`; resets the schedule if it had been up long enough.
    pub fn disconnected(&mut self, now: Instant) {
        if let Some(up) = self.connected_at.take()
            && now.saturating_duration_since(up) >= self.config.reset_after
        {
            self.attempt = 0;
        }
    }

    /// xorshift64*: small, fast, good enough for jitter.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cfg() -> BackoffConfig {
        BackoffConfig::try_new(100 * MS, 1600 * MS, 5000 * MS).unwrap()
    }

    #[test]
    fn delays_stay_under_a_doubling_capped_ceiling() {
        let mut b = Backoff::new(cfg(), 42);
        let ceilings = [100u32, 200, 400, 800, 1600, 1600, 1600];
        for (n, c) in ceilings.iter().enumerate() {
            assert_eq!(cfg().ceiling(n as u32), MS * *c);
            let d = b.next_delay();
            assert!(d <= MS * *c, "attempt {n}: {d:?} > {c}ms");
        }
        assert_eq!(cfg().ceiling(1000), 1600 * MS, "no overflow for huge attempt counts");
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::new(BackoffConfig::try_new(1000 * MS, 1000 * MS, MS).unwrap(), 7);
        let samples: Vec<Duration> = (0..1000).map(|_| b.next_delay()).collect();
        let mean = samples.iter().sum::<Duration>() / 1000;
        assert!(mean > 400 * MS && mean < 600 * MS, "uniform in [0, 1s] has mean ~500ms, got {mean:?}");
        assert!(samples.iter().any(|d| *d < 100 * MS) && samples.iter().any(|d| *d > 900 * MS));
    }

    #[test]
    fn stable_connection_resets_the_schedule() {
        let t0 = Instant::now();
        let mut b = Backoff::new(cfg(), 1);
        for _ in 0..5 {
            b.next_delay();
        }
        b.connected(t0);
        b.disconnected(t0 + 1000 * MS);
        assert_eq!(b.attempt(), 5, "a short-lived connection does not reset");
        b.connected(t0 + 2000 * MS);
        b.disconnected(t0 + 7000 * MS);
        assert_eq!(b.attempt(), 0);
    }

    #[test]
    fn invalid_configs_are_refused() {
        assert_eq!(BackoffConfig::try_new(Duration::ZERO, MS, MS), Err(BackoffError::ZeroInitial));
        assert!(matches!(BackoffConfig::try_new(2 * MS, MS, MS), Err(BackoffError::MaxBelowInitial { .. })));
    }
}
