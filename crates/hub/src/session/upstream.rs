//! Where a stream session's frames come from, behind one interface.
//!
//! A session asks its [`Upstream`] for the stream when its lifecycle says so, and lets it go
//! when the last viewer has lingered out. Frames then arrive through a data tunnel that
//! attaches to the session by id ([`super::Sessions::attach`]), or from a relay that the
//! upstream opened itself. One kind is [`EdgeUpstream`], an edge connected to this hub
//! (AddVideo and RemoveVideo on its control channel); the other is
//! [`crate::cluster::relay::RelayUpstream`], a stream of a node connected to another hub of the
//! cluster.

use std::fmt;
use std::sync::Arc;

use crate::registry::{NodeCommand, NodeError, NodeRegistry};

use super::{Session, StreamKey};

/// Why an upstream could not be asked for a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// Whoever has the stream cannot be reached now; the session waits for it to return.
    #[error("{0}")]
    Unreachable(String),
    /// The request cannot be made; the session's viewers are told why.
    #[error("{0}")]
    Failed(String),
}

/// The ids of relays in a session's upstream slot start here, apart from data tunnels' ids
/// (which count from 1), so that a session can tell a relay feeds it.
pub const RELAY_UPSTREAM_IDS: u64 = 1 << 62;

/// Where a session's frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// An edge connected to this hub.
    Edge,
    /// Another hub of the cluster, by relay.
    Relay,
}

impl UpstreamKind {
    /// Its name in logs and the API.
    pub fn name(self) -> &'static str {
        match self {
            UpstreamKind::Edge => "edge",
            UpstreamKind::Relay => "relay",
        }
    }
}

/// A source of frames for sessions.
pub trait Upstream: fmt::Debug + Send + Sync {
    /// Where `session`'s frames come from now.
    fn kind(&self, session: &Session) -> UpstreamKind;

    /// Whether `key` can be asked for: its node is known and offers the stream.
    fn check_stream(&self, key: &StreamKey) -> Result<(), NodeError>;

    /// Asks for the session's stream; its frames will come through a data tunnel naming the
    /// session's id.
    fn start(&self, session: &Arc<Session>) -> Result<(), StartError>;

    /// The session no longer wants the stream. Best effort: the data tunnel is cancelled by
    /// the session either way.
    fn stop(&self, session: &Session);
}

/// Streams of edges connected to this hub.
#[derive(Debug)]
pub struct EdgeUpstream {
    registry: Arc<NodeRegistry>,
}

impl EdgeUpstream {
    /// Edges in `registry`.
    pub fn new(registry: Arc<NodeRegistry>) -> Self {
        Self { registry }
    }
}

impl Upstream for EdgeUpstream {
    fn kind(&self, _: &Session) -> UpstreamKind {
        UpstreamKind::Edge
    }

    fn check_stream(&self, key: &StreamKey) -> Result<(), NodeError> {
        self.registry.check_stream(&key.node, &key.stream)
    }

    fn start(&self, session: &Arc<Session>) -> Result<(), StartError> {
        let cmd = NodeCommand::AddVideo { session: session.id, stream: session.key.stream.clone() };
        match self.registry.send(&session.key.node, cmd) {
            Ok(()) => Ok(()),
            // The node left between the viewer's check and now: wait for it to return.
            Err(e @ NodeError::NotConnected { .. }) => Err(StartError::Unreachable(e.to_string())),
            Err(e) => Err(StartError::Failed(e.to_string())),
        }
    }

    fn stop(&self, session: &Session) {
        let cmd = NodeCommand::RemoveVideo { session: session.id, stream: session.key.stream.clone() };
        if let Err(e) = self.registry.send(&session.key.node, cmd) {
            tracing::debug!(stream = %session.key, session = session.id, error = %e, "RemoveVideo not sent");
        }
    }
}
