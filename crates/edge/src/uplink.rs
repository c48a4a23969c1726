//! An uplink: one stream session's source and its data tunnel to the hub.
//!
//! Started on AddVideo, stopped on RemoveVideo (or when the tunnel ends). The source runs while
//! the tunnel is being dialled; frames wait in the bounded source queue (whose overflow policy
//! drops to the next keyframe), so a slow tunnel never grows memory.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use mediamesh_tunnel::liveness::Heartbeat;
use mediamesh_tunnel::wire::{Channel, Limits, Message, SessionId};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::EdgeCtx;
use crate::config::StreamConfig;
use crate::dial::{EdgeLink, dial};
use crate::source;
use crate::stats::EdgeStats;

/// How an uplink ended.
#[derive(Debug)]
pub enum UplinkEnd {
    /// RemoveVideo or shutdown.
    Stopped,
    /// The source or the tunnel failed; the hub should hear why.
    Failed(String),
    /// The hub closed the tunnel.
    ClosedByHub(String),
}

pub(crate) async fn run(
    ctx: Arc<EdgeCtx>,
    session: SessionId,
    stream: String,
    cfg: StreamConfig,
    cancel: CancellationToken,
) -> UplinkEnd {
    let stats = ctx.stats.clone();
    stats.uplinks_active.fetch_add(1, Relaxed);
    let (sink, mut output) = source::channel(ctx.uplink_queue_frames, stats.clone());
    let end = match source::start(&stream, &cfg, sink, stats.clone()) {
        Err(e) => UplinkEnd::Failed(e.to_string()),
        Ok(handle) => {
            let end = tunnel(&ctx, session, &stream, &mut output, &cancel).await;
            drop(output);
            handle.stop().await;
            end
        }
    };
    stats.uplinks_active.fetch_sub(1, Relaxed);
    info!(%stream, session, end = ?end, "uplink ended");
    end
}

/// Dials the data tunnel and streams until the source, the hub or `cancel` ends it; closes the
/// tunnel saying why (EndOfStream for a source failure, GoAway when stopped).
async fn tunnel(
    ctx: &EdgeCtx,
    session: SessionId,
    stream: &str,
    out: &mut source::SourceOutput,
    cancel: &CancellationToken,
) -> UplinkEnd {
    let channel = Channel::Data { session, stream: stream.to_owned() };
    let (mut link, welcome) = tokio::select! {
        r = dial(&ctx.dial, channel) => match r {
            Ok(x) => x,
            Err(e) => return UplinkEnd::Failed(format!("data tunnel: {e}")),
        },
        () = cancel.cancelled() => return UplinkEnd::Stopped,
    };
    link.set_limits(Limits { max_frame_bytes: welcome.max_frame_bytes });
    info!(%stream, session, "data tunnel open");
    let end = pump(ctx, stream, out, &mut link, welcome.max_frame_bytes, cancel).await;
    match &end {
        UplinkEnd::Stopped => link.go_away("stream stopped").await,
        UplinkEnd::Failed(reason) => {
            link.finish(&Message::EndOfStream { reason: reason.clone() }, "source ended").await
        }
        UplinkEnd::ClosedByHub(_) => {}
    }
    end
}

async fn pump(
    ctx: &EdgeCtx,
    stream: &str,
    out: &mut source::SourceOutput,
    link: &mut EdgeLink,
    max_frame_bytes: u32,
    cancel: &CancellationToken,
) -> UplinkEnd {
    let mut hb = Heartbeat::new(Instant::now(), ctx.heartbeat);
    let mut sent_header = false;
    loop {
        tokio::select! {
            item = out.items.recv() => {
                let frame = match item {
                    None => return UplinkEnd::Failed(out.failure()),
                    Some(source::SourceItem::Header(header)) => {
                        if let Err(e) = link.send(&Message::StreamHeader(header)).await {
                            return UplinkEnd::Failed(format!("sending the stream header: {e}"));
                        }
                        sent_header = true;
                        continue;
                    }
                    Some(source::SourceItem::Frame(f)) => f,
                };
                if !sent_header {
                    debug!(%stream, "frame before codec parameters; dropped");
                    continue;
                }
                if frame.payload.len() > max_frame_bytes as usize {
                    warn!(%stream, bytes = frame.payload.len(), cap = max_frame_bytes, "frame larger than the hub accepts; dropped");
                    continue;
                }
                let len = frame.payload.len() as u64;
                if let Err(e) = link.send(&Message::Frame(frame)).await {
                    return UplinkEnd::Failed(format!("sending a frame: {e}"));
                }
                EdgeStats::inc(&ctx.stats.frames_sent);
                ctx.stats.bytes_sent.fetch_add(len, Relaxed);
            }
            msg = link.recv() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return UplinkEnd::ClosedByHub("connection closed".into()),
                    Err(e) => return UplinkEnd::Failed(e.to_string()),
                };
                match link.liveness(&mut hb, msg).await {
                    Err(e) => return UplinkEnd::Failed(e.to_string()),
                    Ok(None) => {}
                    Ok(Some(Message::Feedback(fb))) => debug!(%stream, last_seq = fb.last_seq, frames = fb.frames, "feedback"),
                    Ok(Some(Message::GoAway { reason })) => return UplinkEnd::ClosedByHub(reason),
                    Ok(Some(Message::Error(e))) => return UplinkEnd::ClosedByHub(format!("{}: {}", e.code, e.message)),
                    Ok(Some(other)) => return UplinkEnd::Failed(format!("unexpected {} on a data tunnel", other.name())),
                }
            }
            () = tokio::time::sleep_until(hb.next_deadline().into()) => {
                if let Err(reason) = link.heartbeat(&mut hb, "hub").await {
                    return UplinkEnd::Failed(reason);
                }
            }
            () = cancel.cancelled() => return UplinkEnd::Stopped,
        }
    }
}
