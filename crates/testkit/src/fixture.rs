//! A hub and an edge (`edge-1`, test-pattern stream `cam1`) running in this process.

use std::time::Duration;

use mediamesh_edge::config::{SourceConfig, TestPatternConfig};
use mediamesh_edge::{Edge, EdgeConfig, RunningEdge, StreamConfig};
use mediamesh_hub::client::{ClientError, ConnectOptions, ViewerClient};
use mediamesh_hub::{Hub, HubConfig, RunningHub};
use mediamesh_tunnel::settings::Seconds;

use crate::impair::ImpairProxy;
use crate::{TestPki, wait_until};

/// A small, cheap test-pattern stream (320x240, 25 fps, keyframe every 25 frames).
pub fn test_pattern() -> StreamConfig {
    StreamConfig::new(SourceConfig::TestPattern(TestPatternConfig {
        width: 320,
        height: 240,
        fps: 25,
        bitrate_kbps: 300,
        gop: 25,
        label: None,
    }))
}

/// A camera with B-frames: ffmpeg (lavfi testsrc, 320x240 at 25 fps) encoding with libx264,
/// two B-frames between references and a keyframe every 25 frames.
pub fn b_frame_camera() -> StreamConfig {
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    StreamConfig::new(SourceConfig::Ffmpeg(mediamesh_edge::config::FfmpegConfig {
        input: args(&["-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"]),
        encode: args(&["-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "25", "-pix_fmt", "yuv420p"]),
        binary: "ffmpeg".into(),
        codec: mediamesh_edge::config::VideoCodecName::H264,
    }))
}

/// Builds a [`Fixture`].
pub struct FixtureBuilder {
    hub: Box<dyn FnOnce(&mut HubConfig)>,
    edge: Box<dyn FnOnce(&mut EdgeConfig)>,
    proxy: bool,
}

impl FixtureBuilder {
    /// Adjusts the hub's configuration (ports and TLS are set already).
    pub fn hub(mut self, f: impl FnOnce(&mut HubConfig) + 'static) -> Self {
        self.hub = Box::new(f);
        self
    }

    /// Adjusts `edge-1`'s configuration (it has `cam1` already).
    pub fn edge(mut self, f: impl FnOnce(&mut EdgeConfig) + 'static) -> Self {
        self.edge = Box::new(f);
        self
    }

    /// Puts an [`ImpairProxy`] between the edge and the hub's tunnel port.
    pub fn through_proxy(mut self) -> Self {
        self.proxy = true;
        self
    }

    /// Starts the hub, then the edge, and waits until the edge is registered.
    pub async fn start(self) -> Fixture {
        crate::init_tracing();
        let pki = TestPki::new();
        let mut hub_cfg = Fixture::hub_config(&pki);
        (self.hub)(&mut hub_cfg);
        let hub = Hub::bind(hub_cfg).await.expect("hub starts");
        let mut edge_cfg = Fixture::edge_config(&pki, &hub, "edge-1");
        let proxy = match self.proxy {
            true => Some(ImpairProxy::start(hub.tunnel_addr).await.expect("proxy starts")),
            false => None,
        };
        if let Some(p) = &proxy {
            edge_cfg.server = p.addr().to_string();
        }
        edge_cfg.streams.insert("cam1".into(), test_pattern());
        (self.edge)(&mut edge_cfg);
        let edge = Edge::start(edge_cfg).expect("edge starts");
        let fx = Fixture { pki, hub, edge: Some(edge), proxy };
        fx.wait_for_node("edge-1").await;
        fx
    }
}

/// A running hub and edge.
pub struct Fixture {
    /// Certificates.
    pub pki: TestPki,
    /// The hub.
    pub hub: RunningHub,
    /// The edge `edge-1` (taken by tests that stop it).
    pub edge: Option<RunningEdge>,
    /// The impairment proxy between edge and hub, if the builder asked for one.
    pub proxy: Option<ImpairProxy>,
}

impl Fixture {
    /// A builder with the defaults: linger 1 s, start timeout 10 s.
    pub fn builder() -> FixtureBuilder {
        FixtureBuilder { hub: Box::new(|_| {}), edge: Box::new(|_| {}), proxy: false }
    }

    /// A hub configuration on 127.0.0.1 port 0, plain HTTP for viewers, linger 1 s.
    pub fn hub_config(pki: &TestPki) -> HubConfig {
        let h = &pki.main.hub;
        let mut c = HubConfig::with_tunnel_tls(h.ca.clone(), h.cert.clone(), h.key.clone());
        c.listen_address = std::net::Ipv4Addr::LOCALHOST.into();
        c.stream_port = 0;
        c.tunnel_port = 0;
        c.linger = Seconds::new(1);
        c.start_timeout = Seconds::new(10);
        c.rtsp.port = 0;
        c.rtsp.udp_rtp_port = 0;
        c.rtsp.udp_rtcp_port = 0;
        c
    }

    /// An edge configuration for `node` pointing at `hub`, with no streams.
    pub fn edge_config(pki: &TestPki, hub: &RunningHub, node: &str) -> EdgeConfig {
        let f = pki.edge(node);
        let mut c =
            EdgeConfig::new(hub.tunnel_addr.to_string(), node.into(), f.ca.clone(), f.cert.clone(), f.key.clone());
        c.server_name = Some("localhost".into());
        c
    }

    /// Waits until `node` has a control channel to the hub.
    pub async fn wait_for_node(&self, node: &str) {
        let reg = self.hub.registry().clone();
        let node = node.to_owned();
        wait_until("the edge to connect", Duration::from_secs(10), move || {
            reg.snapshot().iter().any(|(n, _)| *n == node)
        })
        .await;
    }

    /// The WebSocket URL of a stream.
    pub fn ws_url(&self, node: &str, stream: &str) -> String {
        format!("ws://{}/api/v1/nodes/{node}/streams/{stream}/ws", self.hub.stream_addr)
    }

    /// The RTSP URL of a stream.
    pub fn rtsp_url(&self, node: &str, stream: &str) -> String {
        self.hub.rtsp_url(node, stream).expect("RTSP is enabled in tests")
    }

    /// Connects a viewer.
    pub async fn viewer(&self, node: &str, stream: &str) -> Result<ViewerClient, ClientError> {
        ViewerClient::connect(&self.ws_url(node, stream), &ConnectOptions::default()).await
    }

    /// The edge's counters.
    pub fn edge_stats(&self) -> &std::sync::Arc<mediamesh_edge::stats::EdgeStats> {
        self.edge.as_ref().expect("edge running").stats()
    }
}
