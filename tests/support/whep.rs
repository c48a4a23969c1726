//! A WHEP client for tests, in the browser: what a page needs to play a stream over WebRTC.

#![allow(dead_code)]

use std::time::Duration;

use mediamesh_testkit::browser::Browser;

/// A WHEP client of a few lines: a receive-only video transceiver, the offer POSTed, the answer
/// applied; the video element plays what arrives.
pub const WHEP_PLAY: &str = r#"
const [url, audio] = arguments;
const pc = new RTCPeerConnection();
const t = pc.addTransceiver('video', { direction: 'recvonly' });
const exts = t.getHeaderExtensionsToNegotiate();
for (const e of exts) if (e.uri.endsWith('/abs-capture-time')) e.direction = 'recvonly';
t.setHeaderExtensionsToNegotiate(exts);
if (audio) pc.addTransceiver('audio', { direction: 'recvonly' });
const v = document.createElement('video');
v.muted = true; v.autoplay = true; v.playsInline = true; document.body.appendChild(v);
window.whepVideo = v; window.whepPc = pc;
const media = new MediaStream();
pc.ontrack = (e) => { media.addTrack(e.track); v.srcObject = media; v.play().catch(() => {}); };
const offer = await pc.createOffer();
await pc.setLocalDescription(offer);
const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: offer.sdp });
if (r.status !== 201) return { status: r.status, body: await r.text() };
const sdp = await r.text();
await pc.setRemoteDescription({ type: 'answer', sdp });
return { status: r.status, location: r.headers.get('Location'), sdp, omitted: r.headers.get('X-Mediamesh-Audio-Omitted') };
"#;

/// Frames decoded and dropped so far by the video of a [`WHEP_PLAY`] client, and its ICE state,
/// 5 s after the call (for `eval_async`).
pub const FIVE_SECONDS: &str = "const v = window.whepVideo; const q0 = v.getVideoPlaybackQuality();
    setTimeout(() => { const q = v.getVideoPlaybackQuality();
      done({ frames: q.totalVideoFrames - q0.totalVideoFrames, dropped: q.droppedVideoFrames - q0.droppedVideoFrames,
             state: window.whepPc.iceConnectionState }); }, 5000);";

/// Plays `whep` (a full URL) in `b` with [`WHEP_PLAY`]; the client's answer (`status`,
/// `location`, `sdp`), after checking it is `201`.
pub fn play(b: &Browser, whep: &str) -> serde_json::Value {
    play_with(b, whep, false)
}

/// [`play`], offering to receive audio too when `audio`.
pub fn play_with(b: &Browser, whep: &str, audio: bool) -> serde_json::Value {
    let answer = b.eval_async(
        &format!("const f = async (arguments) => {{ {WHEP_PLAY} }}; f(['{whep}', {audio}]).then(done, e => done({{ error: String(e) }}));"),
        Duration::from_secs(10),
    );
    assert_eq!(answer["status"], 201, "{answer}");
    answer
}

/// An offer whose audio and video use one payload type (111) for different codecs.
pub const CLASHING_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 111 112\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n\
a=rtpmap:111 H264/90000\r\na=fmtp:111 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:112 rtx/90000\r\na=fmtp:112 apt=111\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n";
