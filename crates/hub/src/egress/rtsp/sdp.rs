//! The session description a DESCRIBE answers with.

use mediamesh_media::StreamHeader;
use mediamesh_media::rtp::sdp::describe;

use crate::session::StreamKey;

/// SDP for a stream: one media section per track, controls `trackID=<id>` relative to the
/// Content-Base `rtsp://host/node/stream/`.
pub(crate) fn session_description(key: &StreamKey, header: &StreamHeader, session_version: u64) -> String {
    let mut s = format!(
        "v=0\r\no=- {session_version} {session_version} IN IP4 0.0.0.0\r\ns={key}\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
         a=tool:mediamesh {}\r\na=range:npt=0-\r\na=control:*\r\n",
        env!("CARGO_PKG_VERSION")
    );
    for t in &header.tracks {
        let d = describe(t);
        s.push_str(&format!("m={} 0 RTP/AVP {}\r\n", d.media, d.payload_type));
        s.push_str(&format!("a=rtpmap:{} {}\r\n", d.payload_type, d.rtpmap));
        if let Some(f) = &d.fmtp {
            s.push_str(&format!("a=fmtp:{} {f}\r\n", d.payload_type));
        }
        s.push_str(&format!("a=control:trackID={}\r\n", t.id));
    }
    s
}
