//! Draining a hub: seed 001's *tombstone* until no viewer is left or the deadline has passed,
//! then *awaiting deletion*, then the hub stops.
//!
//! On SIGTERM (a hub of a cluster) or `POST /api/v1/hub/drain`, the hub becomes a tombstone:
//! `/readyz` fails and its registry record says so, its edges are sent away (GoAway; a
//! draining hub refuses new control channels, so they redial the next hub of their list), new
//! viewers are refused with the address of a serving hub, and the viewers it has keep watching:
//! each session whose edge left is told where the node went and relays it from there. When no
//! viewer is left, or at the deadline, it awaits deletion: what is left is ended with a reason
//! (WebSocket close 1012, "service restart"), and the process exits.
//!
//! [`Drain`] decides when, without I/O or a clock; [`run`] moves the hub through it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Cluster;
use super::records::HubState;
use crate::registry::NodeRegistry;
use crate::session::Sessions;

/// What the drain hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The hub has this many viewers (relays to other hubs included).
    Viewers(usize),
}

/// Why a drain is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// No viewer was left.
    Empty,
    /// The deadline passed with this many viewers left; they are ended.
    Deadline {
        /// Viewers left.
        viewers: usize,
    },
}

impl std::fmt::Display for DrainEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DrainEnd::Empty => f.write_str("no viewer left"),
            DrainEnd::Deadline { viewers } => write!(f, "the deadline passed with {viewers} viewers left"),
        }
    }
}

/// A drain's decision, without I/O or a clock.
#[derive(Debug)]
pub struct Drain {
    deadline: Instant,
    viewers: usize,
    done: bool,
    outputs: VecDeque<DrainEnd>,
}

impl Drain {
    /// A drain started at `now` that ends at `now + deadline` at the latest.
    pub fn new(now: Instant, deadline: Duration) -> Self {
        Self { deadline: now + deadline, viewers: usize::MAX, done: false, outputs: VecDeque::new() }
    }

    /// Feeds what the hub has now.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        let Input::Viewers(n) = input;
        self.viewers = n;
        if n == 0 {
            self.finish(DrainEnd::Empty);
        }
        self.handle_timeout(now);
    }

    /// Fires the deadline when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline {
            let viewers = if self.viewers == usize::MAX { 0 } else { self.viewers };
            self.finish(DrainEnd::Deadline { viewers });
        }
    }

    fn finish(&mut self, end: DrainEnd) {
        if !std::mem::replace(&mut self.done, true) {
            self.outputs.push_back(end);
        }
    }

    /// The drain's end, once.
    pub fn poll_output(&mut self) -> Option<DrainEnd> {
        self.outputs.pop_front()
    }

    /// When the deadline fires, while the drain runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.done).then_some(self.deadline)
    }
}

/// How often the drain counts viewers.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Drains the hub, then cancels `drained`.
pub(crate) async fn run(
    cluster: Arc<Cluster>,
    registry: Arc<NodeRegistry>,
    sessions: Arc<Sessions>,
    deadline: Duration,
    drained: CancellationToken,
) {
    let started = Instant::now();
    cluster.set_state(HubState::Tombstone);
    info!(deadline_s = deadline.as_secs_f64(), "draining: edges sent away, new viewers refused");
    // Control channels close with GoAway("hub draining"); the edges' next dial here is refused.
    registry.cancel_all();
    let mut drain = Drain::new(started, deadline);
    let end = loop {
        drain.handle_input(Instant::now(), Input::Viewers(sessions.viewers()));
        if let Some(end) = drain.poll_output() {
            break end;
        }
        let next = drain.poll_timeout().map_or(CHECK_EVERY, |d| d.saturating_duration_since(Instant::now()));
        tokio::time::sleep(next.min(CHECK_EVERY)).await;
    };
    cluster.set_state(HubState::AwaitingDeletion);
    info!(%end, after_s = started.elapsed().as_secs_f64(), "drained; awaiting deletion");
    drained.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn it_ends_when_the_last_viewer_leaves() {
        let t0 = Instant::now();
        let mut d = Drain::new(t0, 30 * S);
        assert_eq!(d.poll_timeout(), Some(t0 + 30 * S));
        d.handle_input(t0 + S, Input::Viewers(3));
        assert_eq!(d.poll_output(), None);
        d.handle_input(t0 + 5 * S, Input::Viewers(0));
        assert_eq!(d.poll_output(), Some(DrainEnd::Empty));
        assert_eq!(d.poll_timeout(), None);
        // Once.
        d.handle_input(t0 + 6 * S, Input::Viewers(0));
        d.handle_timeout(t0 + 40 * S);
        assert_eq!(d.poll_output(), None);
    }

    #[test]
    fn the_deadline_ends_it_with_whoever_is_left() {
        let t0 = Instant::now();
        let mut d = Drain::new(t0, 10 * S);
        d.handle_input(t0, Input::Viewers(2));
        d.handle_timeout(t0 + 9 * S);
        assert_eq!(d.poll_output(), None);
        d.handle_timeout(t0 + 10 * S);
        assert_eq!(d.poll_output(), Some(DrainEnd::Deadline { viewers: 2 }));
        // A hub without viewers from the start is done at once.
        let mut d = Drain::new(t0, 10 * S);
        d.handle_input(t0, Input::Viewers(0));
        assert_eq!(d.poll_output(), Some(DrainEnd::Empty));
    }
}

/// Why a drain cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrainError {
    /// A hub alone has nowhere to send its edges and viewers.
    #[error("only a hub of a cluster drains (a hub alone has nowhere to send its edges and viewers); stop it instead")]
    NotClustered,
}

/// Starts a hub's drain once, and says when it is over.
pub struct DrainControl {
    cluster: Option<Arc<Cluster>>,
    registry: Arc<NodeRegistry>,
    sessions: Arc<Sessions>,
    tasks: tokio_util::task::TaskTracker,
    drained: CancellationToken,
    started: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for DrainControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainControl").field("drained", &self.drained.is_cancelled()).finish_non_exhaustive()
    }
}

impl DrainControl {
    /// For this hub's parts.
    pub(crate) fn new(
        cluster: Option<Arc<Cluster>>,
        registry: Arc<NodeRegistry>,
        sessions: Arc<Sessions>,
        tasks: tokio_util::task::TaskTracker,
    ) -> Self {
        Self {
            cluster,
            registry,
            sessions,
            tasks,
            drained: CancellationToken::new(),
            started: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Starts draining (once; a second call changes nothing) with `deadline`, or the
    /// configured one. Returns the deadline that applies.
    pub fn start(&self, deadline: Option<Duration>) -> Result<Duration, DrainError> {
        let cluster = self.cluster.as_ref().ok_or(DrainError::NotClustered)?;
        let deadline = deadline.unwrap_or(cluster.settings.drain_deadline.get());
        if !self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // At once, so that whoever asked sees the tombstone.
            cluster.set_state(HubState::Tombstone);
            let (registry, sessions) = (self.registry.clone(), self.sessions.clone());
            self.tasks.spawn(run(cluster.clone(), registry, sessions, deadline, self.drained.clone()));
        }
        Ok(deadline)
    }

    /// Resolves once the hub has drained (it awaits deletion).
    pub async fn drained(&self) {
        self.drained.cancelled().await;
    }
}
