//! The hub's configuration: the `cloudDataStream` block.
//!
//! The KubeEdge proposal's keys keep their names and meaning (`enable`, `streamPort`,
//! `tunnelPort`, `tlsStream*`, `tlsTunnel*`); mediamesh's additions sit beside them, each with a
//! default. `docs/configuration.md` is the reference; this file and that one change together.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use mediamesh_auth::AuthSettings;
use mediamesh_tunnel::settings::{HeartbeatSettings, Seconds};
use serde::{Deserialize, Serialize};

pub use self::cluster::ClusterSettings;
use self::defaults::*;
pub use self::validate::ConfigError;

mod cluster;
mod defaults;
mod validate;

/// The `cloudDataStream` block.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HubConfig {
    /// Whether the hub runs at all (KubeEdge's module switch). Default true.
    #[serde(default = "yes")]
    pub enable: bool,
    /// Viewer port: REST API, WebSocket viewers. Default 10005.
    #[serde(default = "default_stream_port")]
    pub stream_port: u16,
    /// Edge port: control channels and data tunnels. Default 10006.
    #[serde(default = "default_tunnel_port")]
    pub tunnel_port: u16,
    /// Address both ports bind to. Default `0.0.0.0`.
    #[serde(default = "default_listen")]
    pub listen_address: IpAddr,
    /// CA that viewers' client certificates must chain to; unset: no client certificates.
    #[serde(rename = "tlsStreamCAFile", default)]
    pub tls_stream_ca_file: Option<PathBuf>,
    /// Certificate of the stream port; with the key, turns on HTTPS/WSS for viewers.
    #[serde(rename = "tlsStreamCertFile", default)]
    pub tls_stream_cert_file: Option<PathBuf>,
    /// Private key of the stream port.
    #[serde(rename = "tlsStreamPrivateKeyFile", default)]
    pub tls_stream_private_key_file: Option<PathBuf>,
    /// CA that edges' client certificates must chain to. Required.
    #[serde(rename = "tlsTunnelCAFile")]
    pub tls_tunnel_ca_file: PathBuf,
    /// The hub's certificate on the tunnel port. Required.
    #[serde(rename = "tlsTunnelCertFile")]
    pub tls_tunnel_cert_file: PathBuf,
    /// The hub's private key on the tunnel port. Required.
    #[serde(rename = "tlsTunnelPrivateKeyFile")]
    pub tls_tunnel_private_key_file: PathBuf,
    /// The hub's name in logs and Welcome messages. Default `mediamesh-hub`.
    #[serde(default = "default_hub_name")]
    pub hub_name: String,
    /// Seconds a stream keeps running after its last viewer leaves. Default 10.
    #[serde(default = "default_linger")]
    pub linger: Seconds,
    /// Seconds the first viewer waits for the edge to deliver a keyframe. Default 15.
    #[serde(default = "default_start_timeout")]
    pub start_timeout: Seconds,
    /// Seconds viewers stay connected while their edge is unreachable (a broken link, an edge
    /// restarting); delivery resumes at a keyframe if it returns in time. 0 ends them at once.
    /// Default 30.
    #[serde(default = "default_grace_period")]
    pub grace_period: Seconds,
    /// Seconds a client has for the TLS handshake: an edge also for its WebSocket upgrade and
    /// Hello, a viewer on a TLS stream port for its handshake alone. Default 10.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Seconds,
    /// Seconds a stream port client has to send each request's header, however it trickles
    /// in; the first is due this long after the connection opens (or its TLS handshake ends).
    /// Default 10.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Seconds,
    /// Connections the stream port holds open at once (API, `/metrics`, WebSocket viewers);
    /// more are closed on accept. Default 8192.
    #[serde(default = "default_stream_max_connections")]
    pub stream_max_connections: u32,
    /// Stream port connections one client address may hold. Default 256.
    #[serde(default = "default_stream_max_connections_per_ip")]
    pub stream_max_connections_per_ip: u32,
    /// Connections the tunnel port holds open at once (an edge holds one, plus one per
    /// watched stream). Default 4096.
    #[serde(default = "default_tunnel_max_connections")]
    pub tunnel_max_connections: u32,
    /// Tunnel port connections one address may hold (several edges can share a NAT address).
    /// Default 1024.
    #[serde(default = "default_tunnel_max_connections_per_ip")]
    pub tunnel_max_connections_per_ip: u32,
    /// Seconds a tunnel may go without receiving anything before the edge counts as dead; the
    /// shorter of this and `heartbeat.timeout` applies. Default 15.
    #[serde(default = "default_deadline")]
    pub read_deadline: Seconds,
    /// Seconds any single write to a tunnel may take. Default 15.
    #[serde(default = "default_deadline")]
    pub write_deadline: Seconds,
    /// Ping interval and dead-peer timeout on tunnels.
    #[serde(default)]
    pub heartbeat: HeartbeatSettings,
    /// Largest frame (access unit) accepted from an edge, bytes. Default 4 MiB.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u32,
    /// Per-stream frame log: how much recent media is kept for late joiners and slow viewers.
    #[serde(default)]
    pub frame_log: FrameLogSettings,
    /// Bytes a viewer may fall behind the newest frame before it is resynchronised at the
    /// newest keyframe. Default 8 MiB.
    #[serde(default = "default_viewer_lag_bytes")]
    pub viewer_max_lag_bytes: usize,
    /// Seconds a viewer may fall behind the newest frame before it is resynchronised at a newer
    /// keyframe (a long group of pictures alone never triggers it). Default 10.
    #[serde(default = "default_viewer_lag")]
    pub viewer_max_lag: Seconds,
    /// Resyncs within `viewerResyncWindow` after which a viewer counts as too slow for the
    /// stream and is disconnected. 0 never disconnects. Default 5.
    #[serde(default = "default_viewer_resyncs")]
    pub viewer_max_resyncs: usize,
    /// The window of `viewerMaxResyncs`, seconds. Default 60.
    #[serde(default = "default_viewer_resync_window")]
    pub viewer_resync_window: Seconds,
    /// Kernel send buffer of each viewer connection (SO_SNDBUF), bytes; bounds the memory a
    /// stalled viewer holds in the kernel. 0 leaves the kernel's autotuning (up to
    /// `net.ipv4.tcp_wmem`, often 4 MiB). Default 512 KiB.
    #[serde(default = "default_viewer_send_buffer")]
    pub viewer_send_buffer_bytes: usize,
    /// Seconds a write to a viewer may make no progress before the viewer is disconnected
    /// (a client that stopped reading). Default 10.
    #[serde(default = "default_viewer_write_timeout")]
    pub viewer_write_timeout: Seconds,
    /// Most viewers that get their own series in `/metrics` (the oldest first); per-stream
    /// totals cover every viewer either way. Default 0: per-viewer series churn a new series per
    /// viewer in the time-series database, and the REST API has the per-viewer detail.
    #[serde(default = "default_metrics_viewers")]
    pub metrics_max_viewer_series: usize,
    /// The RTSP server for ffmpeg, GStreamer, OpenCV, VLC and NVRs.
    #[serde(default)]
    pub rtsp: RtspSettings,
    /// LL-HLS on the stream port: how parts and segments are cut.
    #[serde(default)]
    pub hls: HlsSettings,
    /// WebRTC viewers over WHEP: the shared UDP port and the addresses offered to browsers.
    /// Unset: no WebRTC.
    #[serde(default)]
    pub webrtc: Option<WebRtcBlock>,
    /// How timestamps continue across an edge outage: `wallClock` (default: they advance by the
    /// outage's real length, so recordings keep wall-clock time) or `squeezed` (the outage is
    /// cut out of the timeline).
    #[serde(default)]
    pub outage_timestamps: crate::session::log::OutageTimeline,
    /// Who may watch and administer ([`mediamesh_auth`]). Without it the hub is open to
    /// anyone, which it allows only on a loopback `listenAddress`.
    #[serde(default)]
    pub auth: Option<AuthSettings>,
    /// Web origins (`https://ops.example.com`) besides the hub's own whose pages may open
    /// WebSocket viewers; `*` allows any. Requests without `Origin` (not browsers) always may.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Viewers one stream may have (WebSocket and RTSP together). Default 1000.
    #[serde(default = "default_viewers_per_stream")]
    pub viewers_per_stream: usize,
    /// Viewers the hub may have. Default 10000.
    #[serde(default = "default_viewers_max")]
    pub viewers_max: usize,
    /// Viewers one client address may have. Default 100.
    #[serde(default = "default_viewers_per_ip")]
    pub viewers_per_ip: usize,
    /// Streams of one node that viewers may start per minute (a stream already running costs
    /// nothing), so that a client cycling through cold cameras cannot flap an edge's sources.
    /// Default 30.
    #[serde(default = "default_cold_starts")]
    pub cold_starts_per_minute: u32,
    /// Where the hub keeps join tokens and revoked nodes, across restarts. Unset: no
    /// enrollment, and revocations last until a restart.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Edges that join with a token (`mediamesh token create`) and get certificates signed
    /// here.
    #[serde(default)]
    pub enrollment: Option<EnrollmentSettings>,
    /// Hubs sharing a registry in etcd (`docs/cluster.md`). Unset: this hub runs alone.
    #[serde(default)]
    pub cluster: Option<ClusterSettings>,
}

/// The `enrollment` block.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrollmentSettings {
    /// The private key of `tlsTunnelCAFile`: it signs enrolled edges' certificates.
    pub ca_key_file: PathBuf,
    /// How long an enrolled edge's certificate is valid; the edge renews it after two thirds.
    /// Default 24 h.
    #[serde(default = "default_certificate_ttl")]
    pub certificate_ttl: Seconds,
}

/// The `webrtc` block.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebRtcBlock {
    /// The UDP port every WebRTC viewer shares. Default 8189.
    #[serde(default = "default_webrtc_port")]
    pub port: u16,
    /// Addresses offered to browsers as host candidates besides the host's own (a NAT'd hub's
    /// public address, as MediaMTX's `webrtcAdditionalHosts`).
    #[serde(default)]
    pub hosts: Vec<std::net::IpAddr>,
    /// Whether the host's own addresses are offered too: the listen address if it is not a
    /// wildcard, else every interface's (loopback last). Default true.
    #[serde(default = "default_true")]
    pub interfaces: bool,
    /// Most WebRTC sessions at once; more are answered 503. Default 1000.
    #[serde(default = "default_webrtc_sessions")]
    pub max_sessions: usize,
}

fn default_true() -> bool {
    true
}

fn default_webrtc_port() -> u16 {
    8189
}

fn default_webrtc_sessions() -> usize {
    1000
}

/// The `hls` block.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HlsSettings {
    /// Longest partial segment (`PART-TARGET`). Default 0.2 s.
    #[serde(default = "default_hls_part_target")]
    pub part_target: Seconds,
    /// Shortest segment: a segment ends at the first keyframe after this. Default 1 s.
    #[serde(default = "default_hls_segment_min")]
    pub segment_min: Seconds,
    /// Complete segments each playlist lists (and the hub keeps). Default 7.
    #[serde(default = "default_hls_segments")]
    pub segments: usize,
    /// Requests the hub holds waiting for a part (blocking reloads, preload hints), all
    /// streams together; more are answered 503. Default 10000.
    #[serde(default = "default_hls_max_waiting")]
    pub max_waiting_requests: usize,
}

impl Default for HlsSettings {
    fn default() -> Self {
        Self {
            part_target: default_hls_part_target(),
            segment_min: default_hls_segment_min(),
            segments: default_hls_segments(),
            max_waiting_requests: default_hls_max_waiting(),
        }
    }
}

/// The `rtsp` block.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RtspSettings {
    /// Whether to serve RTSP. Default true.
    #[serde(default = "yes")]
    pub enable: bool,
    /// TCP port. Default 8554 (0 picks a free one).
    #[serde(default = "default_rtsp_port")]
    pub port: u16,
    /// Whether viewers may choose RTP over UDP. Default true.
    #[serde(default = "yes")]
    pub udp: bool,
    /// UDP port RTP is sent from. Default 8000 (0 with `udpRtcpPort: 0` picks a free pair).
    #[serde(default = "default_rtp_port")]
    pub udp_rtp_port: u16,
    /// UDP port RTCP is sent from and receiver reports arrive on. Default 8001.
    #[serde(default = "default_rtcp_port")]
    pub udp_rtcp_port: u16,
    /// Seconds a UDP session lives without RTCP or a request (RFC 2326 `timeout`). Default 60.
    #[serde(default = "default_rtsp_session_timeout")]
    pub session_timeout: Seconds,
    /// Seconds a connection that is not playing may go without a request. Default 10.
    #[serde(default = "default_rtsp_request_timeout")]
    pub request_timeout: Seconds,
    /// RTSP connections one client address may hold open at once; more are closed on accept.
    /// Default 64.
    #[serde(default = "default_rtsp_max_connections_per_ip")]
    pub max_connections_per_ip: u32,
    /// RTSP connections the port holds open at once. Default 4096.
    #[serde(default = "default_rtsp_max_connections")]
    pub max_connections: u32,
}

impl Default for RtspSettings {
    fn default() -> Self {
        Self {
            enable: true,
            port: default_rtsp_port(),
            udp: true,
            udp_rtp_port: default_rtp_port(),
            udp_rtcp_port: default_rtcp_port(),
            session_timeout: default_rtsp_session_timeout(),
            request_timeout: default_rtsp_request_timeout(),
            max_connections_per_ip: default_rtsp_max_connections_per_ip(),
            max_connections: default_rtsp_max_connections(),
        }
    }
}

/// Bounds of each stream's shared frame log.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FrameLogSettings {
    /// Most frames kept. Default 1024.
    #[serde(default = "default_log_frames")]
    pub max_frames: usize,
    /// Most payload bytes kept. Default 64 MiB.
    #[serde(default = "default_log_bytes")]
    pub max_bytes: usize,
}

impl Default for FrameLogSettings {
    fn default() -> Self {
        Self { max_frames: default_log_frames(), max_bytes: default_log_bytes() }
    }
}

impl HubConfig {
    /// A configuration with every default and the given tunnel TLS files.
    pub fn with_tunnel_tls(ca: PathBuf, cert: PathBuf, key: PathBuf) -> Self {
        Self {
            enable: true,
            stream_port: default_stream_port(),
            tunnel_port: default_tunnel_port(),
            listen_address: default_listen(),
            tls_stream_ca_file: None,
            tls_stream_cert_file: None,
            tls_stream_private_key_file: None,
            tls_tunnel_ca_file: ca,
            tls_tunnel_cert_file: cert,
            tls_tunnel_private_key_file: key,
            hub_name: default_hub_name(),
            linger: default_linger(),
            start_timeout: default_start_timeout(),
            grace_period: default_grace_period(),
            handshake_timeout: default_handshake_timeout(),
            request_timeout: default_request_timeout(),
            stream_max_connections: default_stream_max_connections(),
            stream_max_connections_per_ip: default_stream_max_connections_per_ip(),
            tunnel_max_connections: default_tunnel_max_connections(),
            tunnel_max_connections_per_ip: default_tunnel_max_connections_per_ip(),
            read_deadline: default_deadline(),
            write_deadline: default_deadline(),
            heartbeat: HeartbeatSettings::default(),
            max_frame_bytes: default_max_frame_bytes(),
            frame_log: FrameLogSettings::default(),
            viewer_max_lag_bytes: default_viewer_lag_bytes(),
            viewer_max_lag: default_viewer_lag(),
            viewer_max_resyncs: default_viewer_resyncs(),
            viewer_resync_window: default_viewer_resync_window(),
            viewer_send_buffer_bytes: default_viewer_send_buffer(),
            viewer_write_timeout: default_viewer_write_timeout(),
            metrics_max_viewer_series: default_metrics_viewers(),
            rtsp: RtspSettings::default(),
            hls: HlsSettings::default(),
            webrtc: None,
            outage_timestamps: Default::default(),
            auth: None,
            allowed_origins: Vec::new(),
            viewers_per_stream: default_viewers_per_stream(),
            viewers_max: default_viewers_max(),
            viewers_per_ip: default_viewers_per_ip(),
            cold_starts_per_minute: default_cold_starts(),
            state_dir: None,
            enrollment: None,
            cluster: None,
        }
    }

    /// An instance with every optional key set, so that serialized it lists every key there is
    /// (configuration loaders use it for "did you mean" and to type environment overrides).
    pub fn schema() -> Self {
        let mut c = Self::with_tunnel_tls(PathBuf::new(), PathBuf::new(), PathBuf::new());
        c.tls_stream_ca_file = Some(PathBuf::new());
        c.tls_stream_cert_file = Some(PathBuf::new());
        c.tls_stream_private_key_file = Some(PathBuf::new());
        c.auth = Some(AuthSettings::schema());
        c.state_dir = Some(PathBuf::new());
        c.cluster = Some(ClusterSettings::schema());
        c.enrollment =
            Some(EnrollmentSettings { ca_key_file: PathBuf::new(), certificate_ttl: default_certificate_ttl() });
        c
    }

    /// Makes every relative path absolute against `base` (the configuration file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let paths =
            [&mut self.tls_tunnel_ca_file, &mut self.tls_tunnel_cert_file, &mut self.tls_tunnel_private_key_file];
        let optional =
            [&mut self.tls_stream_ca_file, &mut self.tls_stream_cert_file, &mut self.tls_stream_private_key_file];
        for p in paths.into_iter().chain(optional.into_iter().flatten()) {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
        if let Some(a) = &mut self.auth {
            a.resolve_paths(base);
        }
        let state = [self.state_dir.as_mut(), self.enrollment.as_mut().map(|e| &mut e.ca_key_file)];
        for p in state.into_iter().flatten() {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
    }

    /// Every file this configuration names, by key (below `cloudDataStream`).
    pub fn files(&self) -> Vec<(&'static str, &Path)> {
        let mut files = vec![
            ("tlsTunnelCAFile", self.tls_tunnel_ca_file.as_path()),
            ("tlsTunnelCertFile", self.tls_tunnel_cert_file.as_path()),
            ("tlsTunnelPrivateKeyFile", self.tls_tunnel_private_key_file.as_path()),
        ];
        let optional = [
            ("tlsStreamCAFile", &self.tls_stream_ca_file),
            ("tlsStreamCertFile", &self.tls_stream_cert_file),
            ("tlsStreamPrivateKeyFile", &self.tls_stream_private_key_file),
        ];
        files.extend(optional.into_iter().filter_map(|(k, p)| p.as_deref().map(|p| (k, p))));
        if let Some(key) = self.auth.as_ref().and_then(|a| a.jwt.as_ref()).and_then(|j| j.key_file.as_deref()) {
            files.push(("auth.jwt.keyFile", key));
        }
        if let Some(e) = &self.enrollment {
            files.push(("enrollment.caKeyFile", e.ca_key_file.as_path()));
        }
        files
    }
}
