//! A limit on failed attempts per client address.
//!
//! Each address may fail `max_failures` times within `window`; from then on, every request from
//! it is refused without checking its credentials (HTTP 429) until `block` has passed since
//! the last failure. A success clears the address's count. The table is bounded: when it is
//! full, the entry that failed longest ago makes room. Plain state, driven with `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most addresses tracked at once.
pub const MAX_TRACKED: usize = 65_536;

/// The limit's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConfig {
    /// Failures allowed within `window`.
    pub max_failures: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long an address that went over stays refused after its last failure.
    pub block: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    first: Instant,
    last: Instant,
    failures: u32,
}

/// Failed attempts per address.
#[derive(Debug)]
pub struct FailureLimiter {
    config: LimitConfig,
    entries: HashMap<IpAddr, Entry>,
    capacity: usize,
}

impl FailureLimiter {
    /// An empty table.
    pub fn new(config: LimitConfig) -> Self {
        Self::with_capacity(config, MAX_TRACKED)
    }

    fn with_capacity(config: LimitConfig, capacity: usize) -> Self {
        Self { config, entries: HashMap::new(), capacity }
    }

    /// Replaces the settings (a reload); counts so far stay.
    pub fn set_config(&mut self, config: LimitConfig) {
        self.config = config;
    }

    /// `Err(retry after)` if `ip` is refused at `now`.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Some(e) = self.entries.get(&ip).copied() else { return Ok(()) };
        if e.failures >= self.config.max_failures {
            let until = e.last + self.config.block;
            if now < until {
                return Err(until - now);
            }
            self.entries.remove(&ip);
        } else if now.saturating_duration_since(e.first) > self.config.window {
            self.entries.remove(&ip);
        }
        Ok(())
    }

    /// Counts a failed attempt from `ip`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if !self.entries.contains_key(&ip) && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        let window = self.config.window;
        let e = self.entries.entry(ip).or_insert(Entry { first: now, last: now, failures: 0 });
        if e.failures < self.config.max_failures && now.saturating_duration_since(e.first) > window {
            *e = Entry { first: now, last: now, failures: 0 };
        }
        e.failures = e.failures.saturating_add(1);
        e.last = now;
    }

    /// Clears `ip`'s count after a success.
    pub fn succeeded(&mut self, ip: IpAddr) {
        self.entries.remove(&ip);
    }

    /// Addresses tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn make_room(&mut self, now: Instant) {
        let (window, block) = (self.config.window, self.config.block);
        self.entries.retain(|_, e| now.saturating_duration_since(e.last) < window.max(block));
        if self.entries.len() >= self.capacity
            && let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.last).map(|(ip, _)| *ip)
        {
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: LimitConfig =
        LimitConfig { max_failures: 3, window: Duration::from_secs(60), block: Duration::from_secs(30) };

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn an_address_is_refused_after_too_many_failures_until_the_block_ends() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(CFG);
        for i in 0..2 {
            assert!(l.check(ip(1), t0).is_ok(), "attempt {i}");
            l.failed(ip(1), t0);
        }
        assert!(l.check(ip(1), t0).is_ok(), "a third attempt is allowed");
        l.failed(ip(1), t0 + Duration::from_secs(1));
        assert_eq!(l.check(ip(1), t0 + Duration::from_secs(11)), Err(Duration::from_secs(20)));
        assert!(l.check(ip(2), t0).is_ok(), "other addresses are not affected");
        assert!(l.check(ip(1), t0 + Duration::from_secs(31)).is_ok(), "the block ends");
        assert!(l.is_empty());
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(CFG);
        for s in [0, 61, 122, 183, 244] {
            let now = t0 + Duration::from_secs(s);
            assert!(l.check(ip(1), now).is_ok(), "at {s} s");
            l.failed(ip(1), now);
            l.failed(ip(1), now);
            assert!(l.check(ip(1), now).is_ok(), "two failures at {s} s");
        }
    }

    #[test]
    fn a_success_clears_the_count() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(CFG);
        for _ in 0..3 {
            l.failed(ip(1), t0);
        }
        l.succeeded(ip(1));
        l.failed(ip(1), t0);
        assert!(l.check(ip(1), t0).is_ok());
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::with_capacity(CFG, 4);
        for n in 0..10 {
            l.failed(ip(n), t0 + Duration::from_millis(u64::from(n)));
        }
        assert_eq!(l.len(), 4);
        assert!(l.entries.contains_key(&ip(9)), "the newest is kept");
    }
}
