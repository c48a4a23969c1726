//! The edge nodes connected to this hub: their catalogs and a command channel to each.
//!
//! Two rules live here:
//!
//! - **One edge per node identity** ([`admit`]): a second control connection for a connected
//!   node replaces the first only if it comes from the same edge process (its Hello's instance)
//!   or the first has gone silent; otherwise the newcomer is refused, so two edges sharing a
//!   certificate cannot take turns knocking each other off.
//! - **A node that left is remembered for the grace period** ([`NodeRegistry::check_stream`]):
//!   a viewer of one of its streams waits for it, as viewers already watching do, instead of
//!   being told it is not connected while it restarts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mediamesh_tunnel::wire::{CatalogEntry, SessionId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::listener::Remote;

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
    /// Send the edge to another hub of the cluster (Redirect, then GoAway).
    Redirect {
        /// That hub's tunnel address.
        target: String,
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
    /// The edge process it comes from (its Hello's instance).
    pub instance: u64,
    /// When the connection last received anything, for [`admit`].
    pub last_heard: Arc<LastHeard>,
    /// Agent string from its Hello.
    pub agent: String,
    /// Its streams.
    pub catalog: Vec<CatalogEntry>,
    /// Its address.
    pub remote: Remote,
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
    /// The node is connected to another hub of the cluster, and this hub cannot relay from it.
    #[error("node {node:?} is connected to hub {hub:?} ({url}); watch it there")]
    OnOtherHub {
        /// The node.
        node: String,
        /// Its hub.
        hub: String,
        /// That hub's stream URL.
        url: String,
    },
    /// This hub is draining: it takes no new viewers.
    #[error("hub {hub:?} is draining and takes no new viewers; {}", match url {
        Some(url) => format!("watch at {url}"),
        None => "retry on another hub".to_owned(),
    })]
    Draining {
        /// This hub.
        hub: String,
        /// A serving hub's stream URL, if the registry knows one.
        url: Option<String>,
    },
    /// The node is not here, and the cluster registry that would say where it is cannot be
    /// read.
    #[error("node {node:?} is not connected to this hub, and {reason}")]
    RegistryUnavailable {
        /// The node.
        node: String,
        /// Why the registry cannot be read.
        reason: String,
    },
}

/// When a control connection last received anything: microseconds after the registry's epoch.
#[derive(Debug)]
pub struct LastHeard {
    epoch: Instant,
    micros: AtomicU64,
}

impl LastHeard {
    /// Heard at `now`.
    pub fn new(epoch: Instant, now: Instant) -> Self {
        let l = Self { epoch, micros: AtomicU64::new(0) };
        l.heard(now);
        l
    }

    /// Records that something arrived at `now`.
    pub fn heard(&self, now: Instant) {
        self.micros.store(now.saturating_duration_since(self.epoch).as_micros() as u64, Ordering::Relaxed);
    }

    /// How long it has been silent at `now`.
    pub fn silent_for(&self, now: Instant) -> Duration {
        let at = self.epoch + Duration::from_micros(self.micros.load(Ordering::Relaxed));
        now.saturating_duration_since(at)
    }
}

/// What happens to a new control connection for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// No connection holds the node: take it.
    New,
    /// The connection holding the node is this edge's own earlier one, or has gone silent:
    /// replace it.
    Replace(Takeover),
    /// A healthy connection of another edge process holds the node: refuse the newcomer.
    Refuse,
}

/// Why a connection replaces the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// The same edge process reconnected (its earlier connection has not been seen to end).
    SameEdge,
    /// The earlier connection has been silent longer than two heartbeats.
    Lapsed,
}

/// The admission rule ([module docs](self)): a newcomer with `instance` at `now`, given the node's
/// current connection, where a healthy connection is heard from at least every `heartbeat`.
pub fn admit(current: Option<&NodeEntry>, instance: u64, now: Instant, heartbeat: Duration) -> Admission {
    match current {
        None => Admission::New,
        Some(c) if c.instance == instance => Admission::Replace(Takeover::SameEdge),
        Some(c) if c.last_heard.silent_for(now) > heartbeat * 2 => Admission::Replace(Takeover::Lapsed),
        Some(_) => Admission::Refuse,
    }
}

/// Counters of a node that outlive its connections.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Control channels accepted (1 + reconnects).
    pub connects: crate::session::stats::Counter,
    /// Control connections refused because another edge held the node's identity.
    pub identity_conflicts: crate::session::stats::Counter,
    /// When an identity conflict was last logged as a warning (they are logged once a minute).
    pub conflict_warned: Mutex<Option<Instant>>,
    /// Smoothed Ping/Pong round trip of the current control channel, µs (0 = none yet).
    pub rtt_us: std::sync::atomic::AtomicU64,
}

/// A node whose control channel ended, remembered for the grace period.
#[derive(Debug, Clone)]
pub struct Departed {
    /// Its streams when it left.
    pub catalog: Vec<CatalogEntry>,
    /// When it left.
    pub since: Instant,
}

/// All connected nodes, and those that left within the grace period.
#[derive(Debug)]
pub struct NodeRegistry {
    nodes: Mutex<HashMap<String, NodeEntry>>,
    departed: Mutex<HashMap<String, Departed>>,
    /// How long a node that left is waited for, µs (a reload changes it).
    grace_us: AtomicU64,
    /// Per node ever connected (bounded by the identities the tunnel CA issued).
    stats: Mutex<HashMap<String, Arc<NodeStats>>>,
    epoch: Instant,
}

impl Default for NodeRegistry {
    fn default() -> Self {
        Self::new(Duration::ZERO)
    }
}

impl NodeRegistry {
    /// An empty registry that waits `grace` for a node that left.
    pub fn new(grace: Duration) -> Self {
        Self {
            nodes: Mutex::default(),
            departed: Mutex::default(),
            grace_us: AtomicU64::new(grace.as_micros() as u64),
            stats: Mutex::default(),
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeEntry>> {
        // Every critical section is a single map operation; a poisoned map is consistent.
        self.nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_departed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Departed>> {
        self.departed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long a node that left is waited for.
    pub fn grace(&self) -> Duration {
        Duration::from_micros(self.grace_us.load(Ordering::Relaxed))
    }

    /// Sets how long a node that left is waited for (a reload).
    pub fn set_grace(&self, grace: Duration) {
        self.grace_us.store(grace.as_micros() as u64, Ordering::Relaxed);
    }

    /// A last-heard stamp for a new connection, heard at `now`.
    pub fn last_heard(&self, now: Instant) -> Arc<LastHeard> {
        Arc::new(LastHeard::new(self.epoch, now))
    }

    /// Registers a node's control connection if [`admit`] lets it in: `Ok` with the connection
    /// it replaces (and why), `Err` with the address of the healthy connection that holds the
    /// node.
    pub fn register(
        &self,
        node: &str,
        entry: NodeEntry,
        now: Instant,
        heartbeat: Duration,
    ) -> Result<Option<(NodeEntry, Takeover)>, Remote> {
        let mut nodes = self.lock();
        let replaced = match admit(nodes.get(node), entry.instance, now, heartbeat) {
            Admission::Refuse => {
                let holder = nodes.get(node).map_or(entry.remote, |c| c.remote);
                drop(nodes);
                self.node_stats(node).identity_conflicts.add(1);
                return Err(holder);
            }
            Admission::New => None,
            Admission::Replace(why) => nodes.remove(node).map(|old| (old, why)),
        };
        nodes.insert(node.to_owned(), entry);
        drop(nodes);
        self.lock_departed().remove(node);
        self.node_stats(node).connects.add(1);
        Ok(replaced)
    }

    /// Replaces the catalog of the node's connection `conn_id` (a reloaded edge configuration).
    pub fn set_catalog(&self, node: &str, conn_id: u64, catalog: Vec<CatalogEntry>) {
        if let Some(e) = self.lock().get_mut(node).filter(|e| e.conn_id == conn_id) {
            e.catalog = catalog;
        }
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

    /// Removes the node if `conn_id` is still its current connection, remembering it for the
    /// grace period; true if removed.
    pub fn unregister(&self, node: &str, conn_id: u64) -> bool {
        let mut nodes = self.lock();
        if nodes.get(node).is_none_or(|e| e.conn_id != conn_id) {
            return false;
        }
        let entry = nodes.remove(node);
        drop(nodes);
        if let Some(e) = entry
            && !self.grace().is_zero()
        {
            self.lock_departed().insert(node.to_owned(), Departed { catalog: e.catalog, since: Instant::now() });
        }
        true
    }

    /// Whether the node's control channel is connected now (not merely departed within the
    /// grace period).
    pub fn connected(&self, node: &str) -> bool {
        self.lock().contains_key(node)
    }

    /// Checks the node offers the stream and is connected, or left less than the grace period
    /// ago (its viewers wait for it).
    pub fn check_stream(&self, node: &str, stream: &str) -> Result<(), NodeError> {
        let has = |catalog: &[CatalogEntry]| {
            if catalog.iter().any(|e| e.name == stream) {
                Ok(())
            } else {
                Err(NodeError::NoSuchStream { node: node.into(), stream: stream.into() })
            }
        };
        if let Some(entry) = self.lock().get(node) {
            return has(&entry.catalog);
        }
        match self.departed(node) {
            Some(d) => has(&d.catalog),
            None => Err(NodeError::NotConnected { node: node.into() }),
        }
    }

    /// The node, if it left less than the grace period ago (forgotten after it).
    pub fn departed(&self, node: &str) -> Option<Departed> {
        let mut departed = self.lock_departed();
        let grace = self.grace();
        departed.retain(|_, d| d.since.elapsed() < grace);
        departed.get(node).cloned()
    }

    /// Every node that left less than the grace period ago, sorted by name.
    pub fn departed_nodes(&self) -> Vec<(String, Departed)> {
        let mut departed = self.lock_departed();
        let grace = self.grace();
        departed.retain(|_, d| d.since.elapsed() < grace);
        let mut v: Vec<_> = departed.iter().map(|(k, d)| (k.clone(), d.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
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

    /// How many nodes are connected.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no node is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every entry, sorted by node name.
    pub fn snapshot(&self) -> Vec<(String, NodeEntry)> {
        let mut v: Vec<_> = self.lock().iter().map(|(k, e)| (k.clone(), e.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Forgets a node that went away, so its viewers do not wait the grace period for it (a
    /// revoked node will not come back).
    pub fn forget(&self, node: &str) {
        self.lock_departed().remove(node);
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

    fn entry(instance: u64, heard: Arc<LastHeard>) -> NodeEntry {
        let (commands, _) = mpsc::channel(1);
        NodeEntry {
            conn_id: instance,
            instance,
            last_heard: heard,
            agent: String::new(),
            catalog: vec![CatalogEntry { name: "cam1".into(), description: String::new() }],
            remote: Remote::new(std::net::SocketAddr::from(([127, 0, 0, 1], 1))),
            connected_at: Instant::now(),
            commands,
            cancel: CancellationToken::new(),
        }
    }

    #[test]
    fn a_second_edge_is_refused_while_the_first_is_healthy_and_takes_over_when_it_lapses() {
        let hb = Duration::from_secs(1);
        let t0 = Instant::now();
        let first = entry(1, Arc::new(LastHeard::new(t0, t0)));
        assert_eq!(admit(None, 2, t0, hb), Admission::New);
        assert_eq!(admit(Some(&first), 1, t0, hb), Admission::Replace(Takeover::SameEdge), "the same edge reconnects");
        assert_eq!(admit(Some(&first), 2, t0 + hb, hb), Admission::Refuse, "another edge, first healthy");
        assert_eq!(admit(Some(&first), 2, t0 + hb * 2, hb), Admission::Refuse, "two heartbeats is still healthy");
        let later = t0 + hb * 2 + Duration::from_millis(1);
        assert_eq!(admit(Some(&first), 2, later, hb), Admission::Replace(Takeover::Lapsed), "its heartbeat lapsed");
        first.last_heard.heard(later);
        assert_eq!(admit(Some(&first), 2, later, hb), Admission::Refuse, "heard again");
    }

    #[test]
    fn registering_counts_conflicts_and_a_node_that_left_is_remembered_for_the_grace_period() {
        let hb = Duration::from_secs(1);
        let reg = NodeRegistry::new(Duration::from_millis(200));
        let now = Instant::now();
        assert!(reg.register("n", entry(1, reg.last_heard(now)), now, hb).unwrap().is_none());
        assert!(reg.register("n", entry(2, reg.last_heard(now)), now, hb).is_err());
        assert_eq!(reg.node_stats("n").identity_conflicts.get(), 1);
        assert_eq!(reg.node_stats("n").connects.get(), 1);
        assert!(reg.unregister("n", 1));
        assert_eq!(reg.check_stream("n", "cam1"), Ok(()), "within the grace period");
        assert!(matches!(reg.check_stream("n", "cam9"), Err(NodeError::NoSuchStream { .. })));
        std::thread::sleep(Duration::from_millis(250));
        assert!(matches!(reg.check_stream("n", "cam1"), Err(NodeError::NotConnected { .. })), "forgotten after it");
    }

    #[test]
    fn the_command_queue_holds_a_start_and_a_stop_for_every_stream() {
        assert_eq!(command_queue(0), COMMAND_QUEUE);
        assert_eq!(command_queue(100), 200);
        let max = command_queue(mediamesh_tunnel::wire::MAX_CATALOG_ENTRIES);
        assert_eq!(max, 512, "bounded by the catalog's own cap");
    }
}
