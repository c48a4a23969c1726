//! The RTSP server (RFC 2326): `rtsp://hub:8554/{node}/{stream}` for ffmpeg, GStreamer, OpenCV,
//! VLC and NVRs.
//!
//! RTSP viewers attach to the same stream sessions as WebSocket viewers (one upstream per
//! stream). Each frame is packetized into RTP once and shared; a viewer writes only its own RTP
//! headers. RTP travels interleaved on the RTSP connection (TCP) or over UDP unicast from the
//! hub's shared RTP/RTCP socket pair; RTCP sender reports map RTP time to the capture clock.
//!
//! Sessions are bound to the connection that created them (another connection naming one gets
//! 454); a UDP session without RTCP or requests for the session timeout ends; a connection that
//! sends no request for the request timeout before it plays is closed. A connection holds at
//! most 4 sessions and 4 DESCRIBEd-but-not-set-up streams (453 beyond); one client address holds
//! at most `maxConnectionsPerIp` connections.

mod conn;
mod media;
pub mod request;
mod sdp;
mod send;
mod sessions;
mod transport;
pub(crate) mod udp;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span, warn};

use crate::session::Sessions;

/// What RTSP connections share.
#[derive(Debug)]
pub(crate) struct RtspCtx {
    pub sessions: Arc<Sessions>,
    pub udp: Option<Arc<udp::UdpPair>>,
    /// What a reload changes; each connection takes the settings current when it arrives.
    pub live: mediamesh_tunnel::settings::Live<RtspSettings>,
    /// Open connections per client address.
    pub per_ip: Mutex<HashMap<IpAddr, usize>>,
    pub shutdown: CancellationToken,
}

/// The RTSP server's reloadable settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RtspSettings {
    pub session_timeout: Duration,
    pub request_timeout: Duration,
    pub start_timeout: Duration,
    pub stall: Duration,
    /// SO_SNDBUF of each connection (`viewerSendBufferBytes`), if set.
    pub send_buffer: Option<usize>,
    /// Connections one client address may hold (`maxConnectionsPerIp`).
    pub max_per_ip: usize,
}

/// One open connection counted against its address; uncounts on drop.
pub(crate) struct IpSlot {
    ctx: Arc<RtspCtx>,
    ip: IpAddr,
}

impl RtspCtx {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Single map operations; a poisoned map is consistent.
        self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a connection from `ip`, or `None` if that address is at its limit.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut counts = self.counts();
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.live.get().max_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot { ctx: self.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.ctx.counts();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Accepts RTSP connections until shutdown.
pub(crate) async fn serve(listener: TcpListener, ctx: Arc<RtspCtx>, tasks: TaskTracker) {
    if let Some(udp) = &ctx.udp {
        tasks.spawn(udp.clone().receive(ctx.shutdown.clone()));
    }
    let next = AtomicU64::new(1);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "rtsp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = ctx.shutdown.cancelled() => return,
        };
        let Some(slot) = ctx.admit(peer.ip()) else {
            tracing::debug!(%peer, limit = ctx.live.get().max_per_ip, "rtsp connection refused: too many from this address");
            drop(tcp);
            continue;
        };
        let id = next.fetch_add(1, Ordering::Relaxed);
        if let Some(size) = ctx.live.get().send_buffer
            && let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(size)
        {
            tracing::debug!(%peer, error = %e, "cannot set the send buffer size");
        }
        let conn = conn::run(ctx.clone(), tcp, peer);
        tasks.spawn(
            async move {
                conn.await;
                drop(slot);
            }
            .instrument(info_span!("rtsp", conn = id, %peer)),
        );
    }
}
