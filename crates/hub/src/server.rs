//! Binding the hub's ports and running its tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use mediamesh_tls::TlsFiles;
use mediamesh_tunnel::settings::Live;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::api::{ApiState, router};
use crate::auth::HubAuth;
use crate::cluster::Cluster;
use crate::cluster::records::HubState;
use crate::config::{ConfigError, HubConfig};
use crate::egress::rtsp::RtspCtx;
use crate::egress::rtsp::udp::UdpPair;
use crate::enroll::{Enrollment, Revocations};
use crate::listener::Gates;
use crate::registry::NodeRegistry;
use crate::reload::{Derived, Reloaded, Reloader};
use crate::session::Sessions;
use crate::state::StateStore;
use crate::tunnel::{self, TunnelCtx};

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A configuration value is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A certificate or key could not be loaded.
    #[error("cloudDataStream TLS: {0}")]
    Tls(#[from] mediamesh_tls::TlsError),
    /// A port could not be bound.
    #[error("cannot listen on {addr} ({port}): {source}")]
    Bind {
        /// Which port (`streamPort`, `tunnelPort`).
        port: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The hub's TLS configurations, built from the files its configuration names.
pub(crate) struct TlsConfigs {
    /// The tunnel port's: the hub's certificate, edges' certificates required.
    pub tunnel: Arc<rustls::ServerConfig>,
    /// The stream port's, if it speaks TLS.
    pub stream: Option<Arc<rustls::ServerConfig>>,
    /// How this hub dials the other hubs of a cluster, if its certificate is a hub's.
    pub relay: Option<crate::tunnel::RelayTls>,
}

impl TlsConfigs {
    /// Reads the certificates and keys `config` names; with `enrollment`, the tunnel port also
    /// takes edges without a certificate, for enrollment only.
    pub(crate) fn load(config: &HubConfig, enrollment: bool) -> Result<Self, HubError> {
        let files = TlsFiles {
            ca: config.tls_tunnel_ca_file.clone(),
            cert: config.tls_tunnel_cert_file.clone(),
            key: config.tls_tunnel_private_key_file.clone(),
        };
        let tunnel = mediamesh_tls::tunnel_server_config(&files, enrollment)?;
        let relay = crate::tunnel::RelayTls::load(&files)?;
        if let Some(viewer_ca) = &config.tls_stream_ca_file {
            let prints = |p: &std::path::Path| -> Result<Vec<String>, HubError> {
                Ok(mediamesh_tls::load_certs(p)?.iter().map(|c| mediamesh_tls::enroll::fingerprint(c)).collect())
            };
            let edges = prints(&config.tls_tunnel_ca_file)?;
            if prints(viewer_ca)?.iter().any(|f| edges.contains(f)) {
                return Err(ConfigError {
                    key: "tlsStreamCAFile".into(),
                    reason: "holds the tunnel CA, so every edge's certificate would be taken as a viewer's \
                             (one stolen edge key would show every camera); give viewers a CA of their own"
                        .into(),
                }
                .into());
            }
        }
        let stream = match (&config.tls_stream_cert_file, &config.tls_stream_private_key_file) {
            (Some(cert), Some(key)) => {
                Some(mediamesh_tls::stream_server_config(cert, key, config.tls_stream_ca_file.as_deref())?)
            }
            _ => None,
        };
        Ok(Self { tunnel, stream, relay })
    }
}

/// Checks a configuration as [`Hub::bind`] would, without binding anything: its values, and
/// the certificates and keys it names.
pub fn check_tls(config: &HubConfig) -> Result<(), HubError> {
    config.validate()?;
    if let Some(e) = &config.enrollment {
        mediamesh_tls::enroll::EnrollCa::load(&config.tls_tunnel_ca_file, &e.ca_key_file)?;
    }
    TlsConfigs::load(config, config.enrollment.is_some()).map(drop)
}

/// `addr`, with an unspecified IP (`0.0.0.0`, `::`) replaced by loopback.
fn loopback_if_any(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        ip if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    }
}

/// The base URL of a stream port at `addr` as seen from this machine.
fn base_url(https: bool, addr: SocketAddr) -> String {
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{}", loopback_if_any(addr))
}

/// The hub, before it runs.
#[derive(Debug)]
pub struct Hub;

impl Hub {
    /// Validates the configuration, loads TLS, binds both ports and starts serving.
    pub async fn bind(config: HubConfig) -> Result<RunningHub, HubError> {
        config.validate()?;
        let derived = Derived::new(&config, TlsConfigs::load(&config, config.enrollment.is_some())?)?;
        let store = match &config.state_dir {
            Some(dir) => {
                Some(StateStore::open(dir).map_err(|e| ConfigError { key: "stateDir".into(), reason: e.to_string() })?)
            }
            None => None,
        };
        let revocations = Arc::new(
            Revocations::new(store.clone())
                .map_err(|e| ConfigError { key: "stateDir".into(), reason: e.to_string() })?,
        );
        let enrollment = match (&config.enrollment, store) {
            (Some(e), Some(store)) => Some(Arc::new(Enrollment {
                store,
                ca: mediamesh_tls::enroll::EnrollCa::load(&config.tls_tunnel_ca_file, &e.ca_key_file)?,
                ttl: e.certificate_ttl.get(),
            })),
            _ => None,
        };
        let auth = Arc::new(
            HubAuth::new(config.auth.as_ref())
                .map_err(|e| ConfigError { key: format!("auth.{}", e.key), reason: e.reason })?,
        );
        let (before, fds) = crate::listener::raise_fd_limit();
        if before != fds {
            info!(from = ?before, to = ?fds, "raised the open file limit");
        }
        let mut derived = derived;
        if let Some([stream, rtsp, tunnel]) = derived.admission.fit_to_fd_limit() {
            let a = &derived.admission;
            warn!(
                open_files = ?fds,
                stream = a.stream.max_connections,
                rtsp = a.rtsp.max_connections,
                tunnel = a.tunnel.max_connections,
                configured = %format!("{stream},{rtsp},{tunnel}"),
                "the open file limit is below the ports' connection limits; lowered them so the API and edges keep room (raise LimitNOFILE)"
            );
        }
        let bind = |port: &'static str, p: u16| {
            let addr = SocketAddr::new(config.listen_address, p);
            async move { TcpListener::bind(addr).await.map_err(|source| HubError::Bind { port, addr, source }) }
        };
        let tunnel_listener = bind("tunnelPort", config.tunnel_port).await?;
        let stream_listener = bind("streamPort", config.stream_port).await?;
        let local = |l: &TcpListener, port| {
            l.local_addr().map_err(|source| HubError::Bind {
                port,
                addr: SocketAddr::new(config.listen_address, 0),
                source,
            })
        };
        let tunnel_addr = local(&tunnel_listener, "tunnelPort")?;
        let stream_addr = local(&stream_listener, "streamPort")?;
        let rtsp = &config.rtsp;
        let (rtsp_listener, udp) = if rtsp.enable {
            let l = bind("rtsp.port", rtsp.port).await?;
            let udp = if rtsp.udp {
                let pair = UdpPair::bind(config.listen_address, rtsp.udp_rtp_port, rtsp.udp_rtcp_port).await.map_err(
                    |source| HubError::Bind {
                        port: "rtsp.udpRtpPort",
                        addr: SocketAddr::new(config.listen_address, rtsp.udp_rtp_port),
                        source,
                    },
                )?;
                Some(Arc::new(pair))
            } else {
                None
            };
            (Some(l), udp)
        } else {
            (None, None)
        };
        let rtsp_addr = match &rtsp_listener {
            Some(l) => Some(local(l, "rtsp.port")?),
            None => None,
        };
        let rtsp_udp_ports = udp.as_ref().map(|u| u.ports);

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        auth.start(&shutdown, &tasks);
        let gates = Gates::new(&derived.admission);
        let registry = Arc::new(NodeRegistry::new(config.grace_period.get()));
        let cluster = config.cluster.as_ref().map(|c| {
            let https = derived.stream.tls.is_some();
            let stream_url = c.advertise_stream_url.clone().unwrap_or_else(|| base_url(https, stream_addr));
            let tunnel = c.advertise_tunnel_address.clone().unwrap_or_else(|| loopback_if_any(tunnel_addr).to_string());
            Arc::new(Cluster::new(config.hub_name.clone(), c.clone(), stream_url, tunnel))
        });
        let tunnel_settings = Arc::new(Live::new(derived.tunnel));
        let relay = cluster.as_ref().map(|c| {
            let relay = crate::cluster::relay::RelayUpstream::new(
                c.clone(),
                registry.clone(),
                tunnel_settings.clone(),
                shutdown.clone(),
                tasks.clone(),
            );
            if tunnel_settings.get().relay.is_none() {
                tracing::warn!(
                    uri = mediamesh_tls::HUB_URI,
                    "the tunnel certificate is not marked as a hub's, or has no DNS name: this hub serves relays \
                     to other hubs but cannot open them, and sends viewers of other hubs' nodes there"
                );
            }
            relay as Arc<dyn crate::session::upstream::Upstream>
        });
        let sessions =
            Sessions::new(derived.sessions, registry.clone(), cluster.clone(), relay, shutdown.clone(), tasks.clone());
        if let Some(c) = &cluster {
            let local = crate::cluster::etcd::Local::new(registry.clone(), sessions.clone());
            tasks.spawn(crate::cluster::etcd::run(c.clone(), local, shutdown.clone()));
            tasks.spawn(crate::cluster::balance::run(c.clone(), registry.clone(), sessions.clone(), shutdown.clone()));
        }
        let drain = Arc::new(crate::cluster::drain::DrainControl::new(
            cluster.clone(),
            registry.clone(),
            sessions.clone(),
            tasks.clone(),
        ));
        let tunnel = Arc::new(TunnelCtx {
            sessions: sessions.clone(),
            registry: registry.clone(),
            live: tunnel_settings,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            next_conn: AtomicU64::new(1),
            revocations: revocations.clone(),
            enrollment,
        });
        tasks.spawn(crate::enroll::watch_revocations(
            revocations.clone(),
            registry.clone(),
            sessions.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(tunnel::serve(tunnel_listener, gates.tunnel.clone(), tunnel.clone()));
        let api = Arc::new(Live::new(derived.api));
        let h = &config.hls;
        let hls_cfg = crate::egress::hls::playlist::PlaylistConfig {
            part_target: h.part_target.get(),
            segment_min: h.segment_min.get(),
            window: h.segments,
        };
        let webrtc = match &config.webrtc {
            Some(w) => {
                let settings = crate::egress::webrtc::WebRtcSettings {
                    listen: SocketAddr::new(config.listen_address, w.port),
                    hosts: w.hosts.clone(),
                    interfaces: w.interfaces,
                    max_sessions: w.max_sessions,
                };
                let addr = settings.listen;
                let rtc = crate::egress::webrtc::WebRtc::bind(settings).await.map_err(|source| HubError::Bind {
                    port: "webrtc.port",
                    addr,
                    source,
                })?;
                tasks.spawn(rtc.clone().run(shutdown.clone(), tasks.clone()));
                Some(rtc)
            }
            None => None,
        };
        let state = ApiState {
            webrtc: webrtc.clone(),
            hls: crate::egress::hls::HlsStreams::new(hls_cfg, h.max_waiting_requests, tasks.clone(), shutdown.clone()),
            sessions: sessions.clone(),
            registry: registry.clone(),
            started: Instant::now(),
            live: api.clone(),
            gates: {
                let mut all = gates.serving(rtsp_listener.is_some()).to_vec();
                all.extend(webrtc.as_ref().map(|w| w.tcp_gate.clone()));
                all.into()
            },
            tasks: tasks.clone(),
            auth: auth.clone(),
            revocations: revocations.clone(),
            cluster: cluster.clone(),
            drain: drain.clone(),
        };
        let https = derived.stream.tls.is_some();
        let stream = Arc::new(Live::new(derived.stream));
        tasks.spawn(crate::http::serve(
            stream_listener,
            gates.stream.clone(),
            stream.clone(),
            router(state),
            shutdown.clone(),
            tasks.clone(),
        ));
        let rtsp_ctx = rtsp_listener.map(|listener| {
            let ctx = Arc::new(RtspCtx {
                sessions: sessions.clone(),
                udp,
                live: Live::new(derived.rtsp),
                shutdown: shutdown.clone(),
                tasks: tasks.clone(),
                auth: auth.clone(),
            });
            tasks.spawn(crate::egress::rtsp::serve(listener, gates.rtsp.clone(), ctx.clone()));
            ctx
        });
        let rtsp = rtsp_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
        let rtsp_udp = rtsp_udp_ports.map_or_else(|| "off".to_owned(), |(rtp, rtcp)| format!("{rtp},{rtcp}"));
        info!(%tunnel_addr, %stream_addr, %rtsp, %rtsp_udp, https, hub = %config.hub_name, "hub listening");
        let reloader = Reloader {
            config: std::sync::Mutex::new(config),
            tunnel,
            sessions: sessions.clone(),
            registry: registry.clone(),
            rtsp: rtsp_ctx,
            api,
            stream,
            gates,
            auth,
        };
        // Everything is bound and serving: ready for work.
        if let Some(c) = &cluster {
            c.set_state(HubState::Allocated);
        }
        Ok(RunningHub {
            cluster,
            drain,
            tunnel_addr,
            stream_addr,
            rtsp_addr,
            rtsp_udp_ports,
            https,
            shutdown,
            tasks,
            sessions,
            registry,
            reloader,
        })
    }
}

/// A hub that is serving.
#[derive(Debug)]
pub struct RunningHub {
    /// Where edges connect.
    pub tunnel_addr: SocketAddr,
    /// Where viewers and the API are.
    pub stream_addr: SocketAddr,
    /// Where RTSP viewers connect, if RTSP is enabled.
    pub rtsp_addr: Option<SocketAddr>,
    /// The RTP and RTCP ports RTSP viewers over UDP get media from.
    pub rtsp_udp_ports: Option<(u16, u16)>,
    /// Whether the stream port speaks TLS.
    pub https: bool,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    sessions: Arc<Sessions>,
    registry: Arc<NodeRegistry>,
    reloader: Reloader,
    cluster: Option<Arc<Cluster>>,
    drain: Arc<crate::cluster::drain::DrainControl>,
}

impl RunningHub {
    /// Applies a new configuration: TLS certificates and keys (for new handshakes), limits and
    /// timers (for new connections and sessions). Keys that need a restart are reported and
    /// keep their running values; a configuration that does not validate, or whose files
    /// cannot be read, changes nothing.
    pub fn reload(&self, config: HubConfig) -> Result<Reloaded, HubError> {
        self.reloader.reload(config)
    }

    /// The stream sessions (for tests and embedding).
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// The connected nodes.
    pub fn registry(&self) -> &Arc<NodeRegistry> {
        &self.registry
    }

    /// The base URL of the stream port as seen from this machine (`http://127.0.0.1:port`).
    pub fn base_url(&self) -> String {
        base_url(self.https, self.stream_addr)
    }

    /// The cluster this hub belongs to, if it has a `cluster` block.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// The RTSP URL of a stream on this machine, if RTSP is enabled.
    pub fn rtsp_url(&self, node: &str, stream: &str) -> Option<String> {
        let a = self.rtsp_addr?;
        let host = if a.ip().is_unspecified() { "127.0.0.1".to_owned() } else { a.ip().to_string() };
        Some(format!("rtsp://{host}:{}/{node}/{stream}", a.port()))
    }

    /// Starts draining (a hub of a cluster only): see [`crate::cluster::drain`]. `deadline`
    /// overrides `cluster.drainDeadline`.
    pub fn drain(&self, deadline: Option<Duration>) -> Result<Duration, crate::cluster::drain::DrainError> {
        self.drain.start(deadline)
    }

    /// Resolves once the hub has drained, whoever started the drain (a signal, the API).
    pub async fn drained(&self) {
        self.drain.drained().await;
    }

    /// Starts shutting down: ends sessions, says GoAway to edges, stops accepting.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
        self.registry.cancel_all();
    }

    /// Shuts down and waits up to `grace` for every task to finish.
    pub async fn stop(self, grace: Duration) {
        self.shutdown();
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
    }
}
