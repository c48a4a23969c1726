//! Who may start watching: limits on viewers per stream, per hub and per client address, and
//! on how often viewers may wake a node's cold streams. Plain state, driven with `now`.
//!
//! The cold-start limit is a token bucket per node: starting a stream that has no session
//! costs a token; the bucket holds `cold_starts_per_minute` and refills at that rate. A client
//! cycling through a node's cameras (each request starting a source and, after the linger,
//! stopping it) is refused once the bucket is empty, so it cannot keep an edge's sources
//! flapping; viewers of streams already running are never affected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most nodes whose cold-start buckets are tracked; full buckets are dropped to make room.
const MAX_BUCKETS: usize = 4096;

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewerLimits {
    /// Viewers of one stream.
    pub per_stream: usize,
    /// Viewers of the whole hub.
    pub total: usize,
    /// Viewers from one client address.
    pub per_address: usize,
    /// Cold streams of one node viewers may start per minute (burst of the same size).
    pub cold_starts_per_minute: u32,
}

/// Why a viewer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The stream has its most viewers.
    #[error("the stream has its maximum of {0} viewers")]
    StreamFull(usize),
    /// The hub has its most viewers.
    #[error("the hub has its maximum of {0} viewers")]
    HubFull(usize),
    /// This address has its most viewers.
    #[error("this address has its maximum of {0} viewers")]
    AddressFull(usize),
    /// Viewers started too many of this node's streams lately.
    #[error("too many streams of node {node:?} started lately; retry in {} s", retry_after.as_secs().max(1))]
    ColdStarts {
        /// The node.
        node: String,
        /// When a start will be allowed.
        retry_after: Duration,
    },
}

impl Refusal {
    /// The metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Refusal::StreamFull(_) => "stream_full",
            Refusal::HubFull(_) => "hub_full",
            Refusal::AddressFull(_) => "address_full",
            Refusal::ColdStarts { .. } => "cold_starts",
        }
    }

    /// Every label, for `/metrics`.
    pub const NAMES: [&'static str; 4] = ["stream_full", "hub_full", "address_full", "cold_starts"];

    /// The HTTP status: 429 for what the client can wait out, 503 when the hub is full.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::StreamFull(_) | Refusal::HubFull(_) => 503,
            Refusal::AddressFull(_) | Refusal::ColdStarts { .. } => 429,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The counts the limits are checked against.
#[derive(Debug)]
pub struct Admission {
    limits: ViewerLimits,
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    cold: HashMap<String, Bucket>,
    refused: [u64; 4],
}

impl Admission {
    /// No viewers yet.
    pub fn new(limits: ViewerLimits) -> Self {
        Self { limits, total: 0, per_address: HashMap::new(), cold: HashMap::new(), refused: [0; 4] }
    }

    /// New limits (a reload); viewers already in stay.
    pub fn set_limits(&mut self, limits: ViewerLimits) {
        self.limits = limits;
    }

    /// Admits a viewer from `ip` to a stream that has `stream_viewers`; `cold_node` is the
    /// node if the stream has no session and this viewer would start it.
    pub fn admit(
        &mut self,
        ip: IpAddr,
        stream_viewers: usize,
        cold_node: Option<&str>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let verdict = self.check(ip, stream_viewers, cold_node, now);
        match &verdict {
            Ok(()) => {
                self.total += 1;
                *self.per_address.entry(ip).or_insert(0) += 1;
            }
            Err(r) => {
                let i = Refusal::NAMES.iter().position(|n| *n == r.name()).unwrap_or(0);
                self.refused[i] += 1;
            }
        }
        verdict
    }

    fn check(
        &mut self,
        ip: IpAddr,
        stream_viewers: usize,
        cold_node: Option<&str>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let l = self.limits;
        if stream_viewers >= l.per_stream {
            return Err(Refusal::StreamFull(l.per_stream));
        }
        if self.total >= l.total {
            return Err(Refusal::HubFull(l.total));
        }
        if self.per_address.get(&ip).copied().unwrap_or(0) >= l.per_address {
            return Err(Refusal::AddressFull(l.per_address));
        }
        if let Some(node) = cold_node {
            self.take_cold_start(node, now)?;
        }
        Ok(())
    }

    fn take_cold_start(&mut self, node: &str, now: Instant) -> Result<(), Refusal> {
        let capacity = f64::from(self.limits.cold_starts_per_minute.max(1));
        let rate = capacity / 60.0;
        if !self.cold.contains_key(node) && self.cold.len() >= MAX_BUCKETS {
            self.cold.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < capacity);
        }
        let b = self.cold.entry(node.to_owned()).or_insert(Bucket { tokens: capacity, at: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let retry_after = Duration::from_secs_f64((1.0 - b.tokens) / rate);
        Err(Refusal::ColdStarts { node: node.to_owned(), retry_after })
    }

    /// A viewer from `ip` left.
    pub fn left(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_address.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&ip);
            }
        }
    }

    /// Viewers admitted and not yet left.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Refusals since start, by [`Refusal::NAMES`].
    pub fn refused(&self) -> [(&'static str, u64); 4] {
        std::array::from_fn(|i| (Refusal::NAMES[i], self.refused[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ViewerLimits = ViewerLimits { per_stream: 3, total: 5, per_address: 2, cold_starts_per_minute: 4 };

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn each_limit_refuses_the_viewer_over_it_and_a_leaving_viewer_makes_room() {
        let t = Instant::now();
        let mut a = Admission::new(LIMITS);
        assert!(a.admit(ip(1), 0, None, t).is_ok());
        assert!(a.admit(ip(1), 1, None, t).is_ok());
        assert_eq!(a.admit(ip(1), 2, None, t), Err(Refusal::AddressFull(2)));
        assert_eq!(a.admit(ip(2), 3, None, t), Err(Refusal::StreamFull(3)));
        for n in 2..5 {
            assert!(a.admit(ip(n), 0, None, t).is_ok());
        }
        assert_eq!(a.admit(ip(9), 0, None, t), Err(Refusal::HubFull(5)));
        a.left(ip(1));
        assert!(a.admit(ip(9), 0, None, t).is_ok());
        assert_eq!(a.total(), 5);
        assert_eq!(a.refused().iter().map(|(_, n)| n).sum::<u64>(), 3);
    }

    #[test]
    fn cold_starts_of_one_node_are_a_bucket_that_refills() {
        let t = Instant::now();
        let mut a = Admission::new(ViewerLimits { total: 1000, per_address: 1000, per_stream: 1000, ..LIMITS });
        for _ in 0..4 {
            assert!(a.admit(ip(1), 0, Some("edge-1"), t).is_ok());
        }
        let Err(Refusal::ColdStarts { retry_after, .. }) = a.admit(ip(1), 0, Some("edge-1"), t) else {
            panic!("the fifth cold start in a minute passed")
        };
        assert_eq!(retry_after.as_secs(), 15, "one token per 15 s at 4 a minute");
        assert!(a.admit(ip(1), 0, Some("edge-2"), t).is_ok(), "another node has its own bucket");
        assert!(a.admit(ip(1), 5, None, t).is_ok(), "joining a running stream costs nothing");
        assert!(a.admit(ip(1), 0, Some("edge-1"), t + Duration::from_secs(15)).is_ok());
        assert!(a.admit(ip(1), 0, Some("edge-1"), t + Duration::from_secs(16)).is_err());
    }
}
