//! Setting types shared by the hub's and the edge's configuration.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::backoff::{BackoffConfig, BackoffError};
use crate::liveness::HeartbeatConfig;

/// A duration written in configuration as a number of seconds (fractions allowed), as the
/// KubeEdge blocks do (`handshakeTimeout: 30`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Seconds(Duration);

impl Seconds {
    /// The largest accepted value: one year.
    pub const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

    /// A value from whole seconds.
    pub const fn new(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// A value from milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// As a [`Duration`].
    pub fn get(self) -> Duration {
        self.0
    }

    /// Parses a number of seconds: finite, not negative, at most a year.
    pub fn try_from_secs(secs: f64) -> Result<Self, String> {
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("{secs} is not a duration: expected a number of seconds >= 0"));
        }
        if secs > Self::MAX_SECS {
            return Err(format!("{secs} seconds is more than a year"));
        }
        Ok(Self(Duration::from_secs_f64(secs)))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = f64::deserialize(d)?;
        Seconds::try_from_secs(secs).map_err(serde::de::Error::custom)
    }
}

/// Heartbeat settings as written in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatSettings {
    /// Seconds between Pings (default 1).
    #[serde(default = "default_ping_interval")]
    pub interval: Seconds,
    /// Seconds of silence after which the peer is dead (default 3).
    #[serde(default = "default_ping_timeout")]
    pub timeout: Seconds,
}

fn default_ping_interval() -> Seconds {
    Seconds::new(1)
}

fn default_ping_timeout() -> Seconds {
    Seconds::new(3)
}

impl Default for HeartbeatSettings {
    fn default() -> Self {
        Self { interval: default_ping_interval(), timeout: default_ping_timeout() }
    }
}

impl HeartbeatSettings {
    /// The state-machine configuration, or why these values cannot work.
    pub fn to_config(self) -> Result<HeartbeatConfig, String> {
        if self.interval.get().is_zero() {
            return Err("heartbeat.interval must be greater than 0".into());
        }
        if self.timeout.get() <= self.interval.get() {
            return Err(format!(
                "heartbeat.timeout ({:?}) must be longer than heartbeat.interval ({:?})",
                self.timeout.get(),
                self.interval.get()
            ));
        }
        Ok(HeartbeatConfig { interval: self.interval.get(), timeout: self.timeout.get() })
    }
}

/// Reconnect backoff settings as written in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackoffSettings {
    /// Upper bound of the first delay, seconds (default 0.1).
    #[serde(default = "default_backoff_initial")]
    pub initial: Seconds,
    /// Cap on the delay, seconds (default 1: a link back from a short outage is found within
    /// about a second).
    #[serde(default = "default_backoff_max")]
    pub max: Seconds,
    /// A connection up this long resets the schedule, seconds (default 10).
    #[serde(default = "default_backoff_reset")]
    pub reset_after: Seconds,
}

fn default_backoff_initial() -> Seconds {
    Seconds::from_millis(100)
}

fn default_backoff_max() -> Seconds {
    Seconds::new(1)
}

fn default_backoff_reset() -> Seconds {
    Seconds::new(10)
}

impl Default for BackoffSettings {
    fn default() -> Self {
        Self { initial: default_backoff_initial(), max: default_backoff_max(), reset_after: default_backoff_reset() }
    }
}

impl BackoffSettings {
    /// The validated backoff configuration.
    pub fn to_config(self) -> Result<BackoffConfig, BackoffError> {
        BackoffConfig::try_new(self.initial.get(), self.max.get(), self.reset_after.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_bounds() {
        assert_eq!(Seconds::try_from_secs(0.25).unwrap().get(), Duration::from_millis(250));
        assert!(Seconds::try_from_secs(-1.0).unwrap_err().contains(">= 0"));
        assert!(Seconds::try_from_secs(f64::NAN).is_err());
        assert!(Seconds::try_from_secs(1e12).unwrap_err().contains("year"));
    }

    #[test]
    fn heartbeat_timeout_must_exceed_interval() {
        let s = HeartbeatSettings { interval: Seconds::new(2), timeout: Seconds::new(2) };
        assert!(s.to_config().unwrap_err().contains("heartbeat.timeout"));
        assert!(HeartbeatSettings::default().to_config().is_ok());
    }
}
