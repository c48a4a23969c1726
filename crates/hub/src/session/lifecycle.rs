//! The on-demand lifecycle of one stream session, without I/O or a clock.
//!
//! Two things vary independently: whether the edge's upstream is there ([`Upstream`]) and
//! whether anyone is watching ([`Demand`]). The session is created by its first viewer, which
//! sends AddVideo at once; viewers arriving while the start is pending share it. When the last
//! viewer leaves, a linger timer runs; a viewer arriving within it keeps the upstream. When the
//! timer fires, RemoveVideo goes out and the session closes.
//!
//! When the link to the edge breaks, the session goes *away* for up to a grace period: viewers
//! stay, delivery pauses. The data tunnel and the node's control channel are separate links:
//!
//! - a lost data tunnel makes the session away; a keyframe from a new one makes it live again;
//! - a lost control channel alone changes nothing while the data tunnel delivers (a control
//!   blip must not end streams): it is noted, so that a data tunnel lost later waits for the
//!   node to return, and a start that was pending goes away at once;
//! - when the control channel returns, the edge's Hello says whether it still runs the session.
//!   If it does, its uplink brings the data tunnel back by itself. If it does not (the edge
//!   restarted), AddVideo goes out again for the same session.
//!
//! When the grace period runs out, viewers get a clean end of stream.
//!
//! Drive it like str0m's `Rtc`: [`Lifecycle::handle_input`] / [`Lifecycle::handle_timeout`]
//! with the current time, then drain [`Lifecycle::poll_output`], then sleep until
//! [`Lifecycle::poll_timeout`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Timers of the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// How long an unwatched session keeps its upstream.
    pub linger: Duration,
    /// How long to wait after AddVideo for the upstream's first keyframe.
    pub start_timeout: Duration,
    /// How long viewers are kept while the edge is away.
    pub grace: Duration,
}

/// Is the edge sending?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// AddVideo sent at `since`; no keyframe from a data tunnel yet.
    Requested {
        /// When AddVideo was sent.
        since: Instant,
    },
    /// A data tunnel delivers frames.
    Attached,
    /// The link to the edge broke at `since`; waiting for it to come back.
    Away {
        /// When the link broke.
        since: Instant,
        /// Whether the node's control channel is up again (AddVideo was re-sent).
        node_back: bool,
    },
}

/// Is anyone watching?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// This many viewers.
    Watched(usize),
    /// No viewer since `since`; the linger timer runs.
    Idle {
        /// When the last viewer left.
        since: Instant,
    },
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The number of viewers is now this.
    Viewers(usize),
    /// The edge's data tunnel delivered its first keyframe.
    UpstreamAttached,
    /// The source ended for good (the edge sent EndOfStream, or the tunnel broke the
    /// protocol).
    UpstreamEnded(String),
    /// The data tunnel was lost (the link broke, the edge went away); it may come back.
    UpstreamLost(String),
    /// The edge refused or failed to start the stream.
    StartFailed(String),
    /// The node's control channel is gone.
    NodeGone,
    /// The node's control channel is back and the edge did not re-announce this session.
    NodeBack,
    /// The node's control channel is back and the edge re-announced this session.
    NodeReannounced,
    /// The node can be reached a better way than what delivers or is awaited now (in a
    /// cluster: it connected to this hub while a relay delivers, or to another hub while this
    /// one waits for it): ask again. What delivers goes on until the new upstream replaces it.
    NodeMoved,
    /// The hub is shutting down.
    Shutdown,
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Viewers(n) => write!(f, "{n} viewers"),
            Input::UpstreamAttached => f.write_str("upstream attached"),
            Input::UpstreamEnded(r) => write!(f, "upstream ended: {r}"),
            Input::UpstreamLost(r) => write!(f, "upstream lost: {r}"),
            Input::StartFailed(r) => write!(f, "start failed: {r}"),
            Input::NodeGone => f.write_str("node gone"),
            Input::NodeBack => f.write_str("node back"),
            Input::NodeReannounced => f.write_str("node back, still running the stream"),
            Input::NodeMoved => f.write_str("node reachable another way"),
            Input::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send AddVideo for this session to the node.
    SendAddVideo,
    /// Send RemoveVideo for this session to the node and close the data tunnel.
    SendRemoveVideo,
    /// Tell every viewer the stream ended, with this reason.
    EndViewers(String),
    /// The session is over; forget it.
    Closed,
}

/// The coarse state shown in APIs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Waiting for the edge to start sending.
    Starting,
    /// Sending, with viewers.
    Live,
    /// Sending (or starting), without viewers, until the linger timer fires.
    Lingering,
    /// The edge is away; viewers wait for the grace period.
    Away,
    /// Over.
    Closed,
}

impl Phase {
    /// Lowercase name for APIs.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Live => "live",
            Phase::Lingering => "lingering",
            Phase::Away => "away",
            Phase::Closed => "closed",
        }
    }
}

/// The lifecycle of one session.
#[derive(Debug)]
pub struct Lifecycle {
    config: LifecycleConfig,
    upstream: Upstream,
    demand: Demand,
    /// Whether the node's control channel is up (AddVideo can reach the edge).
    node_up: bool,
    closed: bool,
    outputs: VecDeque<Output>,
}

impl Lifecycle {
    /// A session created at `now` by `viewers` first viewers (usually 1): AddVideo goes out.
    pub fn new(now: Instant, config: LifecycleConfig, viewers: usize) -> Self {
        let demand = if viewers > 0 { Demand::Watched(viewers) } else { Demand::Idle { since: now } };
        Self {
            config,
            upstream: Upstream::Requested { since: now },
            demand,
            node_up: true,
            closed: false,
            outputs: VecDeque::from([Output::SendAddVideo]),
        }
    }

    /// Feeds an event.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        if self.closed {
            return;
        }
        match input {
            Input::Viewers(n) => {
                self.demand = match (self.demand, n) {
                    (_, n) if n > 0 => Demand::Watched(n),
                    (Demand::Idle { since }, _) => Demand::Idle { since },
                    (Demand::Watched(_), _) => Demand::Idle { since: now },
                };
            }
            Input::UpstreamAttached => self.upstream = Upstream::Attached,
            Input::UpstreamEnded(reason) => self.close(Some(reason), true),
            Input::StartFailed(reason) => self.close(Some(reason), false),
            Input::UpstreamLost(_) => {
                let since = match self.upstream {
                    Upstream::Away { since, .. } => since,
                    _ => now,
                };
                self.upstream = Upstream::Away { since, node_back: self.node_up };
            }
            Input::NodeGone => {
                self.node_up = false;
                self.upstream = match self.upstream {
                    // The data tunnel still delivers: nothing to wait for yet.
                    Upstream::Attached => Upstream::Attached,
                    // AddVideo may have been lost with the control channel.
                    Upstream::Requested { .. } => Upstream::Away { since: now, node_back: false },
                    Upstream::Away { since, .. } => Upstream::Away { since, node_back: false },
                };
            }
            Input::NodeBack => {
                let was_down = !std::mem::replace(&mut self.node_up, true);
                match self.upstream {
                    Upstream::Away { since, node_back: false } => {
                        self.upstream = Upstream::Away { since, node_back: true };
                        self.outputs.push_back(Output::SendAddVideo);
                    }
                    // AddVideo may have been lost with the old control channel.
                    Upstream::Requested { .. } => {
                        self.upstream = Upstream::Away { since: now, node_back: true };
                        self.outputs.push_back(Output::SendAddVideo);
                    }
                    // The edge says it does not run the session, yet a tunnel delivers: it
                    // restarted behind a tunnel not yet seen to die. Its new uplink's tunnel
                    // replaces that one.
                    Upstream::Attached if was_down => self.outputs.push_back(Output::SendAddVideo),
                    Upstream::Attached => {}
                    Upstream::Away { node_back: true, .. } => {}
                }
            }
            Input::NodeReannounced => {
                self.node_up = true;
                if let Upstream::Away { since, node_back: false } = self.upstream {
                    // Its uplink redials the data tunnel by itself.
                    self.upstream = Upstream::Away { since, node_back: true };
                }
            }
            Input::NodeMoved => {
                self.node_up = true;
                if let Upstream::Away { since, .. } = self.upstream {
                    self.upstream = Upstream::Away { since, node_back: true };
                }
                self.outputs.push_back(Output::SendAddVideo);
            }
            Input::Shutdown => self.close(Some("the hub is shutting down".into()), true),
        }
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if let Upstream::Requested { since } = self.upstream
            && now >= since + self.config.start_timeout
        {
            let reason =
                format!("the edge did not start the stream within {:.1} s", self.config.start_timeout.as_secs_f64());
            self.close(Some(reason), true);
            return;
        }
        if let Upstream::Away { since, .. } = self.upstream
            && now >= since + self.config.grace
        {
            let reason = format!("the edge has been unreachable for {:.1} s", self.config.grace.as_secs_f64());
            self.close(Some(reason), true);
            return;
        }
        if let Demand::Idle { since } = self.demand
            && now >= since + self.config.linger
        {
            self.close(None, true);
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Lifecycle::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let start = match self.upstream {
            Upstream::Requested { since } => Some(since + self.config.start_timeout),
            Upstream::Away { since, .. } => Some(since + self.config.grace),
            Upstream::Attached => None,
        };
        let linger = match self.demand {
            Demand::Idle { since } => Some(since + self.config.linger),
            Demand::Watched(_) => None,
        };
        start.into_iter().chain(linger).min()
    }

    /// The coarse state.
    pub fn phase(&self) -> Phase {
        match (self.closed, self.upstream, self.demand) {
            (true, ..) => Phase::Closed,
            (false, _, Demand::Idle { .. }) => Phase::Lingering,
            (false, Upstream::Away { .. }, _) => Phase::Away,
            (false, Upstream::Requested { .. }, _) => Phase::Starting,
            (false, Upstream::Attached, Demand::Watched(_)) => Phase::Live,
        }
    }

    /// The upstream state.
    pub fn upstream(&self) -> Upstream {
        self.upstream
    }

    fn close(&mut self, end_reason: Option<String>, remove: bool) {
        if let Some(r) = end_reason {
            self.outputs.push_back(Output::EndViewers(r));
        }
        if remove {
            self.outputs.push_back(Output::SendRemoveVideo);
        }
        self.outputs.push_back(Output::Closed);
        self.closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const CFG: LifecycleConfig = LifecycleConfig {
        linger: Duration::from_secs(10),
        start_timeout: Duration::from_secs(5),
        grace: Duration::from_secs(30),
    };

    fn drain(l: &mut Lifecycle) -> Vec<Output> {
        std::iter::from_fn(|| l.poll_output()).collect()
    }

    #[test]
    fn first_viewer_starts_once_and_later_viewers_share_it() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(t0, CFG, 1);
        assert_eq!(drain(&mut l), vec![Output::SendAddVideo]);
        assert_eq!(l.phase(), Phase::Starting);
        l.handle_input(t0, Input::Viewers(3));
        assert_eq!(drain(&mut l), vec![], "concurrent first viewers share the pending start");
        l.handle_input(t0 + S, Input::UpstreamAttached);
        assert_eq!(l.phase(), Phase::Live);
        assert_eq!(l.poll_timeout(), None, "nothing to wait for while live and watched");
    }

    #[test]
    fn last_viewer_leaving_lingers_then_removes() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(t0, CFG, 1);
        l.handle_input(t0, Input::UpstreamAttached);
        drain(&mut l);
        l.handle_input(t0 + S, Input::Viewers(0));
        assert_eq!(l.phase(), Phase::Lingering);
        assert_eq!(l.poll_timeout(), Some(t0 + 11 * S));
        l.handle_timeout(t0 + 10 * S);
        assert_eq!(drain(&mut l), vec![], "not yet");
        l.handle_timeout(t0 + 11 * S);
        assert_eq!(drain(&mut l), vec![Output::SendRemoveVideo, Output::Closed]);
        assert_eq!(l.phase(), Phase::Closed);
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn viewer_returning_within_linger_reuses_the_upstream() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(t0, CFG, 1);
        l.handle_input(t0, Input::UpstreamAttached);
        drain(&mut l);
        l.handle_input(t0 + S, Input::Viewers(0));
        l.handle_input(t0 + 5 * S, Input::Viewers(1));
        l.handle_timeout(t0 + 20 * S);
        assert_eq!(drain(&mut l), vec![]);
        assert_eq!(l.phase(), Phase::Live);
        // A repeated zero count keeps the original linger start.
        l.handle_input(t0 + 21 * S, Input::Viewers(0));
        l.handle_input(t0 + 25 * S, Input::Viewers(0));
        assert_eq!(l.poll_timeout(), Some(t0 + 31 * S));
    }

    #[test]
    fn start_timeout_ends_viewers_and_cleans_up_the_edge() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(t0, CFG, 2);
        drain(&mut l);
        assert_eq!(l.poll_timeout(), Some(t0 + 5 * S));
        l.handle_timeout(t0 + 5 * S);
        let out = drain(&mut l);
        assert!(matches!(&out[0], Output::EndViewers(r) if r.contains("within 5.0 s")), "{out:?}");
        assert_eq!(&out[1..], &[Output::SendRemoveVideo, Output::Closed]);
    }

    #[test]
    fn everyone_leaving_while_starting_lingers_from_then() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(t0, LifecycleConfig { linger: 2 * S, start_timeout: 60 * S, grace: 30 * S }, 1);
        drain(&mut l);
        l.handle_input(t0 + S, Input::Viewers(0));
        assert_eq!(l.phase(), Phase::Lingering);
        assert_eq!(l.poll_timeout(), Some(t0 + 3 * S));
        l.handle_input(t0 + 2 * S, Input::UpstreamAttached);
        l.handle_timeout(t0 + 3 * S);
        assert_eq!(drain(&mut l), vec![Output::SendRemoveVideo, Output::Closed]);
    }

    #[test]
    fn failures_end_viewers_once() {
        let t0 = Instant::now();
        for (input, removes) in [
            (Input::StartFailed("no such stream".into()), false),
            (Input::UpstreamEnded("ffmpeg exited".into()), true),
            (Input::Shutdown, true),
        ] {
            let mut l = Lifecycle::new(t0, CFG, 1);
            drain(&mut l);
            l.handle_input(t0, input.clone());
            l.handle_input(t0, input.clone());
            let out = drain(&mut l);
            assert!(matches!(out[0], Output::EndViewers(_)), "{input:?}: {out:?}");
            assert_eq!(out.contains(&Output::SendRemoveVideo), removes, "{input:?}");
            assert_eq!(out.last(), Some(&Output::Closed));
            assert_eq!(out.iter().filter(|o| **o == Output::Closed).count(), 1);
        }
    }

    #[test]
    fn a_lost_link_keeps_viewers_for_the_grace_period_then_ends_them() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(t0, CFG, 2);
        l.handle_input(t0, Input::UpstreamAttached);
        drain(&mut l);
        l.handle_input(t0 + S, Input::UpstreamLost("no traffic for 3 s".into()));
        l.handle_input(t0 + 2 * S, Input::NodeGone);
        assert_eq!(drain(&mut l), vec![], "nothing ends while away");
        assert_eq!(l.phase(), Phase::Away);
        assert_eq!(l.poll_timeout(), Some(t0 + 31 * S), "grace counts from the first loss");
        l.handle_timeout(t0 + 30 * S);
        assert_eq!(drain(&mut l), vec![]);
        l.handle_timeout(t0 + 31 * S);
        let out = drain(&mut l);
        assert!(matches!(&out[0], Output::EndViewers(r) if r.contains("unreachable for 30.0 s")), "{out:?}");
        assert_eq!(&out[1..], &[Output::SendRemoveVideo, Output::Closed]);
    }

    #[test]
    fn the_node_coming_back_resends_add_video_once_and_a_keyframe_makes_it_live() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(t0, CFG, 1);
        l.handle_input(t0, Input::UpstreamAttached);
        drain(&mut l);
        l.handle_input(t0 + S, Input::UpstreamLost("reset".into()));
        l.handle_input(t0 + S, Input::NodeGone);
        l.handle_input(t0 + 5 * S, Input::NodeBack);
        l.handle_input(t0 + 5 * S, Input::NodeBack);
        assert_eq!(drain(&mut l), vec![Output::SendAddVideo], "once per return");
        assert_eq!(l.phase(), Phase::Away);
        l.handle_input(t0 + 6 * S, Input::UpstreamAttached);
        assert_eq!(l.phase(), Phase::Live);
        assert_eq!(l.poll_timeout(), None);
        // A loss after that starts a new grace period.
        l.handle_input(t0 + 100 * S, Input::UpstreamLost("reset".into()));
        assert_eq!(l.poll_timeout(), Some(t0 + 130 * S));
        // The data tunnel alone was lost: the control channel is up, so no AddVideo.
        l.handle_input(t0 + 101 * S, Input::NodeBack);
        assert_eq!(drain(&mut l), vec![]);
    }

    #[test]
    fn a_node_that_moved_is_asked_again_whatever_delivers_and_the_grace_stops_at_its_keyframe() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(t0, CFG, 1);
        l.handle_input(t0, Input::UpstreamAttached);
        drain(&mut l);
        // Delivering (a relay), and the node connected here: ask it, keep what delivers.
        l.handle_input(t0 + S, Input::NodeMoved);
        assert_eq!(drain(&mut l), vec![Output::SendAddVideo]);
        assert_eq!(l.phase(), Phase::Live);
        // Waiting for an edge that left, and it is on another hub now.
        l.handle_input(t0 + 2 * S, Input::NodeGone);
        l.handle_input(t0 + 2 * S, Input::UpstreamLost("reset".into()));
        assert_eq!(l.poll_timeout(), Some(t0 + 32 * S));
        l.handle_input(t0 + 3 * S, Input::NodeMoved);
        assert_eq!(drain(&mut l), vec![Output::SendAddVideo]);
        assert_eq!(l.phase(), Phase::Away);
        l.handle_input(t0 + 4 * S, Input::UpstreamAttached);
        assert_eq!((l.phase(), l.poll_timeout()), (Phase::Live, None));
        // Closed sessions ask nothing.
        l.handle_input(t0 + 5 * S, Input::Shutdown);
        drain(&mut l);
        l.handle_input(t0 + 6 * S, Input::NodeMoved);
        assert_eq!(drain(&mut l), vec![]);
    }

    #[test]
    fn a_control_channel_blip_ends_nothing_while_the_data_tunnel_delivers() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(t0, CFG, 2);
        l.handle_input(t0, Input::UpstreamAttached);
        drain(&mut l);
        l.handle_input(t0 + S, Input::NodeGone);
        assert_eq!(l.phase(), Phase::Live, "the data tunnel still delivers");
        assert_eq!(l.poll_timeout(), None, "no grace period runs");
        l.handle_input(t0 + S, Input::NodeReannounced);
        l.handle_timeout(t0 + 100 * S);
        assert_eq!(drain(&mut l), vec![], "nothing ends, long past the grace period");
        assert_eq!(l.phase(), Phase::Live);
        // The control channel gone, then the data tunnel too: wait for the node; when it is back
        // and still runs the stream, no AddVideo, the uplink redials.
        l.handle_input(t0 + 101 * S, Input::NodeGone);
        l.handle_input(t0 + 102 * S, Input::UpstreamLost("reset".into()));
        assert_eq!(l.phase(), Phase::Away);
        assert_eq!(l.poll_timeout(), Some(t0 + 132 * S));
        l.handle_input(t0 + 103 * S, Input::NodeReannounced);
        assert_eq!(drain(&mut l), vec![]);
        l.handle_input(t0 + 104 * S, Input::UpstreamAttached);
        assert_eq!(l.phase(), Phase::Live);
    }

    #[test]
    fn an_edge_that_restarted_behind_a_live_tunnel_is_asked_again() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(t0, CFG, 1);
        l.handle_input(t0, Input::UpstreamAttached);
        drain(&mut l);
        l.handle_input(t0 + S, Input::NodeGone);
        l.handle_input(t0 + 2 * S, Input::NodeBack);
        assert_eq!(drain(&mut l), vec![Output::SendAddVideo]);
    }

    #[test]
    fn a_node_gone_while_starting_restarts_when_it_returns() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(t0, CFG, 1);
        drain(&mut l);
        l.handle_input(t0 + S, Input::NodeGone);
        assert_eq!(l.phase(), Phase::Away);
        l.handle_input(t0 + 2 * S, Input::NodeBack);
        assert_eq!(drain(&mut l), vec![Output::SendAddVideo]);
        assert_eq!(l.poll_timeout(), Some(t0 + 31 * S), "the grace period, not the start timeout");
    }

    #[test]
    fn an_unwatched_session_away_still_lingers_out() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(t0, CFG, 1);
        l.handle_input(t0, Input::UpstreamAttached);
        drain(&mut l);
        l.handle_input(t0 + S, Input::UpstreamLost("cut".into()));
        l.handle_input(t0 + 2 * S, Input::Viewers(0));
        assert_eq!(l.poll_timeout(), Some(t0 + 12 * S));
        l.handle_timeout(t0 + 12 * S);
        assert_eq!(drain(&mut l), vec![Output::SendRemoveVideo, Output::Closed]);
    }
}
