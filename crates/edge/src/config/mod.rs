//! The edge's configuration: the `edgeDataStream` block.
//!
//! The KubeEdge proposal's keys keep their names and meaning (`enable`, `server`,
//! `handshakeTimeout`, `readDeadline`, `writeDeadline`, `tlsTunnel*`); mediamesh's additions
//! (`nodeName`, `streams`, `heartbeat`, `reconnect`, `uplinkQueue*`, `congestion`) sit beside
//! them.
//! `docs/configuration.md` is the reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mediamesh_tunnel::settings::{BackoffSettings, HeartbeatSettings, Seconds};
use serde::{Deserialize, Serialize};

mod stream;

pub use stream::{
    FfmpegConfig, FileConfig, RtspConfig, RtspTransport, SourceConfig, StreamConfig, StreamDocument, TestPatternConfig,
    VideoCodecName,
};
use stream::{default_encode, default_ffmpeg, default_fps};

/// The `edgeDataStream` block.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeConfig {
    /// Whether the edge agent runs at all. Default true.
    #[serde(default = "yes")]
    pub enable: bool,
    /// The hub's tunnel address, `host:port`.
    pub server: String,
    /// More hubs' tunnel addresses, tried in turn after `server` when it cannot be reached.
    /// Data tunnels always dial the hub the control channel is connected to.
    #[serde(default)]
    pub fallback_servers: Vec<String>,
    /// Name to verify in the hub's certificate; default: the host part of `server`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Seconds allowed to connect, finish TLS and the WebSocket upgrade, and get Welcome.
    /// Default 30.
    #[serde(default = "default_handshake")]
    pub handshake_timeout: Seconds,
    /// Longest silence from the hub before the connection counts as dead, seconds; the
    /// heartbeat's timeout applies when shorter. Default 15.
    #[serde(default = "default_deadline")]
    pub read_deadline: Seconds,
    /// Longest a single write may take, seconds. Default 15.
    #[serde(default = "default_deadline")]
    pub write_deadline: Seconds,
    /// CA that the hub's certificate must chain to.
    #[serde(rename = "tlsTunnelCAFile")]
    pub tls_tunnel_ca_file: PathBuf,
    /// This edge's client certificate; its DNS name is the node's identity.
    #[serde(rename = "tlsTunnelCertFile")]
    pub tls_tunnel_cert_file: PathBuf,
    /// This edge's private key.
    #[serde(rename = "tlsTunnelPrivateKeyFile")]
    pub tls_tunnel_private_key_file: PathBuf,
    /// The node name; must equal the certificate's DNS name.
    pub node_name: String,
    /// The streams this node offers, by name.
    #[serde(default)]
    pub streams: BTreeMap<String, StreamConfig>,
    /// Ping interval and dead-peer timeout.
    #[serde(default)]
    pub heartbeat: HeartbeatSettings,
    /// Redial backoff.
    #[serde(default)]
    pub reconnect: BackoffSettings,
    /// Frames an uplink holds for its data tunnel (and while the tunnel is down); beyond it,
    /// frames are dropped until the next keyframe. Default 128.
    #[serde(default = "default_queue")]
    pub uplink_queue_frames: usize,
    /// Payload bytes an uplink holds, likewise. Default 8 MiB.
    #[serde(default = "default_queue_bytes")]
    pub uplink_queue_bytes: usize,
    /// Bytes a data tunnel's socket may hold unsent (TCP_NOTSENT_LOWAT), so frames wait in the
    /// uplink's queue, where they can be dropped wisely, rather than in the kernel. 0 keeps the
    /// kernel's default. Default 32 KiB.
    #[serde(default = "default_unsent")]
    pub uplink_unsent_bytes: u32,
    /// When an uplink sheds load.
    #[serde(default)]
    pub congestion: CongestionSettings,
    /// The health endpoint: `/healthz`, `/readyz`, `/metrics`.
    #[serde(default)]
    pub health: HealthSettings,
}

/// The `health` block: the edge's small HTTP endpoint for probes and Prometheus.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthSettings {
    /// Serve it. Default false.
    #[serde(default)]
    pub enable: bool,
    /// Where. Default `127.0.0.1:10007`, this machine only; `0` as the port picks a free one.
    #[serde(default = "default_health_address")]
    pub listen_address: std::net::SocketAddr,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self { enable: false, listen_address: default_health_address() }
    }
}

fn default_health_address() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 10007))
}

/// The `congestion` block: delays at which an uplink sheds load, in seconds.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CongestionSettings {
    /// Delay at which non-reference frames are dropped. Default 0.2.
    #[serde(default = "default_non_reference_delay")]
    pub non_reference_delay: Seconds,
    /// Delay at which only keyframes are sent. Default 0.5.
    #[serde(default = "default_gop_delay")]
    pub gop_delay: Seconds,
    /// Delay below which the link counts as clear. Default 0.1.
    #[serde(default = "default_clear_delay")]
    pub clear_delay: Seconds,
    /// How long the delay must stay clear before shedding eases one step. Default 2.
    #[serde(default = "default_clear_after")]
    pub clear_after: Seconds,
    /// A frame that waited longer than this is dropped. Default 1.
    #[serde(default = "default_max_frame_age")]
    pub max_frame_age: Seconds,
    /// Queueing on the path (beyond the usual round trip) above which nothing more is sent
    /// until it drains. Default 0.15.
    #[serde(default = "default_path_delay_limit")]
    pub path_delay_limit: Seconds,
}

impl Default for CongestionSettings {
    fn default() -> Self {
        Self {
            non_reference_delay: default_non_reference_delay(),
            gop_delay: default_gop_delay(),
            clear_delay: default_clear_delay(),
            clear_after: default_clear_after(),
            max_frame_age: default_max_frame_age(),
            path_delay_limit: default_path_delay_limit(),
        }
    }
}

impl CongestionSettings {
    /// The validated thresholds.
    pub fn to_config(self) -> Result<mediamesh_tunnel::uplink::congestion::CongestionConfig, ConfigError> {
        let err = |key: &str, reason: String| Err(ConfigError { key: format!("congestion.{key}"), reason });
        let c = mediamesh_tunnel::uplink::congestion::CongestionConfig {
            non_reference_at: self.non_reference_delay.get(),
            gop_at: self.gop_delay.get(),
            clear_below: self.clear_delay.get(),
            clear_after: self.clear_after.get(),
            max_frame_age: self.max_frame_age.get(),
            path_delay_limit: self.path_delay_limit.get(),
        };
        if c.path_delay_limit.is_zero() {
            return err("pathDelayLimit", "must be greater than 0".into());
        }
        if c.clear_below.is_zero() || c.clear_below > c.non_reference_at {
            return err("clearDelay", "must be greater than 0 and at most nonReferenceDelay".into());
        }
        if c.gop_at < c.non_reference_at {
            return err("gopDelay", "must be at least nonReferenceDelay".into());
        }
        if c.max_frame_age < c.gop_at {
            return err("maxFrameAge", "must be at least gopDelay".into());
        }
        Ok(c)
    }
}

/// A configuration value that is well-formed YAML but cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("edgeDataStream.{key}: {reason}")]
pub struct ConfigError {
    /// The key path inside `edgeDataStream`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl EdgeConfig {
    /// A configuration with every default: the hub at `server`, this node's name and TLS files.
    pub fn new(server: String, node_name: String, ca: PathBuf, cert: PathBuf, key: PathBuf) -> Self {
        Self {
            enable: true,
            server,
            fallback_servers: Vec::new(),
            server_name: None,
            handshake_timeout: default_handshake(),
            read_deadline: default_deadline(),
            write_deadline: default_deadline(),
            tls_tunnel_ca_file: ca,
            tls_tunnel_cert_file: cert,
            tls_tunnel_private_key_file: key,
            node_name,
            streams: BTreeMap::new(),
            heartbeat: HeartbeatSettings::default(),
            reconnect: BackoffSettings::default(),
            uplink_queue_frames: default_queue(),
            uplink_queue_bytes: default_queue_bytes(),
            uplink_unsent_bytes: default_unsent(),
            congestion: CongestionSettings::default(),
            health: HealthSettings::default(),
        }
    }

    /// The configuration with every optional key set and one stream, `*`, with every source,
    /// as JSON: every key there is (configuration loaders use it for "did you mean" and to type
    /// environment overrides; `*` stands for any stream name).
    pub fn schema() -> serde_json::Value {
        let mut c = Self::new(String::new(), String::new(), PathBuf::new(), PathBuf::new(), PathBuf::new());
        c.server_name = Some(String::new());
        c.fallback_servers = vec![String::new()];
        let rtsp = RtspConfig { username: Some(String::new()), password: Some(String::new()), ..RtspConfig::new("") };
        let stream = StreamDocument {
            description: Some(String::new()),
            test_pattern: Some(TestPatternConfig { label: Some(String::new()), ..TestPatternConfig::default() }),
            ffmpeg: Some(FfmpegConfig {
                input: Vec::new(),
                encode: default_encode(),
                binary: default_ffmpeg(),
                codec: VideoCodecName::default(),
            }),
            rtsp: Some(rtsp),
            file: Some(FileConfig { path: PathBuf::new(), fps: default_fps(), stamp: false }),
        };
        let mut value = serde_json::to_value(&c).unwrap_or_default();
        if let Some(streams) = value.get_mut("streams").and_then(serde_json::Value::as_object_mut) {
            streams.insert("*".into(), serde_json::to_value(stream).unwrap_or_default());
        }
        value
    }

    /// Makes every relative path absolute against `base` (the configuration file's folder): the
    /// TLS files, clips, and an ffmpeg `binary` given as a path (one with a `/`; a bare name is
    /// looked up in `PATH`). ffmpeg's own arguments are passed as written.
    pub fn resolve_paths(&mut self, base: &Path) {
        let absolutize = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        absolutize(&mut self.tls_tunnel_ca_file);
        absolutize(&mut self.tls_tunnel_cert_file);
        absolutize(&mut self.tls_tunnel_private_key_file);
        for s in self.streams.values_mut() {
            match &mut s.source {
                SourceConfig::File(f) => absolutize(&mut f.path),
                SourceConfig::Ffmpeg(ff) if ff.binary.components().count() > 1 => absolutize(&mut ff.binary),
                _ => {}
            }
        }
    }

    /// Every file this configuration names, by key (below `edgeDataStream`).
    pub fn files(&self) -> Vec<(String, &Path)> {
        let mut files = vec![
            ("tlsTunnelCAFile".to_owned(), self.tls_tunnel_ca_file.as_path()),
            ("tlsTunnelCertFile".to_owned(), self.tls_tunnel_cert_file.as_path()),
            ("tlsTunnelPrivateKeyFile".to_owned(), self.tls_tunnel_private_key_file.as_path()),
        ];
        for (name, s) in &self.streams {
            match &s.source {
                SourceConfig::File(f) => files.push((format!("streams.{name}.file.path"), f.path.as_path())),
                SourceConfig::Ffmpeg(ff) if ff.binary.is_absolute() => {
                    files.push((format!("streams.{name}.ffmpeg.binary"), ff.binary.as_path()));
                }
                _ => {}
            }
        }
        files
    }

    /// Checks what YAML types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, reason: String| Err(ConfigError { key: key.into(), reason });
        if mediamesh_tunnel::wire::validate_name(&self.node_name).is_err() || self.node_name.contains('_') {
            return err(
                "nodeName",
                format!("{:?} is not a valid node name (a DNS name: letters, digits, '-', '.')", self.node_name),
            );
        }
        if self.server_host().is_none() {
            return err("server", format!("{:?} is not host:port", self.server));
        }
        for s in &self.fallback_servers {
            if !s.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) {
                return err("fallbackServers", format!("{s:?} is not host:port"));
            }
        }
        if self.uplink_queue_frames < 2 {
            return err("uplinkQueueFrames", "must be at least 2".into());
        }
        if self.uplink_queue_bytes < 64 * 1024 {
            return err("uplinkQueueBytes", "must be at least 65536".into());
        }
        self.congestion.to_config()?;
        self.heartbeat.to_config().map_err(|reason| ConfigError { key: "heartbeat".into(), reason })?;
        self.reconnect.to_config().map_err(|e| ConfigError { key: "reconnect".into(), reason: e.to_string() })?;
        if self.handshake_timeout.get().is_zero() {
            return err("handshakeTimeout", "must be greater than 0".into());
        }
        if self.write_deadline.get().is_zero() {
            return err("writeDeadline", "must be greater than 0".into());
        }
        if self.read_deadline.get().is_zero() {
            return err("readDeadline", "must be greater than 0".into());
        }
        for (name, s) in &self.streams {
            let key = format!("streams.{name}");
            if mediamesh_tunnel::wire::validate_name(name).is_err() {
                return err(&key, "stream names use letters, digits, '-', '_' and '.'".into());
            }
            match &s.source {
                SourceConfig::File(f) if !(1..=240).contains(&f.fps) => {
                    return err(&format!("{key}.file.fps"), "must be 1 to 240".into());
                }
                SourceConfig::TestPattern(tp) => {
                    tp.validate().map_err(|reason| ConfigError { key: format!("{key}.testPattern"), reason })?;
                }
                SourceConfig::Ffmpeg(ff) if ff.input.is_empty() => {
                    let reason = "needs at least the input arguments (e.g. -i URL)".into();
                    return err(&format!("{key}.ffmpeg.input"), reason);
                }
                SourceConfig::Rtsp(r) => {
                    crate::source::rtsp::parse_url(r)
                        .map_err(|reason| ConfigError { key: format!("{key}.rtsp.url"), reason })?;
                    r.reconnect
                        .to_config()
                        .map_err(|e| ConfigError { key: format!("{key}.rtsp.reconnect"), reason: e.to_string() })?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The host part of `server`.
    pub fn server_host(&self) -> Option<&str> {
        let (host, port) = self.server.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty()).then_some(host)
    }
}

fn yes() -> bool {
    true
}
fn default_handshake() -> Seconds {
    Seconds::new(30)
}
fn default_deadline() -> Seconds {
    Seconds::new(15)
}
fn default_queue() -> usize {
    128
}
fn default_queue_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_unsent() -> u32 {
    32 * 1024
}
fn default_non_reference_delay() -> Seconds {
    Seconds::from_millis(200)
}
fn default_gop_delay() -> Seconds {
    Seconds::from_millis(500)
}
fn default_clear_delay() -> Seconds {
    Seconds::from_millis(100)
}
fn default_clear_after() -> Seconds {
    Seconds::new(2)
}
fn default_max_frame_age() -> Seconds {
    Seconds::new(1)
}
fn default_path_delay_limit() -> Seconds {
    Seconds::from_millis(150)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> EdgeConfig {
        let mut c =
            EdgeConfig::new("hub.example.com:10006".into(), "edge-1".into(), "ca".into(), "c".into(), "k".into());
        c.streams.insert("cam1".to_owned(), StreamConfig::new(SourceConfig::TestPattern(TestPatternConfig::default())));
        c
    }

    #[test]
    fn valid_and_invalid() {
        base().validate().unwrap();
        assert_eq!(base().server_host(), Some("hub.example.com"));
        let mut c = base();
        c.server = "[::1]:10006".into();
        assert_eq!(c.server_host(), Some("::1"));
        c.server = "nohost".into();
        assert_eq!(c.validate().unwrap_err().key, "server");
        let mut c = base();
        let SourceConfig::TestPattern(tp) = &mut c.streams.get_mut("cam1").unwrap().source else { unreachable!() };
        tp.width = 641;
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "streams.cam1.testPattern");
        assert!(e.to_string().contains("even"), "{e}");
    }

    #[test]
    fn a_stream_has_exactly_one_source() {
        let none: Result<StreamConfig, _> = serde_json::from_str(r#"{"description": "x"}"#);
        assert!(none.unwrap_err().to_string().contains("needs a source"));
        let two: Result<StreamConfig, _> = serde_json::from_str(r#"{"testPattern": {}, "file": {"path": "a"}}"#);
        assert!(two.unwrap_err().to_string().contains("more than one source"));
        let one: StreamConfig = serde_json::from_str(r#"{"rtsp": {"url": "rtsp://cam/x"}}"#).unwrap();
        assert!(matches!(one.source, SourceConfig::Rtsp(_)));
        assert_eq!(one.describe(), "RTSP camera at cam");
        // Written back, it reads the same.
        let again: StreamConfig = serde_json::from_str(&serde_json::to_string(&one).unwrap()).unwrap();
        assert_eq!(again, one);
    }
}
