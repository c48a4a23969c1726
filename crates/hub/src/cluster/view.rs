//! One hub's picture of the whole cluster, without I/O: the registry's entries, kept current by
//! a snapshot and then the watch's events, in revision order.

use std::collections::BTreeMap;

use super::records::{HubRecord, Key, Keys, NodeRecord, SessionRecord};

/// Why an entry was not taken into the view.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The key is under the prefix but is none of ours.
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    /// The value is not the record its key calls for.
    #[error("key {key:?}: {source}")]
    BadValue {
        /// The key.
        key: String,
        /// Why it does not parse.
        source: serde_json::Error,
    },
}

/// A node's entry, and the revision that wrote it (the newest wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAt {
    /// Its record.
    pub record: NodeRecord,
    /// etcd's modification revision of the entry.
    pub revision: i64,
}

/// The cluster's entries.
#[derive(Debug, Default, Clone)]
pub struct ClusterView {
    hubs: BTreeMap<String, HubRecord>,
    /// node → hub → entry.
    nodes: BTreeMap<String, BTreeMap<String, NodeAt>>,
    /// (node, stream) → hub → record.
    sessions: BTreeMap<(String, String), BTreeMap<String, SessionRecord>>,
    /// The revision the view is current to.
    revision: i64,
}

impl ClusterView {
    /// Forgets everything (before a new snapshot).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// An entry was written (`Some` value) or deleted at `revision`.
    pub fn apply(&mut self, keys: &Keys, key: &str, value: Option<&[u8]>, revision: i64) -> Result<(), ViewError> {
        self.revision = self.revision.max(revision);
        let parsed = keys.parse(key).ok_or_else(|| ViewError::UnknownKey(key.to_owned()))?;
        let bad = |source| ViewError::BadValue { key: key.to_owned(), source };
        match (parsed, value) {
            (Key::Hub(hub), Some(v)) => {
                self.hubs.insert(hub, serde_json::from_slice(v).map_err(bad)?);
            }
            (Key::Hub(hub), None) => {
                self.hubs.remove(&hub);
            }
            (Key::Node { node, hub }, Some(v)) => {
                let record = serde_json::from_slice(v).map_err(bad)?;
                self.nodes.entry(node).or_default().insert(hub, NodeAt { record, revision });
            }
            (Key::Node { node, hub }, None) => {
                if let Some(by_hub) = self.nodes.get_mut(&node) {
                    by_hub.remove(&hub);
                    if by_hub.is_empty() {
                        self.nodes.remove(&node);
                    }
                }
            }
            (Key::Session { node, stream, hub }, Some(v)) => {
                let record = serde_json::from_slice(v).map_err(bad)?;
                self.sessions.entry((node, stream)).or_default().insert(hub, record);
            }
            (Key::Session { node, stream, hub }, None) => {
                let k = (node, stream);
                if let Some(by_hub) = self.sessions.get_mut(&k) {
                    by_hub.remove(&hub);
                    if by_hub.is_empty() {
                        self.sessions.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }

    /// The revision the view is current to.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Every hub, by name.
    pub fn hubs(&self) -> Vec<HubRecord> {
        self.hubs.values().cloned().collect()
    }

    /// A hub by name.
    pub fn hub(&self, name: &str) -> Option<&HubRecord> {
        self.hubs.get(name)
    }

    /// Where `node` is connected: the newest entry of a hub that is still registered.
    pub fn node(&self, node: &str) -> Option<&NodeRecord> {
        self.nodes
            .get(node)?
            .values()
            .filter(|n| self.hubs.contains_key(&n.record.hub))
            .max_by_key(|n| n.revision)
            .map(|n| &n.record)
    }

    /// Every node with where it is connected, by name.
    pub fn nodes(&self) -> Vec<(String, NodeRecord)> {
        self.nodes.keys().filter_map(|n| self.node(n).map(|r| (n.clone(), r.clone()))).collect()
    }

    /// The hubs running a session of `node/stream`.
    pub fn sessions(&self, node: &str, stream: &str) -> Vec<SessionRecord> {
        self.sessions
            .get(&(node.to_owned(), stream.to_owned()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::records::{HubState, Load};

    fn hub(name: &str) -> Vec<u8> {
        let r = HubRecord {
            name: name.into(),
            stream_url: format!("http://{name}:10005"),
            tunnel_address: format!("{name}:10006"),
            state: HubState::Allocated,
            load: Load::default(),
            version: "0".into(),
        };
        serde_json::to_vec(&r).unwrap()
    }

    fn node(hub: &str) -> Vec<u8> {
        serde_json::to_vec(&NodeRecord { hub: hub.into(), catalog: vec![] }).unwrap()
    }

    #[test]
    fn a_node_moving_between_hubs_is_at_the_newest_and_never_nowhere() {
        let k = Keys::new("/mm");
        let mut v = ClusterView::default();
        v.apply(&k, "/mm/hubs/a", Some(&hub("a")), 1).unwrap();
        v.apply(&k, "/mm/hubs/b", Some(&hub("b")), 2).unwrap();
        v.apply(&k, "/mm/nodes/edge-1/a", Some(&node("a")), 3).unwrap();
        assert_eq!(v.node("edge-1").unwrap().hub, "a");
        // It connects to b before a notices it left: b's entry is newer.
        v.apply(&k, "/mm/nodes/edge-1/b", Some(&node("b")), 4).unwrap();
        assert_eq!(v.node("edge-1").unwrap().hub, "b");
        v.apply(&k, "/mm/nodes/edge-1/a", None, 5).unwrap();
        assert_eq!(v.node("edge-1").unwrap().hub, "b");
        assert_eq!(v.nodes().len(), 1);
        // A hub whose own entry is gone (its lease expired first) no longer counts.
        v.apply(&k, "/mm/hubs/b", None, 6).unwrap();
        assert_eq!(v.node("edge-1"), None);
        assert_eq!(v.revision(), 6);
    }

    #[test]
    fn bad_entries_are_refused_with_their_key() {
        let k = Keys::new("/mm");
        let mut v = ClusterView::default();
        let e = v.apply(&k, "/mm/hubs/a", Some(b"{not json"), 1).unwrap_err();
        assert!(e.to_string().starts_with("key \"/mm/hubs/a\""), "{e}");
        assert!(matches!(v.apply(&k, "/mm/whatever", Some(b"{}"), 2), Err(ViewError::UnknownKey(_))));
        assert!(v.hubs().is_empty());
    }
}
