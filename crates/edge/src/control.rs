//! The control channel: one connection to the hub, redialled with capped exponential backoff
//! and full jitter while the agent runs. AddVideo starts an uplink; RemoveVideo stops it.
//!
//! Uplinks outlive a broken control channel: each redials its own data tunnel. When the
//! control channel returns, its Hello re-announces the running sessions so the hub re-binds
//! them (or says RemoveVideo for those it no longer has). If the hub stays unreachable longer
//! than its grace period (announced in Welcome), it has ended those sessions: the uplinks
//! stop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mediamesh_tunnel::backoff::Backoff;
use mediamesh_tunnel::liveness::Heartbeat;
use mediamesh_tunnel::wire::{CatalogEntry, Channel, ErrorCode, ErrorMsg, Message, RunningStream, SessionId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::EdgeCtx;
use crate::dial::{EdgeLink, connect};
use crate::stats::EdgeStats;
use crate::uplink::{self, UplinkEnd};

struct Uplink {
    stream: String,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the control channel until `shutdown`.
pub(crate) async fn run(ctx: Arc<EdgeCtx>, shutdown: CancellationToken) {
    let seed = u64::from(std::process::id()) ^ crate::source::unix_micros();
    let mut backoff = Backoff::new(ctx.backoff, seed);
    let (done_tx, mut done_rx) = mpsc::channel::<(SessionId, UplinkEnd)>(64);
    let mut uplinks: HashMap<SessionId, Uplink> = HashMap::new();
    let catalog: Vec<CatalogEntry> =
        ctx.streams.iter().map(|(name, s)| CatalogEntry { name: name.clone(), description: describe(s) }).collect();
    // The hub's grace period, from its last Welcome (until then, the default hub's).
    let mut grace = DEFAULT_GRACE;
    while !shutdown.is_cancelled() {
        let running: Vec<RunningStream> =
            uplinks.iter().map(|(s, u)| RunningStream { session: *s, stream: u.stream.clone() }).collect();
        let channel = Channel::Control { instance: ctx.instance, catalog: catalog.clone(), running };
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
                    Some((session, end)) = done_rx.recv() => {
                        if let Some(u) = uplinks.remove(&session) {
                            info!(stream = %u.stream, session, %end, "stream ended while the hub was unreachable");
                            if let UplinkEnd::Failed(reason) = &end {
                                record_failure(&ctx, &u.stream, reason);
                            }
                        }
                    }
                    () = orphaned, if !uplinks.is_empty() => {
                        warn!(streams = uplinks.len(), grace_s = grace.as_secs_f64(), "the hub has been unreachable longer than its grace period; stopping its streams");
                        for (_, u) in uplinks.drain() {
                            u.cancel.cancel();
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
                info!(hub = %welcome.hub, server = %ctx.dial.server, running = uplinks.len(), "connected to the hub");
                let reason = serve(&ctx, link, &mut uplinks, &done_tx, &mut done_rx, &shutdown).await;
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
    for u in uplinks.values() {
        u.cancel.cancel();
    }
    let tasks = uplinks.drain().map(|(_, u)| u.task);
    if tokio::time::timeout(UPLINK_STOP_GRACE, futures_util::future::join_all(tasks)).await.is_err() {
        warn!("some streams did not stop within {UPLINK_STOP_GRACE:?}");
    }
}

/// How long shutdown waits for streams to stop.
const UPLINK_STOP_GRACE: Duration = Duration::from_secs(5);
/// The hub's grace period until a Welcome says otherwise.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// The description the hub shows for a stream: the configured one, else the kind of source.
/// Never built from a URL or ffmpeg's arguments, which hold passwords and tokens: a camera is
/// shown by its host alone.
fn describe(s: &crate::config::StreamConfig) -> String {
    if let Some(d) = &s.description {
        return d.clone();
    }
    if let Some(tp) = &s.test_pattern {
        format!("test pattern {}x{}@{}", tp.width, tp.height, tp.fps)
    } else if let Some(ff) = &s.ffmpeg {
        format!("ffmpeg ({})", ff.codec.name())
    } else if let Some(r) = &s.rtsp {
        let host = url::Url::parse(&r.url).ok().and_then(|u| u.host_str().map(str::to_owned));
        format!("RTSP camera at {}", host.unwrap_or_else(|| "an unparsable URL".into()))
    } else if let Some(f) = &s.file {
        let name = f.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        format!("clip {name} at {} fps", f.fps)
    } else {
        String::new()
    }
}

async fn serve(
    ctx: &Arc<EdgeCtx>,
    mut link: EdgeLink,
    uplinks: &mut HashMap<SessionId, Uplink>,
    done_tx: &mpsc::Sender<(SessionId, UplinkEnd)>,
    done_rx: &mut mpsc::Receiver<(SessionId, UplinkEnd)>,
    shutdown: &CancellationToken,
) -> String {
    let mut hb = Heartbeat::new(Instant::now(), ctx.heartbeat);
    loop {
        tokio::select! {
            msg = link.recv() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return "closed by the hub".into(),
                    Err(e) => return e.to_string(),
                };
                let reply = match link.liveness(&mut hb, msg).await {
                    Err(e) => return e.to_string(),
                    Ok(None) => None,
                    Ok(Some(Message::AddVideo { session, stream })) => add_video(ctx, uplinks, done_tx, session, stream),
                    Ok(Some(Message::RemoveVideo { session, stream })) => {
                        remove_video(ctx, uplinks, session, &stream);
                        None
                    }
                    Ok(Some(Message::GoAway { reason })) => return format!("the hub said goodbye: {reason}"),
                    Ok(Some(Message::Error(e))) => return format!("the hub reported an error ({}): {}", e.code, e.message),
                    Ok(Some(other)) => return format!("unexpected {} on the control channel", other.name()),
                };
                if let Some(reply) = reply
                    && let Err(e) = link.send(&reply).await
                {
                    return e.to_string();
                }
            }
            done = done_rx.recv() => {
                let Some((session, end)) = done else { continue };
                let Some(u) = uplinks.remove(&session) else { continue };
                if let UplinkEnd::Failed(reason) = end {
                    warn!(stream = %u.stream, session, %reason, "stream failed");
                    record_failure(ctx, &u.stream, &reason);
                    let err = Message::Error(ErrorMsg { code: ErrorCode::SourceFailed, session, message: reason });
                    if let Err(e) = link.send(&err).await {
                        return e.to_string();
                    }
                }
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
    }
}

/// Records a failed start of `stream`: its next start waits ([`crate::starts`]).
fn record_failure(ctx: &EdgeCtx, stream: &str, reason: &str) {
    let delay = ctx.starts().failed(stream, Instant::now(), reason, crate::random_fraction());
    info!(%stream, next_start_in_s = delay.as_secs_f64(), "further starts of this stream wait");
}

/// Handles RemoveVideo: stops the session's uplink if it runs.
fn remove_video(ctx: &EdgeCtx, uplinks: &mut HashMap<SessionId, Uplink>, session: SessionId, stream: &str) {
    EdgeStats::inc(&ctx.stats.remove_video);
    match uplinks.remove(&session) {
        Some(u) => {
            info!(%stream, session, "RemoveVideo: stopping the stream");
            u.cancel.cancel();
        }
        None => info!(%stream, session, "RemoveVideo for a stream that is not running"),
    }
}

/// Handles AddVideo; returns an Error to send back if the stream cannot start.
fn add_video(
    ctx: &Arc<EdgeCtx>,
    uplinks: &mut HashMap<SessionId, Uplink>,
    done_tx: &mpsc::Sender<(SessionId, UplinkEnd)>,
    session: SessionId,
    stream: String,
) -> Option<Message> {
    EdgeStats::inc(&ctx.stats.add_video);
    let Some(cfg) = ctx.streams.get(&stream) else {
        warn!(%stream, session, "AddVideo for a stream not in the catalog");
        let message = format!("this node has no stream named {stream:?}");
        return Some(Message::Error(ErrorMsg { code: ErrorCode::UnknownStream, session, message }));
    };
    if uplinks.contains_key(&session) {
        return None; // a repeated AddVideo for a running session
    }
    if let Err(refused) = ctx.starts().check(&stream, Instant::now()) {
        // Its source failed to start a moment ago: answer with that, and spare the camera.
        info!(%stream, session, reason = %refused.reason, retry_in_s = refused.retry_in.as_secs_f64(), "AddVideo answered with the last start failure");
        let message = refused.to_string();
        return Some(Message::Error(ErrorMsg { code: ErrorCode::SourceFailed, session, message }));
    }
    // A new session for a stream already running replaces the old one (the hub restarted it).
    let stale: Vec<SessionId> = uplinks.iter().filter(|(_, u)| u.stream == stream).map(|(s, _)| *s).collect();
    for s in stale {
        if let Some(u) = uplinks.remove(&s) {
            u.cancel.cancel();
        }
    }
    info!(%stream, session, "AddVideo: starting the stream");
    let cancel = CancellationToken::new();
    let (task_ctx, cfg, done_tx, task_cancel, name) =
        (ctx.clone(), cfg.clone(), done_tx.clone(), cancel.clone(), stream.clone());
    let task = tokio::spawn(async move {
        let end = uplink::run(task_ctx, session, name, cfg, task_cancel).await;
        // The control loop may be gone (shutdown); then nobody needs the report.
        let _ = done_tx.send((session, end)).await;
    });
    uplinks.insert(session, Uplink { stream, cancel, task });
    None
}
