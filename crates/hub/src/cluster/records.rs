//! What hubs write to the registry: the keys and their JSON values.
//!
//! Every key sits under the cluster's prefix and under the writing hub's lease, so a hub that
//! stops renewing it (it crashed, or lost etcd) loses all of them at once:
//!
//! | key | value |
//! |---|---|
//! | `<prefix>/hubs/<hub>` | [`HubRecord`]: addresses, state, load |
//! | `<prefix>/nodes/<node>/<hub>` | [`NodeRecord`]: the node's catalog, as the hub it is connected to sees it |
//! | `<prefix>/sessions/<node>/<stream>/<hub>` | [`SessionRecord`]: a hub runs a session of the stream |
//!
//! The writing hub's name ends the node and session keys, so two hubs never write the same
//! key: a node moving from one hub to another is briefly listed under both, never under
//! neither, and the newer entry wins.

use serde::{Deserialize, Serialize};

/// A hub's lifecycle (seed 001's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HubState {
    /// Starting: not ready for work yet.
    Initialized,
    /// Serving.
    Allocated,
    /// Draining: no new viewers or edges; existing ones are moved away or end.
    Tombstone,
    /// Drained: about to exit.
    AwaitingDeletion,
}

impl HubState {
    /// The state's name, as in the API and `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            HubState::Initialized => "initialized",
            HubState::Allocated => "allocated",
            HubState::Tombstone => "tombstone",
            HubState::AwaitingDeletion => "awaitingDeletion",
        }
    }
}

/// How busy a hub is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    /// Stream sessions.
    pub streams: usize,
    /// Viewers of every protocol.
    pub viewers: usize,
    /// Edges connected.
    pub edges: usize,
    /// Media received from edges and relays, bits per second.
    pub bits_in_per_sec: u64,
    /// Media sent to viewers, bits per second.
    pub bits_out_per_sec: u64,
    /// Frames received per second (the packet rate of the tunnel side).
    pub frames_in_per_sec: u64,
    /// CPU time used, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
}

/// A hub, as it describes itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubRecord {
    /// Its name (`hubName`).
    pub name: String,
    /// Its stream port's base URL: the page, the API, viewers.
    pub stream_url: String,
    /// Its tunnel port, for edges and relays.
    pub tunnel_address: String,
    /// Where it is in its lifecycle.
    pub state: HubState,
    /// How busy it is.
    pub load: Load,
    /// Its version.
    pub version: String,
}

/// A stream a node offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogRecord {
    /// The stream's name.
    pub name: String,
    /// Its description.
    pub description: String,
}

/// A node connected to a hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The hub its control channel is connected to.
    pub hub: String,
    /// Its streams.
    pub catalog: Vec<CatalogRecord>,
}

/// A stream session a hub runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    /// The hub.
    pub hub: String,
    /// The session's id at that hub.
    pub session: u64,
    /// Its phase (`starting`, `live`, …).
    pub phase: String,
    /// Its viewers at that hub.
    pub viewers: usize,
}

/// The registry's keys of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// What a key of the registry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `hubs/<hub>`.
    Hub(String),
    /// `nodes/<node>/<hub>`.
    Node {
        /// The node.
        node: String,
        /// The hub it is connected to.
        hub: String,
    },
    /// `sessions/<node>/<stream>/<hub>`.
    Session {
        /// The node.
        node: String,
        /// The stream.
        stream: String,
        /// The hub running it.
        hub: String,
    },
}

impl Keys {
    /// The keys under `prefix` (`/mediamesh`).
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    /// Everything of the cluster: the prefix with a trailing `/`.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The key of `key`.
    pub fn key(&self, key: &Key) -> String {
        match key {
            Key::Hub(hub) => format!("{}/hubs/{hub}", self.prefix),
            Key::Node { node, hub } => format!("{}/nodes/{node}/{hub}", self.prefix),
            Key::Session { node, stream, hub } => format!("{}/sessions/{node}/{stream}/{hub}", self.prefix),
        }
    }

    /// What `key` names, if it is one of ours. Names never hold `/` (they are DNS names and
    /// stream names), so the parts split cleanly.
    pub fn parse(&self, key: &str) -> Option<Key> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        match parts[..] {
            ["hubs", hub] => Some(Key::Hub(hub.into())),
            ["nodes", node, hub] => Some(Key::Node { node: node.into(), hub: hub.into() }),
            ["sessions", node, stream, hub] => {
                Some(Key::Session { node: node.into(), stream: stream.into(), hub: hub.into() })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_foreign_keys_are_ignored() {
        let k = Keys::new("/mm");
        for key in [
            Key::Hub("hub-a".into()),
            Key::Node { node: "edge-1".into(), hub: "hub-a".into() },
            Key::Session { node: "edge-1".into(), stream: "cam_1".into(), hub: "hub-b".into() },
        ] {
            assert_eq!(k.parse(&k.key(&key)), Some(key));
        }
        assert_eq!(k.key(&Key::Hub("h".into())), "/mm/hubs/h");
        for foreign in ["/mm", "/mm/", "/mmx/hubs/a", "/mm/hubs/", "/mm/hubs/a/b", "/mm/nodes/a", "/other/hubs/a"] {
            assert_eq!(k.parse(foreign), None, "{foreign}");
        }
    }
}
