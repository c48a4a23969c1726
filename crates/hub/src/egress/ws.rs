//! WebSocket viewers: `GET /api/v1/nodes/{node}/streams/{stream}/ws`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures_util::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::ws_format::{ViewerEvent, encode_frame, header_event};
use crate::session::log::{HeaderEntry, LogEntry};
use crate::session::{Sessions, StreamKey};

/// Most payload bytes taken from the log per batch; with the log's lag bound, this bounds what
/// a stalled viewer pins in memory.
const BATCH_BYTES: usize = 1024 * 1024;

/// Serves one viewer until it leaves or the stream ends.
pub(crate) async fn serve(socket: WebSocket, sessions: Arc<Sessions>, key: StreamKey, remote: String) {
    let mut viewer = sessions.join(&key, "ws", remote);
    let (id, session) = (viewer.stats.id, viewer.session.clone());
    info!(stream = %key, viewer = id, remote = %viewer.stats.remote, "websocket viewer joined");
    let (mut sink, mut incoming) = socket.split();

    // Viewers send nothing we need; reading detects their close and answers pings.
    let gone = CancellationToken::new();
    let reader = tokio::spawn({
        let gone = gone.clone();
        async move {
            while let Some(Ok(msg)) = incoming.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
            gone.cancel();
        }
    });

    let batch_bytes = BATCH_BYTES.min(sessions.config().log.viewer_max_lag_bytes);
    let mut batch: Vec<Arc<LogEntry>> = Vec::new();
    let mut header: Option<Arc<HeaderEntry>> = None;
    let reason = loop {
        batch.clear();
        let status = session.log.read(&mut viewer.cursor, batch_bytes, &mut batch);
        viewer.stats.position.store(viewer.cursor.position(), Ordering::Relaxed);
        let pending: u64 = batch.iter().map(|e| e.frame.payload.len() as u64).sum();
        viewer.stats.pending_bytes.store(pending, Ordering::Relaxed);
        if status.skipped > 0 {
            viewer.stats.skipped.add(status.skipped);
            viewer.stats.resyncs.add(1);
            session.stats.viewer_skipped.add(status.skipped);
            debug!(stream = %key, viewer = id, skipped = status.skipped, "viewer resynchronised at a keyframe");
            let ev = serde_json::to_string(&ViewerEvent::Skip { frames: status.skipped }).unwrap_or_default();
            if sink.feed(Message::Text(ev.into())).await.is_err() {
                break "write failed".to_owned();
            }
        }
        match send_batch(&mut sink, &batch, &mut header, &key).await {
            Ok(bytes) => {
                viewer.stats.pending_bytes.store(0, Ordering::Relaxed);
                viewer.stats.frames.add(batch.len() as u64);
                viewer.stats.bytes.add(bytes);
                session.stats.frames_out.add(batch.len() as u64);
                session.stats.bytes_out.add(bytes);
            }
            Err(()) => break "write failed".to_owned(),
        }
        if let Some(reason) = status.ended {
            let ev = serde_json::to_string(&ViewerEvent::End { reason: reason.to_string() }).unwrap_or_default();
            let _ = sink.send(Message::Text(ev.into())).await;
            let close = CloseFrame { code: close_code::NORMAL, reason: "stream ended".into() };
            let _ = sink.send(Message::Close(Some(close))).await;
            break format!("stream ended: {reason}");
        }
        if batch.is_empty() && status.skipped == 0 {
            tokio::select! {
                changed = viewer.cursor.changed() => if !changed { break "session gone".to_owned() },
                () = gone.cancelled() => break "viewer closed".to_owned(),
            }
        } else if gone.is_cancelled() {
            break "viewer closed".to_owned();
        }
    };
    reader.abort();
    info!(
        stream = %key, viewer = id, %reason,
        frames = viewer.stats.frames.get(), skipped = viewer.stats.skipped.get(),
        "websocket viewer left"
    );
}

/// Feeds a header event when the parameters change, then every frame, then flushes once.
async fn send_batch<S>(
    sink: &mut S,
    batch: &[Arc<LogEntry>],
    header: &mut Option<Arc<HeaderEntry>>,
    key: &StreamKey,
) -> Result<u64, ()>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let mut bytes = 0;
    for e in batch {
        if header.as_ref().is_none_or(|h| !Arc::ptr_eq(h, &e.header)) {
            let json = e.header.ws.get_or_init(|| header_event(&key.node, &key.stream, &e.header).into());
            let text = std::str::from_utf8(json).unwrap_or_default().to_owned();
            sink.feed(Message::Text(text.into())).await.map_err(|_| ())?;
            *header = Some(e.header.clone());
        }
        let msg = e.ws.get_or_init(|| encode_frame(e)).clone();
        sink.feed(Message::Binary(msg)).await.map_err(|_| ())?;
        bytes += e.frame.payload.len() as u64;
    }
    if !batch.is_empty() {
        sink.flush().await.map_err(|_| ())?;
    }
    Ok(bytes)
}
