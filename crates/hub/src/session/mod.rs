//! Stream sessions: one per `node/stream` key, created by the first viewer, shared by all.
//!
//! [`Sessions`] maps keys to [`Session`]s. A session owns the stream's [`FrameLog`] and its
//! counters; its lifecycle ([`lifecycle::Lifecycle`], pure) is run by a driver task
//! ([`driver`]). Viewers join with [`Sessions::join`] and get a [`Viewer`] whose drop leaves.
//! A data tunnel attaches with [`Sessions::attach`] and pushes frames straight into the log.

pub mod admission;
pub(crate) mod driver;
pub mod lifecycle;
pub mod log;
mod nodes;
pub mod stats;
pub mod upstream;
mod viewer;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use mediamesh_tunnel::uplink::KEYFRAME_REQUEST_GAP;
use mediamesh_tunnel::wire::SessionId;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::admission::{Admission, Refusal, ViewerLimits};
use self::lifecycle::{LifecycleConfig, Phase};
use self::log::{FrameLog, LogConfig};
use self::stats::{SessionStats, ViewerStats};
use self::upstream::{EdgeUpstream, Upstream};
use self::viewer::Admitted;
pub use self::viewer::{BehindPolicy, Viewer, ViewerEnd};
use crate::registry::NodeRegistry;

/// Identifies a stream: the node that publishes it and its catalog name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    /// The node.
    pub node: String,
    /// The stream.
    pub stream: String,
}

impl StreamKey {
    /// A key from its parts.
    pub fn new(node: impl Into<String>, stream: impl Into<String>) -> Self {
        Self { node: node.into(), stream: stream.into() }
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.stream)
    }
}

/// Events the driver of a session receives from tunnel tasks. Control-plane only: a handful
/// per session lifetime, never one per frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The data tunnel delivered its first keyframe.
    UpstreamAttached,
    /// The source ended for good.
    UpstreamEnded(String),
    /// The data tunnel was lost; the edge may bring it back.
    UpstreamLost(String),
    /// The edge could not start the stream.
    StartFailed(String),
    /// The node's control channel closed.
    NodeGone,
    /// The node's control channel is back and the edge did not re-announce this session.
    NodeBack,
    /// The node's control channel is back and the edge re-announced this session: it still
    /// runs it.
    NodeReannounced,
    /// The node can be reached a better way (a cluster's node moved): ask again.
    NodeMoved,
}

const EVENT_QUEUE: usize = 16;

/// Settings of every session.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// Linger and start timeout.
    pub lifecycle: LifecycleConfig,
    /// Viewers per stream, hub and address, and cold starts per node.
    pub limits: ViewerLimits,
    /// Frame log bounds.
    pub log: LogConfig,
    /// When a viewer that keeps falling behind is let go.
    pub behind: BehindPolicy,
}

/// Hub-wide counters that outlive sessions.
#[derive(Debug, Default)]
pub struct HubCounters {
    /// Viewers that left, by protocol and why.
    viewer_ends: Mutex<std::collections::BTreeMap<(&'static str, ViewerEnd), u64>>,
}

impl HubCounters {
    fn viewer_ended(&self, protocol: &'static str, end: ViewerEnd) {
        *lock(&self.viewer_ends).entry((protocol, end)).or_insert(0) += 1;
    }

    /// Viewers that left so far, by protocol and why.
    pub fn viewer_ends(&self) -> Vec<((&'static str, ViewerEnd), u64)> {
        lock(&self.viewer_ends).iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// One stream session.
#[derive(Debug)]
pub struct Session {
    /// The stream.
    pub key: StreamKey,
    /// The id sent in AddVideo; the data tunnel names it.
    pub id: SessionId,
    /// When the first viewer created it.
    pub created: Instant,
    /// Recent frames, shared by every viewer.
    pub log: Arc<FrameLog>,
    /// Counters.
    pub stats: SessionStats,
    /// Keyframe requests for whatever feeds the session.
    pub keyframes: KeyframeRequests,
    counters: Arc<HubCounters>,
    behind: BehindPolicy,
    viewers: Mutex<HashMap<u64, Arc<ViewerStats>>>,
    demand: Notify,
    events: mpsc::Sender<SessionEvent>,
    phase: Mutex<Phase>,
    /// Where the frames come from.
    source: Arc<dyn Upstream>,
    upstream: Mutex<UpstreamSlot>,
}

/// A session's keyframe requests to its upstream (the edge's data tunnel or a relay), which
/// passes them on to the source: at most one per [`KEYFRAME_REQUEST_GAP`], however many
/// viewers, relays or broken chains ask.
#[derive(Debug, Default)]
pub struct KeyframeRequests {
    last: Mutex<Option<Instant>>,
    wanted: Notify,
}

impl KeyframeRequests {
    /// Asks for a keyframe at `now`; false when one was asked less than the gap ago.
    pub fn request(&self, now: Instant) -> bool {
        let mut last = lock(&self.last);
        if last.is_some_and(|t| now < t + KEYFRAME_REQUEST_GAP) {
            return false;
        }
        *last = Some(now);
        // Kept for the upstream's next poll if none waits (it may be reconnecting).
        self.wanted.notify_one();
        true
    }

    /// Resolves when a keyframe is wanted; for the task that talks to the upstream.
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }
}

/// The data tunnel feeding a session, and whether the session still takes one.
#[derive(Debug, Default)]
struct UpstreamSlot {
    /// The current tunnel's id and cancel token.
    current: Option<(u64, CancellationToken)>,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections here are single map/field updates; a poisoned value is consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Session {
    /// The coarse lifecycle state.
    pub fn phase(&self) -> Phase {
        *lock(&self.phase)
    }

    /// Where the session's frames come from.
    pub fn source(&self) -> &Arc<dyn Upstream> {
        &self.source
    }

    /// How many viewers are attached.
    pub fn viewer_count(&self) -> usize {
        lock(&self.viewers).len()
    }

    /// Frames delivered to viewers, summed over the viewers attached and those that left.
    pub fn frames_out(&self) -> u64 {
        let live = lock(&self.viewers);
        self.stats.frames_out.get() + live.values().map(|v| v.frames.get()).sum::<u64>()
    }

    /// Payload bytes delivered to viewers, summed over the viewers attached and those that left.
    pub fn bytes_out(&self) -> u64 {
        let live = lock(&self.viewers);
        self.stats.bytes_out.get() + live.values().map(|v| v.bytes.get()).sum::<u64>()
    }

    /// Counters of each viewer, by id.
    pub fn viewers(&self) -> Vec<Arc<ViewerStats>> {
        let mut v: Vec<_> = lock(&self.viewers).values().cloned().collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Reports an event to the driver (waits if its small queue is full).
    pub async fn report(&self, event: SessionEvent) {
        // The driver only stops after the session closed; then the event is moot.
        let _ = self.events.send(event).await;
    }

    /// Reports an event without waiting; dropped if the queue is full.
    pub fn try_report(&self, event: SessionEvent) {
        if let Err(e) = self.events.try_send(event) {
            tracing::debug!(stream = %self.key, session = self.id, error = %e, "session event not delivered");
        }
    }

    /// Installs data tunnel `id` with its cancel token, cancelling the previous tunnel.
    /// Returns false (and cancels `token`) if the session has closed meanwhile.
    pub fn set_upstream(&self, id: u64, token: CancellationToken) -> bool {
        let mut slot = lock(&self.upstream);
        if slot.closed {
            token.cancel();
            return false;
        }
        if let Some((_, old)) = slot.current.replace((id, token)) {
            old.cancel();
        }
        true
    }

    /// Whether a relay from another hub feeds the session now (rather than an edge's data
    /// tunnel, or nothing).
    pub fn fed_by_relay(&self) -> bool {
        lock(&self.upstream).current.as_ref().is_some_and(|(id, _)| *id >= upstream::RELAY_UPSTREAM_IDS)
    }

    /// Data tunnel `id` is ending: true if it was still the session's current one (and so must
    /// report why), false if a newer tunnel replaced it or the session closed it.
    pub fn release_upstream(&self, id: u64) -> bool {
        let mut slot = lock(&self.upstream);
        let current = slot.current.as_ref().is_some_and(|(cur, _)| *cur == id);
        if current {
            slot.current = None;
        }
        current
    }

    /// Cancels the data tunnel; with `close`, refuses any later one.
    fn cancel_upstream(&self, close: bool) {
        let mut slot = lock(&self.upstream);
        slot.closed |= close;
        if let Some((_, t)) = slot.current.take() {
            t.cancel();
        }
    }

    fn set_phase(&self, phase: Phase) {
        *lock(&self.phase) = phase;
    }

    fn remove_viewer(&self, id: u64) {
        let mut viewers = lock(&self.viewers);
        if let Some(v) = viewers.remove(&id) {
            // Under the lock, so that a sum taken meanwhile counts the viewer exactly once.
            self.stats.frames_out.add(v.frames.get());
            self.stats.bytes_out.add(v.bytes.get());
            drop(viewers);
            self.demand.notify_one();
        }
    }
}

/// Why a data tunnel could not attach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// No such session (never existed, or already over).
    #[error("session {0} is not known to this hub (it may have ended)")]
    UnknownSession(SessionId),
    /// The session belongs to another node.
    #[error("session {session} belongs to node {owner:?}, not {node:?}")]
    WrongNode {
        /// The session.
        session: SessionId,
        /// Its node.
        owner: String,
        /// The node that tried to attach.
        node: String,
    },
    /// The session is for another stream.
    #[error("session {session} is for stream {expected:?}, not {stream:?}")]
    WrongStream {
        /// The session.
        session: SessionId,
        /// Its stream.
        expected: String,
        /// What the tunnel named.
        stream: String,
    },
}

#[derive(Debug, Default)]
pub(crate) struct SessionMaps {
    by_key: HashMap<StreamKey, Arc<Session>>,
    by_id: HashMap<SessionId, Arc<Session>>,
}

impl SessionMaps {
    pub(crate) fn remove(&mut self, s: &Arc<Session>) {
        if self.by_key.get(&s.key).is_some_and(|x| Arc::ptr_eq(x, s)) {
            self.by_key.remove(&s.key);
        }
        self.by_id.remove(&s.id);
    }
}

/// Every stream session of the hub.
#[derive(Debug)]
pub struct Sessions {
    maps: Mutex<SessionMaps>,
    next_session: AtomicU64,
    next_viewer: AtomicU64,
    /// Read when a session is created; a reload replaces it for the sessions after.
    config: mediamesh_tunnel::settings::Live<SessionConfig>,
    edges: Arc<dyn Upstream>,
    /// The nodes connected here.
    registry: Arc<NodeRegistry>,
    /// In a cluster, every session's upstream: the edge when its node is connected here, else
    /// a relay from the hub it is connected to.
    relay: Option<Arc<dyn Upstream>>,
    /// The cluster, which knows where the other hubs' nodes are.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    counters: Arc<HubCounters>,
    admission: Arc<Mutex<Admission>>,
}

impl Sessions {
    /// An empty set of sessions whose streams come from the edges in `registry`.
    pub fn new(
        config: SessionConfig,
        registry: Arc<NodeRegistry>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
        relay: Option<Arc<dyn Upstream>>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        // Session ids start at a random value so that ids neither of a restarted hub nor of
        // another hub of a cluster (an edge that moved re-announces those) collide with ones
        // an edge may still hold. 62 bits: far from wrapping however long the hub runs.
        let seed = crate::random_u64() >> 2;
        Arc::new(Self {
            maps: Mutex::new(SessionMaps::default()),
            next_session: AtomicU64::new(seed.max(1)),
            next_viewer: AtomicU64::new(1),
            config: mediamesh_tunnel::settings::Live::new(config),
            edges: Arc::new(EdgeUpstream::new(registry.clone())),
            registry,
            relay,
            cluster,
            shutdown,
            tasks,
            counters: Arc::default(),
            admission: Arc::new(Mutex::new(Admission::new(config.limits))),
        })
    }

    /// Viewers watching now, and refusals by reason since start.
    pub fn admission_counts(&self) -> (usize, [(&'static str, u64); 4]) {
        let a = lock(&self.admission);
        (a.total(), a.refused())
    }

    /// Viewers watching now, of every protocol (relays to other hubs included).
    pub fn viewers(&self) -> usize {
        lock(&self.admission).total()
    }

    /// Whether this hub is draining (a cluster's tombstone, or awaiting deletion): it takes no
    /// new viewers or edges.
    pub fn draining(&self) -> bool {
        use crate::cluster::records::HubState;
        self.cluster.as_ref().is_some_and(|c| matches!(c.state(), HubState::Tombstone | HubState::AwaitingDeletion))
    }

    /// Where a draining hub sends `node`'s edge: another serving hub's tunnel address, if the
    /// registry knows one ([`crate::cluster::balance::drain_target`]).
    pub fn drain_target(&self, node: &str, my_edges: usize) -> Option<String> {
        let c = self.cluster.as_ref()?;
        if c.status() != crate::cluster::RegistryStatus::Available {
            return None;
        }
        // Called once per edge of a draining hub: read the hubs, do not copy the whole view.
        let hubs = c.with_view(|v| v.hubs());
        crate::cluster::balance::drain_target(&c.name, my_edges, node, &hubs)
    }

    /// Hub-wide counters.
    pub fn counters(&self) -> &HubCounters {
        &self.counters
    }

    pub(crate) fn lock_maps(&self) -> MutexGuard<'_, SessionMaps> {
        lock(&self.maps)
    }

    /// Attaches a viewer from `remote` to the stream's session, creating the session (and
    /// sending AddVideo) if there is none, unless a viewer limit refuses it. The caller
    /// checked the node offers the stream.
    pub fn join(
        self: &Arc<Self>,
        key: &StreamKey,
        protocol: &'static str,
        remote: crate::listener::Remote,
    ) -> Result<Viewer, Refusal> {
        let now = Instant::now();
        let mut maps = self.lock_maps();
        let existing = maps.by_key.get(key).filter(|s| s.phase() != Phase::Closed && !s.log.is_closed()).cloned();
        let watching = existing.as_ref().map_or(0, |s| s.viewer_count());
        let cold = existing.is_none().then_some(key.node.as_str());
        lock(&self.admission).admit(remote.ip(), watching, cold, now)?;
        let (session, created) = match existing {
            Some(s) => (s, None),
            None => {
                let (s, rx) = self.new_session(key.clone(), now);
                maps.by_key.insert(key.clone(), s.clone());
                maps.by_id.insert(s.id, s.clone());
                (s.clone(), Some((s, rx)))
            }
        };
        let id = self.next_viewer.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::new(ViewerStats::new(id, protocol, remote.to_string(), now));
        // The count changes under the map lock, so a driver deciding to close (which also holds
        // it) never misses a viewer that is joining.
        lock(&session.viewers).insert(id, stats.clone());
        session.demand.notify_one();
        drop(maps);
        if let Some((s, rx)) = created {
            tracing::info!(stream = %s.key, session = s.id, "session created by first viewer");
            self.tasks.spawn(driver::run(self.clone(), s, rx, now));
        }
        let cursor = session.log.subscribe();
        stats.position.store(cursor.position(), Ordering::Relaxed);
        let admitted = Admitted { admission: self.admission.clone(), address: remote.ip() };
        Ok(Viewer {
            session,
            cursor,
            stats,
            resyncs: std::collections::VecDeque::new(),
            end: None,
            _admitted: admitted,
        })
    }

    fn new_session(&self, key: StreamKey, now: Instant) -> (Arc<Session>, mpsc::Receiver<SessionEvent>) {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let s = Arc::new(Session {
            key: key.clone(),
            id: self.next_session.fetch_add(1, Ordering::Relaxed),
            created: now,
            log: Arc::new(FrameLog::new(self.config().log)),
            stats: SessionStats::new(now),
            counters: self.counters.clone(),
            behind: self.config().behind,
            viewers: Mutex::new(HashMap::new()),
            demand: Notify::new(),
            events: tx,
            phase: Mutex::new(Phase::Starting),
            source: self.upstream_for(&key),
            upstream: Mutex::new(UpstreamSlot::default()),
            keyframes: KeyframeRequests::default(),
        });
        (s, rx)
    }

    /// Finds the session a data tunnel names, checking it belongs to `node` and `stream`.
    pub fn attach(&self, node: &str, session: SessionId, stream: &str) -> Result<Arc<Session>, AttachError> {
        let s = self
            .lock_maps()
            .by_id
            .get(&session)
            .filter(|s| s.phase() != Phase::Closed)
            .cloned()
            .ok_or(AttachError::UnknownSession(session))?;
        if s.key.node != node {
            return Err(AttachError::WrongNode { session, owner: s.key.node.clone(), node: node.into() });
        }
        if s.key.stream != stream {
            return Err(AttachError::WrongStream { session, expected: s.key.stream.clone(), stream: stream.into() });
        }
        Ok(s)
    }

    /// The session with this id.
    pub fn by_id(&self, id: SessionId) -> Option<Arc<Session>> {
        self.lock_maps().by_id.get(&id).cloned()
    }

    /// The live session of a stream.
    pub fn get(&self, key: &StreamKey) -> Option<Arc<Session>> {
        self.lock_maps().by_key.get(key).cloned()
    }

    /// Every session, sorted by key.
    pub fn snapshot(&self) -> Vec<Arc<Session>> {
        let mut v: Vec<_> = self.lock_maps().by_key.values().cloned().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Whether viewers may join `key`: its node is connected and offers it, or a session for
    /// it is still open (waiting for its edge to come back).
    pub fn check_stream(&self, key: &StreamKey) -> Result<(), crate::registry::NodeError> {
        if let Some(c) = &self.cluster
            && self.draining()
        {
            let url = c
                .view()
                .hubs()
                .into_iter()
                .find(|h| h.name != c.name && h.state == crate::cluster::records::HubState::Allocated)
                .map(|h| h.stream_url);
            return Err(crate::registry::NodeError::Draining { hub: c.name.clone(), url });
        }
        let e = match self.upstream_for(key).check_stream(key) {
            Ok(()) => return Ok(()),
            Err(e) => match self.get(key) {
                Some(s) if s.phase() != Phase::Closed && !s.log.is_closed() => return Ok(()),
                _ => e,
            },
        };
        // Not here: the cluster may know where it is.
        let (Some(cluster), crate::registry::NodeError::NotConnected { node }) = (&self.cluster, &e) else {
            return Err(e);
        };
        let view = cluster.current_view().map_err(|reason| crate::registry::NodeError::RegistryUnavailable {
            node: node.clone(),
            reason: reason.to_string(),
        })?;
        match view.node(node) {
            Some(r) if r.hub != cluster.name => {
                if !r.catalog.iter().any(|c| c.name == key.stream) {
                    return Err(crate::registry::NodeError::NoSuchStream {
                        node: node.clone(),
                        stream: key.stream.clone(),
                    });
                }
                let url = view.hub(&r.hub).map(|h| h.stream_url.clone()).unwrap_or_default();
                Err(crate::registry::NodeError::OnOtherHub { node: node.clone(), hub: r.hub.clone(), url })
            }
            _ => Err(e),
        }
    }

    /// Where a new session of `key` gets its frames: in a cluster whose hubs can relay, from
    /// wherever its node is at each start (here, or another hub); else from this hub's edges.
    fn upstream_for(&self, key: &StreamKey) -> Arc<dyn Upstream> {
        match &self.relay {
            Some(router) if self.edges.check_stream(key).is_ok() || router.check_stream(key).is_ok() => router.clone(),
            _ => self.edges.clone(),
        }
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The settings new sessions take.
    pub(crate) fn config(&self) -> SessionConfig {
        *self.config.get()
    }

    /// Replaces the settings of sessions created from now on (a reload); running sessions keep
    /// theirs.
    pub(crate) fn set_config(&self, config: SessionConfig) {
        lock(&self.admission).set_limits(config.limits);
        self.config.set(config);
    }
}
