//! The mediamesh tunnel: the wire protocol between edge agents and the hub, and the connection
//! logic both sides share, all without I/O.
//!
//! - [`wire`]: protocol v1 messages ([`wire::Message`]), their length-prefixed binary encoding,
//!   and decoders that check every length against a cap before allocating
//!   ([`wire::decode_message`] for one WebSocket message, [`wire::StreamDecoder`] for byte
//!   streams). The normative description is `docs/protocol.md`.
//! - [`liveness`]: the heartbeat state machine (Ping schedule, RTT, dead-peer detection).
//! - [`uplink`]: the sending side of a data tunnel (queue, codec-aware shedding, send window,
//!   heartbeat), shared by the edge's uplinks and the hub's relays.
//! - [`backoff`]: capped exponential backoff with full jitter for redialling.
//! - [`settings`]: configuration types both sides read from YAML (seconds, heartbeat, backoff).
//! - `transport` (feature `transport`): typed messages over a tokio WebSocket, for the drivers.
//!
//! Everything takes time as an argument (`now: Instant`) and returns what to do; the async
//! drivers in `mediamesh-edge` and `mediamesh-hub` only move bytes and sleep.

#![forbid(unsafe_code)]

pub mod backoff;
#[doc(hidden)]
pub mod fuzz;
pub mod liveness;
pub mod redact;
pub mod settings;
#[cfg(feature = "transport")]
pub mod transport;
pub mod uplink;
pub mod wire;

/// The WebSocket path edges connect to on the hub's tunnel port.
pub const TUNNEL_PATH: &str = "/mediamesh/tunnel/v1";
/// The WebSocket subprotocol both sides name in the upgrade.
pub const SUBPROTOCOL: &str = "mediamesh.tunnel.v1";
