//! What a configuration makes of the hub's parts, at start and at a reload (SIGHUP).
//!
//! A reload re-reads the TLS certificates and keys (new handshakes use them) and applies every
//! limit and timer; each part reads its settings where a connection or a session begins, so
//! work in flight keeps the values it started with. What needs the sockets rebound (ports, the
//! listen address, RTSP's on/off and UDP ports, TLS on the stream port on or off) is reported
//! and left as it runs until a restart. A configuration that fails to validate, or whose
//! certificates cannot be read, changes nothing.

use std::sync::{Arc, Mutex};

use mediamesh_tunnel::settings::Live;
pub use mediamesh_tunnel::settings::Reloaded;
use mediamesh_tunnel::wire::Limits;
use tokio_rustls::TlsAcceptor;

use crate::api::ApiSettings;
use crate::auth::HubAuth;
use crate::config::{ConfigError, HubConfig};
use crate::egress::rtsp::{RtspCtx, RtspSettings};
use crate::http::StreamSettings;
use crate::listener::{Admission, Admissions, Gates};
use crate::registry::NodeRegistry;
use crate::server::{HubError, TlsConfigs};
use crate::session::admission::ViewerLimits;
use crate::session::lifecycle::LifecycleConfig;
use crate::session::log::LogConfig;
use crate::session::{BehindPolicy, SessionConfig, Sessions};
use crate::tunnel::{TunnelCtx, TunnelSettings};

/// The keys a reload cannot change: they need a restart.
pub const RESTART_KEYS: [&str; 12] = [
    "enable",
    "streamPort",
    "tunnelPort",
    "listenAddress",
    "rtsp.enable",
    "rtsp.port",
    "rtsp.udp",
    "rtsp.udpRtpPort",
    "rtsp.udpRtcpPort",
    "tlsStreamCertFile",
    "stateDir",
    "enrollment",
];

/// What one configuration makes of each part.
pub(crate) struct Derived {
    pub tunnel: TunnelSettings,
    pub sessions: SessionConfig,
    pub rtsp: RtspSettings,
    pub api: ApiSettings,
    pub stream: StreamSettings,
    pub admission: Admissions,
}

impl Derived {
    /// The parts' settings from `config` and its TLS configurations.
    pub(crate) fn new(config: &HubConfig, tls: TlsConfigs) -> Result<Self, HubError> {
        let heartbeat =
            config.heartbeat.to_config().map_err(|reason| ConfigError { key: "heartbeat".into(), reason })?;
        // readDeadline bounds silence too; the shorter of it and the heartbeat timeout applies.
        let heartbeat = mediamesh_tunnel::liveness::HeartbeatConfig {
            timeout: heartbeat.timeout.min(config.read_deadline.get()),
            ..heartbeat
        };
        let send_buffer = (config.viewer_send_buffer_bytes > 0).then_some(config.viewer_send_buffer_bytes);
        Ok(Self {
            tunnel: TunnelSettings {
                tls: TlsAcceptor::from(tls.tunnel),
                limits: Limits { max_frame_bytes: config.max_frame_bytes },
                heartbeat,
                handshake_timeout: config.handshake_timeout.get(),
                write_deadline: config.write_deadline.get(),
                grace: config.grace_period.get(),
                hub_name: config.hub_name.clone(),
                relay: tls.relay,
            },
            sessions: SessionConfig {
                limits: ViewerLimits {
                    per_stream: config.viewers_per_stream,
                    total: config.viewers_max,
                    per_address: config.viewers_per_ip,
                    cold_starts_per_minute: config.cold_starts_per_minute,
                },
                lifecycle: LifecycleConfig {
                    linger: config.linger.get(),
                    start_timeout: config.start_timeout.get(),
                    grace: config.grace_period.get(),
                },
                log: LogConfig {
                    max_frames: config.frame_log.max_frames,
                    max_bytes: config.frame_log.max_bytes,
                    viewer_max_lag_bytes: config.viewer_max_lag_bytes,
                    viewer_max_lag_us: config.viewer_max_lag.get().as_micros() as u64,
                    timeline: config.outage_timestamps,
                },
                behind: BehindPolicy {
                    max_resyncs: config.viewer_max_resyncs,
                    window: config.viewer_resync_window.get(),
                },
            },
            rtsp: RtspSettings {
                session_timeout: config.rtsp.session_timeout.get(),
                request_timeout: config.rtsp.request_timeout.get(),
                start_timeout: config.start_timeout.get(),
                stall: config.viewer_write_timeout.get(),
                send_buffer,
            },
            api: ApiSettings {
                hub_name: config.hub_name.clone(),
                viewer_write_timeout: config.viewer_write_timeout.get(),
                metrics_max_viewer_series: config.metrics_max_viewer_series,
                allowed_origins: config.allowed_origins.clone(),
            },
            stream: StreamSettings {
                tls: tls.stream.map(TlsAcceptor::from),
                send_buffer,
                handshake_timeout: config.handshake_timeout.get(),
                request_timeout: config.request_timeout.get(),
            },
            admission: Admissions {
                stream: Admission::new(config.stream_max_connections, config.stream_max_connections_per_ip),
                rtsp: Admission::new(config.rtsp.max_connections, config.rtsp.max_connections_per_ip),
                tunnel: Admission::new(config.tunnel_max_connections, config.tunnel_max_connections_per_ip),
            },
        })
    }
}

/// The parts a reload updates.
pub(crate) struct Reloader {
    pub config: Mutex<HubConfig>,
    pub tunnel: Arc<TunnelCtx>,
    pub sessions: Arc<Sessions>,
    pub registry: Arc<NodeRegistry>,
    pub rtsp: Option<Arc<RtspCtx>>,
    pub api: Arc<Live<ApiSettings>>,
    pub stream: Arc<Live<StreamSettings>>,
    pub gates: Gates,
    pub auth: Arc<HubAuth>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// Applies `new` ([module docs](self)).
    pub(crate) fn reload(&self, new: HubConfig) -> Result<Reloaded, HubError> {
        new.validate()?;
        let mut running = self.config.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tls = TlsConfigs::load(&new, running.enrollment.is_some())?;
        let reloaded = Reloaded::between(&*running, &new, &RESTART_KEYS);
        let mut derived = Derived::new(&new, tls)?;
        derived.admission.fit_to_fd_limit();
        let auth = self
            .auth
            .prepare(new.auth.as_ref())
            .map_err(|e| ConfigError { key: format!("auth.{}", e.key), reason: e.reason })?;
        // TLS on the stream port cannot be turned on or off without rebinding it.
        if derived.stream.tls.is_some() != self.stream.get().tls.is_some() {
            derived.stream.tls = self.stream.get().tls.clone();
        }
        self.tunnel.live.set(derived.tunnel);
        self.sessions.set_config(derived.sessions);
        self.registry.set_grace(new.grace_period.get());
        if let Some(rtsp) = &self.rtsp {
            rtsp.live.set(derived.rtsp);
        }
        self.api.set(derived.api);
        self.stream.set(derived.stream);
        self.gates.set(&derived.admission);
        self.auth.apply(auth);
        // The running configuration: the new one, but with what needs a restart as it runs.
        let mut kept = new;
        kept.enable = running.enable;
        kept.stream_port = running.stream_port;
        kept.tunnel_port = running.tunnel_port;
        kept.listen_address = running.listen_address;
        kept.rtsp.enable = running.rtsp.enable;
        kept.rtsp.port = running.rtsp.port;
        kept.rtsp.udp = running.rtsp.udp;
        kept.rtsp.udp_rtp_port = running.rtsp.udp_rtp_port;
        kept.rtsp.udp_rtcp_port = running.rtsp.udp_rtcp_port;
        kept.state_dir = running.state_dir.clone();
        kept.enrollment = running.enrollment.clone();
        *running = kept;
        Ok(reloaded)
    }
}
