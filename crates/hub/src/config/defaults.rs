//! The defaults of the `cloudDataStream` keys, named by the `#[serde(default = …)]` attributes.

use std::net::{IpAddr, Ipv4Addr};

use mediamesh_tunnel::settings::Seconds;
use mediamesh_tunnel::wire::DEFAULT_MAX_FRAME_BYTES;

pub(super) fn default_viewers_per_stream() -> usize {
    1000
}
pub(super) fn default_viewers_max() -> usize {
    10_000
}
pub(super) fn default_viewers_per_ip() -> usize {
    100
}
pub(super) fn default_cold_starts() -> u32 {
    30
}

pub(super) fn default_certificate_ttl() -> Seconds {
    Seconds::new(24 * 3600)
}

pub(super) fn yes() -> bool {
    true
}
pub(super) fn default_stream_port() -> u16 {
    10005
}
pub(super) fn default_tunnel_port() -> u16 {
    10006
}
pub(super) fn default_listen() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}
pub(super) fn default_hub_name() -> String {
    "mediamesh-hub".into()
}
pub(super) fn default_linger() -> Seconds {
    Seconds::new(10)
}
pub(super) fn default_start_timeout() -> Seconds {
    Seconds::new(15)
}
pub(super) fn default_handshake_timeout() -> Seconds {
    Seconds::new(10)
}
pub(super) fn default_grace_period() -> Seconds {
    Seconds::new(30)
}
pub(super) fn default_deadline() -> Seconds {
    Seconds::new(15)
}
pub(super) fn default_max_frame_bytes() -> u32 {
    DEFAULT_MAX_FRAME_BYTES
}
pub(super) fn default_log_frames() -> usize {
    1024
}
pub(super) fn default_log_bytes() -> usize {
    64 * 1024 * 1024
}
pub(super) fn default_viewer_lag_bytes() -> usize {
    8 * 1024 * 1024
}
pub(super) fn default_metrics_viewers() -> usize {
    0
}
pub(super) fn default_viewer_lag() -> Seconds {
    Seconds::new(10)
}
pub(super) fn default_viewer_resyncs() -> usize {
    5
}
pub(super) fn default_viewer_resync_window() -> Seconds {
    Seconds::new(60)
}
pub(super) fn default_viewer_send_buffer() -> usize {
    512 * 1024
}
pub(super) fn default_viewer_write_timeout() -> Seconds {
    Seconds::new(10)
}
pub(super) fn default_hls_part_target() -> Seconds {
    Seconds::from_millis(200)
}
pub(super) fn default_hls_segment_min() -> Seconds {
    Seconds::new(1)
}
pub(super) fn default_hls_segments() -> usize {
    7
}
pub(super) fn default_hls_max_waiting() -> usize {
    10_000
}
pub(super) fn default_rtsp_port() -> u16 {
    8554
}
pub(super) fn default_rtp_port() -> u16 {
    8000
}
pub(super) fn default_rtcp_port() -> u16 {
    8001
}
pub(super) fn default_rtsp_session_timeout() -> Seconds {
    Seconds::new(60)
}
pub(super) fn default_rtsp_request_timeout() -> Seconds {
    Seconds::new(10)
}
pub(super) fn default_rtsp_max_connections_per_ip() -> u32 {
    64
}
pub(super) fn default_rtsp_max_connections() -> u32 {
    4096
}
pub(super) fn default_request_timeout() -> Seconds {
    Seconds::new(10)
}
pub(super) fn default_stream_max_connections() -> u32 {
    8192
}
pub(super) fn default_stream_max_connections_per_ip() -> u32 {
    256
}
pub(super) fn default_tunnel_max_connections() -> u32 {
    4096
}
pub(super) fn default_tunnel_max_connections_per_ip() -> u32 {
    1024
}
