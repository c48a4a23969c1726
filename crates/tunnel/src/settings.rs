//! Setting types shared by the hub's and the edge's configuration.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::backoff::{BackoffConfig, BackoffError};
use crate::liveness::HeartbeatConfig;

/// A duration in configuration: a number of seconds, as the KubeEdge blocks write them
/// (`handshakeTimeout: 30`, fractions allowed: `0.5`), or a number with a unit: `500ms`,
/// `10s`, `1m`, `1h` (also written as a string: `"10"`). Shown the same way ([`Display`]).
///
/// [`Display`]: std::fmt::Display
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Seconds(Duration);

/// The units a duration may carry, and their length in seconds.
const UNITS: [(&str, f64); 5] = [("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("", 1.0)];

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
    pub fn try_from_secs(secs: f64) -> Result<Self, DurationError> {
        if !secs.is_finite() || secs < 0.0 {
            return Err(DurationError::Negative(secs));
        }
        if secs > Self::MAX_SECS {
            return Err(DurationError::TooLong(secs));
        }
        Ok(Self(Duration::from_secs_f64(secs)))
    }
}

/// Why a configured duration is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    /// Not a number with an optional unit.
    #[error("{0:?} is not a duration: expected seconds (10, 0.5) or a unit (500ms, 10s, 1m, 1h)")]
    NotADuration(String),
    /// Negative, or not a finite number.
    #[error("{0} is not a duration: expected a number of seconds >= 0")]
    Negative(f64),
    /// Longer than [`Seconds::MAX_SECS`].
    #[error("{0} seconds is more than a year")]
    TooLong(f64),
}

impl std::str::FromStr for Seconds {
    type Err = DurationError;

    /// `10`, `0.5`, `500ms`, `10s`, `1.5m`, `1h` (spaces around the unit allowed).
    fn from_str(text: &str) -> Result<Self, DurationError> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (number, unit) = (&t[..split], t[split..].trim());
        let scale = UNITS.iter().find(|(u, _)| *u == unit).map(|(_, s)| *s);
        match (number.parse::<f64>(), scale) {
            (Ok(n), Some(scale)) => Self::try_from_secs(n * scale),
            _ => Err(DurationError::NotADuration(text.to_owned())),
        }
    }
}

impl std::fmt::Display for Seconds {
    /// The shortest exact form in whole units where one fits (`500ms`, `10s`, `2m`), else
    /// seconds with a fraction (`1.5s`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        let whole_ms = self.0.subsec_nanos().is_multiple_of(1_000_000);
        if !whole_ms || (ms >= 1000 && !ms.is_multiple_of(1000)) {
            return write!(f, "{}s", self.0.as_secs_f64());
        }
        if ms > 0 && ms < 1000 {
            return write!(f, "{ms}ms");
        }
        let secs = ms / 1000;
        match secs {
            0 => f.write_str("0s"),
            s if s.is_multiple_of(3600) => write!(f, "{}h", s / 3600),
            s if s.is_multiple_of(60) => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration: seconds (10, 0.5) or with a unit (500ms, 10s, 1m, 1h)")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Seconds, E> {
                Seconds::try_from_secs(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Seconds, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Seconds, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Seconds, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Serialize for Seconds {
    /// As written in configuration (`500ms`, `10s`), so a configuration shown or re-read keeps
    /// its meaning.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Settings a configuration reload replaces while the process runs: readers take the current
/// value where they use it (a new connection, a new session), so work in flight keeps the value
/// it started with.
#[derive(Debug)]
pub struct Live<T>(std::sync::RwLock<std::sync::Arc<T>>);

impl<T> Live<T> {
    /// Holding `value`.
    pub fn new(value: T) -> Self {
        Self(std::sync::RwLock::new(std::sync::Arc::new(value)))
    }

    /// The current value.
    pub fn get(&self) -> std::sync::Arc<T> {
        // A writer only swaps the Arc; a poisoned lock still holds a whole value.
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the value.
    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(value);
    }
}

/// What a configuration reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The keys whose values changed and now apply (dotted, as written in the block).
    pub applied: Vec<String>,
    /// The keys that changed but need a restart; they keep their running values.
    pub needs_restart: Vec<String>,
}

impl Reloaded {
    /// The keys that differ between `old` and `new`, split by `restart_keys` (a key, or any key
    /// below it, needs a restart).
    pub fn between<T: Serialize>(old: &T, new: &T, restart_keys: &[&str]) -> Self {
        let (needs_restart, applied) = changed_keys(old, new).into_iter().partition(|k| {
            restart_keys.iter().any(|r| k == r || k.strip_prefix(r).is_some_and(|rest| rest.starts_with('.')))
        });
        Self { applied, needs_restart }
    }
}

/// The dotted keys (as written in configuration) whose values differ between two
/// configurations: what a reload changes.
pub fn changed_keys<T: Serialize>(old: &T, new: &T) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(old), serde_json::to_value(new)) else { return Vec::new() };
    let mut out = Vec::new();
    diff("", &a, &b, &mut out);
    out
}

fn diff(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                let null = serde_json::Value::Null;
                diff(&path, a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null), out);
            }
        }
        _ if a != b => out.push(prefix.to_owned()),
        _ => {}
    }
}

/// Heartbeat settings as written in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
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
                "heartbeat.timeout ({}) must be longer than heartbeat.interval ({})",
                self.timeout, self.interval
            ));
        }
        Ok(HeartbeatConfig { interval: self.interval.get(), timeout: self.timeout.get() })
    }
}

/// Reconnect backoff settings as written in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
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
        assert!(Seconds::try_from_secs(-1.0).unwrap_err().to_string().contains(">= 0"));
        assert!(Seconds::try_from_secs(f64::NAN).is_err());
        assert!(Seconds::try_from_secs(1e12).unwrap_err().to_string().contains("year"));
    }

    #[test]
    fn every_duration_form_is_read() {
        let ms = |t: &str| t.parse::<Seconds>().map(|s| s.get().as_millis());
        assert_eq!(ms("10"), Ok(10_000));
        assert_eq!(ms("0.5"), Ok(500));
        assert_eq!(ms("10s"), Ok(10_000));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("1m"), Ok(60_000));
        assert_eq!(ms("1.5m"), Ok(90_000));
        assert_eq!(ms("2h"), Ok(7_200_000));
        assert_eq!(ms(" 250 ms "), Ok(250));
        for bad in ["", "s", "10x", "-1s", "1.2.3", "ten", "10 s s"] {
            assert!(
                matches!(bad.parse::<Seconds>(), Err(DurationError::NotADuration(_) | DurationError::Negative(_))),
                "{bad:?}"
            );
        }
        assert!(matches!("1000000h".parse::<Seconds>(), Err(DurationError::TooLong(_))));
    }

    #[test]
    fn durations_show_as_they_are_written() {
        for text in ["500ms", "10s", "1m", "2h", "1.5s", "0s", "90s"] {
            let s: Seconds = text.parse().unwrap();
            let shown = s.to_string();
            let expected = if text == "90s" { "90s" } else { text };
            assert_eq!(shown, expected);
            assert_eq!(shown.parse::<Seconds>().unwrap(), s, "round trip of {text}");
        }
        assert_eq!(Seconds::from_millis(1500).to_string(), "1.5s");
        assert_eq!(Seconds::new(120).to_string(), "2m");
    }

    #[test]
    fn changed_keys_are_listed_by_their_dotted_names() {
        let a = HeartbeatSettings::default();
        let b = HeartbeatSettings { timeout: Seconds::new(5), ..a };
        assert_eq!(changed_keys(&a, &b), ["timeout"]);
        assert!(changed_keys(&a, &a).is_empty());
        let r = Reloaded::between(&nested(1), &nested(2), &["outer"]);
        assert_eq!((r.applied.len(), r.needs_restart), (0, vec!["outer.inner".to_owned()]));
        let r = Reloaded::between(&nested(1), &nested(2), &["out"]);
        assert_eq!(r.applied, ["outer.inner"], "a prefix of a name is not the key");
        assert_eq!(changed_keys(&nested(1), &nested(2)), ["outer.inner"]);
    }

    #[derive(Serialize)]
    struct Outer {
        outer: Inner,
    }

    #[derive(Serialize)]
    struct Inner {
        inner: u32,
    }

    fn nested(inner: u32) -> Outer {
        Outer { outer: Inner { inner } }
    }

    #[test]
    fn heartbeat_timeout_must_exceed_interval() {
        let s = HeartbeatSettings { interval: Seconds::new(2), timeout: Seconds::new(2) };
        assert!(s.to_config().unwrap_err().contains("heartbeat.timeout"));
        assert!(HeartbeatSettings::default().to_config().is_ok());
    }
}
