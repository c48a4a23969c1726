//! The edge nodes connected to this hub: their catalogs and a command channel to each.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mediamesh_tunnel::wire::{CatalogEntry, SessionId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Commands the hub sends down a node's control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCommand {
    /// Start the stream for this session.
    AddVideo {
        /// The session.
        session: SessionId,
        /// The stream.
        stream: String,
    },
    /// Stop the stream of this session.
    RemoveVideo {
        /// The session.
        session: SessionId,
        /// The stream.
        stream: String,
    },
}

/// Smallest capacity of a node's command queue. Commands are rare (one per session start or
/// stop), but a wall of viewers opening every camera of a node at once queues one per stream in
/// a moment: the queue holds two per catalog entry (a start and a stop), at least this many. A
/// full queue means the control channel is stuck, and the command fails instead of waiting.
pub const COMMAND_QUEUE: usize = 64;

/// The command queue's capacity for a node whose catalog has `streams` entries.
pub fn command_queue(streams: usize) -> usize {
    streams.saturating_mul(2).max(COMMAND_QUEUE)
}

/// A connected node.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    /// Identifies this control connection (a reconnect gets a new one).
    pub conn_id: u64,
    /// Agent string from its Hello.
    pub agent: String,
    /// Its streams.
    pub catalog: Vec<CatalogEntry>,
    /// Its address.
    pub remote: SocketAddr,
    /// When this control connection was accepted.
    pub connected_at: Instant,
    /// Its command queue.
    pub commands: mpsc::Sender<NodeCommand>,
    /// Cancels its control connection.
    pub cancel: CancellationToken,
}

/// Why a lookup or command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The node has no control channel to this hub.
    #[error("node {node:?} is not connected")]
    NotConnected {
        /// The node.
        node: String,
    },
    /// The node is connected but does not offer the stream.
    #[error("node {node:?} has no stream {stream:?}")]
    NoSuchStream {
        /// The node.
        node: String,
        /// The stream.
        stream: String,
    },
    /// The node's command queue is full: its control channel is not draining.
    #[error("the control channel of node {node:?} is congested")]
    Congested {
        /// The node.
        node: String,
    },
}

/// Counters of a node that outlive its connections.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Control channels accepted (1 + reconnects).
    pub connects: crate::session::stats::Counter,
    /// Smoothed Ping/Pong round trip of the current control channel, µs (0 = none yet).
    pub rtt_us: std::sync::atomic::AtomicU64,
}

/// All connected nodes.
#[derive(Debug, Default)]
pub struct NodeRegistry {
    nodes: Mutex<HashMap<String, NodeEntry>>,
    /// Per node ever connected (bounded by the identities the tunnel CA issued).
    stats: Mutex<HashMap<String, Arc<NodeStats>>>,
}

impl NodeRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeEntry>> {
        // Every critical section is a single map operation; a poisoned map is consistent.
        self.nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a node's control connection; returns the connection it replaces, if any.
    pub fn register(&self, node: &str, entry: NodeEntry) -> Option<NodeEntry> {
        self.node_stats(node).connects.add(1);
        self.lock().insert(node.to_owned(), entry)
    }

    /// The counters of `node` (created on first use).
    pub fn node_stats(&self, node: &str) -> Arc<NodeStats> {
        let mut stats = self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        stats.entry(node.to_owned()).or_default().clone()
    }

    /// Every node's counters, sorted by name.
    pub fn all_node_stats(&self) -> Vec<(String, Arc<NodeStats>)> {
        let stats = self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<_> = stats.iter().map(|(k, s)| (k.clone(), s.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Removes the node if `conn_id` is still its current connection; true if removed.
    pub fn unregister(&self, node: &str, conn_id: u64) -> bool {
        let mut nodes = self.lock();
        if nodes.get(node).is_some_and(|e| e.conn_id == conn_id) {
            nodes.remove(node);
            return true;
        }
        false
    }

    /// Checks the node is connected and offers the stream.
    pub fn check_stream(&self, node: &str, stream: &str) -> Result<(), NodeError> {
        let nodes = self.lock();
        let entry = nodes.get(node).ok_or_else(|| NodeError::NotConnected { node: node.into() })?;
        if !entry.catalog.iter().any(|e| e.name == stream) {
            return Err(NodeError::NoSuchStream { node: node.into(), stream: stream.into() });
        }
        Ok(())
    }

    /// Queues a command for the node without waiting.
    pub fn send(&self, node: &str, cmd: NodeCommand) -> Result<(), NodeError> {
        let tx = self.lock().get(node).map(|e| e.commands.clone());
        let tx = tx.ok_or_else(|| NodeError::NotConnected { node: node.into() })?;
        tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => NodeError::Congested { node: node.into() },
            mpsc::error::TrySendError::Closed(_) => NodeError::NotConnected { node: node.into() },
        })
    }

    /// A copy of every entry, sorted by node name.
    pub fn snapshot(&self) -> Vec<(String, NodeEntry)> {
        let mut v: Vec<_> = self.lock().iter().map(|(k, e)| (k.clone(), e.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Cancels every control connection (shutdown).
    pub fn cancel_all(&self) {
        for e in self.lock().values() {
            e.cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_queue_holds_a_start_and_a_stop_for_every_stream() {
        assert_eq!(command_queue(0), COMMAND_QUEUE);
        assert_eq!(command_queue(100), 200);
        let max = command_queue(mediamesh_tunnel::wire::MAX_CATALOG_ENTRIES);
        assert_eq!(max, 512, "bounded by the catalog's own cap");
    }
}
