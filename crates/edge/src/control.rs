//! The control channel: one connection to the hub, redialled with capped exponential backoff
//! and full jitter while the agent runs. AddVideo starts an uplink; RemoveVideo stops it.
//!
//! Uplinks outlive a broken control channel: each redials its own data tunnel. When the
//! control channel returns, its Hello re-announces the running sessions so the hub re-binds
//! them (or says RemoveVideo for those it no longer has). If the hub stays unreachable longer
//! than its grace period (announced in Welcome), it has ended those sessions: the uplinks
//! stop.
//!
//! A reloaded catalog ([`crate::RunningEdge::reload`]) is applied here: a running stream whose
//! configuration did not change keeps running; one that changed is restarted in the same
//! session (its viewers see a short pause); one that was removed stops, and the hub hears why.
//! The hub gets the new catalog (Catalog) at once, and every later Hello carries it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mediamesh_tunnel::backoff::Backoff;
use mediamesh_tunnel::liveness::Heartbeat;
use mediamesh_tunnel::wire::{CatalogEntry, Channel, ErrorCode, ErrorMsg, Message, RunningStream, SessionId};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::EdgeCtx;
use crate::config::StreamConfig;
use crate::dial::{EdgeLink, connect};
use crate::stats::EdgeStats;
use crate::uplink::{self, UplinkEnd};

/// How long shutdown waits for streams to stop.
const UPLINK_STOP_GRACE: Duration = Duration::from_secs(5);
/// The hub's grace period until a Welcome says otherwise.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// An uplink's end, reported by its task: the session, which start of it, and how it ended.
type Done = (SessionId, u64, UplinkEnd);

struct Uplink {
    stream: String,
    /// Which start of the session this is: a restart (a changed configuration) makes a new
    /// one, and the old one's end report must not remove it.
    start: u64,
    config: StreamConfig,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The running uplinks, by session.
struct Uplinks {
    ctx: Arc<EdgeCtx>,
    running: HashMap<SessionId, Uplink>,
    done_tx: mpsc::Sender<Done>,
    next_start: u64,
}

impl Uplinks {
    fn announce(&self) -> Vec<RunningStream> {
        self.running.iter().map(|(s, u)| RunningStream { session: *s, stream: u.stream.clone() }).collect()
    }

    fn start(&mut self, session: SessionId, stream: String, config: StreamConfig) {
        let cancel = CancellationToken::new();
        self.next_start += 1;
        let start = self.next_start;
        let (ctx, cfg, done_tx, task_cancel, name) =
            (self.ctx.clone(), config.clone(), self.done_tx.clone(), cancel.clone(), stream.clone());
        let task = tokio::spawn(async move {
            let end = uplink::run(ctx, session, name, cfg, task_cancel).await;
            // The control loop may be gone (shutdown); then nobody needs the report.
            let _ = done_tx.send((session, start, end)).await;
        });
        self.running.insert(session, Uplink { stream, start, config, cancel, task });
    }

    fn stop(&mut self, session: SessionId) -> Option<Uplink> {
        let u = self.running.remove(&session)?;
        u.cancel.cancel();
        Some(u)
    }

    /// The uplink an end report is about, removed, if it is still the current start.
    fn ended(&mut self, session: SessionId, start: u64) -> Option<Uplink> {
        if self.running.get(&session).is_some_and(|u| u.start == start) { self.running.remove(&session) } else { None }
    }

    /// Applies a new catalog to what runs; the Errors to tell the hub about streams removed.
    fn apply(&mut self, streams: &BTreeMap<String, StreamConfig>) -> Vec<Message> {
        let mut errors = Vec::new();
        let sessions: Vec<SessionId> = self.running.keys().copied().collect();
        for session in sessions {
            let Some(u) = self.running.get(&session) else { continue };
            match streams.get(&u.stream) {
                Some(cfg) if *cfg == u.config => {}
                Some(cfg) => {
                    let (stream, cfg) = (u.stream.clone(), cfg.clone());
                    info!(%stream, session, "the stream's configuration changed; restarting it in its session");
                    self.stop(session);
                    self.start(session, stream, cfg);
                }
                None => {
                    let stream = u.stream.clone();
                    info!(%stream, session, "the stream was removed from the configuration; stopping it");
                    self.stop(session);
                    let message = format!("stream {stream:?} was removed from the edge's configuration");
                    errors.push(Message::Error(ErrorMsg { code: ErrorCode::SourceFailed, session, message }));
                }
            }
        }
        self.ctx.starts().retain(|s| streams.contains_key(s));
        errors
    }
}

/// The catalog the hub is told about.
fn catalog(streams: &BTreeMap<String, StreamConfig>) -> Vec<CatalogEntry> {
    streams.iter().map(|(name, s)| CatalogEntry { name: name.clone(), description: s.describe() }).collect()
}

/// Runs the control channel until `shutdown`; `reloaded` changes when the catalog does.
pub(crate) async fn run(ctx: Arc<EdgeCtx>, mut reloaded: watch::Receiver<u64>, shutdown: CancellationToken) {
    let seed = u64::from(std::process::id()) ^ crate::source::unix_micros();
    let mut backoff = Backoff::new(ctx.backoff, seed);
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
    let mut uplinks = Uplinks { ctx: ctx.clone(), running: HashMap::new(), done_tx, next_start: 0 };
    // The hub's grace period, from its last Welcome (until then, the default hub's).
    let mut grace = DEFAULT_GRACE;
    while !shutdown.is_cancelled() {
        let channel = Channel::Control {
            instance: ctx.instance,
            catalog: catalog(&ctx.streams.get()),
            running: uplinks.announce(),
        };
        let away_since = Instant::now();
        let attempt = {
            let last_error = Some(&ctx.stats.last_dial_error);
            let dialling = connect(&ctx.dial, &channel, &mut backoff, &ctx.link_up, "control", |_| false, last_error);
            tokio::pin!(dialling);
            loop {
                let orphaned = tokio::time::sleep_until((away_since + grace).into());
                tokio::select! {
                    r = &mut dialling => break Some(r),
                    // Streams that end on their own while the hub is away.
                    Some((session, start, end)) = done_rx.recv() => {
                        if let Some(u) = uplinks.ended(session, start) {
                            info!(stream = %u.stream, session, %end, "stream ended while the hub was unreachable");
                            if let UplinkEnd::Failed(reason) = &end {
                                record_failure(&ctx, &u.stream, reason);
                            }
                        }
                    }
                    // The next Hello carries the new catalog; what runs follows it now.
                    Ok(()) = reloaded.changed() => {
                        uplinks.apply(&ctx.streams.get());
                    }
                    () = orphaned, if !uplinks.running.is_empty() => {
                        warn!(streams = uplinks.running.len(), grace_s = grace.as_secs_f64(), "the hub has been unreachable longer than its grace period; stopping its streams");
                        let sessions: Vec<SessionId> = uplinks.running.keys().copied().collect();
                        for s in sessions {
                            uplinks.stop(s);
                        }
                    }
                    () = shutdown.cancelled() => break None,
                }
            }
        };
        let Some(attempt) = attempt else { break };
        match attempt {
            Ok((link, welcome)) => {
                backoff.connected(Instant::now());
                grace = Duration::from_millis(welcome.grace_ms.into());
                EdgeStats::inc(&ctx.stats.control_connects);
                ctx.stats.connected.store(true, Relaxed);
                let running = uplinks.running.len();
                info!(hub = %welcome.hub, server = %ctx.dial.get().server, running, "connected to the hub");
                let reason = serve(&ctx, link, &mut uplinks, &mut done_rx, &mut reloaded, &shutdown).await;
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
    let tasks: Vec<_> = uplinks
        .running
        .drain()
        .map(|(_, u)| {
            u.cancel.cancel();
            u.task
        })
        .collect();
    if tokio::time::timeout(UPLINK_STOP_GRACE, futures_util::future::join_all(tasks)).await.is_err() {
        warn!("some streams did not stop within {UPLINK_STOP_GRACE:?}");
    }
}

async fn serve(
    ctx: &Arc<EdgeCtx>,
    mut link: EdgeLink,
    uplinks: &mut Uplinks,
    done_rx: &mut mpsc::Receiver<Done>,
    reloaded: &mut watch::Receiver<u64>,
    shutdown: &CancellationToken,
) -> String {
    let mut hb = Heartbeat::new(Instant::now(), ctx.heartbeat);
    loop {
        let mut outgoing = Vec::new();
        tokio::select! {
            msg = link.recv() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return "closed by the hub".into(),
                    Err(e) => return e.to_string(),
                };
                match link.liveness(&mut hb, msg).await {
                    Err(e) => return e.to_string(),
                    Ok(None) => {}
                    Ok(Some(Message::AddVideo { session, stream })) => outgoing.extend(add_video(ctx, uplinks, session, stream)),
                    Ok(Some(Message::RemoveVideo { session, stream })) => remove_video(ctx, uplinks, session, &stream),
                    Ok(Some(Message::GoAway { reason })) => return format!("the hub said goodbye: {reason}"),
                    Ok(Some(Message::Error(e))) => return format!("the hub reported an error ({}): {}", e.code, e.message),
                    Ok(Some(other)) => return format!("unexpected {} on the control channel", other.name()),
                }
            }
            done = done_rx.recv() => {
                let Some((session, start, end)) = done else { continue };
                let Some(u) = uplinks.ended(session, start) else { continue };
                if let UplinkEnd::Failed(reason) = end {
                    warn!(stream = %u.stream, session, %reason, "stream failed");
                    record_failure(ctx, &u.stream, &reason);
                    outgoing.push(Message::Error(ErrorMsg { code: ErrorCode::SourceFailed, session, message: reason }));
                }
            }
            Ok(()) = reloaded.changed() => {
                let streams = ctx.streams.get();
                outgoing.push(Message::Catalog { catalog: catalog(&streams) });
                outgoing.extend(uplinks.apply(&streams));
                info!(streams = streams.len(), "catalog reloaded; the hub is told");
            }
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
        for msg in outgoing {
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

/// Handles RemoveVideo: stops the session's uplink if it runs.
fn remove_video(ctx: &EdgeCtx, uplinks: &mut Uplinks, session: SessionId, stream: &str) {
    EdgeStats::inc(&ctx.stats.remove_video);
    match uplinks.stop(session) {
        Some(_) => info!(%stream, session, "RemoveVideo: stopping the stream"),
        None => info!(%stream, session, "RemoveVideo for a stream that is not running"),
    }
}

/// Handles AddVideo; returns an Error to send back if the stream cannot start.
fn add_video(ctx: &EdgeCtx, uplinks: &mut Uplinks, session: SessionId, stream: String) -> Option<Message> {
    EdgeStats::inc(&ctx.stats.add_video);
    let Some(cfg) = ctx.streams.get().get(&stream).cloned() else {
        warn!(%stream, session, "AddVideo for a stream not in the catalog");
        let message = format!("this node has no stream named {stream:?}");
        return Some(Message::Error(ErrorMsg { code: ErrorCode::UnknownStream, session, message }));
    };
    if uplinks.running.contains_key(&session) {
        return None; // a repeated AddVideo for a running session
    }
    if let Err(refused) = ctx.starts().check(&stream, Instant::now()) {
        // Its source failed to start a moment ago: answer with that, and spare the camera.
        info!(%stream, session, reason = %refused.reason, retry_in_s = refused.retry_in.as_secs_f64(), "AddVideo answered with the last start failure");
        let message = refused.to_string();
        return Some(Message::Error(ErrorMsg { code: ErrorCode::SourceFailed, session, message }));
    }
    // A new session for a stream already running replaces the old one (the hub restarted it).
    let stale: Vec<SessionId> = uplinks.running.iter().filter(|(_, u)| u.stream == stream).map(|(s, _)| *s).collect();
    for s in stale {
        uplinks.stop(s);
    }
    info!(%stream, session, "AddVideo: starting the stream");
    uplinks.start(session, stream, cfg);
    None
}
