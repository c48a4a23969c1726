//! Checks of the `cloudDataStream` values that YAML types alone cannot express.

use mediamesh_tunnel::wire::MAX_FRAME_BYTES_LIMIT;

use super::HubConfig;

/// A configuration value that is well-formed YAML but cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cloudDataStream.{key}: {reason}")]
pub struct ConfigError {
    /// The key path inside `cloudDataStream`, e.g. `maxFrameBytes`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl HubConfig {
    /// Checks the values that YAML types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, reason: String| Err(ConfigError { key: key.to_owned(), reason });
        if self.stream_port == self.tunnel_port && self.stream_port != 0 {
            return err("streamPort", format!("{} is also the tunnelPort; use two ports", self.stream_port));
        }
        if self.max_frame_bytes == 0 || self.max_frame_bytes > MAX_FRAME_BYTES_LIMIT {
            return err("maxFrameBytes", format!("must be between 1 and {MAX_FRAME_BYTES_LIMIT}"));
        }
        if self.frame_log.max_frames < 2 {
            return err("frameLog.maxFrames", "must be at least 2".into());
        }
        if self.frame_log.max_bytes < self.max_frame_bytes as usize {
            return err(
                "frameLog.maxBytes",
                format!("{} is smaller than maxFrameBytes ({})", self.frame_log.max_bytes, self.max_frame_bytes),
            );
        }
        if self.viewer_max_lag_bytes < self.max_frame_bytes as usize {
            return err(
                "viewerMaxLagBytes",
                format!("{} is smaller than maxFrameBytes ({})", self.viewer_max_lag_bytes, self.max_frame_bytes),
            );
        }
        if self.tls_stream_cert_file.is_some() != self.tls_stream_private_key_file.is_some() {
            return err("tlsStreamCertFile", "tlsStreamCertFile and tlsStreamPrivateKeyFile go together".into());
        }
        if self.tls_stream_ca_file.is_some() && self.tls_stream_cert_file.is_none() {
            return err("tlsStreamCAFile", "client certificates need TLS: set tlsStreamCertFile too".into());
        }
        if mediamesh_tunnel::wire::validate_name(&self.hub_name).is_err() {
            return err("hubName", format!("{:?} is not a valid name", self.hub_name));
        }
        self.heartbeat.to_config().map_err(|reason| ConfigError { key: "heartbeat".into(), reason })?;
        if self.start_timeout.get().is_zero() {
            return err("startTimeout", "must be greater than 0".into());
        }
        if self.handshake_timeout.get().is_zero() {
            return err("handshakeTimeout", "must be greater than 0".into());
        }
        if self.request_timeout.get().is_zero() {
            return err("requestTimeout", "must be greater than 0".into());
        }
        let limits = [
            ("streamMaxConnections", self.stream_max_connections),
            ("streamMaxConnectionsPerIp", self.stream_max_connections_per_ip),
            ("tunnelMaxConnections", self.tunnel_max_connections),
            ("tunnelMaxConnectionsPerIp", self.tunnel_max_connections_per_ip),
        ];
        let viewers = [
            ("viewersPerStream", self.viewers_per_stream == 0),
            ("viewersMax", self.viewers_max == 0),
            ("viewersPerIp", self.viewers_per_ip == 0),
            ("coldStartsPerMinute", self.cold_starts_per_minute == 0),
        ];
        if let Some((key, _)) = limits.iter().map(|(k, n)| (*k, *n == 0)).chain(viewers).find(|(_, zero)| *zero) {
            return err(key, "must be at least 1".into());
        }
        if self.viewer_max_lag.get().is_zero() {
            return err("viewerMaxLag", "must be greater than 0".into());
        }
        if self.read_deadline.get().is_zero() {
            return err("readDeadline", "must be greater than 0".into());
        }
        if self.write_deadline.get().is_zero() {
            return err("writeDeadline", "must be greater than 0".into());
        }
        if self.viewer_write_timeout.get().is_zero() {
            return err("viewerWriteTimeout", "must be greater than 0".into());
        }
        if let Some(c) = &self.cluster {
            c.validate().map_err(|(key, reason)| ConfigError { key: format!("cluster.{key}"), reason })?;
        }
        if self.enrollment.is_some() && self.state_dir.is_none() {
            return err("enrollment", "needs stateDir, where join tokens are kept".into());
        }
        if let Some(e) = &self.enrollment
            && e.certificate_ttl.get() < std::time::Duration::from_secs(10)
        {
            return err("enrollment.certificateTtl", "must be at least 10 s".into());
        }
        match &self.auth {
            Some(a) => a.validate().map_err(|e| ConfigError { key: format!("auth.{}", e.key), reason: e.reason })?,
            None if !self.listen_address.is_loopback() => {
                return err(
                    "auth",
                    format!(
                        "the hub listens on {} with no auth block, so anyone who reaches it could watch every \
                         camera and read the API. Add an auth block (users, jwt; see docs/security.md), or allow \
                         anonymous reading explicitly: `auth: {{anonymous: [read]}}`",
                        self.listen_address
                    ),
                );
            }
            None => {}
        }
        let h = &self.hls;
        let part = h.part_target.get();
        if part < std::time::Duration::from_millis(50) || part > std::time::Duration::from_secs(2) {
            return err("hls.partTarget", format!("{} is outside 50ms..2s", h.part_target));
        }
        if h.segment_min.get() < part || h.segment_min.get() > std::time::Duration::from_secs(60) {
            return err("hls.segmentMin", format!("{} must be between partTarget and 60s", h.segment_min));
        }
        if !(2..=100).contains(&h.segments) {
            return err("hls.segments", format!("{} is outside 2..100", h.segments));
        }
        if h.max_waiting_requests == 0 {
            return err("hls.maxWaitingRequests", "must be at least 1".into());
        }
        let r = &self.rtsp;
        if r.enable {
            if r.port != 0 && (r.port == self.stream_port || r.port == self.tunnel_port) {
                return err("rtsp.port", format!("{} is already the streamPort or tunnelPort", r.port));
            }
            if r.udp && (r.udp_rtp_port == 0) != (r.udp_rtcp_port == 0) {
                return err(
                    "rtsp.udpRtpPort",
                    "udpRtpPort and udpRtcpPort are both 0 (pick a pair) or both set".into(),
                );
            }
            if r.udp && r.udp_rtp_port != 0 && r.udp_rtp_port == r.udp_rtcp_port {
                return err("rtsp.udpRtcpPort", "must differ from udpRtpPort".into());
            }
            if r.session_timeout.get() < std::time::Duration::from_secs(1) {
                return err("rtsp.sessionTimeout", "must be at least 1 second".into());
            }
            if r.request_timeout.get().is_zero() {
                return err("rtsp.requestTimeout", "must be greater than 0".into());
            }
            if r.max_connections_per_ip == 0 {
                return err("rtsp.maxConnectionsPerIp", "must be at least 1".into());
            }
            if r.max_connections == 0 {
                return err("rtsp.maxConnections", "must be at least 1".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use mediamesh_auth::AuthSettings;

    use super::*;

    fn base() -> HubConfig {
        let mut c = HubConfig::with_tunnel_tls("ca".into(), "c".into(), "k".into());
        c.listen_address = std::net::Ipv4Addr::LOCALHOST.into();
        c
    }

    #[test]
    fn a_hub_beyond_loopback_needs_an_auth_block() {
        let mut c = base();
        c.listen_address = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "auth");
        assert!(e.reason.contains("auth: {anonymous: [read]}"), "{e}");
        c.auth = Some(AuthSettings { anonymous: vec!["read".parse().unwrap()], ..Default::default() });
        c.validate().unwrap();
    }

    #[test]
    fn defaults_are_valid() {
        base().validate().unwrap();
    }

    #[test]
    fn invalid_values_name_their_key() {
        let mut c = base();
        c.tunnel_port = c.stream_port;
        assert_eq!(c.validate().unwrap_err().key, "streamPort");
        let mut c = base();
        c.max_frame_bytes = 0;
        assert!(c.validate().unwrap_err().to_string().starts_with("cloudDataStream.maxFrameBytes"));
        let mut c = base();
        c.tunnel_max_connections_per_ip = 0;
        assert_eq!(c.validate().unwrap_err().key, "tunnelMaxConnectionsPerIp");
        let mut c = base();
        c.tls_stream_cert_file = Some("x".into());
        assert_eq!(c.validate().unwrap_err().key, "tlsStreamCertFile");
    }
}
