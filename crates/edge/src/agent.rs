//! The edge's control agent, without I/O or a clock: which streams run, in which session, and
//! what the hub is told.
//!
//! Rules it keeps:
//!
//! - **AddVideo** starts a stream in the hub's session, once: a repeated AddVideo for a
//!   running session changes nothing; a new session for a stream already running replaces the
//!   old one if the same hub (by name) started both (it restarted); a stream not in the
//!   catalog, or one whose source failed to start a moment ago, is answered with an Error.
//! - **Make-before-break**: a session another hub of a cluster started keeps running beside
//!   the new hub's until that hub closes its data tunnel (it has switched to a relay from the
//!   new hub), so the new tunnel carries frames before the old one closes. Both run a source
//!   meanwhile.
//! - **Re-announce**: uplinks outlive a broken control channel (each redials its own data
//!   tunnel), and the next Hello lists them ([`Agent::announce`]) so the hub re-binds them.
//! - **Orphan rule**: once the hub has been unreachable longer than its grace period (from its
//!   last Welcome), it has ended those sessions; their uplinks stop.
//! - **Reload**: a running stream whose configuration did not change keeps running; one that
//!   changed restarts in the same session; one that was removed stops, and the hub hears why.
//!
//! Driven by [`Agent::handle_input`], [`Agent::handle_timeout`], [`Agent::poll_output`] and
//! [`Agent::poll_timeout`]; the control task ([`crate::control`]) runs the uplinks and the link.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use mediamesh_tunnel::wire::{CatalogEntry, ErrorCode, ErrorMsg, Message, RunningStream, SessionId};

use crate::config::StreamConfig;
use crate::starts::Refused;

/// The hub's grace period until a Welcome says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// What happened, as the control task saw it.
#[derive(Debug)]
pub enum Input {
    /// The control channel is up; the hub keeps sessions this long while the edge is away.
    Connected {
        /// From the hub's Welcome.
        grace: Duration,
        /// The hub's name, from its Welcome.
        hub: String,
    },
    /// The control channel is down.
    Disconnected,
    /// The hub asks for a stream. `refused` is the last failed start of that stream, if it
    /// is too recent to try again ([`crate::starts`]).
    AddVideo {
        /// The hub's session.
        session: SessionId,
        /// The stream.
        stream: String,
        /// Why the stream may not start yet, if so.
        refused: Option<Refused>,
    },
    /// The hub no longer wants a stream.
    RemoveVideo {
        /// The hub's session.
        session: SessionId,
    },
    /// An uplink ended on its own: `failed` holds the source's reason, if it failed.
    UplinkEnded {
        /// Its session.
        session: SessionId,
        /// Which start of the session it was.
        start: u64,
        /// The source's failure, if that is why.
        failed: Option<String>,
    },
    /// The catalog was reloaded.
    Catalog(BTreeMap<String, StreamConfig>),
}

/// What the control task should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Start an uplink for `stream` in `session`; `start` tells this start from later ones.
    Start {
        /// The hub's session.
        session: SessionId,
        /// The stream.
        stream: String,
        /// Which start of the session this is.
        start: u64,
        /// The stream's configuration.
        config: StreamConfig,
    },
    /// Stop the session's uplink.
    Stop {
        /// The session.
        session: SessionId,
        /// Why, for the log.
        why: StopReason,
    },
    /// Send this to the hub (only while the control channel is up).
    Send(Message),
    /// The stream's source failed to start: further starts wait.
    StartFailed {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
}

/// Why the agent stops an uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The hub said RemoveVideo.
    RemoveVideo,
    /// A new session for the same stream replaces it.
    Replaced,
    /// Its configuration changed; it restarts in the same session.
    Reconfigured,
    /// The stream was removed from the catalog.
    Removed,
    /// The hub was unreachable longer than its grace period.
    Orphaned,
}

#[derive(Debug)]
struct Running {
    stream: String,
    start: u64,
    config: StreamConfig,
    /// The hub that asked for it.
    hub: String,
}

/// The control agent's state.
#[derive(Debug)]
pub struct Agent {
    catalog: BTreeMap<String, StreamConfig>,
    running: HashMap<SessionId, Running>,
    next_start: u64,
    grace: Duration,
    /// Since when the control channel is down (`None` while up).
    away_since: Option<Instant>,
    /// The hub of the current (or last) control channel.
    hub: String,
    outputs: VecDeque<Output>,
}

impl Agent {
    /// An agent with `catalog`, not connected since `now`, running nothing.
    pub fn new(now: Instant, catalog: BTreeMap<String, StreamConfig>) -> Self {
        Self {
            catalog,
            running: HashMap::new(),
            next_start: 0,
            grace: DEFAULT_GRACE,
            away_since: Some(now),
            hub: String::new(),
            outputs: VecDeque::new(),
        }
    }

    /// The running streams, for the next Hello.
    pub fn announce(&self) -> Vec<RunningStream> {
        let mut r: Vec<RunningStream> =
            self.running.iter().map(|(s, u)| RunningStream { session: *s, stream: u.stream.clone() }).collect();
        r.sort_by_key(|r| r.session);
        r
    }

    /// The catalog the hub is told about.
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        self.catalog.iter().map(|(name, s)| CatalogEntry { name: name.clone(), description: s.describe() }).collect()
    }

    /// The stream running in `session`, if any.
    pub fn stream(&self, session: SessionId) -> Option<&str> {
        self.running.get(&session).map(|u| u.stream.as_str())
    }

    /// How many uplinks run.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Feeds what happened at `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Connected { grace, hub } => {
                self.grace = grace;
                self.away_since = None;
                self.hub = hub;
            }
            Input::Disconnected => {
                self.away_since.get_or_insert(now);
            }
            Input::AddVideo { session, stream, refused } => self.add_video(session, stream, refused),
            Input::RemoveVideo { session } => self.stop(session, StopReason::RemoveVideo),
            Input::UplinkEnded { session, start, failed } => {
                if self.running.get(&session).is_none_or(|u| u.start != start) {
                    return; // an earlier start of a restarted session
                }
                let Some(u) = self.running.remove(&session) else { return };
                if let Some(reason) = failed {
                    let message = reason.clone();
                    self.outputs.push_back(Output::StartFailed { stream: u.stream, reason });
                    self.send(Message::Error(ErrorMsg { code: ErrorCode::SourceFailed, session, message }));
                }
            }
            Input::Catalog(catalog) => {
                self.catalog = catalog;
                let entries = self.catalog();
                self.send(Message::Catalog { catalog: entries });
                self.apply_catalog();
            }
        }
    }

    /// Lets time pass to `now`: the orphan rule.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|t| now >= t) {
            let mut sessions: Vec<SessionId> = self.running.keys().copied().collect();
            sessions.sort_unstable();
            for s in sessions {
                self.stop(s, StopReason::Orphaned);
            }
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the running uplinks are orphaned if the hub stays away.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let since = self.away_since?;
        (!self.running.is_empty()).then(|| since + self.grace)
    }

    fn send(&mut self, msg: Message) {
        if self.away_since.is_none() {
            self.outputs.push_back(Output::Send(msg));
        }
    }

    fn add_video(&mut self, session: SessionId, stream: String, refused: Option<Refused>) {
        let Some(config) = self.catalog.get(&stream).cloned() else {
            let message = format!("this node has no stream named {stream:?}");
            return self.send(Message::Error(ErrorMsg { code: ErrorCode::UnknownStream, session, message }));
        };
        if self.running.contains_key(&session) {
            return; // a repeated AddVideo for a running session
        }
        if let Some(refused) = refused {
            // Its source failed to start a moment ago: answer with that, and spare the camera.
            let message = refused.to_string();
            return self.send(Message::Error(ErrorMsg { code: ErrorCode::SourceFailed, session, message }));
        }
        // A new session for a stream already running replaces the old one if this hub started
        // both (it restarted); another hub's goes on until that hub closes its tunnel.
        let mut stale: Vec<SessionId> =
            self.running.iter().filter(|(_, u)| u.stream == stream && u.hub == self.hub).map(|(s, _)| *s).collect();
        stale.sort_unstable();
        for s in stale {
            self.stop(s, StopReason::Replaced);
        }
        let hub = self.hub.clone();
        self.start(session, stream, config, hub);
    }

    fn start(&mut self, session: SessionId, stream: String, config: StreamConfig, hub: String) {
        self.next_start += 1;
        let start = self.next_start;
        self.running.insert(session, Running { stream: stream.clone(), start, config: config.clone(), hub });
        self.outputs.push_back(Output::Start { session, stream, start, config });
    }

    fn stop(&mut self, session: SessionId, why: StopReason) {
        if self.running.remove(&session).is_some() {
            self.outputs.push_back(Output::Stop { session, why });
        }
    }

    fn apply_catalog(&mut self) {
        let mut sessions: Vec<SessionId> = self.running.keys().copied().collect();
        sessions.sort_unstable();
        for session in sessions {
            let Some(u) = self.running.get(&session) else { continue };
            match self.catalog.get(&u.stream) {
                Some(cfg) if *cfg == u.config => {}
                Some(cfg) => {
                    let (stream, cfg, hub) = (u.stream.clone(), cfg.clone(), u.hub.clone());
                    self.stop(session, StopReason::Reconfigured);
                    self.start(session, stream, cfg, hub);
                }
                None => {
                    let message = format!("stream {:?} was removed from the edge's configuration", u.stream);
                    self.stop(session, StopReason::Removed);
                    self.send(Message::Error(ErrorMsg { code: ErrorCode::SourceFailed, session, message }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
