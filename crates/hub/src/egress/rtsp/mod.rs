//! The RTSP server (RFC 2326): `rtsp://hub:8554/{node}/{stream}` for ffmpeg, GStreamer, OpenCV,
//! VLC and NVRs.
//!
//! RTSP viewers attach to the same stream sessions as WebSocket viewers (one upstream per
//! stream). While a stream has RTSP viewers, its RTP packager ([`packager`]) packetizes each
//! frame once for all of them; a viewer writes only its own RTP headers. RTP travels interleaved on the RTSP connection (TCP) or over UDP unicast from the
//! hub's shared RTP/RTCP socket pair; RTCP sender reports map RTP time to the capture clock.
//!
//! Sessions are bound to the connection that created them (another connection naming one gets
//! 454); a UDP session without RTCP or requests for the session timeout ends; a connection that
//! sends no request for the request timeout before it plays is closed. A connection holds at
//! most 4 sessions and 4 DESCRIBEd-but-not-set-up streams (453 beyond). Connections arrive
//! through [`crate::listener`], whose gate holds one client address to `maxConnectionsPerIp`.

mod auth;
mod conn;
mod media;
mod packager;
pub mod request;
mod request_clock;
mod sdp;
mod send;
mod sessions;
mod transport;
pub(crate) mod udp;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span};

use crate::listener::{Accepted, Gate};
use crate::session::Sessions;

/// What RTSP connections share.
#[derive(Debug)]
pub(crate) struct RtspCtx {
    pub sessions: Arc<Sessions>,
    pub udp: Option<Arc<udp::UdpPair>>,
    /// What a reload changes; each connection takes the settings current when it arrives.
    pub live: mediamesh_tunnel::settings::Live<RtspSettings>,
    pub shutdown: CancellationToken,
    /// Where connections' and UDP senders' tasks run, so shutdown waits for them.
    pub tasks: TaskTracker,
    /// Who may watch.
    pub auth: Arc<crate::auth::HubAuth>,
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
}

/// Accepts RTSP connections until shutdown.
pub(crate) async fn serve(listener: TcpListener, gate: Arc<Gate>, ctx: Arc<RtspCtx>) {
    if let Some(udp) = &ctx.udp {
        ctx.tasks.spawn(udp.clone().receive(ctx.shutdown.clone()));
    }
    let conns = ctx.clone();
    crate::listener::serve(
        listener,
        gate,
        ctx.shutdown.clone(),
        ctx.tasks.clone(),
        move |Accepted { tcp, remote, id, gate }| {
            if let Some(size) = conns.live.get().send_buffer
                && let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(size)
            {
                tracing::debug!(peer = %remote, error = %e, "cannot set the send buffer size");
            }
            conn::run(conns.clone(), gate, tcp, remote).instrument(info_span!("rtsp", conn = id, peer = %remote))
        },
    )
    .await;
}
