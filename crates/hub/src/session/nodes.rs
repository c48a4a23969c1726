//! How a stream session hears of its node: its control channel going and coming back here,
//! and, in a cluster, the node showing up on another hub.

use mediamesh_tunnel::wire::{RunningStream, SessionId};

use super::{Phase, SessionEvent, Sessions, upstream};

impl Sessions {
    /// Tells every session of `node` that its control channel is gone.
    pub fn node_gone(&self, node: &str) {
        for s in self.snapshot().into_iter().filter(|s| s.key.node == node) {
            s.try_report(SessionEvent::NodeGone);
        }
        // It may be on another hub already (it moved there before this one saw it leave).
        self.node_elsewhere(node);
    }

    /// `node` is connected to another hub of the cluster: each session of it here whose edge
    /// is not connected here is told the node is back, so that a session that lost its edge
    /// asks for the stream again (through a relay) rather than wait out its grace period.
    pub fn node_elsewhere(&self, node: &str) {
        let Some(router) = &self.relay else { return };
        for s in self.snapshot().into_iter().filter(|s| s.key.node == node) {
            if !self.registry.connected(node) && router.check_stream(&s.key).is_ok() {
                s.try_report(SessionEvent::NodeMoved);
            }
        }
    }

    /// `node`'s control channel is (back) up and the edge says it runs `running`. Every session
    /// of the node is told whether the edge mentioned it (one it did not is started again if it
    /// was waiting for the edge); the running sessions this hub does not know are returned, for
    /// the edge to stop.
    pub fn node_back(&self, node: &str, running: &[RunningStream]) -> Vec<RunningStream> {
        let mut unknown = Vec::new();
        for r in running {
            let known = self.lock_maps().by_id.get(&r.session).is_some_and(|s| {
                s.key.node == node && s.key.stream == r.stream && s.phase() != Phase::Closed && !s.log.is_closed()
            });
            if !known {
                unknown.push(r.clone());
            }
        }
        for s in self.snapshot().into_iter().filter(|s| s.key.node == node) {
            let announced = running.iter().any(|r| r.session == s.id);
            let event = if announced {
                SessionEvent::NodeReannounced
            } else if s.source().kind(&s) == upstream::UpstreamKind::Relay {
                // A relay delivers the node's stream from another hub; its edge is here now.
                SessionEvent::NodeMoved
            } else {
                SessionEvent::NodeBack
            };
            s.try_report(event);
        }
        unknown
    }

    /// Whether another hub of the cluster runs session `id` of `node`'s `stream` (its
    /// registry entry says so).
    pub fn session_elsewhere(&self, node: &str, stream: &str, id: SessionId) -> bool {
        self.cluster.as_ref().is_some_and(|c| {
            c.current_view().is_ok_and(|v| v.sessions(node, stream).iter().any(|r| r.session == id && r.hub != c.name))
        })
    }
}
