//! Reloading the edge's configuration (SIGHUP).
//!
//! A reload re-reads the TLS certificate, key and CA (new connections use them) and applies the
//! hub's address, `serverName` and the handshake and write deadlines to new connections. The
//! stream catalog is applied at once ([`crate::control`]): a running stream whose configuration
//! did not change keeps running; a changed one restarts in its session; a removed one stops,
//! and the hub is told. What the running uplinks and the process were built with (heartbeat,
//! reconnect, queue sizes, congestion thresholds, the health endpoint) is reported as needing
//! a restart. A configuration that does not validate, whose certificate cannot be read, or that
//! names another node changes nothing.

use std::sync::{Arc, Mutex};

pub use mediamesh_tunnel::settings::Reloaded;
use tokio::sync::watch;

use crate::{EdgeConfig, EdgeCtx, EdgeError, RunningEdge, dial_config, tls_setup};

/// The keys a reload cannot change: they need a restart.
pub const RESTART_KEYS: [&str; 9] = [
    "enable",
    "heartbeat",
    "reconnect",
    "readDeadline",
    "uplinkQueueFrames",
    "uplinkQueueBytes",
    "congestion",
    "health",
    "nodeName",
];

/// What a reload updates.
pub(crate) struct Reload {
    pub ctx: Arc<EdgeCtx>,
    /// Bumped when the catalog changes; the control loop applies it.
    pub notify: watch::Sender<u64>,
    /// The configuration running now.
    pub config: Mutex<EdgeConfig>,
    /// The node a test claims instead of the certificate's.
    pub claim_node: Option<String>,
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload").finish_non_exhaustive()
    }
}

impl RunningEdge {
    /// Applies a new configuration ([module docs](self)).
    pub fn reload(&self, new: EdgeConfig) -> Result<Reloaded, EdgeError> {
        let r = &self.reload;
        new.validate()?;
        let mut running = r.config.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if new.node_name != running.node_name {
            return Err(EdgeError::Config(crate::ConfigError {
                key: "nodeName".into(),
                reason: format!(
                    "{:?} is not the running node {:?}; another node needs a restart",
                    new.node_name, running.node_name
                ),
            }));
        }
        let (tls, server_name) = tls_setup(&new, r.claim_node.is_some())?;
        let reloaded = Reloaded::between(&*running, &new, &RESTART_KEYS);
        let node = r.claim_node.clone().unwrap_or(new.node_name.clone());
        r.ctx.dial.set(dial_config(&new, tls, server_name, node));
        if new.streams != running.streams {
            r.ctx.streams.set(new.streams.clone());
            r.notify.send_modify(|n| *n = n.wrapping_add(1));
        }
        // Keep what needs a restart as it runs, so the next reload compares with that.
        let mut kept = new;
        kept.heartbeat = running.heartbeat;
        kept.reconnect = running.reconnect;
        kept.read_deadline = running.read_deadline;
        kept.uplink_queue_frames = running.uplink_queue_frames;
        kept.uplink_queue_bytes = running.uplink_queue_bytes;
        kept.congestion = running.congestion;
        kept.health = running.health;
        *running = kept;
        Ok(reloaded)
    }
}
