//! The `Transport` header (RFC 2326 §12.39): what a client asks for, what the server answers.

use std::net::{IpAddr, SocketAddr};

/// Where a track's RTP and RTCP go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    /// Interleaved on the RTSP connection, on these channels.
    Tcp {
        /// RTP channel.
        rtp: u8,
        /// RTCP channel.
        rtcp: u8,
    },
    /// UDP unicast to these addresses.
    Udp {
        /// Client RTP address.
        rtp: SocketAddr,
        /// Client RTCP address.
        rtcp: SocketAddr,
    },
}

/// Chooses the first transport the client offers that this server supports.
/// `Err` is the reason for a 461 Unsupported Transport.
pub(crate) fn choose(header: &str, client_ip: IpAddr, track: u8) -> Result<Dest, String> {
    let mut seen = Vec::new();
    for spec in header.split(',') {
        let mut parts = spec.split(';').map(str::trim);
        let proto = parts.next().unwrap_or_default().to_ascii_uppercase();
        let params: Vec<&str> = parts.collect();
        seen.push(proto.clone());
        if params.iter().any(|p| p.eq_ignore_ascii_case("multicast")) {
            continue;
        }
        let param = |name: &str| {
            params.iter().find_map(|p| p.split_once('=').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
        };
        match proto.as_str() {
            "RTP/AVP/TCP" => {
                let (rtp, rtcp) = match param("interleaved") {
                    Some(v) => pair(v)
                        .and_then(|(a, b)| Some((u8::try_from(a).ok()?, u8::try_from(b).ok()?)))
                        .ok_or_else(|| format!("bad interleaved={v}"))?,
                    None => (track.saturating_mul(2), track.saturating_mul(2).saturating_add(1)),
                };
                return Ok(Dest::Tcp { rtp, rtcp });
            }
            "RTP/AVP" | "RTP/AVP/UDP" => {
                let Some(v) = param("client_port") else { continue };
                let (a, b) = pair(v).ok_or_else(|| format!("bad client_port={v}"))?;
                let (a, b) = (u16::try_from(a).ok(), u16::try_from(b).ok());
                let (Some(a), Some(b)) = (a, b) else { return Err(format!("bad client_port={v}")) };
                if a == 0 {
                    return Err("client_port 0".into());
                }
                return Ok(Dest::Udp { rtp: SocketAddr::new(client_ip, a), rtcp: SocketAddr::new(client_ip, b) });
            }
            _ => {}
        }
    }
    Err(format!("none of {} is supported; use RTP/AVP/TCP (interleaved) or RTP/AVP (UDP unicast)", seen.join(", ")))
}

/// `a-b` (or a single `a`, meaning `a-(a+1)`).
fn pair(v: &str) -> Option<(u32, u32)> {
    match v.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let a: u32 = v.trim().parse().ok()?;
            Some((a, a.checked_add(1)?))
        }
    }
}

/// The `Transport` value of a SETUP response.
pub(crate) fn answer(dest: &Dest, ssrc: u32, server_ports: (u16, u16)) -> String {
    match dest {
        Dest::Tcp { rtp, rtcp } => format!("RTP/AVP/TCP;unicast;interleaved={rtp}-{rtcp};ssrc={ssrc:08X}"),
        Dest::Udp { rtp, rtcp } => format!(
            "RTP/AVP;unicast;client_port={}-{};server_port={}-{};ssrc={ssrc:08X}",
            rtp.port(),
            rtcp.port(),
            server_ports.0,
            server_ports.1
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn chooses_supported_transports() {
        assert_eq!(choose("RTP/AVP/TCP;unicast;interleaved=2-3", IP, 1), Ok(Dest::Tcp { rtp: 2, rtcp: 3 }));
        assert_eq!(choose("RTP/AVP/TCP;unicast", IP, 1), Ok(Dest::Tcp { rtp: 2, rtcp: 3 }));
        let udp = choose("RTP/AVP;unicast;client_port=5000-5001", IP, 0).unwrap();
        assert_eq!(udp, Dest::Udp { rtp: SocketAddr::new(IP, 5000), rtcp: SocketAddr::new(IP, 5001) });
        // The first supported one of several.
        let d = choose("RTP/AVP;multicast, RTP/AVP/TCP;unicast;interleaved=0-1", IP, 0).unwrap();
        assert_eq!(d, Dest::Tcp { rtp: 0, rtcp: 1 });
        assert!(choose("RTP/AVP;multicast;ttl=1", IP, 0).is_err());
        assert!(choose("RAW/RAW/UDP;unicast", IP, 0).is_err());
        assert!(choose("RTP/AVP/TCP;interleaved=300-301", IP, 0).is_err());
        assert!(choose("RTP/AVP;unicast;client_port=4294967295", IP, 0).is_err(), "no overflow");
    }

    #[test]
    fn answers() {
        let a =
            answer(&Dest::Udp { rtp: SocketAddr::new(IP, 5000), rtcp: SocketAddr::new(IP, 5001) }, 0xab, (8000, 8001));
        assert_eq!(a, "RTP/AVP;unicast;client_port=5000-5001;server_port=8000-8001;ssrc=000000AB");
    }
}
