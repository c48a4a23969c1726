//! The control channel: one connection to the hub, redialled with capped exponential backoff
//! and full jitter while the agent runs. What runs, and what the hub is told, is decided by the
//! sans-IO [`Agent`]; this task dials, reads and writes the link, and starts and stops the
//! uplink tasks the agent asks for.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mediamesh_tunnel::backoff::Backoff;
use mediamesh_tunnel::liveness::Heartbeat;
use mediamesh_tunnel::wire::{Channel, Message, SessionId};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::EdgeCtx;
use crate::agent::{Agent, Input, Output, StopReason};
use crate::dial::{Aim, EdgeLink, connect};
use crate::stats::EdgeStats;
use crate::uplink::{self, UplinkEnd};

/// How long shutdown waits for streams to stop.
const UPLINK_STOP_GRACE: Duration = Duration::from_secs(5);

/// An uplink's end, reported by its task: the session, which start of it, and how it ended.
type Done = (SessionId, u64, UplinkEnd);

/// The running uplink tasks: each session's start and cancel token, and the tracker that
/// shutdown waits on.
struct Tasks {
    ctx: Arc<EdgeCtx>,
    running: HashMap<SessionId, (u64, CancellationToken)>,
    tracker: TaskTracker,
    done_tx: mpsc::Sender<Done>,
}

impl Tasks {
    /// Carries out the agent's outputs; returns the messages for the hub.
    fn carry_out(&mut self, agent: &mut Agent) -> Vec<Message> {
        let mut outgoing = Vec::new();
        while let Some(out) = agent.poll_output() {
            match out {
                Output::Start { session, stream, start, config } => {
                    info!(%stream, session, "starting the stream");
                    let cancel = CancellationToken::new();
                    let (ctx, done_tx, task_cancel) = (self.ctx.clone(), self.done_tx.clone(), cancel.clone());
                    self.tracker.spawn(async move {
                        let end = uplink::run(ctx, session, stream, config, task_cancel).await;
                        // The control loop may be gone (shutdown); then nobody needs the report.
                        let _ = done_tx.send((session, start, end)).await;
                    });
                    self.running.insert(session, (start, cancel));
                }
                Output::Stop { session, why } => {
                    match why {
                        StopReason::Orphaned => {
                            warn!(
                                session,
                                "the hub has been unreachable longer than its grace period; stopping the stream"
                            );
                        }
                        why => info!(session, ?why, "stopping the stream"),
                    }
                    if let Some((_, cancel)) = self.running.remove(&session) {
                        cancel.cancel();
                    }
                }
                Output::Send(msg) => outgoing.push(msg),
                Output::StartFailed { stream, reason } => record_failure(&self.ctx, &stream, &reason),
            }
        }
        outgoing
    }

    /// An uplink task ended: tells the agent.
    fn ended(&mut self, agent: &mut Agent, (session, start, end): Done) {
        if self.running.get(&session).is_some_and(|(s, _)| *s == start) {
            self.running.remove(&session);
        }
        match &end {
            UplinkEnd::Failed(reason) => warn!(session, %reason, "stream failed"),
            end => info!(session, %end, "stream ended"),
        }
        let failed = match end {
            UplinkEnd::Failed(reason) => Some(reason),
            _ => None,
        };
        agent.handle_input(Instant::now(), Input::UplinkEnded { session, start, failed });
    }

    /// The catalog was reloaded.
    fn reloaded(&self, agent: &mut Agent) {
        let streams = (*self.ctx.streams.get()).clone();
        self.ctx.starts().retain(|s| streams.contains_key(s));
        info!(streams = streams.len(), "catalog reloaded");
        agent.handle_input(Instant::now(), Input::Catalog(streams));
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Runs the control channel until `shutdown`; `reloaded` changes when the catalog does.
pub(crate) async fn run(ctx: Arc<EdgeCtx>, mut reloaded: watch::Receiver<u64>, shutdown: CancellationToken) {
    let seed = u64::from(std::process::id()) ^ crate::source::unix_micros();
    let mut backoff = Backoff::new(ctx.backoff, seed);
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
    let mut tasks = Tasks { ctx: ctx.clone(), running: HashMap::new(), tracker: TaskTracker::new(), done_tx };
    let mut agent = Agent::new(Instant::now(), (*ctx.streams.get()).clone());
    // The hub a Redirect named: the next dial tries it first.
    let mut redirect: Option<String> = None;
    while !shutdown.is_cancelled() {
        let channel = Channel::Control { instance: ctx.instance, catalog: agent.catalog(), running: agent.announce() };
        let attempt = {
            let last_error = Some(&ctx.stats.last_dial_error);
            let aim = Aim::Rotate { hub: &ctx.hub_address, first: redirect.as_deref() };
            let dialling =
                connect(&ctx.dial, aim, &channel, &mut backoff, &ctx.link_up, "control", |_| false, last_error);
            tokio::pin!(dialling);
            loop {
                tokio::select! {
                    r = &mut dialling => break Some(r),
                    // Streams that end on their own while the hub is away.
                    Some(done) = done_rx.recv() => tasks.ended(&mut agent, done),
                    // The next Hello carries the new catalog; what runs follows it now.
                    Ok(()) = reloaded.changed() => tasks.reloaded(&mut agent),
                    () = sleep_until(agent.poll_timeout()) => agent.handle_timeout(Instant::now()),
                    () = shutdown.cancelled() => break None,
                }
                // Nothing is sent while away: the agent says nothing then.
                tasks.carry_out(&mut agent);
            }
        };
        let Some(attempt) = attempt else { break };
        redirect = None;
        match attempt {
            Ok((link, welcome)) => {
                backoff.connected(Instant::now());
                let grace = Duration::from_millis(welcome.grace_ms.into());
                agent.handle_input(Instant::now(), Input::Connected { grace, hub: welcome.hub.clone() });
                EdgeStats::inc(&ctx.stats.control_connects);
                ctx.stats.connected.store(true, Relaxed);
                let running = agent.running();
                let server = ctx
                    .hub_address
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
                    .unwrap_or_default();
                info!(hub = %welcome.hub, %server, running, "connected to the hub");
                let io = Serving {
                    tasks: &mut tasks,
                    done_rx: &mut done_rx,
                    reloaded: &mut reloaded,
                    redirect: &mut redirect,
                };
                let reason = serve(&ctx, link, &mut agent, io, &shutdown).await;
                if let Some(target) = &redirect {
                    info!(%target, "the hub sent this edge to another hub of the cluster");
                }
                agent.handle_input(Instant::now(), Input::Disconnected);
                ctx.stats.connected.store(false, Relaxed);
                backoff.disconnected(Instant::now());
                if !shutdown.is_cancelled() {
                    warn!(%reason, "control channel closed; redialling");
                }
            }
            Err(e) => error!(error = %e, "cannot connect to the hub"),
        }
    }
    // Stop every stream and wait for it: sources stopped, ffmpeg processes reaped. Nobody reads
    // the reports any more; dropping the receiver keeps their sends from waiting.
    drop(done_rx);
    for (_, (_, cancel)) in tasks.running.drain() {
        cancel.cancel();
    }
    tasks.tracker.close();
    if tokio::time::timeout(UPLINK_STOP_GRACE, tasks.tracker.wait()).await.is_err() {
        warn!("some streams did not stop within {UPLINK_STOP_GRACE:?}");
    }
}

/// What a connected control channel works with besides the link and the agent.
struct Serving<'a> {
    tasks: &'a mut Tasks,
    done_rx: &'a mut mpsc::Receiver<Done>,
    reloaded: &'a mut watch::Receiver<u64>,
    /// Set when the hub names another hub to dial next (Redirect, before its GoAway).
    redirect: &'a mut Option<String>,
}

async fn serve(
    ctx: &Arc<EdgeCtx>,
    mut link: EdgeLink,
    agent: &mut Agent,
    io: Serving<'_>,
    shutdown: &CancellationToken,
) -> String {
    let Serving { tasks, done_rx, reloaded, redirect } = io;
    let mut hb = Heartbeat::new(Instant::now(), ctx.heartbeat);
    loop {
        tokio::select! {
            msg = link.recv() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return "closed by the hub".into(),
                    Err(e) => return e.to_string(),
                };
                let now = Instant::now();
                // The hub pings every control channel each second: this side need not too.
                if matches!(msg, Message::Ping { .. }) {
                    hb.on_peer_ping(now);
                }
                match link.liveness(&mut hb, msg).await {
                    Err(e) => return e.to_string(),
                    Ok(None) => {}
                    Ok(Some(Message::AddVideo { session, stream })) => {
                        EdgeStats::inc(&ctx.stats.add_video);
                        let refused = ctx.starts().check(&stream, now).err();
                        if let Some(r) = &refused {
                            info!(%stream, session, reason = %r.reason, retry_in_s = r.retry_in.as_secs_f64(), "AddVideo answered with the last start failure");
                        }
                        agent.handle_input(now, Input::AddVideo { session, stream, refused });
                    }
                    Ok(Some(Message::RemoveVideo { session, stream })) => {
                        EdgeStats::inc(&ctx.stats.remove_video);
                        if agent.stream(session).is_none() {
                            info!(%stream, session, "RemoveVideo for a stream that is not running");
                        }
                        agent.handle_input(now, Input::RemoveVideo { session });
                    }
                    Ok(Some(Message::Redirect { target })) => *redirect = Some(target),
                    Ok(Some(Message::GoAway { reason })) => return format!("the hub said goodbye: {reason}"),
                    Ok(Some(Message::Error(e))) => return format!("the hub reported an error ({}): {}", e.code, e.message),
                    Ok(Some(other)) => return format!("unexpected {} on the control channel", other.name()),
                }
            }
            Some(done) = done_rx.recv() => tasks.ended(agent, done),
            Ok(()) = reloaded.changed() => tasks.reloaded(agent),
            () = tokio::time::sleep_until(hb.next_deadline().into()) => {
                if let Err(reason) = link.heartbeat(&mut hb, "hub").await {
                    return reason;
                }
            }
            () = shutdown.cancelled() => {
                link.go_away("edge shutting down").await;
                return "shutting down".into();
            }
        }
        for msg in tasks.carry_out(agent) {
            if let Err(e) = link.send(&msg).await {
                return e.to_string();
            }
        }
    }
}

/// Records a failed start of `stream`: its next start waits ([`crate::starts`]).
fn record_failure(ctx: &EdgeCtx, stream: &str, reason: &str) {
    let delay = ctx.starts().failed(stream, Instant::now(), reason, crate::random_fraction());
    info!(%stream, next_start_in_s = delay.as_secs_f64(), "further starts of this stream wait");
}
