//! A data tunnel: one stream session's frames from the edge into the session's frame log.
//!
//! A tunnel that breaks (the link failed, the edge went away) leaves its session waiting for a
//! new one ([`SessionEvent::UpstreamLost`]); a tunnel whose source ended, or that broke the
//! protocol, ends its session ([`SessionEvent::UpstreamEnded`]). Each new tunnel starts a new
//! epoch of the session's log: nothing before its first keyframe is kept, and timestamps keep
//! increasing across the break.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mediamesh_tunnel::liveness::{Heartbeat, HeartbeatConfig};
use mediamesh_tunnel::transport::Link;
use mediamesh_tunnel::wire::{ErrorCode, Feedback, Message, SessionId, V3};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

use super::{TunnelCtx, TunnelLink, TunnelSettings, unix_micros};
use crate::payloads::PayloadChunks;
use crate::session::log::{PushError, Pushed};
use crate::session::{AttachError, Session, SessionEvent};
use mediamesh_tunnel::transport::LinkError;

/// Feedback goes out after a frame once this long has passed since the last one, so the edge
/// sees the path's delay with at most this much added.
const FEEDBACK_MIN_INTERVAL: Duration = Duration::from_millis(20);
/// And at least this often while anything changed.
const FEEDBACK_INTERVAL: Duration = Duration::from_millis(250);

/// How a tunnel that delivered a session's frames ended.
pub(crate) enum End {
    /// The hub closed it (stream removed, replaced, shutdown): nothing to report.
    Cancelled,
    /// The link broke; the sender may come back.
    Lost(String),
    /// The source ended, or the sender broke the protocol: the session ends.
    Ended(String),
}

pub(super) async fn run(
    ctx: Arc<TunnelCtx>,
    settings: Arc<TunnelSettings>,
    mut link: TunnelLink,
    node: String,
    session_id: SessionId,
    stream: String,
    version: u16,
) {
    let session = match ctx.sessions.attach(&node, session_id, &stream) {
        Ok(s) => s,
        Err(e) => {
            let code = match e {
                AttachError::UnknownSession(_) => ErrorCode::UnknownSession,
                AttachError::WrongNode { .. } => ErrorCode::Unauthorized,
                AttachError::WrongStream { .. } => ErrorCode::Protocol,
            };
            warn!(%node, %stream, error = %e, "data tunnel refused");
            link.fail(code, e.to_string()).await;
            return;
        }
    };
    let cancel = ctx.shutdown.child_token();
    let id = ctx.next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !session.set_upstream(id, cancel.clone()) {
        link.fail(ErrorCode::UnknownSession, format!("session {session_id} has ended")).await;
        return;
    }
    // Whatever happens below (even a panic), the session hears that its tunnel ended.
    let mut guard = UpstreamGuard {
        session: session.clone(),
        id,
        event: Some(SessionEvent::UpstreamLost("the data tunnel task failed".into())),
    };
    if let Err(e) = link.send(&settings.welcome(version)).await {
        guard.event = Some(SessionEvent::UpstreamLost(format!("could not send Welcome: {e}")));
        guard.finish().await;
        return;
    }
    session.stats.tunnel_connects.add(1);
    session.log.begin_epoch();
    info!(stream = %session.key, "data tunnel attached");

    let end = match ingest(settings.heartbeat, &mut link, &session, &cancel, Sender { name: "edge", version }).await {
        // The hub stopped the stream (RemoveVideo) and the edge closed the tunnel before this
        // task saw the cancellation: that close is the stop's answer, not a loss.
        End::Lost(_) if cancel.is_cancelled() || session.log.is_closed() => End::Cancelled,
        end => end,
    };
    match end {
        End::Cancelled => {
            guard.event = None;
            let why = if ctx.shutdown.is_cancelled() {
                "hub shutting down"
            } else if session.release_upstream(id) {
                "stream removed"
            } else {
                "replaced by a newer data tunnel"
            };
            debug!(stream = %session.key, %why, "data tunnel closed by the hub");
            link.go_away(why).await;
        }
        End::Lost(reason) => {
            info!(stream = %session.key, %reason, "data tunnel lost; waiting for the edge");
            session.stats.upstream_lost.add(1);
            guard.event = Some(SessionEvent::UpstreamLost(reason));
        }
        End::Ended(reason) => {
            info!(stream = %session.key, %reason, "data tunnel ended");
            guard.event = Some(SessionEvent::UpstreamEnded(reason));
        }
    }
    session.stats.tunnel_rtt_us.store(0, std::sync::atomic::Ordering::Relaxed);
    guard.finish().await;
}

/// Reports the end of data tunnel `id` to its session when dropped, unless the hub itself
/// closed it or a newer tunnel replaced it.
pub(crate) struct UpstreamGuard {
    pub session: Arc<Session>,
    pub id: u64,
    pub event: Option<SessionEvent>,
}

impl UpstreamGuard {
    /// Reports the end, waiting for room in the session's event queue.
    pub async fn finish(mut self) {
        if let Some(event) = self.event.take()
            && self.session.release_upstream(self.id)
        {
            self.session.report(event).await;
        }
        self.session.release_upstream(self.id);
    }
}

/// The path for a panicking task: report without waiting.
impl Drop for UpstreamGuard {
    fn drop(&mut self) {
        let current = self.session.release_upstream(self.id);
        if let (true, Some(event)) = (current, self.event.take()) {
            self.session.try_report(event);
        }
    }
}

/// Who sends a session's frames over a link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sender {
    /// "edge" or "hub", for the reasons.
    pub name: &'static str,
    /// The protocol version the link speaks.
    pub version: u16,
}

/// Moves a session's header and frames from `link` (an edge's data tunnel, or a relay from
/// another hub: `sender` says which) into its log, with feedback and heartbeats, and the
/// session's keyframe requests the other way, until the link ends or `cancel` fires.
pub(crate) async fn ingest<S: AsyncRead + AsyncWrite + Unpin>(
    heartbeat: HeartbeatConfig,
    link: &mut Link<S>,
    session: &Session,
    cancel: &tokio_util::sync::CancellationToken,
    sender: Sender,
) -> End {
    let peer = sender.name;
    // A v2 sender would take a KeyframeRequest for a protocol error.
    let asks_keyframes = sender.version >= V3;
    let mut hb = Heartbeat::new(Instant::now(), heartbeat);
    let mut feedback = tokio::time::interval(FEEDBACK_INTERVAL);
    feedback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = Feedback { last_seq: 0, frames: 0, bytes: 0 };
    let mut reported = report;
    let mut reported_at = Instant::now();
    let mut last_seq: Option<u64> = None;
    // The session counts as started at the first keyframe, not at attach: a tunnel whose
    // source never produces must still hit the start timeout.
    let mut started = false;
    let mut payloads = PayloadChunks::new();
    loop {
        tokio::select! {
            msg = link.recv() => {
                let now = Instant::now();
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return End::Lost(format!("the {peer} closed the connection")),
                    Err(LinkError::Decode(d)) => {
                        warn!(stream = %session.key, %peer, error = %d, "bad message on a stream's tunnel");
                        send_error(link, d.code(), d.to_string()).await;
                        return End::Ended(format!("bad message from the {peer}: {d}"));
                    }
                    Err(e) => return End::Lost(e.to_string()),
                };
                let msg = match link.liveness(&mut hb, msg).await {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        if let Some(rtt) = hb.srtt() {
                            session.stats.tunnel_rtt_us.store(rtt.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
                        }
                        continue;
                    }
                    Err(e) => return End::Lost(e.to_string()),
                };
                match msg {
                    Message::Frame(mut f) => {
                        // Into the stream's reused chunks; the message's buffer is freed now.
                        f.payload = payloads.copy(&f.payload);
                        if let Some(gap) = last_seq.and_then(|prev| f.seq.checked_sub(prev)).filter(|g| *g > 1) {
                            session.stats.edge_dropped.add(gap - 1);
                        }
                        last_seq = Some(f.seq);
                        let (seq, len) = (f.seq, f.payload.len());
                        match session.log.push(f, unix_micros()) {
                            Ok(Pushed::Appended { sync_point }) => {
                                if sync_point && !started {
                                    started = true;
                                    session.report(SessionEvent::UpstreamAttached).await;
                                }
                            }
                            Ok(Pushed::AwaitingSyncPoint) => {
                                // Frames that cannot be used until a keyframe: ask for one
                                // rather than wait out the sender's group of pictures.
                                session.stats.resume_skipped.add(1);
                                session.keyframes.request(now);
                            }
                            Err(PushError::Closed) => return End::Cancelled,
                            Err(e) => {
                                send_error(link, ErrorCode::Protocol, e.to_string()).await;
                                return End::Ended(e.to_string());
                            }
                        }
                        session.stats.frames_in.add(1);
                        session.stats.bytes_in.add(len as u64);
                        session.stats.rate_in.record(now, len);
                        report.last_seq = seq;
                        report.frames += 1;
                        report.bytes += len as u64;
                        if now.duration_since(reported_at) >= FEEDBACK_MIN_INTERVAL {
                            reported = report;
                            reported_at = now;
                            if let Err(e) = link.send(&Message::Feedback(report)).await {
                                return End::Lost(e.to_string());
                            }
                        }
                    }
                    Message::UplinkReport(r) => {
                        *session.stats.uplink.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
                    }
                    Message::StreamHeader(h) => {
                        if let Err(e) = session.log.set_header(h) {
                            send_error(link, ErrorCode::Protocol, e.to_string()).await;
                            return End::Ended(e.to_string());
                        }
                        debug!(stream = %session.key, "stream header");
                    }
                    Message::EndOfStream { reason } => return End::Ended(format!("the {peer} ended the stream: {reason}")),
                    Message::GoAway { reason } => return End::Lost(format!("the {peer} closed the tunnel: {reason}")),
                    Message::Error(e) => return End::Ended(format!("{peer} error ({}): {}", e.code, e.message)),
                    other => {
                        let msg = format!("{} is not allowed on a stream's tunnel", other.name());
                        send_error(link, ErrorCode::Protocol, msg.clone()).await;
                        return End::Ended(msg);
                    }
                }
            }
            () = session.keyframes.wanted(), if asks_keyframes => {
                session.stats.keyframe_requests.add(1);
                debug!(stream = %session.key, %peer, "keyframe request sent");
                if let Err(e) = link.send(&Message::KeyframeRequest).await {
                    return End::Lost(e.to_string());
                }
            }
            _ = feedback.tick() => {
                if report != reported {
                    reported = report;
                    reported_at = Instant::now();
                    if let Err(e) = link.send(&Message::Feedback(report)).await {
                        return End::Lost(e.to_string());
                    }
                }
            }
            () = tokio::time::sleep_until(hb.next_deadline().into()) => {
                if let Err(reason) = link.heartbeat(&mut hb, peer).await {
                    return End::Lost(reason);
                }
            }
            () = cancel.cancelled() => return End::Cancelled,
        }
    }
}

async fn send_error<S: AsyncRead + AsyncWrite + Unpin>(link: &mut Link<S>, code: ErrorCode, message: String) {
    let msg = Message::Error(mediamesh_tunnel::wire::ErrorMsg { code, session: 0, message });
    let _ = link.send(&msg).await;
}
