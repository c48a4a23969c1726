//! The mediamesh hub (the KubeEdge proposal's CloudDataStream).
//!
//! It owns:
//! - the **tunnel port** ([`tunnel`]): edges dial in over mutual TLS + WebSocket; one control
//!   channel per node, one data tunnel per watched stream;
//! - **stream sessions** ([`session`]): one per `node/stream`, created by the first viewer
//!   (AddVideo), shared by every later one, lingering after the last leaves (RemoveVideo); each
//!   holds a bounded, shared frame log that viewers read through cursors;
//! - **egress** ([`egress`]): WebSocket and RTSP viewers, each frame encoded once per format
//!   for all of them;
//! - the **REST API** and Prometheus `/metrics` on the stream port.
//!
//! Start it with [`Hub::bind`], which binds both ports (port 0 picks free ones) and returns a
//! [`RunningHub`] with the bound addresses; [`RunningHub::shutdown`] stops it.

#![forbid(unsafe_code)]

mod api;
mod auth;
pub mod client;
pub mod cluster;
pub mod config;
pub mod egress;
pub mod enroll;
pub mod fuzz;
mod http;
mod http_auth;
pub mod listener;
mod metrics;
pub mod outbound;
mod payloads;
pub mod registry;
pub mod reload;
mod server;
pub mod session;
pub mod state;
mod tunnel;
mod web;

pub use config::{ConfigError, HubConfig};
pub use reload::Reloaded;
pub use server::{Hub, HubError, RunningHub, check_tls};

/// A random 64-bit value (RTP SSRCs, initial sequence numbers and timestamps, RTSP session
/// ids), from the standard library's randomly keyed hasher.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}
