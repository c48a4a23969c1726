//! The mediamesh edge agent (the KubeEdge proposal's EdgeDataStream).
//!
//! It keeps one control channel open to the hub ([`control`]), dialling out over mutual TLS +
//! WebSocket and redialling with backoff. On AddVideo it starts the stream's source
//! ([`source`]: the built-in test pattern or an ffmpeg command) and opens a data tunnel for it
//! ([`uplink`]); on RemoveVideo it stops both. Nothing dials into the site.
//!
//! Start it with [`Edge::start`]; stop it with [`RunningEdge::stop`].

#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
mod control;
pub mod dial;
pub mod fuzz;
mod health;
pub mod redact;
mod reload;
pub mod source;
pub mod starts;
pub mod stats;
pub mod uplink;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use config::{ConfigError, EdgeConfig, StreamConfig};
use mediamesh_tls::TlsFiles;
use mediamesh_tunnel::backoff::BackoffConfig;
use mediamesh_tunnel::liveness::HeartbeatConfig;
use mediamesh_tunnel::settings::Live;
use mediamesh_tunnel::uplink::UplinkConfig;
use mediamesh_tunnel::uplink::outbox::OutboxConfig;
pub use reload::Reloaded;
use rustls_pki_types::ServerName;
pub use source::testpattern_encoder::{EncodedPicture, TestPatternEncoder};
use stats::EdgeStats;
use tokio_util::sync::CancellationToken;

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// A configuration value is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A certificate or key could not be loaded.
    #[error("edgeDataStream TLS: {0}")]
    Tls(#[from] mediamesh_tls::TlsError),
    /// The health endpoint's port could not be bound.
    #[error("edgeDataStream.health.listenAddress {addr}: {source}")]
    HealthBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The certificate does not name the configured node.
    #[error("edgeDataStream.nodeName is {configured:?} but the certificate {cert} identifies node {actual:?}")]
    IdentityMismatch {
        /// `nodeName`.
        configured: String,
        /// The certificate file.
        cert: String,
        /// The name in the certificate.
        actual: String,
    },
}

/// The TLS client configuration and the name to verify in the hub's certificate; checks that
/// the certificate names the configured node (unless a test claims another).
fn tls_setup(
    config: &EdgeConfig,
    any_node: bool,
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), EdgeError> {
    let files = TlsFiles {
        ca: config.tls_tunnel_ca_file.clone(),
        cert: config.tls_tunnel_cert_file.clone(),
        key: config.tls_tunnel_private_key_file.clone(),
    };
    let actual = mediamesh_tls::node_identity(&mediamesh_tls::load_certs(&files.cert)?)?;
    if !any_node && actual != config.node_name {
        return Err(EdgeError::IdentityMismatch {
            configured: config.node_name.clone(),
            cert: files.cert.display().to_string(),
            actual,
        });
    }
    let tls = mediamesh_tls::tunnel_client_config(&files)?;
    let host = config.server_name.clone().or_else(|| config.server_host().map(str::to_owned)).unwrap_or_default();
    let server_name = ServerName::try_from(host.clone())
        .map_err(|e| ConfigError { key: "serverName".into(), reason: format!("{host:?}: {e}") })?;
    Ok((tls, server_name))
}

/// How to dial the hub, from a configuration and its TLS setup.
fn dial_config(
    config: &EdgeConfig,
    tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    node: String,
) -> dial::DialConfig {
    dial::DialConfig {
        server: config.server.clone(),
        server_name: server_name.clone(),
        tls,
        node,
        handshake_timeout: config.handshake_timeout.get(),
        write_deadline: config.write_deadline.get(),
        unsent_lowat: (config.uplink_unsent_bytes > 0).then_some(config.uplink_unsent_bytes),
        ca_file: config.tls_tunnel_ca_file.clone(),
        fallbacks: config
            .fallback_servers
            .iter()
            .map(|address| {
                // serverName, when set, is every hub's name; else each address's own host.
                let host = config.server_name.clone().unwrap_or_else(|| host_of(address).to_owned());
                let name = ServerName::try_from(host).unwrap_or_else(|_| server_name.clone());
                (address.clone(), name)
            })
            .collect(),
    }
}

/// The host part of `host:port` (without brackets for IPv6).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Checks a configuration as [`Edge::start`] would, without starting anything: its values, the
/// certificate and key it names, and that the certificate identifies `nodeName`.
pub fn check_tls(config: &EdgeConfig) -> Result<(), EdgeError> {
    config.validate()?;
    tls_setup(config, false).map(drop)
}

/// What the edge's tasks share.
pub(crate) struct EdgeCtx {
    /// How to reach the hub; a reload replaces it (new connections use it).
    pub dial: Live<dial::DialConfig>,
    /// The catalog; a reload replaces it ([`control`] applies the change).
    pub streams: Live<BTreeMap<String, StreamConfig>>,
    pub heartbeat: HeartbeatConfig,
    pub backoff: BackoffConfig,
    pub uplink_queue_frames: usize,
    /// Queue bounds, shedding and heartbeat of every uplink.
    pub uplink: UplinkConfig,
    pub stats: Arc<EdgeStats>,
    /// The hub address the control channel last connected to: data tunnels dial the same hub,
    /// which holds their sessions.
    pub hub_address: std::sync::Mutex<Option<String>>,
    /// Bumped whenever a connection to the hub succeeds: redialling connections try at once.
    pub link_up: tokio::sync::watch::Sender<u64>,
    /// This edge process, in control Hellos: random at start, so the hub tells this edge
    /// reconnecting from a second edge with the same identity.
    pub instance: u64,
    /// When each stream may start again after failing ([`starts`]).
    pub starts: std::sync::Mutex<starts::Starts>,
}

impl EdgeCtx {
    /// The start records (a poisoned lock is consistent: each update is one map operation).
    pub(crate) fn starts(&self) -> std::sync::MutexGuard<'_, starts::Starts> {
        self.starts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A random number (the standard library's randomly keyed hasher over a counter and the time).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u64(source::unix_micros());
    h.finish()
}

/// A random fraction in `[0, 1)`.
pub(crate) fn random_fraction() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The edge agent.
#[derive(Debug)]
pub struct Edge;

impl Edge {
    /// Validates the configuration, loads TLS and starts the control channel.
    ///
    /// `claim_node` overrides the node name sent in Hello (for tests of identity checks);
    /// normally `None`.
    pub fn start(config: EdgeConfig) -> Result<RunningEdge, EdgeError> {
        Self::start_claiming(config, None)
    }

    #[doc(hidden)]
    pub fn start_claiming(config: EdgeConfig, claim_node: Option<String>) -> Result<RunningEdge, EdgeError> {
        config.validate()?;
        let (tls, server_name) = tls_setup(&config, claim_node.is_some())?;
        let heartbeat =
            config.heartbeat.to_config().map_err(|reason| ConfigError { key: "heartbeat".into(), reason })?;
        // readDeadline bounds silence too; the shorter of it and the heartbeat timeout applies.
        let heartbeat = HeartbeatConfig { timeout: heartbeat.timeout.min(config.read_deadline.get()), ..heartbeat };
        let backoff =
            config.reconnect.to_config().map_err(|e| ConfigError { key: "reconnect".into(), reason: e.to_string() })?;
        let stats = Arc::new(EdgeStats::default());
        let node = claim_node.clone().unwrap_or(config.node_name.clone());
        let ctx = Arc::new(EdgeCtx {
            dial: Live::new(dial_config(&config, tls, server_name, node)),
            streams: Live::new(config.streams.clone()),
            heartbeat,
            backoff,
            uplink_queue_frames: config.uplink_queue_frames,
            uplink: UplinkConfig {
                outbox: OutboxConfig { max_frames: config.uplink_queue_frames, max_bytes: config.uplink_queue_bytes },
                congestion: config.congestion.to_config()?,
                heartbeat,
                report_interval: uplink::REPORT_INTERVAL,
            },
            stats: stats.clone(),
            link_up: tokio::sync::watch::Sender::new(0),
            hub_address: std::sync::Mutex::new(None),
            instance: random_u64(),
            starts: std::sync::Mutex::new(starts::Starts::new(starts::StartsConfig::default())),
        });
        let shutdown = CancellationToken::new();
        let health = if config.health.enable {
            let addr = config.health.listen_address;
            let bind = |addr| -> std::io::Result<tokio::net::TcpListener> {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            };
            let listener = bind(addr).map_err(|source| EdgeError::HealthBind { addr, source })?;
            let local = listener.local_addr().map_err(|source| EdgeError::HealthBind { addr, source })?;
            let h = health::Health { stats: stats.clone(), server: config.server.clone() };
            Some((local, tokio::spawn(health::serve(listener, h, shutdown.clone()))))
        } else {
            None
        };
        let (reload_tx, reloaded) = tokio::sync::watch::channel(0u64);
        let (health_addr, health) = health.unzip();
        let task = tokio::spawn(control::run(ctx.clone(), reloaded, shutdown.clone()));
        tracing::info!(node = %config.node_name, server = %config.server, streams = config.streams.len(), "edge agent started");
        let reload = reload::Reload { ctx, notify: reload_tx, config: std::sync::Mutex::new(config), claim_node };
        Ok(RunningEdge { stats, shutdown, task, health, health_addr, reload })
    }
}

/// A running edge agent.
#[derive(Debug)]
pub struct RunningEdge {
    stats: Arc<EdgeStats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// The health endpoint's task, stopped with the rest.
    health: Option<tokio::task::JoinHandle<()>>,
    health_addr: Option<std::net::SocketAddr>,
    reload: reload::Reload,
}

impl RunningEdge {
    /// The node this edge is.
    pub fn node(&self) -> String {
        self.reload.config.lock().unwrap_or_else(std::sync::PoisonError::into_inner).node_name.clone()
    }

    /// The hub address it dials.
    pub fn server(&self) -> String {
        self.reload.ctx.dial.get().server.clone()
    }

    /// Where the health endpoint listens, if it is enabled.
    pub fn health_addr(&self) -> Option<std::net::SocketAddr> {
        self.health_addr
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<EdgeStats> {
        &self.stats
    }

    /// Says GoAway to the hub, stops every stream and waits up to `grace`.
    pub async fn stop(self, grace: Duration) {
        self.shutdown.cancel();
        let tasks = async {
            let _ = self.task.await;
            if let Some(health) = self.health {
                let _ = health.await;
            }
        };
        let _ = tokio::time::timeout(grace, tasks).await;
    }
}
